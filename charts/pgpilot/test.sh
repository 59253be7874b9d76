#!/usr/bin/env bash
# Test the pgpilot chart without a cluster: lint it, render it with several sets of values,
# and check what it renders against the repository's single sources of truth.
#
#   charts/pgpilot/test.sh
#
# Checks (any failure makes the exit status non-zero):
#   - `helm lint --strict` passes, with the default values and with the examples below;
#   - the rendered ClusterRole rules and leader-election Role rules equal, as parsed YAML,
#     what `pgpilot-manager rbac --controllers <the same controllers>` prints;
#   - charts/pgpilot/crds/ holds exactly the files of the top-level crds/, byte for byte,
#     and `helm template --include-crds` renders the same CRD objects;
#   - the pod meets the `restricted` Pod Security Standard;
#   - the Deployment's flags and env, the bindings (ClusterRoleBinding, or one RoleBinding
#     per watched namespace), the PDB and ServiceMonitor toggles, the OTEL_* env;
#   - values the manager would refuse are refused at render time.
#
# Environment:
#   HELM             a helm binary (default: built or reused by e2e/scripts/build-helm.sh)
#   PGPILOT_MANAGER  how to run the manager (default: cargo run -q -p pgpilot-manager --)
# Needs python3 with PyYAML.
set -euo pipefail

CHART_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$CHART_DIR/../.." && pwd)
cd "$REPO_DIR"
CHART=charts/pgpilot

HELM=${HELM:-$(e2e/scripts/build-helm.sh)}
read -r -a MANAGER <<<"${PGPILOT_MANAGER:-cargo run -q -p pgpilot-manager --}"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

failures=0
ok() { printf 'ok    %s\n' "$*"; }
fail() { printf 'FAIL  %s\n' "$*"; failures=$((failures + 1)); }

# --- value sets ----------------------------------------------------------------------------
# default: values.yaml as it is.
: >"$WORK/default.values.yaml"
# watch: the cluster controller in two namespaces, one replica, traces, a ServiceMonitor, a
# lower request rate and no FlowSchema.
cat >"$WORK/watch.values.yaml" <<'EOF'
controllers: [cluster]
watchNamespaces: [team-a, team-b]
replicaCount: 1
defaultImages:
  "17": localhost/pgpilot/postgres:17
  "15": localhost/pgpilot/postgres:15.20
otel:
  endpoint: http://otel-collector.observability:4317
  sampler: parentbased_traceidratio
  samplerArg: "0.25"
metrics:
  serviceMonitor:
    enabled: true
    labels:
      release: prometheus
  podMonitor:
    enabled: true
    labels:
      release: prometheus
  prometheusRule:
    enabled: true
    runbookBaseUrl: https://runbooks.example.com/pgpilot/
    labels:
      release: prometheus
dashboards:
  enabled: true
  folder: Databases
kubeApiQps: 50
kubeApiBurst: 100
apiPriority:
  enabled: false
EOF
# certmanager: cert-manager issues the webhooks' certificate (with a ClusterIssuer).
cat >"$WORK/certmanager.values.yaml" <<'EOF'
webhooks:
  certManager:
    enabled: true
    issuerRef: {name: internal-ca, kind: ClusterIssuer}
EOF
SETS=(default watch certmanager)

"$HELM" version --short

# --- lint ----------------------------------------------------------------------------------
for set in "${SETS[@]}"; do
  if "$HELM" lint --strict "$CHART" -f "$WORK/$set.values.yaml" >"$WORK/lint.$set.log" 2>&1; then
    ok "helm lint --strict ($set values)"
  else
    cat "$WORK/lint.$set.log"
    fail "helm lint --strict ($set values)"
  fi
done

