#!/usr/bin/env bash
# `just bench` / `just bench-backup` / …: benchmarks on the node cluster (the e2e tier's:
# e2e-env.sh), written to docs/benchmarks.md. Brings the node cluster up if it is not running
# (idempotent: a running one is reused), imports the images, runs pgpilot's manager with
# least-privilege RBAC watching the bench namespace only, runs pgpilot-bench, and stops the
# manager again.
#
#   bench-run.sh [ARGS]          the cluster controller's: `pgpilot-bench all ARGS` (--repeat 5)
#   bench-run.sh backup [ARGS]   the backup controller's: `pgpilot-bench backup ARGS` (--scale 70)
#   bench-run.sh upgrade [ARGS]  the upgrade controller's: `pgpilot-bench upgrade ARGS` (--scale 70)
#   bench-run.sh rotation [ARGS] the secret-rotation controller's: `pgpilot-bench rotation ARGS`
#   bench-run.sh tls [ARGS]      TLS cost: `pgpilot-bench tls ARGS`
#
#   PGPILOT_BENCH_NAMESPACE   namespace of everything measured (bench)
set -euo pipefail
# shellcheck source=e2e-env.sh
. "$(dirname "${BASH_SOURCE[0]}")/e2e-env.sh"
REPO=$(cd "$E2E_DIR/.." && pwd)
NS=${PGPILOT_BENCH_NAMESPACE:-bench}
[[ $NS == bench* ]] || die "PGPILOT_BENCH_NAMESPACE must start with bench (got $NS)"
export PGPILOT_BENCH_NAMESPACE=$NS
MANAGER_NAME=pgpilot-bench-manager
AREA=cluster
CONTROLLERS=cluster
if [[ ${1:-} == backup ]]; then
  AREA=backup CONTROLLERS=cluster,backup
  shift
  ((EUID == 0)) || die "the backup benchmarks drop the page cache: run as root"
elif [[ ${1:-} == upgrade ]]; then
  AREA=upgrade CONTROLLERS=cluster,upgrade
  shift
elif [[ ${1:-} == rotation ]]; then
  AREA=rotation CONTROLLERS=cluster,secret-rotation
  shift
elif [[ ${1:-} == tls ]]; then
  AREA=tls CONTROLLERS=cluster
  shift
fi
IMAGES=(localhost/pgpilot/postgres:17 localhost/pgpilot/postgres-exporter:0.17.1)
[[ $AREA == backup ]] && IMAGES+=(localhost/pgpilot/s3:minio-2026-02-12)
[[ $AREA == upgrade ]] && IMAGES+=(localhost/pgpilot/postgres:15.18 localhost/pgpilot/postgres:15.20)
[[ $AREA == rotation || $AREA == tls ]] && IMAGES+=(localhost/pgpilot/pgclient:17)

step() { printf '\n\033[1m== %s\033[0m (+%ss)\n' "$*" "$(elapsed)" >&2; }

step "binaries, images"
"$E2E_DIR/scripts/build-binaries.sh" --node >/dev/null
"$REPO/images/pause/build.sh" >/dev/null
"$REPO/images/pgclient/build.sh" >/dev/null
"$REPO/images/postgres/build.sh" 17 >/dev/null
"$REPO/images/postgres-exporter/build.sh" >/dev/null
if [[ $AREA == backup ]]; then "$REPO/images/s3/build.sh" >/dev/null; fi
if [[ $AREA == upgrade ]]; then
  "$REPO/images/postgres/build.sh" 15.18 >/dev/null
  "$REPO/images/postgres/build.sh" 15.20 >/dev/null
fi

step "node cluster (reused when running)"
mkdir -p "$REPO/target/bench"
"$E2E_DIR/scripts/cluster-up.sh" --node >"$REPO/target/bench/cluster-up.log" 2>&1 ||
  die "cluster-up.sh --node failed: see target/bench/cluster-up.log"
"$E2E_DIR/scripts/import-images.sh" "${IMAGES[@]}" 2>"$REPO/target/bench/import.log" ||
  die "importing the image failed: see target/bench/import.log"
# shellcheck source=env.sh
. "$E2E_DIR/scripts/env.sh"
# shellcheck disable=SC1091
. "$STATE_DIR/cluster.env"
export PGPILOT_CONTAINERD_SOCKET

