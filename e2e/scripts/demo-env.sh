# shellcheck shell=bash
# Sourced by demo.sh and demo-down.sh: the demo's own state dir and ports, so it never
# touches the test cluster.
export PGPILOT_CLUSTER_DIR=${PGPILOT_DEMO_DIR:-/var/tmp/pgpilot/demo}
export PGPILOT_ETCD_CLIENT_PORT=${PGPILOT_ETCD_CLIENT_PORT:-33790} PGPILOT_ETCD_PEER_PORT=${PGPILOT_ETCD_PEER_PORT:-33800}
export PGPILOT_APISERVER_PORT=${PGPILOT_APISERVER_PORT:-26443} PGPILOT_KCM_PORT=${PGPILOT_KCM_PORT:-30257}
export PGPILOT_SCHEDULER_PORT=${PGPILOT_SCHEDULER_PORT:-30259} PGPILOT_KWOK_PORT=${PGPILOT_KWOK_PORT:-30247}
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
