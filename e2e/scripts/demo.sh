#!/usr/bin/env bash
# `just demo`: a real node, images built from Debian packages, pgpilot's operator installed
# in the cluster by its Helm chart, and a three-instance PostgreSQL 17 cluster run by Patroni — from nothing to a query through
# the read-write Service, watched by a real Prometheus (the exporters, the manager, the
# chart's alerts) and an OpenTelemetry Collector receiving the manager's traces. Everything
# is built or reused from ~/.cache/pgpilot.
# `just demo-down` ends it.
set -euo pipefail
# shellcheck source=demo-env.sh
. "$(dirname "${BASH_SOURCE[0]}")/demo-env.sh"
REPO=$(cd "$E2E_DIR/.." && pwd)
NS=demo
OPERATOR_NS=pgpilot-system

step() { printf '\n\033[1m== %s\033[0m (+%ss)\n' "$*" "$(elapsed)" >&2; }

step "binaries (Kubernetes, etcd, node extras)"
"$E2E_DIR/scripts/build-binaries.sh" --node >/dev/null

step "images from Debian packages (cached by content)"
"$REPO/images/pause/build.sh" >/dev/null
"$REPO/images/postgres/build.sh" 17 >/dev/null
"$REPO/images/pgclient/build.sh" >/dev/null
"$REPO/images/postgres-exporter/build.sh" >/dev/null
"$REPO/images/prometheus/build.sh" >/dev/null
"$REPO/images/otelcol/build.sh" >/dev/null
step "the operator image, from this checkout (a static pgpilot-manager)"
"$REPO/images/operator/from-source.sh" demo >/dev/null

step "local Kubernetes with a real node"
"$E2E_DIR/scripts/cluster-up.sh" --node >/dev/null
"$E2E_DIR/scripts/import-images.sh" localhost/pgpilot/postgres:17 localhost/pgpilot/pgclient:17 \
  localhost/pgpilot/postgres-exporter:0.17.1 localhost/pgpilot/prometheus:2.53.3 \
  localhost/pgpilot/otelcol:0.161.0 localhost/pgpilot/operator:demo >/dev/null
kctl create namespace "$NS" --dry-run=client -o yaml | kctl apply -f - >/dev/null

step "an OpenTelemetry Collector for the manager's traces"
kctl apply -n "$NS" -f "$E2E_DIR/manifests/otelcol.yaml" >/dev/null
kctl wait -n "$NS" --for=condition=Ready pod/otelcol --timeout=120s >/dev/null

step "pgpilot installed by its Helm chart (namespace $OPERATOR_NS: CRDs, RBAC, two replicas)"
HELM=$("$E2E_DIR/scripts/build-helm.sh")
# The CRDs as this checkout has them (helm installs a chart's CRDs only once).
kctl apply --server-side --force-conflicts -f "$REPO/crds/" >/dev/null
kctl create namespace "$OPERATOR_NS" --dry-run=client -o yaml | kctl apply -f - >/dev/null
kctl label namespace "$OPERATOR_NS" --overwrite pod-security.kubernetes.io/enforce=restricted >/dev/null
"$HELM" --kubeconfig "$ADMIN_KUBECONFIG" upgrade --install pgpilot "$REPO/charts/pgpilot" \
  -n "$OPERATOR_NS" --set image.tag=demo --set logFormat=text \
  --set otel.endpoint="http://otelcol.$NS.svc:4317" --set otel.serviceName=pgpilot-demo \
  --wait --timeout 5m >/dev/null
# Each replica's /metrics (only the leader exports the clusters' series; the chart's
# PodMonitor does the same where the Prometheus Operator runs).
MANAGER_TARGETS=$(kctl get pods -n "$OPERATOR_NS" -l app.kubernetes.io/name=pgpilot \
  -o jsonpath='{range .items[*]}{.status.podIP}{"\n"}{end}' | sed "s/.*/'&:8080'/" | paste -sd, -)