# --- render --------------------------------------------------------------------------------
for set in "${SETS[@]}"; do
  if "$HELM" template pgpilot "$CHART" --namespace pgpilot-system \
    -f "$WORK/$set.values.yaml" >"$WORK/$set.yaml" 2>"$WORK/$set.err"; then
    ok "helm template ($set values): $(grep -c '^kind:' "$WORK/$set.yaml") objects"
  else
    cat "$WORK/$set.err"
    fail "helm template ($set values)"
  fi
done
"$HELM" template pgpilot "$CHART" --namespace pgpilot-system --include-crds >"$WORK/with-crds.yaml"

# --- values the chart must refuse ------------------------------------------------------------
refuse() { # description expected-message helm-template-args...
  local what=$1 want=$2
  shift 2
  if "$HELM" template pgpilot "$CHART" "$@" >/dev/null 2>"$WORK/refused.err"; then
    fail "refuses $what: it rendered"
  elif grep -qF -- "$want" "$WORK/refused.err"; then
    ok "refuses $what"
  else
    cat "$WORK/refused.err"
    fail "refuses $what: the error does not say '$want'"
  fi
}
refuse "an unknown controller" "controllers" --set 'controllers={cluster,backups}'
for c in backup upgrade secret-rotation; do
  [[ -f $CHART/files/rbac/$c.yaml ]] ||
    refuse "controller $c (not built yet)" "controller '$c' is not built into" --set "controllers={$c}"
done
refuse "a controller named twice" "controllers" --set 'controllers={cluster,cluster}'
refuse "no controllers" "controllers" --set 'controllers=null'
refuse "2 replicas without leader election" "needs leaderElection.enabled" \
  --set leaderElection.enabled=false
refuse "a non-numeric default image version" "defaultImages" --set 'defaultImages.latest=pg:17'
refuse "an unknown log format" "logFormat" --set logFormat=xml
refuse "a cert-manager issuer without a name" "issuerRef" \
  --set webhooks.certManager.enabled=true --set webhooks.certManager.issuerRef.kind=Issuer

# --- CRDs ----------------------------------------------------------------------------------
if diff -r crds "$CHART/crds" >"$WORK/crds.diff"; then
  ok "$CHART/crds/ equals crds/ ($(find crds -name '*.yaml' | wc -l) files)"
else
  cat "$WORK/crds.diff"
  fail "$CHART/crds/ differs from crds/: run charts/pgpilot/sync.sh"
fi

