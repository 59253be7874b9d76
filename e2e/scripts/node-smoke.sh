#!/usr/bin/env bash
# Smoke test of the local node (cluster-up.sh --node): proves that real pods
# run and that what an operator and Patroni rely on works. Exits non-zero on
# any failure; the last line is "N passed, N failed".
#
#   e2e/scripts/node-smoke.sh [--keep]
#
#   --keep  leave the test namespace in place for a look around
#
# Checks: kubectl logs, exec, port-forward; pod -> pod, pod -> Service IP and
# Service name; cluster DNS (and no answer for names outside cluster.local);
# the API server from a pod with its ServiceAccount token over the
# `kubernetes` Service (what Patroni does); a PVC of the default StorageClass
# binds; PostgreSQL 17 (localhost/pgpilot/postgres:17) runs initdb and postgres
# as uid 999 on it and answers `select 1` from a pgclient pod through a
# Service name; a row written survives deleting and recreating the pod.
# S3: MinIO (localhost/pgpilot/s3) with credentials from a Secret creates a
# bucket, stores an object and returns the same bytes (curl --aws-sigv4 from
# the host to the Service IP), and refuses an unsigned request. OpenTelemetry:
# the collector (localhost/pgpilot/otelcol) configured by a ConfigMap receives
# a span sent over OTLP/HTTP and prints it (debug exporter, kubectl logs).
# Volume expansion: the default StorageClass does not allow it and the API
# server refuses to resize a bound claim (local-path cannot expand; a change
# there shows up here).
# The namespace is smoke-node-<pid> (PGPILOT_SMOKE_NS overrides it) and
# enforces the restricted Pod Security Standard, so every pod here proves it
# runs restricted. Images (postgres:17, pgclient:17, s3, otelcol) are imported
# from the image cache first; every pod uses imagePullPolicy: Never.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KEEP=0
for arg in "$@"; do
  case $arg in
    --keep) KEEP=1 ;;
    -h | --help) sed -n '2,31p' "$0"; exit 0 ;;
    *) die "unknown argument: $arg" ;;
  esac
done
[[ -f $NODE_MARKER ]] || die "no node cluster in $STATE_DIR: start one with cluster-up.sh --node"

NS=${PGPILOT_SMOKE_NS:-smoke-node-$$}
PG_IMAGE=localhost/pgpilot/postgres:17
CLIENT_IMAGE=localhost/pgpilot/pgclient:17
S3_IMAGE=localhost/pgpilot/s3:minio-2026-02-12
OTEL_IMAGE=localhost/pgpilot/otelcol:0.161.0
# The restricted Pod Security Standard, for every container here.
RESTRICTED='{allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}'
POD_RESTRICTED='runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}'
k() { kctl -n "$NS" "$@"; }

# retry SECONDS CMD...: until CMD succeeds (a new endpoint takes kube-proxy a sync, under
# load a moment, to route), showing the last attempt's output.
retry() {
  local deadline=$((SECONDS + $1)) out
  shift
  until out=$("$@" 2>&1); do
    if ((SECONDS >= deadline)); then echo "$out"; return 1; fi
    sleep 0.5
  done
  echo "$out"
}

passed=0 failed=0
# check NAME CMD...: run CMD, record the outcome; its output goes to the log.
check() {
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then
    passed=$((passed + 1))
    log "PASS $name${out:+: $(tail -n 1 <<<"$out")}"
  else
    failed=$((failed + 1))
    log "FAIL $name"
    while IFS= read -r line; do printf '    %s\n' "$line"; done <<<"$out" >&2
  fi
}
finish() {
  if ((failed > 0)); then
    log "diagnostics:"
    k get pods,pvc,svc -o wide >&2 || true
    k get events --sort-by=.lastTimestamp 2>/dev/null | tail -n 15 >&2 || true
  fi
  if [[ $KEEP == 0 ]]; then
    kctl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
  else
    log "namespace $NS kept"
  fi
  rm -rf "$TMP"
  echo "node smoke: $passed passed, $failed failed"
  if ((failed > 0)); then exit 1; fi
}
TMP=$(mktemp -d)
trap finish EXIT

