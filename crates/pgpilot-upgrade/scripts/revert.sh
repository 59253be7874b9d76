#!/bin/bash
# Abort after pg_upgrade, before the new primary ever started: the old data directory back
# in place (with --link its files were never written, only linked), the new one and the old
# binaries beside it removed.
set -euo pipefail
DATA=/var/lib/postgresql/data
OLD=$DATA/pgdata KEPT=$DATA/pgdata.$OLD_MAJOR
fail() {
  printf '%s\n' "$*" >/dev/termination-log
  echo "$*" >&2
  exit 1
}
if [[ ! -e $KEPT ]]; then
  [[ $(cat "$OLD/PG_VERSION") == "$OLD_MAJOR" ]] || fail "$KEPT is missing and $OLD is not PostgreSQL $OLD_MAJOR"
  echo "nothing to revert: $OLD is PostgreSQL $OLD_MAJOR" | tee /dev/termination-log
  exit 0
fi
ran=$(/usr/lib/postgresql/"$NEW_MAJOR"/bin/pg_controldata "$OLD" | sed -n 's/^Latest checkpoint location: *//p')
if [[ -e $OLD/postmaster.pid || $ran != $(cat "$DATA/upgraded-checkpoint" 2>/dev/null) ]]; then
  fail "the new primary ran on $OLD (its checkpoint moved): the old data is no longer intact; restore the pre-upgrade backup instead"
fi
rm -rf "$DATA/pgdata.reverted"
mv "$OLD" "$DATA/pgdata.reverted"
mv "$KEPT" "$OLD"
if [[ -e $OLD/global/pg_control.old && ! -e $OLD/global/pg_control ]]; then
  mv "$OLD/global/pg_control.old" "$OLD/global/pg_control"
fi
rm -rf "$DATA/pgdata.reverted" "$DATA/upgraded-checkpoint" "$DATA/pgbin.$OLD_MAJOR"
echo "PostgreSQL $OLD_MAJOR is back in $OLD" | tee /dev/termination-log
