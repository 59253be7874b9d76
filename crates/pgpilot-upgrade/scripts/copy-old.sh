#!/bin/sh
# Init container of the prepare Job, in the OLD image, while the old primary still serves:
# its PostgreSQL (binaries, modules, share files) and every shared library they load, copied
# beside the data directory ($DATA/pgbin.<major>), where the pg_upgrade Job finds them. The new
# image's pg_upgrade runs these binaries; PostgreSQL finds its modules and share files relative
# to its binary, so the tree keeps its shape (<tree>/usr/lib/postgresql/<major>/bin, ...).
set -eu
V=$OLD_MAJOR
T=/var/lib/postgresql/data/pgbin.$V
rm -rf "$T"
for d in "/usr/lib/postgresql/$V" "/usr/share/postgresql/$V"; do
  mkdir -p "$T$d"
  cp -a "$d/." "$T$d/"
done
# JIT is not used by pg_upgrade (jit=off) and libLLVM is the largest library by far.
rm -rf "$T/usr/lib/postgresql/$V/lib/bitcode" "$T/usr/lib/postgresql/$V/lib/llvmjit"*
mkdir -p "$T/lib"
# One ldd for every file (it takes many): one per file cost seconds.
ldd "$T/usr/lib/postgresql/$V/bin/"* "$T/usr/lib/postgresql/$V/lib/"*.so 2>/dev/null |
  awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u | while read -r lib; do
  cp -L "$lib" "$T/lib/"
done
echo "copied PostgreSQL $V and $(find "$T/lib" -type f | wc -l) libraries to $T"
