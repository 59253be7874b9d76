#!/usr/bin/env bash
# `just demo`: a real node, images built from Debian packages, pgpilot's manager, and a
# three-instance PostgreSQL 17 cluster run by Patroni — from nothing to a query through
# the read-write Service. Everything is built or reused from ~/.cache/pgpilot.
# `just demo-down` ends it.
set -euo pipefail
# shellcheck source=demo-env.sh
. "$(dirname "${BASH_SOURCE[0]}")/demo-env.sh"
REPO=$(cd "$E2E_DIR/.." && pwd)
NS=demo

step() { printf '\n\033[1m== %s\033[0m (+%ss)\n' "$*" "$(elapsed)" >&2; }

step "binaries (Kubernetes, etcd, node extras)"
"$E2E_DIR/scripts/build-binaries.sh" --node >/dev/null

step "images from Debian packages (cached by content)"
"$REPO/images/pause/build.sh" >/dev/null
"$REPO/images/postgres/build.sh" 17 >/dev/null
"$REPO/images/pgclient/build.sh" >/dev/null
"$REPO/images/postgres-exporter/build.sh" >/dev/null

step "local Kubernetes with a real node"
"$E2E_DIR/scripts/cluster-up.sh" --node >/dev/null
"$E2E_DIR/scripts/import-images.sh" localhost/pgpilot/postgres:17 localhost/pgpilot/pgclient:17 \
  localhost/pgpilot/postgres-exporter:0.17.1 >/dev/null

step "CRDs, and the manager's least-privilege RBAC"
(cd "$REPO" && cargo build -q -p pgpilot-manager)
MANAGER=$REPO/target/debug/pgpilot-manager
kctl apply --server-side --force-conflicts -f "$REPO/crds/" >/dev/null
kctl create namespace "$NS" --dry-run=client -o yaml | kctl apply -f - >/dev/null
"$MANAGER" rbac --controllers cluster --namespace "$NS" --bind user:pgpilot-manager | kctl apply -f - >/dev/null

step "pgpilot-manager (log: $LOG_DIR/pgpilot-manager.log)"
if ! alive pgpilot-manager; then
  # The demo's own copy of the binary: its path names the state dir, so cleanup finds it.
  cp "$MANAGER" "$STATE_DIR/pgpilot-manager"
  KUBECONFIG=$STATE_DIR/pgpilot-manager.kubeconfig launch pgpilot-manager "$STATE_DIR/pgpilot-manager" \
    --controllers=cluster --namespace="$NS" --leader-elect --leader-election-namespace="$NS" \
    --default-image=17=localhost/pgpilot/postgres:17 --log-format=text \
    --metrics-bind-address=127.0.0.1:18080 --health-probe-bind-address=127.0.0.1:18081
fi

step "PostgresCluster examples/cluster.yaml"
kctl apply -n "$NS" -f "$REPO/examples/cluster.yaml" >/dev/null
deadline=$((SECONDS + 300))
last=""
while :; do
  line=$(kctl get pgc demo -n "$NS" --no-headers 2>/dev/null || true)
  [[ $line == "$last" ]] || { echo "  $line" >&2; last=$line; }
  [[ $(kctl get pgc demo -n "$NS" -o jsonpath='{.status.phase}' 2>/dev/null) == Ready ]] && break
  ((SECONDS < deadline)) || die "not Ready after 300 s; see $LOG_DIR/pgpilot-manager.log and: kubectl -n $NS describe pgc demo"
  sleep 1
done
kctl get pods -n "$NS" -L pgpilot.io/role >&2

step "a query through the read-write Service"
kctl apply -n "$NS" -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: psql}
spec:
  securityContext: {runAsNonRoot: true, runAsUser: 999, seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: psql
    image: localhost/pgpilot/pgclient:17
    imagePullPolicy: Never
    command: [sleep, infinity]
    securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
    env:
    - {name: PGPASSWORD, valueFrom: {secretKeyRef: {name: demo-superuser, key: password}}}
YAML
kctl wait -n "$NS" --for=condition=Ready pod/psql --timeout=120s >/dev/null
kctl exec -n "$NS" psql -- psql -h demo-rw -U postgres -c \
  "select inet_server_addr() as primary_ip, pg_is_in_recovery() as in_recovery, version()"
kctl exec -n "$NS" demo-0 -- patronictl -c /etc/patroni list

cat >&2 <<EOT

pgpilot runs a highly available PostgreSQL 17 cluster (ready in $(elapsed) s since start).
  export KUBECONFIG=$ADMIN_KUBECONFIG PATH=$K8S_BIN:\$PATH
  kubectl -n $NS get pgc,pods -L pgpilot.io/role
  kubectl -n $NS exec -it psql -- psql -h demo-rw -U postgres       # read-write
  kubectl -n $NS exec -it psql -- psql -h demo-ro -U postgres       # read-only replicas
  kubectl -n $NS get secret demo-app-credentials -o jsonpath='{.data.uri}' | base64 -d
  kubectl -n $NS delete pod \$(kubectl -n $NS get pgc demo -o jsonpath='{.status.currentPrimary}')   # failover
Stop everything: just demo-down
EOT
