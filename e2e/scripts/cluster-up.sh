#!/usr/bin/env bash
# Start a real Kubernetes control plane on 127.0.0.1 for integration tests:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler (and kwok with
# --kwok), built from Go modules by build-binaries.sh.
#
#   e2e/scripts/cluster-up.sh [--kwok] [--node] [--no-build]
#
#   --kwok      also run kwok and register the fake nodes of e2e/manifests/kwok-node.yaml
#               (same as PGPILOT_KWOK=1)
#   --node      also run one real node (containerd, kubelet, kube-proxy, CoreDNS,
#               local-path-provisioner; see node-up.sh); the API server then listens on
#               the node address instead of 127.0.0.1 (same as PGPILOT_NODE=1; root only)
#   --no-build  fail instead of building missing binaries (same as PGPILOT_NO_BUILD=1)
#
# Idempotent: if the cluster is already up and healthy it prints the status and
# exits 0. Progress goes to stderr; stdout is only `export KUBECONFIG=...`, so
# `eval "$(e2e/scripts/cluster-up.sh)"` works. A half-running cluster is
# stopped (keeping its data) and restarted.
# Ports, state dir and cache are set by the environment: see lib.sh.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WANT_KWOK=${PGPILOT_KWOK:-0}
WANT_NODE=${PGPILOT_NODE:-0}
NO_BUILD=${PGPILOT_NO_BUILD:-0}
for arg in "$@"; do
  case $arg in
    --kwok) WANT_KWOK=1 ;;
    --node) WANT_NODE=1 ;;
    --no-build) NO_BUILD=1 ;;
    -h | --help) sed -n '2,19p' "$0"; exit 0 ;;
    *) die "unknown argument: $arg" ;;
  esac
done
SCRIPTS=$E2E_DIR/scripts

# --- binaries -----------------------------------------------------------------
if [[ -x $K8S_BIN/kube && -x $ETCD_BIN/etcd && ($WANT_KWOK == 0 || -x $KWOK_BIN/kwok) &&
  ($WANT_NODE == 0 || (-x $COREDNS_BIN/coredns && -x $LOCAL_PATH_BIN/local-path-provisioner &&
    -x $CRI_RESET_BIN/cri-reset)) ]]; then
  : # cached: skip even the stamp check, to keep a warm start fast
elif [[ $NO_BUILD == 1 ]]; then
  die "binaries missing under $CACHE and --no-build given: run $SCRIPTS/build-binaries.sh$([[ $WANT_NODE == 0 ]] || echo " --node")"
elif [[ $WANT_NODE == 1 ]]; then
  "$SCRIPTS/build-binaries.sh" --node >/dev/null
else
  "$SCRIPTS/build-binaries.sh" >/dev/null
fi

