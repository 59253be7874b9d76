#!/usr/bin/env bash
# `just demo-down`: stops the demo's manager and its node cluster, leaving nothing behind.
set -euo pipefail
export PGPILOT_CLUSTER_DIR=${PGPILOT_DEMO_DIR:-/var/tmp/pgpilot/demo}
export PGPILOT_ETCD_CLIENT_PORT=${PGPILOT_ETCD_CLIENT_PORT:-33790} PGPILOT_ETCD_PEER_PORT=${PGPILOT_ETCD_PEER_PORT:-33800}
export PGPILOT_APISERVER_PORT=${PGPILOT_APISERVER_PORT:-26443} PGPILOT_KCM_PORT=${PGPILOT_KCM_PORT:-30257}
export PGPILOT_SCHEDULER_PORT=${PGPILOT_SCHEDULER_PORT:-30259} PGPILOT_KWOK_PORT=${PGPILOT_KWOK_PORT:-30247}
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
if pid=$(pid_of pgpilot-manager); then
  kill -TERM "$pid" 2>/dev/null || true
  for _ in {1..50}; do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
fi
"$E2E_DIR/scripts/cluster-down.sh"
