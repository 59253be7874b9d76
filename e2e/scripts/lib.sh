# shellcheck shell=bash
# shellcheck disable=SC2034 # variables here are used by the sourcing scripts
# Shared settings and helpers for the local test cluster scripts
# (cluster-up.sh, cluster-down.sh, cluster-status.sh, kwok-up.sh). Sourced, not run.
#
# Interface (all overridable from the environment):
#   PGPILOT_CLUSTER_DIR         state dir            (/var/tmp/pgpilot/cluster)
#   PGPILOT_CACHE               binary cache         (~/.cache/pgpilot)
#   PGPILOT_ETCD_CLIENT_PORT    etcd client port     (23790)
#   PGPILOT_ETCD_PEER_PORT      etcd peer port       (23800)
#   PGPILOT_APISERVER_PORT      kube-apiserver port  (16443)
#   PGPILOT_KCM_PORT            controller-manager secure (health) port (20257)
#   PGPILOT_SCHEDULER_PORT      scheduler secure (health) port          (20259)
#   PGPILOT_KWOK_PORT           kwok health/metrics port                (20247)
#   PGPILOT_SERVICE_CIDR        Service addresses    (10.0.0.0/24); PGPILOT_SERVICE_IP its first (10.0.0.1)
#   PGPILOT_CONTROL_PLANE_QPS   the controller-manager's and scheduler's client QPS (burst twice
#                               that); unset: their defaults (20 and 50)
# Everything listens on 127.0.0.1 only, except in node mode (cluster-up.sh
# --node), where the API server listens on the node address instead; the node's
# settings are at the end of this file.

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../versions.env
. "$E2E_DIR/versions.env"

CACHE=${PGPILOT_CACHE:-$HOME/.cache/pgpilot}
K8S_BIN=$CACHE/k8s-$K8S_VERSION/bin
ETCD_BIN=$CACHE/etcd-$ETCD_VERSION/bin
KWOK_BIN=$CACHE/kwok-$KWOK_VERSION/bin

STATE_DIR=${PGPILOT_CLUSTER_DIR:-/var/tmp/pgpilot/cluster}
PKI_DIR=$STATE_DIR/pki
LOG_DIR=$STATE_DIR/logs
RUN_DIR=$STATE_DIR/run # pidfiles
ETCD_DATA=$STATE_DIR/etcd

HOST=127.0.0.1
ETCD_CLIENT_PORT=${PGPILOT_ETCD_CLIENT_PORT:-23790}
ETCD_PEER_PORT=${PGPILOT_ETCD_PEER_PORT:-23800}
APISERVER_PORT=${PGPILOT_APISERVER_PORT:-16443}
KCM_PORT=${PGPILOT_KCM_PORT:-20257}
SCHEDULER_PORT=${PGPILOT_SCHEDULER_PORT:-20259}
KWOK_PORT=${PGPILOT_KWOK_PORT:-20247}
APISERVER_URL=https://$HOST:$APISERVER_PORT
SERVICE_CIDR=${PGPILOT_SERVICE_CIDR:-10.0.0.0/24}
SERVICE_IP=${PGPILOT_SERVICE_IP:-10.0.0.1} # first IP of SERVICE_CIDR: the `kubernetes` Service
CONTROL_PLANE_QPS=${PGPILOT_CONTROL_PLANE_QPS:-}

# Control-plane components in start order (stopped in reverse); kwok is optional.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler)
ALL_COMPONENTS=("${COMPONENTS[@]}" kwok)

ADMIN_KUBECONFIG=$STATE_DIR/admin.kubeconfig

