#!/usr/bin/env bash
# Show the state of the local test cluster. Exit 0 when the control plane
# (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) runs and the
# API server is ready, 1 otherwise. kwok is reported but optional. In node mode
# (cluster-up.sh --node) the node's processes must run too and the node be Ready.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

rc=0
echo "state dir: $STATE_DIR"
shown=("${ALL_COMPONENTS[@]}")
if [[ $NODE_MODE == 1 ]]; then shown+=("${NODE_COMPONENTS[@]}"); fi
for c in "${shown[@]}"; do
  if pid=$(pid_of "$c"); then
    printf '  %-24s running  pid %s\n' "$c" "$pid"
  else
    printf '  %-24s stopped\n' "$c"
    [[ $c == kwok ]] || rc=1
  fi
done

if apiserver_ready; then
  version=$(curl -fsS --max-time 2 --cacert "$PKI_DIR/ca.crt" --cert "$PKI_DIR/admin.crt" \
    --key "$PKI_DIR/admin.key" "$APISERVER_URL/version" | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p')
  echo "apiserver: $APISERVER_URL ready ($version)"
  if pid_of kwok >/dev/null; then
    echo "kwok nodes:"
    kctl get nodes -l type=kwok --no-headers 2>/dev/null | sed 's/^/  /' || true
  fi
  if [[ $NODE_MODE == 1 ]]; then
    ready=$(kctl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)
    echo "node: $NODE_NAME $NODE_IP Ready=${ready:-unknown}, pods $POD_CIDR, DNS $DNS_IP, containerd $CONTAINERD_SOCK"
    [[ $ready == True ]] || rc=1
  fi
else
  echo "apiserver: $APISERVER_URL not ready"
  rc=1
fi

if ((rc == 0)); then
  echo "kubeconfigs: $ADMIN_KUBECONFIG (system:masters)"
  echo "             $STATE_DIR/pgpilot-manager.kubeconfig (user pgpilot-manager, no groups)"
  echo "export KUBECONFIG=$ADMIN_KUBECONFIG"
fi
exit "$rc"
