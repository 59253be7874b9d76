#!/usr/bin/env bash
# Run kwok against the local test cluster and register the fake nodes of
# e2e/manifests/kwok-node.yaml. Idempotent; cluster-up.sh --kwok calls it and
# cluster-down.sh stops kwok with the rest.
#
# kwok manages only nodes annotated kwok.x-k8s.io/node=fake, so a real kubelet
# can join the same cluster later. Its stages (from the kwok module, the defaults
# kwokctl uses) make pods on those nodes Running and Ready at once, move pods
# of Jobs (restartPolicy Never/OnFailure) to Succeeded, and finish deletions.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KWOK_DIR=$CACHE/kwok-$KWOK_VERSION
[[ -x $KWOK_BIN/kwok && -f $KWOK_DIR/etc/kwok.yaml ]] ||
  "$E2E_DIR/scripts/build-binaries.sh" >/dev/null
lock_cluster
apiserver_ready || die "the cluster is not running: start it with e2e/scripts/cluster-up.sh"

if pid=$(pid_of kwok); then
  log "kwok already running (pid $pid)"
else
  launch kwok "$KWOK_BIN/kwok" \
    --kubeconfig="$ADMIN_KUBECONFIG" \
    --config="$KWOK_DIR/etc/kwok.yaml" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-ip=127.0.0.1 \
    --cidr=10.244.0.0/16 \
    --node-lease-duration-seconds=40 \
    --server-address="$HOST:$KWOK_PORT"
  # kwok answers /healthz once its controllers run.
  deadline=$((SECONDS + 30))
  until curl -fsS --max-time 1 -o /dev/null "http://$HOST:$KWOK_PORT/healthz" 2>/dev/null; do
    if ! alive kwok; then
      tail -n 20 "$LOG_DIR/kwok.log" >&2 || true
      die "kwok exited (log: $LOG_DIR/kwok.log)"
    fi
    ((SECONDS < deadline)) || die "kwok not healthy after 30 s (log: $LOG_DIR/kwok.log)"
    sleep 0.2
  done
fi

kctl apply -f "$E2E_DIR/manifests/kwok-node.yaml" >/dev/null
kctl wait --for=condition=Ready node -l type=kwok --timeout=60s >/dev/null
log "kwok nodes ready (+$(elapsed) s): $(kctl get nodes -l type=kwok -o name | tr '\n' ' ')"