# --- RBAC from the binary, one per rendered set of controllers -------------------------------
for set in "${SETS[@]}"; do
  [[ -s $WORK/$set.yaml ]] || continue
  controllers=$(python3 -c '
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
role = next(d for d in docs if d["kind"] == "ClusterRole")
print(role["metadata"]["annotations"]["pgpilot.io/controllers"])' "$WORK/$set.yaml")
  if "${MANAGER[@]}" rbac --controllers "$controllers" >"$WORK/$set.rbac.yaml" 2>"$WORK/rbac.err"; then
    echo "$controllers" >"$WORK/$set.controllers"
  else
    cat "$WORK/rbac.err"
    fail "pgpilot-manager rbac --controllers $controllers"
  fi
done
# The webhooks, with the names the chart gives them (release pgpilot in pgpilot-system).
"${MANAGER[@]}" rbac --webhook --name pgpilot-system-pgpilot --namespace pgpilot-system \
  --webhook-configuration pgpilot-system-pgpilot --webhook-secret pgpilot-webhook-tls \
  >"$WORK/webhook.rbac.yaml"
"${MANAGER[@]}" webhooks --name pgpilot-system-pgpilot --service pgpilot-system/pgpilot-webhook \
  >"$WORK/webhooks.yaml"

# --- everything else, on the parsed objects -------------------------------------------------
python3 - "$WORK" "${SETS[@]}" <<'PY' || failures=$((failures + $?))
import glob
import json
import os
import sys

import yaml

work, sets = sys.argv[1], sys.argv[2:]
failed = 0


def check(cond, what, detail=""):
    global failed
    if cond:
        print(f"ok    {what}")
    else:
        failed += 1
        print(f"FAIL  {what}" + (f"\n      {detail}" if detail else ""))


def docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def one(objs, kind, name=None):
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    return found[0] if len(found) == 1 else None


def values(set_):
    with open("charts/pgpilot/values.yaml") as f:
        v = yaml.safe_load(f)
    with open(f"{work}/{set_}.values.yaml") as f:
        over = yaml.safe_load(f) or {}

    def merge(a, b):
        for k, x in b.items():
            a[k] = merge(a.get(k, {}), x) if isinstance(x, dict) and isinstance(a.get(k), dict) else x
        return a

    return merge(v, over)


def restricted(pod, where):
    """The `restricted` Pod Security Standard (v1.x), checked on a pod spec."""
    psc = pod.get("securityContext") or {}
    containers = pod.get("containers", []) + pod.get("initContainers", []) + pod.get("ephemeralContainers", [])
    problems = []
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            problems.append(f"{key} is set")
    for vol in pod.get("volumes") or []:
        allowed = {"name", "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                   "persistentVolumeClaim", "projected", "secret"}
        if set(vol) - allowed:
            problems.append(f"volume {vol['name']} has type {sorted(set(vol) - allowed)}")
    if psc.get("runAsUser") == 0:
        problems.append("pod runAsUser is 0")
    for key in ("sysctls",):
        if psc.get(key):
            problems.append(f"pod {key} set")
    for c in containers:
        sc = c.get("securityContext") or {}
        n = c["name"]
        if sc.get("privileged"):
            problems.append(f"{n}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{n}: allowPrivilegeEscalation is not false")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            problems.append(f"{n}: capabilities.drop lacks ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{n}: adds capabilities {caps['add']}")
        if not (sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True):
            problems.append(f"{n}: runAsNonRoot is not true")
        uid = sc.get("runAsUser", psc.get("runAsUser"))
        if uid != 65532:
            problems.append(f"{n}: runAsUser is {uid}, want 65532")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{n}: seccompProfile.type is {seccomp}")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{n}: readOnlyRootFilesystem is not true")
        for p in c.get("ports") or []:
            if p.get("hostPort"):
                problems.append(f"{n}: hostPort {p['hostPort']}")
        if sc.get("procMount", "Default") != "Default":
            problems.append(f"{n}: procMount")
    check(not problems, f"pod security is restricted ({where})", "; ".join(problems))


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


for s in sets:
    path = f"{work}/{s}.yaml"
    if not os.path.exists(path) or not os.path.getsize(path):
        continue
    every = docs(path)
    # The webhooks' objects are checked on their own, below.
    objs = [o for o in every if not o["metadata"]["name"].endswith(("-webhook", "-webhook-cluster"))
            and o["kind"] != "ValidatingWebhookConfiguration"]
    v = values(s)
    ns = "pgpilot-system"
    cr = one(objs, "ClusterRole")
    dep = one(objs, "Deployment")
    sa = one(objs, "ServiceAccount")
    check(cr and dep and sa, f"one ClusterRole, Deployment and ServiceAccount ({s})")
    if not (cr and dep and sa):
        continue

    # RBAC: the same rules as the binary prints for the same controllers.
    if os.path.exists(f"{work}/{s}.controllers"):
        controllers = open(f"{work}/{s}.controllers").read().strip()
        want = {d["kind"]: d for d in docs(f"{work}/{s}.rbac.yaml")}
        check(cr["rules"] == want["ClusterRole"]["rules"],
              f"ClusterRole rules == `pgpilot-manager rbac --controllers {controllers}` ({s})",
              f"chart: {cr['rules']}\n      binary: {want['ClusterRole']['rules']}")
        check(controllers == ",".join(v["controllers"]), f"ClusterRole is for the configured controllers ({s})")
        role = one(objs, "Role")
        check(role is not None and role["metadata"]["namespace"] == ns
              and role["rules"] == want["Role"]["rules"],
              f"leader-election Role rules == the binary's Role, in the release namespace ({s})")
    else:
        check(False, f"RBAC compared with the binary ({s})", "pgpilot-manager rbac did not run")

    # Bindings: to the rendered roles and ServiceAccount, cluster-wide or per namespace.
    subject = [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": ns}]
    crbs = [o for o in objs if o["kind"] == "ClusterRoleBinding"]
    rbs = [o for o in objs if o["kind"] == "RoleBinding"]
    lease_rb = [b for b in rbs if b["roleRef"]["kind"] == "Role"]
    cr_rbs = [b for b in rbs if b["roleRef"]["kind"] == "ClusterRole"]
    check(len(lease_rb) == 1 and lease_rb[0]["metadata"]["namespace"] == ns
          and lease_rb[0]["roleRef"]["name"] == one(objs, "Role")["metadata"]["name"]
          and lease_rb[0]["subjects"] == subject,
          f"the Lease Role is bound to the ServiceAccount in {ns} ({s})")
    if v["watchNamespaces"]:
        check(not crbs and sorted(b["metadata"]["namespace"] for b in cr_rbs) == sorted(v["watchNamespaces"])
              and all(b["roleRef"]["name"] == cr["metadata"]["name"] and b["subjects"] == subject for b in cr_rbs),
              f"ClusterRole bound only in the watched namespaces {v['watchNamespaces']} ({s})")
    else:
        check(len(crbs) == 1 and not cr_rbs and crbs[0]["roleRef"]["name"] == cr["metadata"]["name"]
              and crbs[0]["subjects"] == subject,
              f"ClusterRole bound cluster-wide with one ClusterRoleBinding ({s})")

    # The Deployment.
    pod = dep["spec"]["template"]["spec"]
    restricted(pod, s)
    check(pod["serviceAccountName"] == sa["metadata"]["name"], f"pod runs as the ServiceAccount ({s})")
    check(dep["spec"]["replicas"] == v["replicaCount"], f"replicas: {v['replicaCount']} ({s})")
    c = pod["containers"][0]
    args = c["args"]
    want_args = [f"--controllers={','.join(v['controllers'])}"]
    want_args += [f"--namespace={n}" for n in v["watchNamespaces"]]
    want_args += ["--leader-elect", "--metrics-bind-address=0.0.0.0:8080",
                  "--health-probe-bind-address=0.0.0.0:8081", f"--log-format={v['logFormat']}"]
    want_args += [f"--default-image={k}={i}" for k, i in sorted(v["defaultImages"].items())]
    want_args += [f"--kube-api-qps={v['kubeApiQps']}", f"--kube-api-burst={v['kubeApiBurst']}"]
    missing = [a for a in want_args if a not in args]
    check(not missing, f"manager flags ({s}): {' '.join(args)}", f"missing {missing}")

    # API Priority and Fairness: the manager's ServiceAccount in its own level, its Lease
    # renewals matched first, into leader-election.
    schemas = [o for o in objs if o["kind"] == "FlowSchema"]
    levels = [o for o in objs if o["kind"] == "PriorityLevelConfiguration"]
    if v["apiPriority"]["enabled"]:
        me = {"kind": "ServiceAccount", "serviceAccount": {"name": sa["metadata"]["name"], "namespace": "pgpilot-system"}}
        own = [f for f in schemas if f["spec"]["priorityLevelConfiguration"]["name"] in {l["metadata"]["name"] for l in levels}]
        lease = [f for f in schemas if f["spec"]["priorityLevelConfiguration"]["name"] == "leader-election"]
        check(len(levels) == 1 and len(own) == 1 and len(lease) == 1
              and all(r["subjects"] == [me] for f in own + lease for r in f["spec"]["rules"])
              and lease[0]["spec"]["matchingPrecedence"] < own[0]["spec"]["matchingPrecedence"] < 9000
              and lease[0]["spec"]["rules"][0]["resourceRules"][0]["resources"] == ["leases"],
              f"FlowSchemas: the manager's ServiceAccount in its own priority level, its Leases first in leader-election ({s})",
              json.dumps(schemas)[:400])
    else:
        check(not schemas and not levels, f"no FlowSchema without apiPriority ({s})")
    check(sum(a.startswith("--namespace=") for a in args) == len(v["watchNamespaces"]),
          f"one --namespace per watched namespace ({s})")
    # The clusters' NetworkPolicies let the manager in by these labels: they must select its pods.
    named = [a.split("=", 1)[1] for a in args if a.startswith("--operator-pod-labels=")]
    given = dict(kv.split("=", 1) for kv in named[0].split(",")) if named else {}
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    check(given and all(pod_labels.get(k) == val for k, val in given.items()),
          f"--operator-pod-labels select the manager's pods ({s})", f"{named} vs {pod_labels}")
    env = env_of(c)
    check(env.get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name"
          and env.get("POD_NAMESPACE", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace",
          f"POD_NAME and POD_NAMESPACE from the downward API ({s})")
    otel = sorted(k for k in env if k.startswith("OTEL_"))
    if v["otel"]["endpoint"]:
        check(env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == v["otel"]["endpoint"]
              and env["OTEL_TRACES_SAMPLER_ARG"]["value"] == v["otel"]["samplerArg"]
              and {"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_SERVICE_NAME", "OTEL_TRACES_SAMPLER"} <= set(otel),
              f"OTEL env with an endpoint: {otel} ({s})")
    else:
        check(not otel, f"no OTEL env without an endpoint ({s})", f"found {otel}")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    check(ports == {"metrics": 8080, "health": 8081, "webhook": 9443},
          f"ports metrics 8080, health 8081, webhook 9443 ({s})")
    check(c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
          and c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"},
          f"probes /healthz and /readyz on 8081 ({s})")

    # Metrics Service, ServiceMonitor, PDB.
    svc = one(objs, "Service")
    check(svc and svc["spec"]["ports"][0]["targetPort"] == "metrics"
          and svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"],
          f"metrics Service selects the manager pods ({s})")
    sm = one(objs, "ServiceMonitor")
    if v["metrics"]["serviceMonitor"]["enabled"]:
        check(sm and sm["spec"]["endpoints"][0]["path"] == "/metrics"
              and sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items(),
              f"ServiceMonitor scrapes the metrics Service ({s})")
    else:
        check(sm is None, f"no ServiceMonitor by default ({s})")
    monitors = {o["metadata"]["name"].rsplit("-", 1)[-1]: o for o in objs if o["kind"] == "PodMonitor"}
    pm = monitors.get("instances")
    patroni = monitors.get("patroni")
    if v["metrics"]["podMonitor"]["enabled"] and v["metrics"]["podMonitor"]["patroni"]:
        ep = patroni and patroni["spec"]["podMetricsEndpoints"][0]
        check(ep and patroni["spec"]["selector"]["matchLabels"] == {
                  "app.kubernetes.io/managed-by": "pgpilot", "pgpilot.io/component": "instance",
                  "pgpilot.io/patroni-metrics": "true"}
              and (ep["port"], ep["scheme"], ep["path"]) == ("patroni", "https", "/metrics")
              and patroni["spec"]["namespaceSelector"] == pm["spec"]["namespaceSelector"],
              f"a second PodMonitor scrapes Patroni where clusters ask for it ({s})")
    else:
        check(patroni is None, f"no Patroni PodMonitor ({s})")
    if v["metrics"]["podMonitor"]["enabled"]:
        # The labels every instance pod carries (pgpilot-cluster's desired pods).
        watched = v["watchNamespaces"]
        check(pm and pm["spec"]["selector"]["matchLabels"] == {
                  "app.kubernetes.io/managed-by": "pgpilot", "pgpilot.io/component": "instance"}
              and pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
              and (pm["spec"]["namespaceSelector"] == {"matchNames": watched} if watched
                   else pm["spec"]["namespaceSelector"] == {"any": True})
              and {r["targetLabel"] for r in pm["spec"]["podMetricsEndpoints"][0]["relabelings"]} == {"cluster", "pod"},
              f"PodMonitor scrapes the exporters of the watched namespaces ({s})")
    else:
        check(not monitors, f"no PodMonitor by default ({s})")
    boards = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard")]
    if v["dashboards"]["enabled"]:
        shipped = sorted(os.path.basename(f) for f in glob.glob("charts/pgpilot/files/dashboards/*.json"))
        loaded = {k: json.loads(val) for b in boards for k, val in b["data"].items()}
        check(sorted(loaded) == shipped and len(shipped) == 3
              and all(b["metadata"]["labels"].get("grafana_dashboard") == "1"
                      and b["metadata"]["annotations"]["grafana_folder"] == "Databases" for b in boards)
              and all(d["uid"] and d["panels"] and all(t["expr"] for p in d["panels"] for t in p["targets"])
                      for d in loaded.values()),
              f"one labelled ConfigMap per dashboard, each the JSON of files/dashboards ({s})",
              f"{sorted(loaded)} vs {shipped}")
    else:
        check(not boards, f"no dashboards by default ({s})")
    rule = one(objs, "PrometheusRule")
    if v["metrics"]["prometheusRule"]["enabled"]:
        with open("charts/pgpilot/files/alerts.yaml") as f:
            groups = yaml.safe_load(f)["groups"]
        alerts = [r for g in rule["spec"]["groups"] for r in g["rules"]] if rule else []
        base = v["metrics"]["prometheusRule"]["runbookBaseUrl"].rstrip("/")
        check(rule and len(alerts) == sum(len(g["rules"]) for g in groups)
              and all(a["annotations"]["runbook_url"].startswith(base + "/") for a in alerts)
              and rule["metadata"]["labels"].get("release") == "prometheus",
              f"PrometheusRule with the {len(alerts)} alerts of files/alerts.yaml, runbooks under {base} ({s})")
    else:
        check(rule is None, f"no PrometheusRule by default ({s})")
    pdb = one(objs, "PodDisruptionBudget")
    if v["replicaCount"] > 1:
        check(pdb and pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"],
              f"PodDisruptionBudget with {v['replicaCount']} replicas ({s})")
    else:
        check(pdb is None, f"no PodDisruptionBudget with 1 replica ({s})")
    netpol = one(objs, "NetworkPolicy")
    check(netpol and netpol["spec"]["podSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
          and netpol["spec"]["policyTypes"] == ["Ingress"]
          and sorted(p["port"] for r in netpol["spec"]["ingress"] for p in r["ports"]) == ["health", "metrics", "webhook"],
          f"NetworkPolicy: ingress to the manager's metrics, probe and webhook ports only ({s})")

    # The admission webhooks: as the binary prints them, at the release's Service.
    vwc = one(every, "ValidatingWebhookConfiguration")
    wsvc = one(every, "Service", "pgpilot-webhook")
    want_hooks = docs(f"{work}/webhooks.yaml")[0]["webhooks"]
    hooks = vwc["webhooks"] if vwc else []
    watched = v["watchNamespaces"]
    for h in want_hooks:
        if watched:
            h["namespaceSelector"] = {"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": watched}]}
    check(vwc and vwc["metadata"]["name"] == "pgpilot-system-pgpilot" and hooks == want_hooks,
          f"ValidatingWebhookConfiguration == `pgpilot-manager webhooks` at the release's Service ({s})",
          f"chart: {json.dumps(hooks)[:300]}\n      binary: {json.dumps(want_hooks)[:300]}")
    check(wsvc and wsvc["spec"]["ports"] == [{"name": "webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP"}]
          and wsvc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"],
          f"webhook Service: 443 to the pods' webhook port ({s})")
    want_rbac = {(d["kind"], d["metadata"]["name"]): d["rules"] for d in docs(f"{work}/webhook.rbac.yaml")}
    want_reads = want_rbac[("ClusterRole", "pgpilot-system-pgpilot-webhook")]
    want_cluster = want_rbac[("ClusterRole", "pgpilot-system-pgpilot-webhook-cluster")]
    want_secret = want_rbac[("Role", "pgpilot-system-pgpilot-webhook")]
    wreads = one(every, "ClusterRole", "pgpilot-system-pgpilot-webhook")
    wcr = one(every, "ClusterRole", "pgpilot-system-pgpilot-webhook-cluster")
    wrole = one(every, "Role", "pgpilot-webhook")
    read_bindings = [b for b in every if b["kind"] in ("RoleBinding", "ClusterRoleBinding")
                     and b["roleRef"]["name"] == "pgpilot-system-pgpilot-webhook" and b["roleRef"]["kind"] == "ClusterRole"]
    cluster_bindings = [b for b in every if b["kind"] == "ClusterRoleBinding"
                        and b["roleRef"]["name"] == "pgpilot-system-pgpilot-webhook-cluster"]
    check(wreads and wreads["rules"] == want_reads and len(cluster_bindings) == 1
          and (sorted((b["kind"], b["metadata"].get("namespace")) for b in read_bindings)
               == ([("RoleBinding", n) for n in sorted(watched)] if watched else [("ClusterRoleBinding", None)])),
          f"webhook reads == `pgpilot-manager rbac --webhook`, granted where they review ({s})")
    cm = v["webhooks"]["certManager"]["enabled"]
    if cm:
        cert = one(every, "Certificate")
        check(vwc["metadata"].get("annotations", {}).get("cert-manager.io/inject-ca-from") == "pgpilot-system/pgpilot-webhook"
              and cert and cert["spec"]["secretName"] == "pgpilot-webhook-tls"
              and cert["spec"]["issuerRef"] == v["webhooks"]["certManager"]["issuerRef"]
              and "pgpilot-webhook.pgpilot-system.svc" in cert["spec"]["dnsNames"]
              and one(every, "Issuer") is None
              and "--webhook-cert-dir=/etc/pgpilot/webhook" in args
              and not any(a.startswith("--webhook-configuration") for a in args)
              and any(vol.get("secret", {}).get("secretName") == "pgpilot-webhook-tls" for vol in pod.get("volumes", [])),
              f"cert-manager: a Certificate for the Service, its CA injected, its Secret mounted ({s})")
        check(wcr and wrole is None
              and wcr["rules"] == [r for r in want_cluster if "resourceNames" not in r],
              f"cert-manager: the webhooks keep no Secret or CA bundle ({s})")
    else:
        check(wcr and wcr["rules"] == want_cluster
              and wrole and wrole["rules"] == want_secret
              and {"--webhook-bind-address=0.0.0.0:9443", "--webhook-service=pgpilot-webhook",
                   "--webhook-secret=pgpilot-webhook-tls", "--webhook-configuration=pgpilot-system-pgpilot"} <= set(args),
              f"webhook RBAC == `pgpilot-manager rbac --webhook`, and the flags that name them ({s})")

# --include-crds renders exactly the repository's CRDs.
rendered = [d for d in docs(f"{work}/with-crds.yaml") if d["kind"] == "CustomResourceDefinition"]
repo = [d for f in sorted(glob.glob("crds/*.yaml")) for d in docs(f)]
key = lambda d: d["metadata"]["name"]
check(sorted(rendered, key=key) == sorted(repo, key=key),
      f"helm template --include-crds renders the {len(repo)} CRDs of crds/")

sys.exit(min(failed, 100))
PY

if ((failures)); then
  echo "charts/pgpilot: $failures check(s) failed"
  exit 1
fi
echo "charts/pgpilot: all checks passed"
