#!/usr/bin/env bash
# Kills running components of the cluster in $STATE_DIR and brings them back: the chaos
# suite's API server, etcd, kubelet and containerd restarts (a crash, not a clean stop).
#
#   e2e/scripts/restart.sh [--signal TERM|KILL] [--down SECONDS] NAME...
#
# NAME is a component of e2e/scripts/lib.sh (etcd, kube-apiserver, kubelet, containerd, …).
# All NAMEs go down together and stay down --down seconds (default 0). Control-plane
# components come back with the same command line and environment, in the order given (the
# API server answering /readyz again); node components through node-up.sh, which starts what
# is missing in its own order and waits until each is ready (the Node Ready again).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

signal=KILL
down=0
names=()
while (($#)); do
  case $1 in
    --signal) signal=$2; shift 2 ;;
    --down) down=$2; shift 2 ;;
    -*) die "unknown option $1" ;;
    *) names+=("$1"); shift ;;
  esac
done
((${#names[@]} > 0)) || die "usage: $0 [--signal TERM|KILL] [--down SECONDS] NAME..."
lock_cluster

declare -A argv_of env_of pid_for
for name in "${names[@]}"; do
  pid=$(pid_of "$name") || die "$name is not running in $STATE_DIR"
  pid_for[$name]=$pid
  # Node components come back through node-up.sh; the others as they ran (NUL-separated, as
  # the kernel keeps them; read back into arrays below).
  if [[ " ${NODE_COMPONENTS[*]} " != *" $name "* ]]; then
    argv_of[$name]=$(tr '\0' '\n' <"/proc/$pid/cmdline" | base64 -w0)
    env_of[$name]=$(tr '\0' '\n' <"/proc/$pid/environ" | base64 -w0)
  fi
done

for name in "${names[@]}"; do
  log "$name: SIG$signal (pid ${pid_for[$name]})"
  kill "-$signal" "${pid_for[$name]}"
done
for name in "${names[@]}"; do
  for _ in {1..200}; do
    kill -0 "${pid_for[$name]}" 2>/dev/null || break
    sleep 0.1
  done
  ! kill -0 "${pid_for[$name]}" 2>/dev/null || die "$name (pid ${pid_for[$name]}) did not exit"
done
if [[ $down != 0 ]]; then sleep "$down"; fi

node=0
for name in "${names[@]}"; do
  if [[ " ${NODE_COMPONENTS[*]} " == *" $name "* ]]; then
    node=1
    continue
  fi
  mapfile -t argv < <(base64 -d <<<"${argv_of[$name]}")
  mapfile -t envv < <(base64 -d <<<"${env_of[$name]}")
  launch "$name" env -i "${envv[@]}" "${argv[@]}"
  alive "$name" || die "$name did not start again: see $LOG_DIR/$name.log"
done
if [[ " ${names[*]} " == *" kube-apiserver "* ]]; then
  for _ in {1..600}; do
    apiserver_ready && break
    sleep 0.1
  done
  apiserver_ready || die "kube-apiserver not ready 60 s after its restart: see $LOG_DIR/kube-apiserver.log"
fi
if [[ $node == 1 ]]; then "$(dirname "${BASH_SOURCE[0]}")/node-up.sh" >&2; fi
log "restarted: ${names[*]}"
