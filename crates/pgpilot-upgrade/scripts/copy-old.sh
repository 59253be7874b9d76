#!/bin/sh
# Init container of the pg_upgrade Job, in the OLD image: its PostgreSQL (binaries, modules,
# share files) and every shared library they load, copied under /old. The new image's
# pg_upgrade runs these binaries; PostgreSQL finds its modules and share files relative to
# its binary, so the tree keeps its shape (/old/usr/lib/postgresql/<major>/bin, ...).
set -eu
V=$OLD_MAJOR
for d in "/usr/lib/postgresql/$V" "/usr/share/postgresql/$V"; do
  mkdir -p "/old$d"
  cp -a "$d/." "/old$d/"
done
# JIT is not used by pg_upgrade (jit=off) and libLLVM is the largest library by far.
rm -rf "/old/usr/lib/postgresql/$V/lib/bitcode" "/old/usr/lib/postgresql/$V/lib/llvmjit"*
mkdir -p /old/lib
for f in "/old/usr/lib/postgresql/$V/bin/"* "/old/usr/lib/postgresql/$V/lib/"*.so; do
  ldd "$f" 2>/dev/null || true
done | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u | while read -r lib; do
  cp -L "$lib" /old/lib/
done
echo "copied PostgreSQL $V and $(find /old/lib -type f | wc -l) libraries"