START_NS=$(date +%s%N)
# elapsed: seconds since the sourcing script started, e.g. "4.27".
elapsed() {
  local ms=$((($(date +%s%N) - START_NS) / 1000000))
  printf '%d.%02d' $((ms / 1000)) $((ms % 1000 / 10))
}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S.%3N)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Ports this cluster listens on (cluster-down checks that none is left open).
all_ports() {
  echo "$ETCD_CLIENT_PORT $ETCD_PEER_PORT $APISERVER_PORT $KCM_PORT $SCHEDULER_PORT $KWOK_PORT"
  if [[ $NODE_MODE == 1 ]]; then
    echo "$KUBELET_PORT $KUBELET_HEALTHZ_PORT $PROXY_METRICS_PORT $PROXY_HEALTHZ_PORT $COREDNS_HEALTH_PORT $COREDNS_READY_PORT"
  fi
}

# reserve_ports PORT...: keep the kernel from handing these ports out as the source
# port of an outgoing connection. Several defaults sit in the ephemeral range
# (32768-60999), and CI once saw etcd fail "bind: address already in use" on its
# peer port with no listener on it. Needs root; the reservation lasts until reboot.
reserve_ports() {
  local file=/proc/sys/net/ipv4/ip_local_reserved_ports current
  [[ -w $file ]] || return 0
  current=$(<"$file")
  local IFS=,
  echo "${current:+$current,}$*" >"$file" 2>/dev/null || log "could not reserve ports $*"
}

# pid_of NAME: print the pid recorded for NAME if that process is still alive and
# still ours (its command line mentions the state dir, guarding against pid reuse).
pid_of() {
  local f=$RUN_DIR/$1.pid pid
  [[ -f $f ]] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  is_ours "$pid" || return 1
  echo "$pid"
}

