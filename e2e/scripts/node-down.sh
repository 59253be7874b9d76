#!/usr/bin/env bash
# Undo node-up.sh and node-net.sh: cluster-down.sh runs this first when the
# cluster ran in node mode. Idempotent; safe after a crash or a half start.
#
#   e2e/scripts/node-down.sh [--keep-state] [--keep-net]
#
#   1. stop local-path-provisioner, CoreDNS, kube-router, kube-proxy, kubelet
#   2. every pod through the CRI (cri-reset: containers get SIGTERM, then each
#      sandbox is stopped and removed, which runs CNI DEL: veth, IP, hostPort
#      rules, network namespace), then stop our containerd and its shims
#   3. unmount everything under $STATE_DIR/node (kubelet volumes, its rshared
#      root bind mount, overlay rootfs, sandbox shm)
#   4. remove the kubelet's cgroups (/sys/fs/cgroup/*/kubepods)
#   5. iptables: kube-router --cleanup-config (its chains and ipsets), kube-proxy --cleanup, then the kubelet's KUBE-* canary chains
#      and empty CNI portmap chains (IPv4 and IPv6)
#   6. the kubelet's footprint outside the state dir (/var/log/containers links,
#      /var/lib/kubelet/device-plugins, /var/lib/cni/results) where we created it
#   7. node-net.sh down: bridge, routes, rule; sysctls restored
# --keep-state (PGPILOT_KEEP_STATE=1) keeps $STATE_DIR/node: images, volumes
# and configuration stay for the next cluster-up.sh --node. --keep-net skips
# step 7 and keeps the state: cluster-down.sh runs node-net.sh down itself once
# the API server, which listens on the bridge, has stopped. Exits non-zero if
# something could not be undone.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KEEP=${PGPILOT_KEEP_STATE:-0}
KEEP_NET=0
GRACE=${PGPILOT_POD_GRACE:-5s} # per container, before SIGKILL
for arg in "$@"; do
  case $arg in
    --keep-state) KEEP=1 ;;
    --keep-net) KEEP_NET=1 KEEP=1 ;;
    -h | --help) sed -n '2,26p' "$0"; exit 0 ;;
    *) die "unknown argument: $arg" ;;
  esac
done
((EUID == 0)) || die "node-down.sh needs root"
lock_cluster
# Steps 3-7 touch machine-wide state; another state dir's running node owns it.
if ! node_slot_free; then
  log "WARNING: $NODE_BRIDGE belongs to $(cat "/sys/class/net/$NODE_BRIDGE/ifalias"): only this state dir's processes are stopped"
  SHARED_OK=0
else
  SHARED_OK=1
fi
CTRD_DIR=$NODE_DIR/containerd
rc=0

