#!/usr/bin/env bash
# Validates what the chart renders (default values, and every optional object on) and
# examples/ against the schemas of Kubernetes $K8S_VERSION and of pgpilot's CRDs, with
# kubeconform (strict: unknown fields are errors). Offline: kubeconform is built from its Go
# module; the Kubernetes schemas are generated from k8s.io/kubernetes' own OpenAPI spec by
# openapi2jsonschema (PyPI), the CRDs' by kubeconform's own script; all cached in
# ~/.cache/pgpilot. The Prometheus Operator's kinds (ServiceMonitor, PodMonitor,
# PrometheusRule) have no schema here and are skipped by name, as are CRD objects (the
# generator declines their self-referencing schema; the API server checks crds/ in the
# integration tier).
set -euo pipefail
E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO=$(cd "$E2E_DIR/.." && pwd)
# shellcheck source=../versions.env
. "$E2E_DIR/versions.env"
CACHE=${PGPILOT_CACHE:-$HOME/.cache/pgpilot}
log() { printf '[kubeconform] %s\n' "$*" >&2; }

# kubeconform itself.
TOOL=$CACHE/kubeconform-$KUBECONFORM_VERSION
if [[ ! -x $TOOL/bin/kubeconform ]]; then
  log "building kubeconform $KUBECONFORM_VERSION"
  GOBIN=$TOOL/bin.part go install "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
  mv "$TOOL/bin.part" "$TOOL/bin"
fi
MODULE=$(cd /tmp && go mod download -json "github.com/yannh/kubeconform@$KUBECONFORM_VERSION" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')

# Kubernetes' schemas, from its own swagger.json.
SCHEMAS=$CACHE/k8s-schemas-$K8S_VERSION
if [[ ! -d $SCHEMAS/${K8S_VERSION}-standalone-strict ]]; then
  log "generating the Kubernetes $K8S_VERSION JSON schemas"
  venv=$CACHE/openapi2jsonschema-$OPENAPI2JSONSCHEMA_VERSION
  if [[ ! -x $venv/bin/openapi2jsonschema ]]; then
    python3 -m venv "$venv.part"
    # Its PyYAML (< 6) builds only with Cython < 3 and without build isolation.
    "$venv.part/bin/pip" install -q "cython<3" wheel setuptools
    "$venv.part/bin/pip" install -q --no-build-isolation "pyyaml==5.4.1"
    "$venv.part/bin/pip" install -q "openapi2jsonschema==$OPENAPI2JSONSCHEMA_VERSION"
    rm -rf "$venv" && mv "$venv.part" "$venv"
    # A venv's scripts name their interpreter by path: make them follow the move.
    sed -i "1s|$venv.part|$venv|" "$venv"/bin/*
  fi
  k8s=$(cd /tmp && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  rm -rf "$SCHEMAS.part" && mkdir -p "$SCHEMAS.part"
  # A relative output directory: it resolves its own $refs against the working directory.
  (cd "$SCHEMAS.part" && "$venv/bin/openapi2jsonschema" -o "${K8S_VERSION}-standalone-strict" \
    --expanded --kubernetes --stand-alone --strict "$k8s/api/openapi-spec/swagger.json" >log.txt)
  # (It declines the CustomResourceDefinition types, which refer to themselves: anything
  # else it could not process is an error.)
  if grep "An error occured" "$SCHEMAS.part/log.txt" | grep -Ev "processing (customresource|jsonschemaprops)"; then
    exit 1
  fi
  rm -rf "$SCHEMAS" && mv "$SCHEMAS.part" "$SCHEMAS"
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# pgpilot's CRDs, as kubeconform's own script turns them into schemas.
(cd "$WORK" && mkdir crds && cd crds && FILENAME_FORMAT='{fullgroup}-{kind}-{version}' \
  python3 "$MODULE/scripts/openapi2jsonschema.py" "$REPO"/crds/*.yaml >/dev/null)

HELM=${HELM:-$("$E2E_DIR/scripts/build-helm.sh")}
cat >"$WORK/all-on.yaml" <<'VALUES'
controllers: [cluster, backup, upgrade, secret-rotation]
watchNamespaces: [team-a]
otel: {endpoint: "http://collector:4317"}
metrics:
  serviceMonitor: {enabled: true}
  podMonitor: {enabled: true}
  prometheusRule: {enabled: true}
dashboards: {enabled: true}
networkPolicy: {metricsFrom: [{namespaceSelector: {matchLabels: {name: monitoring}}}]}
VALUES
"$HELM" template pgpilot "$REPO/charts/pgpilot" -n pgpilot-system >"$WORK/default.yaml"
"$HELM" template pgpilot "$REPO/charts/pgpilot" -n pgpilot-system -f "$WORK/all-on.yaml" >"$WORK/all-on.rendered.yaml"

"$TOOL/bin/kubeconform" -strict -summary -output text \
  -kubernetes-version "${K8S_VERSION#v}" \
  -schema-location "$SCHEMAS/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
  -schema-location "$WORK/crds/{{ .Group }}-{{ .ResourceKind }}-{{ .ResourceAPIVersion }}.json" \
  -skip ServiceMonitor,PodMonitor,PrometheusRule,CustomResourceDefinition \
  "$WORK/default.yaml" "$WORK/all-on.rendered.yaml" "$REPO"/examples/*.yaml
