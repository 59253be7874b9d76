#!/usr/bin/env bash
# images/smoke-test.sh: run every imported image under containerd (namespace
# k8s.io, runc) and check it does its job: versions of the binaries, the pause
# process's start and stop, a real PostgreSQL 17 (initdb into a tmpfs volume,
# start, query, stop) as uid 999, and a MinIO server answering its health check.
# Run images/import.sh first. Prints "N passed, M failed".
# shellcheck disable=SC2016 # the in-container scripts are single-quoted on purpose
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "$0")/lib.sh"

need_pkgs curl jq
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
ref_of() { # NAME: the ref of the newest cached tarball of that image
  local t; t=$(find "$IMAGE_CACHE" -maxdepth 1 -name "$1-*.tar" -printf '%T@ %p\n' | sort -n | tail -1 | cut -d' ' -f2-)
  [[ -n $t ]] || { echo "missing-image-$1"; return 0; }
  tar -xOf "$t" index.json | jq -r '.manifests[0].annotations["io.containerd.image.name"]'
}
# serve REF URL [CURL-ARGS] -- CMD...: run CMD detached on the host network,
# wait (10 s at most) for URL to answer 2xx, stop the container.
serve() {
  local ref=$1 url=$2 ok=1 id=pgpilot-smoke-$$-serve-$((++N)); shift 2
  local -a curl_args=()
  while [[ $1 != -- ]]; do curl_args+=("$1"); shift; done; shift
  ctr_ run -d --net-host "${ENVS[@]}" "$ref" "$id" "$@" >/dev/null || return 1
  for _ in $(seq 50); do
    if curl -fsS -o /dev/null "${curl_args[@]}" "$url" 2>/dev/null; then ok=0; break; fi
    sleep 0.2
  done
  ctr_ task kill -s SIGTERM "$id" >/dev/null 2>&1 || true
  wait_stopped "$id" >/dev/null || true
  ctr_ task delete -f "$id" >/dev/null 2>&1 || true
  ctr_ container delete "$id" >/dev/null 2>&1 || true
  ((ok == 0)) && echo "answered: $url"
  return $ok
}

wait_stopped() { # ID: poll until the task has stopped (10 s at most)
  for _ in $(seq 50); do
    ctr_ task ls | grep -q "^$1 .*STOPPED" && return 0
    sleep 0.2
  done
  echo "task $1 did not stop"; return 1
}

# pause: starts, is PID 1, stops with status 0 on SIGTERM.
pause_cycle() {
  local id=pgpilot-smoke-$$-pause
  ctr_ run -d registry.k8s.io/pause:3.10 "$id" >/dev/null
  sleep 0.5
  ctr_ task ls | grep -q "^$id .*RUNNING" || return 1
  ctr_ task kill -s SIGTERM "$id"
  wait_stopped "$id" || return 1
  # ctr 1.6 has no `task wait`; `task delete` warns "... non-zero exit code N".
  local out; out=$(ctr_ task delete "$id" 2>&1)
  ctr_ container delete "$id"
  if [[ $out == *non-zero* ]]; then echo "$out"; return 1; fi
  echo "pause stopped on SIGTERM with exit code 0"
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

ENVS=()
PROM=$(ref_of prometheus)
check "$PROM --version" run "$PROM" /usr/bin/prometheus --version
check "$PROM serves" serve "$PROM" http://127.0.0.1:19090/-/ready -- /usr/bin/prometheus \
  --config.file=/etc/prometheus/prometheus.yml --storage.tsdb.path=/prometheus --web.listen-address=127.0.0.1:19090

OTEL=$(ref_of otelcol)
check "$OTEL --version" run "$OTEL" /usr/bin/otelcol --version
check "$OTEL validate" run "$OTEL" /usr/bin/otelcol validate --config=/etc/otelcol/config.yaml
check "$OTEL receives OTLP/HTTP" serve "$OTEL" http://127.0.0.1:14318/v1/traces \
  -H 'Content-Type: application/json' -d '{"resourceSpans":[]}' -- /usr/bin/otelcol --config=/etc/otelcol/config.yaml \
  --set=receivers.otlp.protocols.grpc.endpoint=127.0.0.1:14317 --set=receivers.otlp.protocols.http.endpoint=127.0.0.1:14318

S3=$(ref_of s3)
check "$S3 --version" run "$S3" /usr/bin/minio --version
ENVS=(--env MINIO_ROOT_USER=pgpilot --env MINIO_ROOT_PASSWORD=pgpilot-secret)
check "$S3 serves" serve "$S3" http://127.0.0.1:19000/minio/health/live -- \
  /usr/bin/minio server /data --address 127.0.0.1:19000 --console-address 127.0.0.1:19001
ENVS=()

echo "$PASS passed, $FAIL failed"
((FAIL == 0))