"$E2E_DIR/scripts/import-images.sh" "$PG_IMAGE" "$CLIENT_IMAGE" "$S3_IMAGE" "$OTEL_IMAGE"

kctl delete namespace "$NS" --ignore-not-found --wait=true --timeout=120s >/dev/null
kctl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: $NS
  labels: {pod-security.kubernetes.io/enforce: restricted, pod-security.kubernetes.io/enforce-version: latest}
EOF
log "namespace $NS (restricted)"
S3_USER=smoke-$(openssl rand -hex 4)
S3_PASSWORD=$(openssl rand -hex 16)
SPAN_NAME=smoke-span-$(openssl rand -hex 8)

# web: a static HTTP server (python3 from the postgres image) for the traffic
# checks; client: pgclient, for exec/DNS/psql; pg: PostgreSQL on a claim of
# the default StorageClass (no storageClassName).
k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {$POD_RESTRICTED}
  containers:
    - name: web
      image: $PG_IMAGE
      imagePullPolicy: Never
      securityContext: $RESTRICTED
      command: [bash, -ec, 'mkdir -p /tmp/www && echo smoke-web-ok >/tmp/www/marker && exec python3 -m http.server 8080 --directory /tmp/www']
      ports: [{containerPort: 8080}]
      readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {$POD_RESTRICTED}
  containers:
    - name: client
      image: $CLIENT_IMAGE
      imagePullPolicy: Never
      securityContext: $RESTRICTED
      command: [bash, -c, 'echo smoke-client-started; exec sleep infinity']
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: pgdata}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Service
metadata: {name: pg}
spec:
  selector: {app: pg}
  ports: [{port: 5432}]
---
# S3: MinIO, credentials from a Secret; read-only root, so the certs dir and
# the data live on emptyDirs.
apiVersion: v1
kind: Secret
metadata: {name: s3-credentials}
stringData: {MINIO_ROOT_USER: $S3_USER, MINIO_ROOT_PASSWORD: $S3_PASSWORD}
---
apiVersion: v1
kind: Pod
metadata: {name: s3, labels: {app: s3}}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {runAsUser: 65532, runAsGroup: 65532, fsGroup: 65532, $POD_RESTRICTED}
  containers:
    - name: minio
      image: $S3_IMAGE
      imagePullPolicy: Never
      args: [server, /data, --address, ":9000", --console-address, ":9001", --certs-dir, /tmp/certs]
      envFrom: [{secretRef: {name: s3-credentials}}]
      ports: [{containerPort: 9000}]
      readinessProbe: {httpGet: {path: /minio/health/ready, port: 9000}, periodSeconds: 1}
      securityContext: {readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
      volumeMounts: [{name: data, mountPath: /data}, {name: tmp, mountPath: /tmp}]
  volumes: [{name: data, emptyDir: {}}, {name: tmp, emptyDir: {}}]
---
apiVersion: v1
kind: Service
metadata: {name: s3}
spec:
  selector: {app: s3}
  ports: [{name: s3, port: 9000}]
---
# OpenTelemetry: the collector with its configuration from a ConfigMap; the
# debug exporter prints every span in detail to the container log.
apiVersion: v1
kind: ConfigMap
metadata: {name: otelcol}
data:
  config.yaml: |
    receivers:
      otlp:
        protocols:
          http: {endpoint: "0.0.0.0:4318"}
    processors:
      batch: {timeout: 100ms}
    exporters:
      debug: {verbosity: detailed}
    service:
      telemetry:
        metrics: {level: none}
      pipelines:
        traces: {receivers: [otlp], processors: [batch], exporters: [debug]}
---
apiVersion: v1
kind: Pod
metadata: {name: otelcol, labels: {app: otelcol}}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {runAsUser: 65532, runAsGroup: 65532, $POD_RESTRICTED}
  containers:
    - name: otelcol
      image: $OTEL_IMAGE
      imagePullPolicy: Never
      args: [--config=/etc/otelcol-smoke/config.yaml]
      ports: [{containerPort: 4318}]
      readinessProbe: {tcpSocket: {port: 4318}, periodSeconds: 1}
      securityContext: {readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
      volumeMounts: [{name: config, mountPath: /etc/otelcol-smoke}]
  volumes: [{name: config, configMap: {name: otelcol}}]
---
apiVersion: v1
kind: Service
metadata: {name: otelcol}
spec:
  selector: {app: otelcol}
  ports: [{name: otlp-http, port: 4318}]
---
# The API access Patroni needs, in small: read pods of its namespace.
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-reader}
rules: [{apiGroups: [""], resources: [pods], verbs: [get, list]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: pod-reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}
subjects: [{kind: ServiceAccount, name: default, namespace: $NS}]
EOF

pg_pod() {
  k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: pg, labels: {app: pg}}
spec:
  terminationGracePeriodSeconds: 10
  securityContext: {runAsUser: 999, runAsGroup: 999, $POD_RESTRICTED}
  containers:
    - name: postgres
      image: $PG_IMAGE
      imagePullPolicy: Never
      securityContext: $RESTRICTED
      command:
        - bash
        - -ec
        - |
          D=/var/lib/postgresql/data/pgdata
          if [ ! -s "\$D/PG_VERSION" ]; then
            initdb -D "\$D" -U postgres --auth=trust >/dev/null
            echo "host all all 0.0.0.0/0 trust" >>"\$D/pg_hba.conf"
            echo "smoke: initdb done as uid \$(id -u)"
          fi
          exec postgres -D "\$D" -c listen_addresses='*' -c unix_socket_directories=/tmp
      ports: [{containerPort: 5432}]
      readinessProbe:
        exec: {command: [pg_isready, -h, 127.0.0.1, -U, postgres]}
        periodSeconds: 1
      volumeMounts: [{name: data, mountPath: /var/lib/postgresql/data}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: pgdata}}]