# alive NAME: the process recorded for NAME still exists. For waits right after a
# launch: while a process execs, its /proc cmdline is briefly empty, so pid_of (which
# also checks the command line against pid reuse) would call it dead.
alive() {
  local pid
  pid=$(cat "$RUN_DIR/$1.pid" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

# is_ours PID: the process is alive and was started with this state dir.
is_ours() {
  local cmdline
  cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline") || return 1
  [[ $cmdline == *"$STATE_DIR/"* ]]
}

# stop_pids PID...: SIGTERM, up to 20 s in total for all of them to exit, then
# SIGKILL for those left (cluster-down.sh, node-down.sh, demo-down.sh). Callers pass
# pids they just found to be ours; each is signalled only while is_ours holds, so
# a pid is no longer waited for, nor killed, once its process is gone or no
# longer ours (exited and the pid reused; a zombie, whose command line is empty).
stop_pids() {
  local pid deadline=$((SECONDS + 20))
  (($# > 0)) || return 0
  for pid in "$@"; do
    if is_ours "$pid"; then kill -TERM "$pid" 2>/dev/null || true; fi
  done
  for pid in "$@"; do
    while kill -0 "$pid" 2>/dev/null && is_ours "$pid"; do
      if ((SECONDS >= deadline)); then
        log "pid $pid did not exit on SIGTERM: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.2
        break
      fi
      sleep 0.1
    done
  done
}

# listeners PORT: pids listening on 127.0.0.1:PORT (or any address), one a line.
listeners() {
  { ss -Hltnp "sport = :$1" 2>/dev/null || true; } | { grep -o 'pid=[0-9]*' || true; } | cut -d= -f2 | sort -u
}

# https_ok PATH: GET $APISERVER_URL$PATH as admin; succeeds on HTTP 2xx.
https_ok() {
  curl -fsS --max-time 2 --cacert "$PKI_DIR/ca.crt" --cert "$PKI_DIR/admin.crt" \
    --key "$PKI_DIR/admin.key" "$APISERVER_URL$1" >/dev/null 2>&1
}

apiserver_ready() { [[ -f $PKI_DIR/admin.crt ]] && https_ok /readyz; }

# launch NAME CMD...: run detached in its own session (survives this script and
# its terminal), log to logs/NAME.log, pid to run/NAME.pid. Without job control
# the background child is no process-group leader, so setsid execs in place and
# $! is the component's own pid.
launch() {
  local name=$1
  shift
  log "starting $name"
  setsid nohup "$@" >>"$LOG_DIR/$name.log" 2>&1 </dev/null 8>&- & # 8: lock_cluster's fd
  echo $! >"$RUN_DIR/$name.pid"
  # Until the child has exec'd, its command line is this script's and pid_of
  # would take the component for dead: wait for the exec (a few ms), then a
  # little more, since the command line reads empty while each exec of
  # setsid -> nohup -> component is in progress.
  local i
  for i in {1..100}; do
    if is_ours $!; then sleep 0.05; return 0; fi
    sleep 0.01
  done
}

# lock_cluster: serialise cluster-up/down/kwok-up on one state dir (parallel
# test jobs may all call cluster-up). The lock file sits beside the state dir,
# which cluster-down deletes; nested calls (up -> down) inherit the lock.
lock_cluster() {
  [[ -z ${PGPILOT_CLUSTER_LOCKED:-} ]] || return 0
  mkdir -p "$(dirname "$STATE_DIR")"
  exec 8>"$STATE_DIR.lock"
  flock -w 300 8 || die "timed out waiting for $STATE_DIR.lock"
  export PGPILOT_CLUSTER_LOCKED=1
}

# kubectl from the pinned build (not whatever kubectl is on PATH).
kctl() { "$K8S_BIN/kubectl" --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }

# --- PKI (cluster-up.sh, node-up.sh) ------------------------------------------------
# ECDSA P-256 throughout: key generation is instant, unlike RSA, and every
# component and client (Go, rustls, OpenSSL) accepts it.
newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# sign NAME SUBJECT EXTENSIONS: key + certificate NAME.{key,crt} signed by the CA.
sign() {
  local name=$1 subj=$2 ext=$3
  newkey "$PKI_DIR/$name.key"
  openssl req -new -key "$PKI_DIR/$name.key" -subj "$subj" -out "$PKI_DIR/$name.csr"
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid" "$ext" >"$PKI_DIR/$name.ext"
  openssl x509 -req -in "$PKI_DIR/$name.csr" -CA "$PKI_DIR/ca.crt" -CAkey "$PKI_DIR/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 3650 -extfile "$PKI_DIR/$name.ext" \
    -out "$PKI_DIR/$name.crt" 2>/dev/null
  rm -f "$PKI_DIR/$name.csr" "$PKI_DIR/$name.ext"
}

# client NAME CN [ORG]: a client certificate; CN is the user name, O the group.
client() { sign "$1" "${3:+/O=$3}/CN=$2" "extendedKeyUsage=clientAuth"; }

# write_kubeconfig FILE CERTNAME: a self-contained kubeconfig (certs embedded)
# for the user of $PKI_DIR/CERTNAME.crt. Rewritten on every start so a port
# change takes effect.
write_kubeconfig() {
  local file=$1 name=$2
  b64() { base64 -w0 <"$1"; }
  cat >"$file.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: pgpilot-e2e
  cluster:
    server: $APISERVER_URL
    certificate-authority-data: $(b64 "$PKI_DIR/ca.crt")
users:
- name: $name
  user:
    client-certificate-data: $(b64 "$PKI_DIR/$name.crt")
    client-key-data: $(b64 "$PKI_DIR/$name.key")
contexts:
- name: $name@pgpilot-e2e
  context:
    cluster: pgpilot-e2e
    user: $name
    namespace: default
current-context: $name@pgpilot-e2e
EOF
  chmod 600 "$file.tmp"
  mv "$file.tmp" "$file"
}

# --- node mode ----------------------------------------------------------------------
# cluster-up.sh --node adds one real node (node-net.sh, node-up.sh; node-down.sh
# undoes both). It changes machine-wide state (a bridge, routes, iptables, sysctls,
# /sys/fs/cgroup/*/kubepods), so only one node cluster runs per machine; the
# bridge's alias names the state dir that owns it. Overridable:
#   PGPILOT_NODE=1              same as cluster-up.sh --node
#   PGPILOT_NODE_NAME           Node object name                          (pgpilot-node)
#   PGPILOT_NODE_BRIDGE         bridge we create; its address is the node address (pgpilot0)
#   PGPILOT_POD_CIDR            pod addresses on that bridge, /24         (10.245.0.0/24)
#   PGPILOT_KUBELET_PORT        kubelet API on the node address           (10250)
#   PGPILOT_KUBELET_HEALTHZ_PORT, PGPILOT_PROXY_METRICS_PORT, PGPILOT_PROXY_HEALTHZ_PORT,
#   PGPILOT_COREDNS_HEALTH_PORT, PGPILOT_COREDNS_READY_PORT, PGPILOT_KUBE_ROUTER_HEALTH_PORT
#                               (127.0.0.1: 10248, 10249, 10256, 20253, 20281; kube-router's
#                               /healthz on every address: 20244)
NODE_DIR=$STATE_DIR/node # containerd root and state, kubelet root, CNI config, configs
NODE_NAME=${PGPILOT_NODE_NAME:-pgpilot-node}
NODE_BRIDGE=${PGPILOT_NODE_BRIDGE:-pgpilot0}
POD_CIDR=${PGPILOT_POD_CIDR:-10.245.0.0/24}
NODE_IP=${POD_CIDR%.*/*}.1 # the bridge's (pods' gateway) address = node address
DNS_IP=10.0.0.10            # the kube-dns Service; the kubelet's clusterDNS
CLUSTER_DOMAIN=cluster.local
KUBELET_PORT=${PGPILOT_KUBELET_PORT:-10250}
KUBELET_HEALTHZ_PORT=${PGPILOT_KUBELET_HEALTHZ_PORT:-10248}
PROXY_METRICS_PORT=${PGPILOT_PROXY_METRICS_PORT:-10249}
PROXY_HEALTHZ_PORT=${PGPILOT_PROXY_HEALTHZ_PORT:-10256}
COREDNS_HEALTH_PORT=${PGPILOT_COREDNS_HEALTH_PORT:-20253}
COREDNS_READY_PORT=${PGPILOT_COREDNS_READY_PORT:-20281}
KUBE_ROUTER_HEALTH_PORT=${PGPILOT_KUBE_ROUTER_HEALTH_PORT:-20244}
CONTAINERD_SOCK=$NODE_DIR/containerd/containerd.sock
COREDNS_BIN=$CACHE/coredns-$COREDNS_VERSION/bin
LOCAL_PATH_BIN=$CACHE/local-path-$LOCAL_PATH_VERSION/bin
CRI_RESET_BIN=$CACHE/cri-reset-$K8S_VERSION/bin
KUBE_ROUTER_BIN=$CACHE/kube-router-$KUBE_ROUTER_VERSION/bin
# Node processes in start order (stopped in reverse by node-down.sh).
NODE_COMPONENTS=(containerd kubelet kube-proxy kube-router coredns local-path-provisioner)
NODE_MARKER=$NODE_DIR/enabled # present while the cluster runs in node mode

# use_node_mode: switch this script's view to node mode (the API server on the
# node address). Called by cluster-up.sh --node, and below when the state dir's
# marker says the cluster runs (or ran) in node mode, so every script agrees on
# the URL.
NODE_MODE=0
use_node_mode() {
  NODE_MODE=1
  APISERVER_URL=https://$NODE_IP:$APISERVER_PORT
}
if [[ -f $NODE_MARKER ]]; then use_node_mode; fi

# mounts_under DIR: mount points at or below DIR, deepest first (mountinfo
# escapes spaces as \040; none of our paths has any).
mounts_under() {
  awk -v d="$1" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r
}

# node_slot_free: no other state dir's node runs on this machine (the bridge,
# if any, is ours). Machine-wide cleanup (iptables, cgroups) needs this too.
node_slot_free() {
  local owner
  owner=$(cat "/sys/class/net/$NODE_BRIDGE/ifalias" 2>/dev/null) || return 0
  [[ $owner == "pgpilot:$STATE_DIR" ]]
}

# ctr against the node's own containerd, in the namespace the CRI uses.
nctr() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }
