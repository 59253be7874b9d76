#!/usr/bin/env bash
# Regenerate e2e/k8s/go.mod for K8S_VERSION (e2e/versions.env): require
# k8s.io/kubernetes at that version and replace every staging module (each line
# of its go.mod that points into ./staging/src/) by its published v0.<minor>.<patch>
# tag, then `go mod tidy`. Run after bumping K8S_VERSION; commit go.mod/go.sum.
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../versions.env
. "$E2E_DIR/versions.env"
command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin

staging=v0.${K8S_VERSION#v1.}
modfile=$(cd "$E2E_DIR/k8s" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
  sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
[[ -f $modfile ]] || { echo "cannot find go.mod of k8s.io/kubernetes@$K8S_VERSION" >&2; exit 1; }
godirective=$(sed -n 's/^go //p' "$modfile")
mapfile -t mods < <(awk '$2 == "=>" && $3 ~ /^\.\/staging\/src\// {print $1}' "$modfile")
((${#mods[@]} > 0)) || { echo "no staging replaces found in $modfile" >&2; exit 1; }

{
  cat <<HDR
// Wrapper module: builds the Kubernetes components of k8s.io/kubernetes as one
// multi-call binary. k8s.io/kubernetes cannot be \`go install\`ed directly because
// its go.mod replaces every staging module with ./staging/src/...; here each
// staging module is replaced by its published v0.<minor>.<patch> tag instead.
// Regenerate the replace list with e2e/scripts/gen-k8s-gomod.sh.
module pgpilot.local/e2e/k8s

go $godirective

require k8s.io/kubernetes $K8S_VERSION

replace (
HDR
  for m in "${mods[@]}"; do printf '\t%s => %s %s\n' "$m" "$m" "$staging"; done
  echo ')'
} >"$E2E_DIR/k8s/go.mod"
rm -f "$E2E_DIR/k8s/go.sum"
(cd "$E2E_DIR/k8s" && GOFLAGS=-mod=mod go mod tidy)
echo "e2e/k8s/go.mod: k8s.io/kubernetes $K8S_VERSION, ${#mods[@]} staging modules at $staging" >&2