# --- already running? -----------------------------------------------------------
lock_cluster
running=()
for c in "${COMPONENTS[@]}"; do pid_of "$c" >/dev/null && running+=("$c"); done
# A running node cluster also serves requests without --node; a running
# control-plane-only cluster is restarted below when --node is asked for (its
# API server must move to the node address).
if ((${#running[@]} == ${#COMPONENTS[@]})) && apiserver_ready && [[ $WANT_NODE == 0 || $NODE_MODE == 1 ]]; then
  log "cluster already running in $STATE_DIR"
  if [[ $NODE_MODE == 1 ]]; then "$SCRIPTS/node-up.sh"; fi # restarts a crashed node process
  if [[ $WANT_KWOK == 1 ]]; then "$SCRIPTS/kwok-up.sh"; fi
  "$SCRIPTS/cluster-status.sh" >&2
  echo "export KUBECONFIG=$ADMIN_KUBECONFIG" # stdout carries only this line
  exit 0
fi
if ((${#running[@]} > 0)); then
  if ((${#running[@]} == ${#COMPONENTS[@]})) && [[ $NODE_MODE == 0 && $WANT_NODE == 1 ]]; then
    log "control-plane-only cluster running: restarting it in node mode, keeping its data"
  else
    log "partial cluster found (running: ${running[*]}): stopping it, keeping its data"
  fi
  if pid_of kwok >/dev/null; then WANT_KWOK=1; fi # bring kwok back too
  if [[ $NODE_MODE == 1 ]]; then WANT_NODE=1; fi   # and the node
  "$SCRIPTS/cluster-down.sh" --keep-state
elif [[ $NODE_MODE == 1 ]]; then
  # Kept state of a node cluster with nothing running: undo whatever of the
  # node is left (a crash, a kill) before starting again.
  "$SCRIPTS/node-down.sh" --keep-state
fi
rm -f "$NODE_MARKER"
NODE_MODE=0
APISERVER_URL=https://$HOST:$APISERVER_PORT
if [[ $WANT_NODE == 1 ]]; then
  ((EUID == 0)) || die "--node needs root (bridge, iptables, cgroups, mounts)"
  node_slot_free || die "$NODE_BRIDGE belongs to another node cluster ($(cat "/sys/class/net/$NODE_BRIDGE/ifalias")): one per machine"
  use_node_mode
  mkdir -p "$NODE_DIR"
  touch "$NODE_MARKER" # from here on cluster-down.sh also undoes the node
fi

# Refuse to start on ports some other process holds (a clash would otherwise
# show up later as a confusing component crash).
for port in $(all_ports); do
  pids=$(listeners "$port")
  [[ -z $pids ]] || die "port $port is in use (pid $pids); set PGPILOT_*_PORT (see e2e/scripts/lib.sh)"
done
# shellcheck disable=SC2046 # one word per port
reserve_ports $(all_ports)

mkdir -p "$PKI_DIR" "$LOG_DIR" "$RUN_DIR" "$ETCD_DATA"
rm -f "$RUN_DIR"/*.pid # stale ones would make wait_for report a crash
chmod 700 "$STATE_DIR" "$PKI_DIR" "$ETCD_DATA"

# Node mode: the bridge that carries the node address must exist before the
# API server binds to that address.
if [[ $NODE_MODE == 1 ]]; then "$SCRIPTS/node-net.sh" up; fi

# --- PKI --------------------------------------------------------------------------
# newkey, sign, client: see lib.sh.
gen_pki() {
  local t
  t=$(elapsed)
  # CA: self-signed from a CSR so no openssl.cnf defaults leak in.
  newkey "$PKI_DIR/ca.key"
  openssl req -new -key "$PKI_DIR/ca.key" -subj "/CN=pgpilot-e2e-ca" -out "$PKI_DIR/ca.csr"
  printf '%s\n' "basicConstraints=critical,CA:TRUE" "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    "subjectKeyIdentifier=hash" >"$PKI_DIR/ca.ext"
  openssl x509 -req -in "$PKI_DIR/ca.csr" -signkey "$PKI_DIR/ca.key" -days 3650 \
    -set_serial "0x$(openssl rand -hex 16)" -extfile "$PKI_DIR/ca.ext" -out "$PKI_DIR/ca.crt" 2>/dev/null
  rm -f "$PKI_DIR/ca.csr" "$PKI_DIR/ca.ext"

  # API server serving certificate: every name clients (and, later, pods) use.
  sign apiserver "/CN=kube-apiserver" "extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:$SERVICE_IP,IP:::1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"

  client admin pgpilot-admin system:masters
  client kube-controller-manager system:kube-controller-manager
  client kube-scheduler system:kube-scheduler
  client apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  # The operator's identity: a bare user with no groups, so tests see exactly
  # the RBAC they bind to user "pgpilot-manager".
  client pgpilot-manager pgpilot-manager

  # Service-account token signing key pair.
  newkey "$PKI_DIR/sa.key"
  openssl pkey -in "$PKI_DIR/sa.key" -pubout -out "$PKI_DIR/sa.pub"
  chmod 600 "$PKI_DIR"/*.key
  log "generated PKI (+$(elapsed) s, started at +$t s)"
}

if [[ ! -f $PKI_DIR/pgpilot-manager.crt || ! -f $PKI_DIR/sa.pub ]]; then
  rm -f "$PKI_DIR"/*
  gen_pki
fi
# Node mode: pods reach the API server at the node address (the endpoint of the
# `kubernetes` Service), so the serving certificate must name it too. Only
# this certificate changes; the CA and all clients stay valid.
if [[ $NODE_MODE == 1 ]] && ! openssl x509 -in "$PKI_DIR/apiserver.crt" -noout -ext subjectAltName 2>/dev/null |
  grep -Eq "IP Address:$NODE_IP(,|\$)"; then
  sign apiserver "/CN=kube-apiserver" "extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:$SERVICE_IP,IP:$NODE_IP,IP:::1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  chmod 600 "$PKI_DIR/apiserver.key"
  log "API server certificate now also names $NODE_IP"
fi

write_kubeconfig "$ADMIN_KUBECONFIG" admin
write_kubeconfig "$STATE_DIR/pgpilot-manager.kubeconfig" pgpilot-manager
write_kubeconfig "$STATE_DIR/kube-controller-manager.kubeconfig" kube-controller-manager
write_kubeconfig "$STATE_DIR/kube-scheduler.kubeconfig" kube-scheduler

# For test harnesses: one file to source instead of re-deriving paths and ports.
cat >"$STATE_DIR/cluster.env" <<EOF
PGPILOT_APISERVER_URL=$APISERVER_URL
PGPILOT_ADMIN_KUBECONFIG=$ADMIN_KUBECONFIG
PGPILOT_MANAGER_KUBECONFIG=$STATE_DIR/pgpilot-manager.kubeconfig
PGPILOT_CA_CERT=$PKI_DIR/ca.crt
PGPILOT_KUBECTL=$K8S_BIN/kubectl
PGPILOT_K8S_VERSION=$K8S_VERSION
EOF
if [[ $NODE_MODE == 1 ]]; then
  cat >>"$STATE_DIR/cluster.env" <<EOF
PGPILOT_NODE=1
PGPILOT_NODE_NAME=$NODE_NAME
PGPILOT_NODE_IP=$NODE_IP
PGPILOT_POD_CIDR=$POD_CIDR
PGPILOT_SERVICE_CIDR=$SERVICE_CIDR
PGPILOT_DNS_IP=$DNS_IP
PGPILOT_CLUSTER_DOMAIN=$CLUSTER_DOMAIN
PGPILOT_CONTAINERD_SOCKET=$CONTAINERD_SOCK
PGPILOT_STORAGE_CLASS=local-path
EOF
fi

# The control plane's own client limits (the scale bench raises them: at their defaults the
# controller-manager binds a few thousand volume claims, and creates their pods, at 20 writes
# a second, and that, not the operator, set how fast clusters became ready).
KCM_QPS=() SCHEDULER_QPS=
if [[ -n $CONTROL_PLANE_QPS ]]; then
  KCM_QPS=(--kube-api-qps="$CONTROL_PLANE_QPS" --kube-api-burst="$((CONTROL_PLANE_QPS * 2))")
  SCHEDULER_QPS=$'\n'"  qps: $CONTROL_PLANE_QPS"$'\n'"  burst: $((CONTROL_PLANE_QPS * 2))"
fi
cat >"$STATE_DIR/kube-scheduler.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: $STATE_DIR/kube-scheduler.kubeconfig$SCHEDULER_QPS
leaderElection:
  leaderElect: false
EOF

# --- processes ----------------------------------------------------------------------
# wait_for WHAT TIMEOUT CMD...: poll CMD every 0.2 s; on timeout show the logs.
wait_for() {
  local what=$1 timeout=$2 deadline
  shift 2
  deadline=$((SECONDS + timeout))
  until "$@" 2>/dev/null; do
    for c in "${COMPONENTS[@]}"; do
      if [[ -f $RUN_DIR/$c.pid ]] && ! alive "$c"; then
        tail -n 30 "$LOG_DIR/$c.log" >&2 || true
        die "$c exited while waiting for $what (log: $LOG_DIR/$c.log)"
      fi
    done
    if ((SECONDS >= deadline)); then
      for c in "${COMPONENTS[@]}"; do
        echo "--- $c (last 10 lines)" >&2
        tail -n 10 "$LOG_DIR/$c.log" >&2 || true
      done
      die "timed out after ${timeout}s waiting for $what"
    fi
    sleep 0.2
  done
  log "$what: ok (+$(elapsed) s)"
}

launch etcd "$ETCD_BIN/etcd" \
  --name=pgpilot-e2e \
  --data-dir="$ETCD_DATA" \
  --listen-client-urls="http://$HOST:$ETCD_CLIENT_PORT" \
  --advertise-client-urls="http://$HOST:$ETCD_CLIENT_PORT" \
  --listen-peer-urls="http://$HOST:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls="http://$HOST:$ETCD_PEER_PORT" \
  --initial-cluster="pgpilot-e2e=http://$HOST:$ETCD_PEER_PORT" \
  --unsafe-no-fsync=true \
  --log-level=warn
wait_for "etcd health" 30 curl -fsS --max-time 1 -o /dev/null "http://$HOST:$ETCD_CLIENT_PORT/health"

# The `kubernetes` Service gets no endpoints (--endpoint-reconciler-type=none):
# Endpoints may not hold a loopback address, and the API server listens on
# loopback only. Nothing in this cluster runs in a pod that would need it.
# In node mode it listens on the node address instead, which the lease
# reconciler publishes as the Service's endpoint, so pods reach it; it calls
# kubelets at their InternalIP only (never resolving a node's host name) and
# checks their serving certificates against the cluster CA.
# Admission: the 1.35 defaults already include ValidatingAdmissionPolicy,
# MutatingAdmissionWebhook and ValidatingAdmissionWebhook; NodeRestriction is
# added for the Node authorizer (kubelets later).
api_mode_args=(--bind-address="$HOST" --advertise-address="$HOST" --endpoint-reconciler-type=none)
if [[ $NODE_MODE == 1 ]]; then
  api_mode_args=(--bind-address="$NODE_IP" --advertise-address="$NODE_IP" --endpoint-reconciler-type=lease
    --kubelet-preferred-address-types=InternalIP --kubelet-certificate-authority="$PKI_DIR/ca.crt")
fi
launch kube-apiserver "$K8S_BIN/kube-apiserver" \
  --etcd-servers="http://$HOST:$ETCD_CLIENT_PORT" \
  "${api_mode_args[@]}" \
  --secure-port="$APISERVER_PORT" \
  --tls-cert-file="$PKI_DIR/apiserver.crt" \
  --tls-private-key-file="$PKI_DIR/apiserver.key" \
  --client-ca-file="$PKI_DIR/ca.crt" \
  --kubelet-client-certificate="$PKI_DIR/apiserver-kubelet-client.crt" \
  --kubelet-client-key="$PKI_DIR/apiserver-kubelet-client.key" \
  --authorization-mode=Node,RBAC \
  --enable-admission-plugins=NodeRestriction \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$PKI_DIR/sa.pub" \
  --service-account-signing-key-file="$PKI_DIR/sa.key" \
  --allow-privileged=true \
  --enable-priority-and-fairness=false \
  --profiling=false \
  --v=0

# --pvclaimbinder-sync-period=2s: there is no volume provisioner, so tests
# pre-create PersistentVolumes; a claim then binds within ~2 s instead of 15 s.
# Controller-manager and scheduler only once the API server is ready: earlier,
# RBAC's bootstrap roles are missing and they fail on "forbidden". Their own
# health ports take client certs from our CA directly
# (--authentication-skip-lookup): there is no front proxy, so the
# extension-apiserver-authentication ConfigMap has no request-header CA and
# looking it up only logs errors in a loop.
wait_for "kube-apiserver /readyz" 90 apiserver_ready

launch kube-controller-manager "$K8S_BIN/kube-controller-manager" \
  --kubeconfig="$STATE_DIR/kube-controller-manager.kubeconfig" \
  --authentication-kubeconfig="$STATE_DIR/kube-controller-manager.kubeconfig" \
  --authorization-kubeconfig="$STATE_DIR/kube-controller-manager.kubeconfig" \
  --authentication-skip-lookup=true \
  --client-ca-file="$PKI_DIR/ca.crt" \
  --bind-address="$HOST" \
  --secure-port="$KCM_PORT" \
  --use-service-account-credentials=true \
  --root-ca-file="$PKI_DIR/ca.crt" \
  --cluster-signing-cert-file="$PKI_DIR/ca.crt" \
  --cluster-signing-key-file="$PKI_DIR/ca.key" \
  --service-account-private-key-file="$PKI_DIR/sa.key" \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --controllers='*' \
  --pvclaimbinder-sync-period=2s \
  "${KCM_QPS[@]}" \
  --leader-elect=false \
  --profiling=false \
  --v=0

launch kube-scheduler "$K8S_BIN/kube-scheduler" \
  --config="$STATE_DIR/kube-scheduler.yaml" \
  --authentication-kubeconfig="$STATE_DIR/kube-scheduler.kubeconfig" \
  --authorization-kubeconfig="$STATE_DIR/kube-scheduler.kubeconfig" \
  --authentication-skip-lookup=true \
  --client-ca-file="$PKI_DIR/ca.crt" \
  --bind-address="$HOST" \
  --secure-port="$SCHEDULER_PORT" \
  --v=0

# The `default` ServiceAccount appears only once the controller-manager's
# serviceaccount controller runs with working credentials and token signing.
default_sa() { https_ok /api/v1/namespaces/default/serviceaccounts/default; }
wait_for "default ServiceAccount" 90 default_sa

kcm_ok() { curl -fsSk --max-time 1 -o /dev/null "https://$HOST:$KCM_PORT/healthz"; }
wait_for "kube-controller-manager /healthz" 30 kcm_ok
scheduler_ok() { curl -fsSk --max-time 1 -o /dev/null "https://$HOST:$SCHEDULER_PORT/readyz"; }
wait_for "kube-scheduler /readyz" 30 scheduler_ok

if [[ $NODE_MODE == 1 ]]; then "$SCRIPTS/node-up.sh"; fi
if [[ $WANT_KWOK == 1 ]]; then "$SCRIPTS/kwok-up.sh"; fi

log "cluster up in $(elapsed) s; state in $STATE_DIR"
echo "export KUBECONFIG=$ADMIN_KUBECONFIG"