EOF
}
pg_pod

# Cold: the claim is provisioned once pg is scheduled (WaitForFirstConsumer),
# through a helper pod; then initdb.
check "pods Ready" k wait --for=condition=Ready pod/web pod/client pod/pg pod/s3 pod/otelcol --timeout=180s

# --- kubelet API: logs, exec, port-forward --------------------------------------
logs_ok() { k logs client | grep -x smoke-client-started; }
check "kubectl logs" logs_ok
exec_ok() { [[ $(k exec client -- id -u) == 999 ]] && echo "uid 999"; }
check "kubectl exec" exec_ok

port_forward() {
  local pf_log port pf_pid rc=1
  pf_log=$(mktemp)
  k port-forward pod/web :8080 >"$pf_log" 2>&1 &
  pf_pid=$!
  for _ in $(seq 50); do
    port=$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$pf_log")
    [[ -n $port ]] && break
    sleep 0.2
  done
  if [[ -n $port ]] && curl -fsS --max-time 5 "http://127.0.0.1:$port/marker" | grep -x smoke-web-ok; then rc=0; fi
  kill "$pf_pid" 2>/dev/null || true
  wait "$pf_pid" 2>/dev/null || true
  cat "$pf_log"
  rm -f "$pf_log"
  return "$rc"
}
check "kubectl port-forward" port_forward

# --- pod networking -------------------------------------------------------------
# http_get HOST PORT: GET /marker from the client pod with bash's /dev/tcp.
http_get() {
  k exec client -- timeout 5 bash -c "exec 3<>/dev/tcp/$1/$2 && printf 'GET /marker HTTP/1.0\r\n\r\n' >&3 && cat <&3" |
    tr -d '\r' | tail -n 1 | grep -x smoke-web-ok
}
web_ip=$(k get pod web -o jsonpath='{.status.podIP}')
web_svc_ip=$(k get svc web -o jsonpath='{.spec.clusterIP}')
check "pod -> pod ($web_ip:8080)" http_get "$web_ip" 8080
check "pod -> Service IP ($web_svc_ip:80)" http_get "$web_svc_ip" 80
check "pod -> Service name (web.$NS.svc.$CLUSTER_DOMAIN:80)" http_get "web.$NS.svc.$CLUSTER_DOMAIN" 80
check "pod -> Service short name (web:80)" http_get web 80
# The full name: the bare pod name "web" is the pod's own /etc/hosts entry.
hairpin() {
  k exec web -- timeout 5 python3 -c \
    "import urllib.request; print(urllib.request.urlopen('http://web.$NS.svc.$CLUSTER_DOMAIN/marker').read().decode().strip())" |
    grep -x smoke-web-ok
}
check "hairpin: pod -> its own Service" hairpin

