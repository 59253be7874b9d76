# shellcheck shell=bash
# Source after cluster-up.sh: points KUBECONFIG at the local cluster's admin and puts its
# kubectl (the same version as the server) first on PATH.
_pgpilot_state=${PGPILOT_CLUSTER_DIR:-/var/tmp/pgpilot/cluster}
if [[ -f $_pgpilot_state/cluster.env ]]; then
  # shellcheck disable=SC1091
  . "$_pgpilot_state/cluster.env"
  export KUBECONFIG=$PGPILOT_ADMIN_KUBECONFIG
  PATH=$(dirname "$PGPILOT_KUBECTL"):$PATH
  export PATH
else
  echo "no local cluster in $_pgpilot_state: run ./just cluster-up" >&2
fi
unset _pgpilot_state
