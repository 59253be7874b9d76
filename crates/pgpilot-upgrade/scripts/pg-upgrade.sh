#!/bin/bash
# The pg_upgrade Job, in the NEW image, on the stopped primary's volume: the old binaries
# in pgbin.<old major> (copy-old.sh) and the new cluster in pgdata.new (prepare.sh), both made
# while the old primary served. Checks, upgrades into pgdata.new, then swaps the directories:
# pgdata is the new cluster, pgdata.<old major> the old one (kept until the finishing Job,
# so an abort before the new primary starts can put it back: revert.sh). Any failure leaves
# the old cluster as it was and says why in the termination message.
set -euo pipefail
DATA=/var/lib/postgresql/data
OLD=$DATA/pgdata NEW=$DATA/pgdata.new KEPT=$DATA/pgdata.$OLD_MAJOR
T=$DATA/pgbin.$OLD_MAJOR
OB=$T/usr/lib/postgresql/$OLD_MAJOR/bin NB=/usr/lib/postgresql/$NEW_MAJOR/bin
WORK=/tmp/pg_upgrade
mkdir -p "$WORK" && cd "$WORK"

fail() {
  printf '%s\n' "$*" | tail -c 3800 >/dev/termination-log
  echo "$*" >&2
  exit 1
}

# The files pg_upgrade names in its output ($1): the lists of the objects at fault, and the
# logs of the servers it started or of a restore. Undo removes them with the new cluster.
named() {
  local f
  { grep -o '/[^ "]*\.\(txt\|log\)' "$1" || true; } | sort -u | while IFS= read -r f; do
    [[ -f $f ]] || continue
    if [[ $f == *.txt ]]; then
      head -n 20 "$f"
    else # a log: from its first error on, else its end
      printf '%s:\n' "${f##*/}"
      grep -m 1 -A 12 -E '(ERROR|FATAL|PANIC|error):' "$f" || tail -n 10 "$f"
    fi
  done
}

# The old cluster as it was (pg_upgrade --link moves global/pg_control aside before linking),
# and nothing of the upgrade left beside it.
undo() {
  if [[ -e $OLD/global/pg_control.old && ! -e $OLD/global/pg_control ]]; then
    mv "$OLD/global/pg_control.old" "$OLD/global/pg_control"
  fi
  rm -rf "$NEW" "$T"
}

export LD_LIBRARY_PATH=$T/missing
[[ -e $KEPT ]] && fail "$KEPT exists: an earlier pg_upgrade already swapped the data directories (see docs/runbooks/upgrade.md)"
[[ -x $OB/postgres && $(cat "$NEW/PG_VERSION" 2>/dev/null) == "$NEW_MAJOR" ]] ||
  fail "$T or $NEW is missing: the prepare Job makes them; start the upgrade again"
field() { sed -n "s/^$1: *//p" <<<"$control"; }

# The Job starts as soon as the StatefulSet is scaled to 0, while the primary shuts down
# (nothing starts it again: the instance limit stays 0 while this Job exists); its
# postmaster removes postmaster.pid last.
for ((i = 0; i < 600; i++)); do
  [[ -e $OLD/postmaster.pid ]] || break
  sleep 0.2
done
control=$("$OB/pg_controldata" "$OLD")
state=$(field 'Database cluster state')
if [[ $state != "shut down" ]]; then
  undo
  fail "the old primary did not shut down cleanly (pg_controldata: \"$state\"); start the old version again (abort) and retry"
fi

# The old server starts without Patroni's configuration (archiving, TLS files, the pod's
# paths): an empty one, local trust only, on a socket in this directory.
: >"$WORK/old.conf"
echo "local all all trust" >"$WORK/hba.conf"
args=(-b "$OB" -B "$NB" -d "$OLD" -D "$NEW" -U postgres -s "$WORK" -j 2 "--$METHOD"
  -o "-c config_file=$WORK/old.conf -c hba_file=$WORK/hba.conf -c jit=off")
# pg_upgrade runs the consistency checks of --check first and changes nothing when one
# fails; a separate --check run would only add its time to the downtime.
if ! "$NB/pg_upgrade" "${args[@]}" >"$WORK/upgrade.log" 2>&1; then
  if grep -q '^Performing Upgrade' "$WORK/upgrade.log"; then
    report="pg_upgrade failed: $(tail -n 20 "$WORK/upgrade.log")"
  else
    report="pg_upgrade's checks failed: $(grep -v '^Performing\|^---\|^Checking.*ok$\|^$' "$WORK/upgrade.log" | tail -n 20)"
  fi
  report+=$'\n'$(named "$WORK/upgrade.log")
  undo
  fail "$report"
fi
cat "$WORK/upgrade.log"

# What Patroni keeps in the data directory: its dynamic configuration, and initdb's
# postgresql.conf renamed as it does on bootstrap.
[[ -e $OLD/patroni.dynamic.json ]] && cp "$OLD/patroni.dynamic.json" "$NEW/"
[[ -e $OLD/postgresql.base.conf ]] && mv "$NEW/postgresql.conf" "$NEW/postgresql.base.conf"
# The new cluster's checkpoint as pg_upgrade left it: revert.sh refuses once it moved (the
# new primary ran and may have written to files it shares with the old one).
"$NB/pg_controldata" "$NEW" | sed -n 's/^Latest checkpoint location: *//p' >"$DATA/upgraded-checkpoint"
mv "$OLD" "$KEPT"
mv "$NEW" "$OLD"
echo "upgraded to PostgreSQL $(cat "$OLD/PG_VERSION") ($METHOD); the old data directory is $KEPT" | tee /dev/termination-log
