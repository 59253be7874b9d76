#!/bin/bash
# The prepare Job, in the NEW image, while the old primary still serves (nothing here touches
# its data directory but to read pg_control): the old binaries (copy-old.sh) checked to run
# here, and the new cluster initialized in pgdata.new, so that neither is downtime. Safe to
# repeat; a failure changes nothing and says why in the termination message.
set -euo pipefail
DATA=/var/lib/postgresql/data
OLD=$DATA/pgdata NEW=$DATA/pgdata.new
T=$DATA/pgbin.$OLD_MAJOR
OB=$T/usr/lib/postgresql/$OLD_MAJOR/bin NB=/usr/lib/postgresql/$NEW_MAJOR/bin

fail() {
  printf '%s\n' "$*" | tail -c 3800 >/dev/termination-log
  echo "$*" >&2
  exit 1
}

# Only the libraries the new image lacks (their sonames), so that nothing of the new
# PostgreSQL loads an old library.
rm -rf "$T/missing" && mkdir -p "$T/missing"
have=$(ldconfig -p)
for lib in "$T"/lib/*; do
  name=${lib##*/}
  grep -q "^[[:space:]]*$name " <<<"$have" || ln -sf "$lib" "$T/missing/"
done
export LD_LIBRARY_PATH=$T/missing
for bin in postgres pg_ctl pg_controldata; do
  if ldd "$OB/$bin" | grep -q 'not found'; then
    fail "the old image's $bin cannot run in the new image: $(ldd "$OB/$bin" | grep 'not found' | tr -s ' \n' ' ')"
  fi
done
[[ $(cat "$OLD/PG_VERSION") == "$OLD_MAJOR" ]] || fail "$OLD holds PostgreSQL $(cat "$OLD/PG_VERSION"), not $OLD_MAJOR"

# The new cluster: what pg_upgrade requires to match (checksums, WAL segment size) from the
# old one; the install user is the old one's (postgres). pg_control has these from initdb on.
control=$("$OB/pg_controldata" "$OLD")
field() { sed -n "s/^$1: *//p" <<<"$control"; }
initdb_args=(-D "$NEW" -U postgres -E UTF8 --locale=C.UTF-8 --auth=trust
  --wal-segsize=$(($(field 'Bytes per WAL segment') / 1024 / 1024)))
[[ $(field 'Data page checksum version') != 0 ]] && initdb_args+=(--data-checksums)
rm -rf "$NEW"
mkdir -p /tmp/prepare
"$NB/initdb" "${initdb_args[@]}" >/tmp/prepare/initdb.log 2>&1 || fail "initdb failed: $(tail -n 20 /tmp/prepare/initdb.log)"
echo "PostgreSQL $OLD_MAJOR's binaries checked beside the new image's, PostgreSQL $NEW_MAJOR initialized in $NEW" | tee /dev/termination-log