# --- NetworkPolicy (kube-router's firewall) --------------------------------------
# A policy that lets nothing in shuts the client out of web; deleted, the client gets in again.
deny_web() {
  k apply -f - <<'EOF2'
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-deny}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
EOF2
}
refused() { ! "$@" >/dev/null 2>&1; }
check "NetworkPolicy: deny-all applied" deny_web
check "NetworkPolicy: pod -> pod refused" retry 30 refused http_get "$web_ip" 8080
check "NetworkPolicy: node -> pod still allowed (probes)" curl -fsS --max-time 5 "http://$web_ip:8080/marker"
check "NetworkPolicy: deleted" k delete networkpolicy web-deny
check "NetworkPolicy: pod -> pod again" retry 30 http_get "$web_ip" 8080

# --- DNS ------------------------------------------------------------------------
resolves_to() { # NAME IP: getent in the client pod answers IP for NAME
  k exec client -- getent hosts "$1" | awk '{print $1}' | grep -x "$2"
}
check "DNS: Service name" resolves_to "web.$NS.svc.$CLUSTER_DOMAIN" "$web_svc_ip"
check "DNS: kubernetes.default" resolves_to kubernetes.default "$SERVICE_IP"
check "DNS: pod A record" resolves_to "${web_ip//./-}.$NS.pod.$CLUSTER_DOMAIN" "$web_ip"
no_outside_name() { # a name outside cluster.local gets no answer, quickly
  local start=$SECONDS
  if k exec client -- getent hosts example.com; then return 1; fi
  ((SECONDS - start < 5)) && echo "example.com: no answer (REFUSED), $((SECONDS - start)) s"
}
check "DNS: nothing outside $CLUSTER_DOMAIN" no_outside_name

# --- the API server from a pod (in-cluster config, as Patroni uses it) -----------
api_from_pod() {
  k exec web -- python3 -c "
import json, ssl, urllib.request
sa = '/var/run/secrets/kubernetes.io/serviceaccount'
ctx = ssl.create_default_context(cafile=sa + '/ca.crt')
req = urllib.request.Request('https://kubernetes.default.svc/api/v1/namespaces/$NS/pods',
    headers={'Authorization': 'Bearer ' + open(sa + '/token').read()})
pods = json.load(urllib.request.urlopen(req, context=ctx))['items']
print('API via https://kubernetes.default.svc: %d pods' % len(pods))
"
}
check "API server from a pod (ServiceAccount token, TLS verified)" api_from_pod

# --- storage and PostgreSQL -----------------------------------------------------
pvc_bound() {
  [[ $(k get pvc pgdata -o jsonpath='{.status.phase}') == Bound ]] &&
    k get pv "$(k get pvc pgdata -o jsonpath='{.spec.volumeName}')" \
      -o jsonpath='{.spec.storageClassName} {.spec.hostPath.path}{"\n"}'
}
check "PVC bound (default StorageClass)" pvc_bound
pg_uid() {
  # shellcheck disable=SC2016 # $2 is awk's
  k logs pg | grep -x 'smoke: initdb done as uid 999' &&
    [[ $(k exec pg -- stat -c %u /var/lib/postgresql/data/pgdata) == 999 ]] &&
    [[ $(k exec pg -- awk '/^Uid:/ {print $2}' /proc/1/status) == 999 ]] && echo "PGDATA and postmaster: uid 999"
}
check "postgres initdb + server as uid 999" pg_uid
psql_client() { k exec client -- psql -h "pg.$NS.svc.$CLUSTER_DOMAIN" -U postgres -Atc "$1"; }
select1() { [[ $(psql_client 'select 1') == 1 ]] && echo "select 1 -> 1"; }
check "select 1 from pgclient via Service name" retry 15 select1
check "write a row" psql_client "create table smoke(v text); insert into smoke values ('survives-restart')"

restart_pg() {
  k delete pod pg --wait=true --timeout=60s >/dev/null && pg_pod && k wait --for=condition=Ready pod/pg --timeout=120s
}
check "recreate the postgres pod" restart_pg
row_back() { [[ $(psql_client 'select v from smoke') == survives-restart ]] && echo "survives-restart"; }
check "row survives the pod restart" retry 15 row_back

# --- volume expansion: refused, clearly (local-path cannot expand) ---------------
# If this ever changes (another provisioner, a class with allowVolumeExpansion),
# these checks fail: then test a real resize instead.
no_expansion_class() {
  local sc
  sc=$(kctl get storageclass -o jsonpath='{range .items[?(@.metadata.annotations.storageclass\.kubernetes\.io/is-default-class=="true")]}{.metadata.name}{"\n"}{end}')
  [[ -n $sc && $sc != *$'\n'* ]] || { echo "not exactly one default StorageClass: ${sc:-none}"; return 1; }
  [[ $(kctl get storageclass "$sc" -o jsonpath='{.allowVolumeExpansion}') != true ]] &&
    echo "$sc: allowVolumeExpansion not set"
}
check "default StorageClass does not allow volume expansion" no_expansion_class
resize_refused() {
  local out
  if out=$(k patch pvc pgdata --type merge -p '{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}' 2>&1); then
    echo "resize accepted: $out"
    return 1
  fi
  grep -F 'storageclass that provisions the pvc must support resize' <<<"$out" &&
    [[ $(k get pvc pgdata -o jsonpath='{.spec.resources.requests.storage}') == 1Gi ]]
}
check "PVC resize refused by the API server" resize_refused

# --- S3: MinIO ----------------------------------------------------------------------
# From the host to the Service IP (the host routes the Service CIDR onto the
# node bridge; kube-proxy translates locally sent packets too).
s3_ip=$(k get svc s3 -o jsonpath='{.spec.clusterIP}')
s3_url=http://$s3_ip:9000
s3() { curl -sS -f --max-time 10 --aws-sigv4 "aws:amz:us-east-1:s3" --user "$S3_USER:$S3_PASSWORD" "$@"; }
s3_obj=$TMP/object.bin
s3_back=$TMP/object.back
head -c 262144 /dev/urandom >"$s3_obj"
check "S3: create bucket ($s3_url/smoke)" retry 15 s3 -X PUT "$s3_url/smoke"
check "S3: PUT object (256 KiB)" s3 -T "$s3_obj" "$s3_url/smoke/object.bin"
s3_get() { s3 -o "$s3_back" "$s3_url/smoke/object.bin" && cmp "$s3_obj" "$s3_back" && echo "same $(wc -c <"$s3_back") bytes"; }
check "S3: GET object returns the same bytes" s3_get
s3_anonymous_refused() {
  local code
  code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 "$s3_url/smoke/object.bin")
  [[ $code == 403 ]] && echo "unsigned GET: HTTP $code"
}
check "S3: unsigned request refused" s3_anonymous_refused

# --- OpenTelemetry: one span over OTLP/HTTP ------------------------------------------
otel_ip=$(k get svc otelcol -o jsonpath='{.spec.clusterIP}')
send_span() {
  local now
  now=$(date +%s%N)
  curl -sS -f --max-time 10 -H 'Content-Type: application/json' "http://$otel_ip:4318/v1/traces" -d @- <<EOF
{"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "pgpilot-node-smoke"}}]},
  "scopeSpans": [{"scope": {"name": "node-smoke"}, "spans": [{"traceId": "$(openssl rand -hex 16)",
    "spanId": "$(openssl rand -hex 8)", "name": "$SPAN_NAME", "kind": 1,
    "startTimeUnixNano": "$now", "endTimeUnixNano": "$((now + 1000000))"}]}]}]}
EOF
}
check "OTLP/HTTP: collector accepts a span ($SPAN_NAME)" retry 15 send_span
span_logged() { k logs otelcol | grep -E "^ *Name *: $SPAN_NAME\$"; }
check "OTLP: span in the collector's debug output" retry 15 span_logged
