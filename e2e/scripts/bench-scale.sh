#!/usr/bin/env bash
# `just bench-scale`: many PostgresClusters on one manager (release build, all controllers),
# each size on a fresh control plane with kwok's fake nodes in a state dir and ports of its
# own (the integration, e2e and demo clusters are left alone). Results: target/bench/scale.json,
# spliced into docs/benchmarks.md (crates/pgpilot-bench/src/scale.rs says what is measured).
#
#   e2e/scripts/bench-scale.sh [--sizes 1000,10000] [pgpilot-bench scale flags...]
#   e.g. --manager-arg=--concurrency=16 --steady 120
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
sizes=1000
extra=()
while (($#)); do
  case $1 in
    --sizes) sizes=$2; shift 2 ;;
    *) extra+=("$1"); shift ;;
  esac
done

export PGPILOT_CLUSTER_DIR=${PGPILOT_SCALE_DIR:-/var/tmp/pgpilot/scale}
export PGPILOT_ETCD_CLIENT_PORT=53790 PGPILOT_ETCD_PEER_PORT=53800 PGPILOT_APISERVER_PORT=56443
export PGPILOT_KCM_PORT=50257 PGPILOT_SCHEDULER_PORT=50259 PGPILOT_KWOK_PORT=50247
# Three ClusterIP Services per cluster: the tiers' /24 holds 84 clusters.
export PGPILOT_SERVICE_CIDR=10.96.0.0/16 PGPILOT_SERVICE_IP=10.96.0.1
# The controller-manager and the scheduler at 20 and 50 requests a second made thousands of
# pods wait for their claims to be bound and for a node: measure the operator, not them.
export PGPILOT_CONTROL_PLANE_QPS=${PGPILOT_CONTROL_PLANE_QPS:-300}
# shellcheck source=e2e/scripts/lib.sh
. e2e/scripts/lib.sh

e2e/scripts/build-binaries.sh >/dev/null
log "building pgpilot-manager and pgpilot-bench (release)"
cargo build -q --release -p pgpilot-manager -p pgpilot-bench
# The manager runs from a copy in the state dir, so an interrupted run stops it by its path.
stop() {
  pkill -f "$STATE_DIR/pgpilot-manager" 2>/dev/null || true
  e2e/scripts/cluster-down.sh >/dev/null
}
trap stop EXIT
IFS=, read -ra each <<<"$sizes"
for n in "${each[@]}"; do
  log "size $n: a fresh control plane"
  e2e/scripts/cluster-down.sh >/dev/null
  e2e/scripts/cluster-up.sh --kwok >/dev/null
  # shellcheck source=e2e/scripts/env.sh
  . e2e/scripts/env.sh >/dev/null
  kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
  kubectl wait --for condition=established crd --all >/dev/null
  # The manager's generated rules, every namespace (bound to its user, as the tests do).
  target/release/pgpilot-manager rbac --namespace default --bind user:pgpilot-manager |
    kubectl apply -f - >/dev/null
  cp target/release/pgpilot-manager "$STATE_DIR/pgpilot-manager"
  target/release/pgpilot-bench scale --clusters "$n" --manager "$STATE_DIR/pgpilot-manager" "${extra[@]}"
done
