#!/bin/bash
# After the new primary is up: extensions updated in every database, planner statistics
# rebuilt in stages (pg_upgrade carries none), the old data directory and binaries removed.
set -euo pipefail
export PGUSER=postgres PGCONNECT_TIMEOUT=10
rm -rf "/var/lib/postgresql/data/pgdata.$OLD_MAJOR" "/var/lib/postgresql/data/pgbin.$OLD_MAJOR" \
  /var/lib/postgresql/data/upgraded-checkpoint
# A new pod may be refused for a moment: a NetworkPolicy enforcer lets its address in within
# a second or two. Wait up to a minute for the server to answer (pg_isready does not log in).
for ((i = 0; i < 120; i++)); do
  pg_isready -q -t 2 && break
  sleep 0.5
done
psql -XAtc "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1" | while IFS= read -r db; do
  PGDATABASE=$db psql -XAtc "SELECT format('ALTER EXTENSION %I UPDATE;', extname) FROM pg_extension" |
    PGDATABASE=$db psql -X -q -v ON_ERROR_STOP=1
  echo "extensions of $db updated"
done
vacuumdb --all --analyze-in-stages
echo "extensions updated, statistics rebuilt, old data directory removed" | tee /dev/termination-log
