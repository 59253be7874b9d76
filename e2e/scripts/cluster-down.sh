#!/usr/bin/env bash
# Stop the local test cluster started by cluster-up.sh (kwok included) and
# remove its state dir.
#
#   e2e/scripts/cluster-down.sh [--keep-state]
#
#   --keep-state  keep $PGPILOT_CLUSTER_DIR (etcd data, PKI, logs) so the next
#                 cluster-up.sh resumes the same cluster (same as PGPILOT_KEEP_STATE=1)
#
# Stops processes by their pidfiles, then looks for any leftover process that
# was started with this state dir, then checks that none of the cluster's ports
# is still listening. Exits non-zero if something of ours could not be stopped.
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

# stop PID...: SIGTERM, up to 20 s for a clean exit, then SIGKILL.
stop() {
  local pid deadline=$((SECONDS + 20))
  (($# > 0)) || return 0
  kill -TERM "$@" 2>/dev/null || true
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

# Everything that talks to the API server first, then the API server, then
# etcd last so the API server can shut down cleanly.
pids=()
for c in kwok kube-scheduler kube-controller-manager kube-apiserver; do
  if pid=$(pid_of "$c"); then log "stopping $c (pid $pid)"; pids+=("$pid"); fi
done
stop "${pids[@]}"
if pid=$(pid_of etcd); then log "stopping etcd (pid $pid)"; stop "$pid"; fi
rm -f "$RUN_DIR"/*.pid

# Leftovers: any process whose command line names this state dir (a lost
# pidfile, a crashed script). Matched by state-dir path, not by program name,
# so another cluster or an unrelated kubectl is never touched.
leftovers=()
for d in /proc/[0-9]*; do
  pid=${d#/proc/}
  [[ $pid != "$$" && $pid != "$BASHPID" ]] || continue
  if is_ours "$pid"; then
    comm=$(cat "$d/comm" 2>/dev/null) || continue
    case $comm in
      etcd | kube-apiserver | kube-controller | kube-scheduler | kwok | kube)
        log "leftover $comm (pid $pid): stopping"
        leftovers+=("$pid") ;;
    esac
  fi
done
stop "${leftovers[@]}"

# Verify the ports are free; kill ours if still there, report strangers.
rc=0
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
  if [[ -d $STATE_DIR/pki || -d $STATE_DIR/run || -d $STATE_DIR/logs ]] && [[ $STATE_DIR != / ]]; then
    rm -rf "$STATE_DIR"
    log "stopped; removed $STATE_DIR"
  else
    log "WARNING: $STATE_DIR does not look like a cluster state dir; not removing it"
  fi
else
  log "stopped (no state dir)"
fi
exit "$rc"