step "Prometheus: the exporters, the manager and the chart's alerts"
kctl create configmap prometheus-rules -n "$NS" --from-file=alerts.yaml="$REPO/charts/pgpilot/files/alerts.yaml" \
  --dry-run=client -o yaml | kctl apply -f - >/dev/null
sed -e "s/__NAMESPACE__/$NS/g" -e "s/'__MANAGER__'/$MANAGER_TARGETS/g" "$E2E_DIR/manifests/prometheus.yaml" |
  kctl apply -n "$NS" -f - >/dev/null
kctl wait -n "$NS" --for=condition=Ready pod/prometheus --timeout=120s >/dev/null
PROM=http://$(kctl get svc prometheus -n "$NS" -o jsonpath='{.spec.clusterIP}'):9090

step "PostgresCluster examples/cluster.yaml"
kctl apply -n "$NS" -f "$REPO/examples/cluster.yaml" >/dev/null
deadline=$((SECONDS + 300))
last=""
while :; do
  line=$(kctl get pgc demo -n "$NS" --no-headers 2>/dev/null || true)
  [[ $line == "$last" ]] || { echo "  $line" >&2; last=$line; }
  [[ $(kctl get pgc demo -n "$NS" -o jsonpath='{.status.phase}' 2>/dev/null) == Ready ]] && break
  ((SECONDS < deadline)) || die "not Ready after 300 s; see: kubectl -n $OPERATOR_NS logs deploy/pgpilot, kubectl -n $NS describe pgc demo"
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
kctl exec -n "$NS" demo-0 -c postgres -- patronictl -c /etc/patroni list

step "what Prometheus sees"
query() { curl -sS --get --data-urlencode "query=$1" "$PROM/api/v1/query" |
  jq -r '.data.result[] | "  \(.metric.pod // .metric.cluster // "-")  \(.value[1])"'; }
deadline=$((SECONDS + 60))
until [[ $(query 'pg_up{cluster="demo"} == 1' | wc -l) -ge 3 && -n $(query 'pgpilot_cluster_ready') ]] ||
  ((SECONDS > deadline)); do sleep 2; done
echo "pg_up (each instance's exporter reads its PostgreSQL):" >&2
query 'pg_up{cluster="demo"}' >&2
echo "pgpilot_cluster_ready (from the manager):" >&2
query 'pgpilot_cluster_ready' >&2

cat >&2 <<EOT

pgpilot runs a highly available PostgreSQL 17 cluster (ready in $(elapsed) s since start).
  export KUBECONFIG=$ADMIN_KUBECONFIG PATH=$K8S_BIN:\$PATH
  kubectl -n $NS get pgc,pods -L pgpilot.io/role
  kubectl -n $OPERATOR_NS get pods; kubectl -n $OPERATOR_NS logs deploy/pgpilot   # the operator
  kubectl -n $NS exec -it psql -- psql -h demo-rw -U postgres       # read-write
  kubectl -n $NS exec -it psql -- psql -h demo-ro -U postgres       # read-only replicas
  kubectl -n $NS get secret demo-app-credentials -o jsonpath='{.data.uri}' | base64 -d
  kubectl -n $NS delete pod \$(kubectl -n $NS get pgc demo -o jsonpath='{.status.currentPrimary}')   # failover
Prometheus (metrics, alerts): $PROM   (from this host; the graph UI and /alerts)
  curl -s $PROM/api/v1/query --data-urlencode 'query=pgpilot_cluster_replication_lag_bytes' | jq .
Traces (OTLP JSON, one line per batch) in the collector's log:
  kubectl -n $NS logs otelcol | grep '^{' | jq -c '.resourceSpans[].scopeSpans[].spans[] | {name, traceId}' | tail
Dashboards: charts/pgpilot/files/dashboards/*.json (import into a Grafana with $PROM as its data source)
Stop everything: just demo-down
EOT
