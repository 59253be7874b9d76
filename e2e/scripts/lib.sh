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
# Everything listens on 127.0.0.1 only.

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
SERVICE_CIDR=10.0.0.0/24
SERVICE_IP=10.0.0.1 # first IP of SERVICE_CIDR: the `kubernetes` Service

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

# is_ours PID: the process is alive and was started with this state dir.
is_ours() {
  local cmdline
  cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline") || return 1
  [[ $cmdline == *"$STATE_DIR/"* ]]
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