# ours_named COMM...: pids of processes started with this state dir whose
# program name is one of COMM (pidfile or not).
ours_named() {
  local d pid comm n
  for d in /proc/[0-9]*; do
    pid=${d#/proc/}
    comm=$(cat "$d/comm" 2>/dev/null) || continue
    for n in "$@"; do
      if [[ $comm == "$n" ]] && is_ours "$pid"; then echo "$pid"; fi
    done
  done
}

stop_component() { # NAME COMM
  local pids
  mapfile -t pids < <(ours_named "$2")
  ((${#pids[@]})) || return 0
  log "stopping $1 (pid ${pids[*]})"
  stop_pids "${pids[@]}" # lib.sh: SIGTERM, 20 s, SIGKILL
  rm -f "$RUN_DIR/$1.pid"
}

# --- 1. node services ---------------------------------------------------------------
# comm is cut to 15 characters.
stop_component local-path-provisioner local-path-prov
stop_component coredns coredns
stop_component kube-router kube-router
stop_component kube-proxy kube-proxy
stop_component kubelet kubelet

# --- 2. pods, containerd ------------------------------------------------------------
if [[ -f $CTRD_DIR/config.toml ]]; then
  if ! pid_of containerd >/dev/null; then
    # Pods may still run (shims outlive containerd): tearing them down through
    # the CRI needs containerd, so start it for the purpose.
    log "starting containerd to tear down pods"
    launch containerd env HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY= \
      containerd --config "$CTRD_DIR/config.toml"
    for _ in $(seq 100); do nctr version >/dev/null 2>&1 && break; sleep 0.2; done
  fi
  if nctr version >/dev/null 2>&1; then
    if [[ -x $CRI_RESET_BIN/cri-reset ]]; then
      if ! "$CRI_RESET_BIN/cri-reset" -endpoint "unix://$CONTAINERD_SOCK" -grace "$GRACE" >&2; then
        log "ERROR: cri-reset failed"
        rc=1
      fi
    else
      log "ERROR: $CRI_RESET_BIN/cri-reset missing: pods not torn down (build-binaries.sh --node)"
      rc=1
    fi
  else
    log "ERROR: containerd does not answer on $CONTAINERD_SOCK: pods not torn down"
    rc=1
  fi
fi
stop_component containerd containerd
# Shims whose tasks were deleted exit by themselves; one still here holds a
# container cri-reset could not remove: kill its children, then it.
mapfile -t shims < <(ours_named containerd-shim containerd-shim-runc-v2)
for shim in "${shims[@]}"; do
  log "WARNING: leftover shim $shim: killing it and its container processes"
  pkill -KILL -P "$shim" 2>/dev/null || true
  kill -KILL "$shim" 2>/dev/null || true
  rc=1
done

# --- 3. mounts ----------------------------------------------------------------------
umount_under() {
  local m mounts
  mapfile -t mounts < <(mounts_under "$1")
  for m in "${mounts[@]}"; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || { log "ERROR: cannot unmount $m"; rc=1; }
  done
  ((${#mounts[@]} == 0)) || log "unmounted ${#mounts[@]} mount(s) under $1"
}
umount_under "$NODE_DIR"

# --- 4. cgroups, 5. iptables (machine-wide: only when the node slot is ours) -------
shared_cleanup() {
  # 4. The kubelet's QoS tree (cgroupfs driver, cgroupsPerQOS): empty once the pods
  # are gone; rmdir only, so a cgroup that still has processes stays and is reported.
  for root in /sys/fs/cgroup/*/kubepods; do
    [[ -d $root ]] || continue
    find "$root" -depth -type d -exec rmdir {} + 2>/dev/null || true
    if [[ -d $root ]]; then log "ERROR: $root still has processes"; rc=1; fi
  done

  # 5. nftables and iptables: kube-router's and kube-proxy's own cleanups first.
  if [[ -x $KUBE_ROUTER_BIN/kube-router ]]; then
    "$KUBE_ROUTER_BIN/kube-router" --cleanup-config >>"$LOG_DIR/kube-router.log" 2>&1 || true
  fi
  if [[ -x $K8S_BIN/kube-proxy ]]; then
    "$K8S_BIN/kube-proxy" --cleanup --v=0 >>"$LOG_DIR/kube-proxy.log" 2>&1 || true
  fi
  if command -v nft >/dev/null; then
    for family in ip ip6; do nft delete table "$family" kube-proxy 2>/dev/null || true; done
  fi
  # clean_chains CMD: drop the rules that jump to KUBE-* chains (the kubelet's
  # canaries, anything kube-proxy left) or to the CNI portmap chains, then those
  # chains (the portmap ones only when empty: another CNI user may share them).
  clean_chains() {
    local cmd=$1 t line chain
    command -v "$cmd" >/dev/null || return 0
    for t in filter nat mangle raw; do
      "$cmd" -t "$t" -S >/dev/null 2>&1 || continue
      while IFS= read -r line; do
        # `-S` prints rules in `-A CHAIN ...` form with shell quoting.
        eval "\"\$cmd\" -t \"\$t\" -D ${line#-A }" 2>/dev/null || true
      done < <("$cmd" -t "$t" -S | grep -E '^-A .* -j (KUBE-[A-Z0-9-]+)( |$)' | grep -v '^-A KUBE-' || true)
      while read -r chain; do
        "$cmd" -t "$t" -F "$chain" 2>/dev/null || true
      done < <("$cmd" -t "$t" -S | awk '$1 == "-N" && $2 ~ /^KUBE-/ { print $2 }')
      while read -r chain; do
        "$cmd" -t "$t" -X "$chain" 2>/dev/null || true
      done < <("$cmd" -t "$t" -S | awk '$1 == "-N" && $2 ~ /^KUBE-/ { print $2 }')
      # Portmap's top chains, once no pod's CNI-DN-* chain hangs off them.
      if ! "$cmd" -t "$t" -S | grep -q -- '-j CNI-DN-'; then
        while IFS= read -r line; do
          eval "\"\$cmd\" -t \"\$t\" -D ${line#-A }" 2>/dev/null || true
        done < <("$cmd" -t "$t" -S | grep -E '^-A [A-Z]+ .* -j CNI-HOSTPORT-' | grep -v '^-A CNI-' || true)
        while read -r chain; do
          if "$cmd" -t "$t" -F "$chain" 2>/dev/null; then "$cmd" -t "$t" -X "$chain" 2>/dev/null || true; fi
        done < <("$cmd" -t "$t" -S | awk '$1 == "-N" && $2 ~ /^CNI-HOSTPORT-/ { print $2 }')
      fi
    done
  }
  clean_chains iptables
  clean_chains ip6tables
  left=$({ iptables-save 2>/dev/null; ip6tables-save 2>/dev/null; } | grep -c -E 'KUBE-|CNI-' || true)
  if ((left > 0)); then log "WARNING: $left iptables line(s) with KUBE-/CNI- remain"; fi
}
if [[ $SHARED_OK == 1 ]]; then shared_cleanup; fi

# --- 6. outside the state dir -------------------------------------------------------
# The kubelet links every container log into /var/log/containers and keeps its
# device-plugin socket in /var/lib/kubelet/device-plugins (fixed paths); libcni
# caches results in /var/lib/cni/results (emptied by CNI DEL).
if [[ -d /var/log/containers ]]; then
  find /var/log/containers -maxdepth 1 -type l -lname "$NODE_DIR/*" -delete
fi
# Our network's name; the created paths only when no other node uses them.
if [[ $SHARED_OK == 1 ]]; then rm -f /var/lib/cni/results/pgpilot-*; fi
if [[ $SHARED_OK == 1 && -f $NODE_DIR/created.paths ]]; then
  while read -r p; do
    [[ -d $p ]] || continue
    if [[ $p == /var/lib/kubelet ]]; then
      rm -f "$p/device-plugins/kubelet.sock" "$p/device-plugins/kubelet_internal_checkpoint"
    fi
    find "$p" -depth -type d -empty -delete
    if [[ -e $p ]]; then log "WARNING: $p (created by the node) is not empty: left in place"; fi
  done <"$NODE_DIR/created.paths"
  if [[ $KEEP == 1 ]]; then rm -f "$NODE_DIR/created.paths"; fi # gone now: re-recorded next start
fi

# --- 7. network ---------------------------------------------------------------------
if [[ $KEEP_NET == 0 && $SHARED_OK == 1 ]]; then "$E2E_DIR/scripts/node-net.sh" down; fi

rm -f "$RUN_DIR"/{containerd,kubelet,kube-proxy,coredns,local-path-provisioner}.pid
if [[ $KEEP_NET == 1 ]]; then
  log "node stopped; network left for node-net.sh down"
elif [[ $KEEP == 1 ]]; then
  log "node stopped; state kept in $NODE_DIR"
elif [[ -n $(mounts_under "$NODE_DIR") ]]; then
  log "ERROR: mounts remain under $NODE_DIR: not removing it"
  rc=1
else
  rm -rf --one-file-system "$NODE_DIR"
  log "node stopped; removed $NODE_DIR"
fi
exit "$rc"
