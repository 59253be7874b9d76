#!/usr/bin/env bash
# Stop the local test cluster started by cluster-up.sh (kwok and the node of
# --node included) and remove its state dir.
#
#   e2e/scripts/cluster-down.sh [--keep-state]
#
#   --keep-state  keep $PGPILOT_CLUSTER_DIR (etcd data, PKI, logs) so the next
#                 cluster-up.sh resumes the same cluster (same as PGPILOT_KEEP_STATE=1)
#
# Stops processes by their pidfiles, then looks for any leftover process that
# was started with this state dir, then checks that none of the cluster's ports
# is still listening. A node cluster's node goes first (node-down.sh: pods,
# containerd, mounts, cgroups, iptables, bridge). Exits non-zero if something
# of ours could not be stopped.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KEEP=${PGPILOT_KEEP_STATE:-0}
for arg in "$@"; do
  case $arg in
    --keep-state) KEEP=1 ;;
    -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
    *) die "unknown argument: $arg" ;;
  esac
done
lock_cluster

# The node first, while the control plane still runs; its network last, after
# the API server (which listens on the bridge, and talks to itself there until
# it exits). Also when only traces are left (a crashed start): a node pidfile,
# or the bridge this state dir owns.
rc=0
node_traces() {
  local c
  [[ -f $NODE_MARKER ]] && return 0
  [[ $(cat "/sys/class/net/$NODE_BRIDGE/ifalias" 2>/dev/null) == "pgpilot:$STATE_DIR" ]] && return 0
  for c in "${NODE_COMPONENTS[@]}"; do [[ -f $RUN_DIR/$c.pid ]] && return 0; done
  return 1
}
had_node=0
if node_traces; then
  had_node=1
  "$E2E_DIR/scripts/node-down.sh" --keep-net || rc=1
fi

# Our processes: those in the pidfiles, plus any process whose command line
# names this state dir (a lost pidfile, a crashed script). Matched by state-dir
# path, never by program name alone, so another cluster or an unrelated kubectl
# is never touched. found[pid] = program name (comm, cut to 15 characters).
declare -A found=()
for c in "${ALL_COMPONENTS[@]}"; do
  if pid=$(pid_of "$c"); then found[$pid]=$(cat "/proc/$pid/comm" 2>/dev/null || echo "$c"); fi
done
for d in /proc/[0-9]*; do
  pid=${d#/proc/}
  [[ -z ${found[$pid]:-} && $pid != "$$" ]] || continue
  is_ours "$pid" || continue
  comm=$(cat "$d/comm" 2>/dev/null) || continue
  case $comm in
    etcd | kube-apiserver | kube-controller | kube-scheduler | kwok | kubelet | kube-proxy | kube)
      log "found $comm (pid $pid) without a pidfile"
      found[$pid]=$comm ;;
  esac
done

# Stop in tiers: API clients first, then the API server (so it can finish its
# requests and shut down cleanly), then etcd last.
tier() { # NAME...: pids of found processes with one of these names
  local pid n
  for pid in "${!found[@]}"; do
    for n in "$@"; do [[ ${found[$pid]} == "$n" ]] && echo "$pid"; done
  done
}
for names in "kwok kube-scheduler kube-controller kubelet kube-proxy kube" "kube-apiserver" "etcd"; do
  # shellcheck disable=SC2086 # word splitting of the name list is intended
  mapfile -t pids < <(tier $names)
  for pid in "${pids[@]}"; do log "stopping ${found[$pid]} (pid $pid)"; done
  stop_pids "${pids[@]}" # lib.sh
done
rm -f "$RUN_DIR"/*.pid
if [[ $had_node == 1 ]]; then "$E2E_DIR/scripts/node-net.sh" down || rc=1; fi

# Verify the ports are free; kill ours if still there, report strangers.
for port in $(all_ports); do
  for pid in $(listeners "$port"); do
    if is_ours "$pid"; then
      log "pid $pid still listens on port $port: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
      if [[ -n $(listeners "$port") ]]; then log "ERROR: port $port still in use"; rc=1; fi
    else
      log "WARNING: port $port is held by pid $pid, which this cluster did not start"
    fi
  done
done

if [[ $KEEP == 1 ]]; then
  log "stopped; state kept in $STATE_DIR"
elif [[ -d $STATE_DIR ]]; then
  # Only delete something that looks like our state dir.
  if [[ -n $(mounts_under "$STATE_DIR") ]]; then
    # Never recurse into a mount (a node's volume could be anything).
    log "ERROR: mounts remain under $STATE_DIR: not removing it"
    rc=1
  elif [[ -d $STATE_DIR/pki || -d $STATE_DIR/run || -d $STATE_DIR/logs ]] && [[ $STATE_DIR != / ]]; then
    rm -rf --one-file-system "$STATE_DIR"
    log "stopped; removed $STATE_DIR"
  else
    log "WARNING: $STATE_DIR does not look like a cluster state dir; not removing it"
  fi
else
  log "stopped (no state dir)"
fi
exit "$rc"