step "build pgpilot-manager and pgpilot-bench (release)"
# Release builds: the manager as it ships (a debug build spends its time differently).
(cd "$REPO" && cargo build -q --release -p pgpilot-manager -p pgpilot-bench)
MANAGER=$REPO/target/release/pgpilot-manager
BENCH=$REPO/target/release/pgpilot-bench

step "namespace $NS, CRDs, the manager's RBAC"
kctl apply --server-side --force-conflicts -f "$REPO/crds/" >/dev/null
kctl create namespace "$NS" --dry-run=client -o yaml | kctl apply -f - >/dev/null
kctl label namespace "$NS" --overwrite pod-security.kubernetes.io/enforce=restricted >/dev/null
# The manager's own rules for the controllers measured, under a name of the bench's own (other
# users of this cluster keep theirs), bound as `pgpilot-manager rbac` binds them: it watches
# $NS only, but reads cluster-scoped objects (StorageClasses) too.
"$MANAGER" rbac --controllers "$CONTROLLERS" --namespace "$NS" --bind user:pgpilot-manager |
  kctl create --dry-run=client -f - -o json |
  jq -s '{apiVersion: "v1", kind: "List", items: map(
      if .kind == "ClusterRole" then .metadata.name = "pgpilot-bench-manager"
      elif .kind == "ClusterRoleBinding" then
        .metadata.name = "pgpilot-bench-manager" | .roleRef.name = "pgpilot-bench-manager"
      else . end)}' |
  kctl apply -f - >/dev/null

step "pgpilot-manager, watching $NS only (log: $LOG_DIR/$MANAGER_NAME.log)"
if pid=$(pid_of "$MANAGER_NAME"); then kill -TERM "$pid" 2>/dev/null || true; sleep 1; fi
# A manager left from an earlier cluster (its pid file gone with that state dir) would keep the
# ports, and answer /readyz in place of the new one.
for _ in {1..50}; do
  curl -fsS --max-time 1 http://127.0.0.1:18281/readyz >/dev/null 2>&1 || break
  sleep 0.1
done
if curl -fsS --max-time 1 http://127.0.0.1:18281/readyz >/dev/null 2>&1; then
  die "127.0.0.1:18281 already answers: stop the process that holds it (ss -ltnp 'sport = :18281') and run again"
fi
# Its own copy of the binary: its path names the state dir, so pid_of knows it is ours.
cp "$MANAGER" "$STATE_DIR/$MANAGER_NAME"
KUBECONFIG=$STATE_DIR/pgpilot-manager.kubeconfig launch "$MANAGER_NAME" "$STATE_DIR/$MANAGER_NAME" \
  --controllers="$CONTROLLERS" --namespace="$NS" --leader-elect --leader-election-namespace="$NS" \
  --default-image=17=localhost/pgpilot/postgres:17 --log-format=text \
  --metrics-bind-address=127.0.0.1:18280 --health-probe-bind-address=127.0.0.1:18281
stop_manager() {
  local pid
  if pid=$(pid_of "$MANAGER_NAME"); then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in {1..50}; do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
}
trap stop_manager EXIT
for _ in {1..100}; do
  curl -fsS --max-time 1 http://127.0.0.1:18281/readyz >/dev/null 2>&1 && break
  alive "$MANAGER_NAME" || die "the manager exited; see $LOG_DIR/$MANAGER_NAME.log"
  sleep 0.2
done

cd "$REPO"
if [[ $AREA == backup ]]; then
  step "backup benchmarks (a full run takes 25-40 min)"
  "$BENCH" backup --namespace "$NS" --out docs/benchmarks.md --json target/bench/backup.json "$@"
elif [[ $AREA == upgrade ]]; then
  step "upgrade benchmarks (one sample of each takes 15-25 min)"
  "$BENCH" upgrade --namespace "$NS" --out docs/benchmarks.md --json target/bench/upgrade.json "$@"
elif [[ $AREA == tls ]]; then
  step "TLS cost (12 pgbench runs of 20 s: about 6 min)"
  "$BENCH" tls --namespace "$NS" --out docs/benchmarks.md --json target/bench/tls.json "$@"
elif [[ $AREA == rotation ]]; then
  step "secret-rotation benchmarks (three rotations take about 8 min)"
  "$BENCH" rotation --namespace "$NS" --out docs/benchmarks.md --json target/bench/rotation.json "$@"
else
  step "benchmarks (a full run takes 20-40 min)"
  "$BENCH" all --namespace "$NS" --out docs/benchmarks.md --json target/bench/results.json "$@"
fi
step "done: docs/benchmarks.md"
