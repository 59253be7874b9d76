#!/usr/bin/env bash
# images/smoke-test.sh: run every imported image under containerd (namespace
# k8s.io, runc) and check it does its job: versions of the binaries, the pause
# process's start and stop, a real PostgreSQL 17 (initdb into a tmpfs volume,
# start, query, stop) as uid 999, and a MinIO server answering its health check.
# Run images/import.sh first. Prints "N passed, M failed".
source "$(dirname "$0")/lib.sh"

ADDRESS=${CONTAINERD_ADDRESS:-/run/containerd/containerd.sock}
ctr_() { ctr --address "$ADDRESS" -n k8s.io "$@"; }
PASS=0 FAIL=0 N=0
check() { # NAME CMD...: run CMD, show its output, count the result
  local name=$1; shift
  printf '=== %s\n' "$name"
  if "$@"; then PASS=$((PASS + 1)); echo "--- ok: $name"; else FAIL=$((FAIL + 1)); echo "--- FAIL: $name"; fi
}
run() { # REF CMD...: one throwaway container
  local ref=$1; shift
  N=$((N + 1))
  ctr_ run --rm "$ref" "pgpilot-smoke-$$-$N" "$@"
}
ref_of() { # NAME TAG-GLOB: the ref of the newest cached tarball
  local t; t=$(ls -t "$IMAGE_CACHE"/$1-$2-*.tar | head -1)
  tar -xOf "$t" index.json | jq -r '.manifests[0].annotations["io.containerd.image.name"]'
}

# pause: starts, is PID 1, stops with status 0 on SIGTERM.
pause_cycle() {
  local id=pgpilot-smoke-$$-pause
  ctr_ run -d registry.k8s.io/pause:3.10 "$id" >/dev/null
  sleep 0.5
  ctr_ task ls | grep -q "^$id .*RUNNING" || return 1
  ctr_ task kill -s SIGTERM "$id"
  local status; status=$(ctr_ task wait "$id" 2>/dev/null | awk '{print $NF}')
  ctr_ task delete "$id" >/dev/null 2>&1 || true
  ctr_ container delete "$id"
  echo "pause exited with ${status:-?}"; [[ ${status:-0} == 0 ]]
}
check "pause:3.10 start/stop" pause_cycle
check "pause:3.6 -v" run registry.k8s.io/pause:3.6 /pause -v

for tag in 17 15.18 15.20; do
  ref=localhost/pgpilot/postgres:$tag
  check "postgres:$tag versions" run "$ref" sh -c '
    set -e; id; postgres --version; patroni --version; pgbackrest version
    python3 -c "import patroni.dcs.kubernetes; print(\"patroni kubernetes DCS: importable\")"
    case $(postgres --version) in *" '"$tag"'"*) ;; *) echo "wrong version"; exit 1;; esac'
done

# PostgreSQL 17 for real: uid 999, data dir on a tmpfs mounted where the
# operator mounts the volume, socket in /tmp.
pg_cycle() {
  N=$((N + 1))
  ctr_ run --rm \
    --mount type=tmpfs,src=tmpfs,dst=/var/lib/postgresql/data,options=rw:nosuid:nodev:size=256m:mode=0700:uid=999:gid=999 \
    localhost/pgpilot/postgres:17 "pgpilot-smoke-$$-$N" bash -c '
    set -euo pipefail
    [[ $(id -u) == 999 ]] && echo "running as $(id -un) ($(id -u):$(id -g))"
    grep " /var/lib/postgresql/data " /proc/mounts
    initdb -D "$PGDATA" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    pg_ctl -D "$PGDATA" -l /tmp/pg.log -w -o "-c listen_addresses= -c unix_socket_directories=/tmp" start
    psql -h /tmp -U postgres -Atc "select version()"
    psql -h /tmp -U postgres -Atc "create table t(i int); insert into t select generate_series(1, 1000); select count(*) from t"
    pg_ctl -D "$PGDATA" -w -m fast stop'
}
check "postgres:17 initdb/start/query/stop" pg_cycle

check "pgclient:17 psql/pgbench" run localhost/pgpilot/pgclient:17 sh -c 'set -e; id; psql --version; pgbench --version'

PROM=$(ref_of prometheus '*')
check "$PROM" run "$PROM" /usr/bin/prometheus --version
OTEL=$(ref_of otelcol '*')
check "$OTEL" run "$OTEL" /usr/bin/otelcol --version
check "$OTEL validate" run "$OTEL" /usr/bin/otelcol validate --config=/etc/otelcol/config.yaml

S3=$(ref_of s3 '*')
check "$S3 --version" run "$S3" /usr/bin/minio --version
# A real server: listen on loopback of the host network, answer /health/live.
minio_serve() {
  local id=pgpilot-smoke-$$-minio port=${MINIO_TEST_PORT:-19000} ok=1
  ctr_ run -d --net-host --env MINIO_ROOT_USER=pgpilot --env MINIO_ROOT_PASSWORD=pgpilot-secret \
    "$S3" "$id" /usr/bin/minio server /data --address "127.0.0.1:$port" --console-address "127.0.0.1:$((port + 1))" >/dev/null
  for _ in $(seq 50); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/minio/health/live" && { ok=0; break; }
    sleep 0.2
  done
  ctr_ task kill -s SIGTERM "$id" >/dev/null 2>&1; ctr_ task wait "$id" >/dev/null 2>&1 || true
  ctr_ task delete "$id" >/dev/null 2>&1 || true; ctr_ container delete "$id" >/dev/null 2>&1 || true
  ((ok == 0)) && echo "minio answered /minio/health/live on 127.0.0.1:$port"
  return $ok
}
check "$S3 serves" minio_serve

echo "$PASS passed, $FAIL failed"
((FAIL == 0))
