# shellcheck shell=bash
# Sourced by the node tier (`just e2e`, `just bench`): its own state dir and ports, so a
# node cluster for end-to-end tests never shares the control-plane-only cluster of the
# integration tests (whose pods would otherwise land on the real node) or the demo's.
export PGPILOT_CLUSTER_DIR=${PGPILOT_E2E_DIR:-/var/tmp/pgpilot/e2e}
export PGPILOT_ETCD_CLIENT_PORT=${PGPILOT_ETCD_CLIENT_PORT:-43790} PGPILOT_ETCD_PEER_PORT=${PGPILOT_ETCD_PEER_PORT:-43800}
export PGPILOT_APISERVER_PORT=${PGPILOT_APISERVER_PORT:-36443} PGPILOT_KCM_PORT=${PGPILOT_KCM_PORT:-40257}
export PGPILOT_SCHEDULER_PORT=${PGPILOT_SCHEDULER_PORT:-40259} PGPILOT_KWOK_PORT=${PGPILOT_KWOK_PORT:-40247}
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
