#!/usr/bin/env bash
# Build the Helm 3 CLI from its Go module (helm.sh/helm/v3, version HELM_VERSION in
# e2e/versions.env) into a per-version cache, unless it is already there.
#
#   e2e/scripts/build-helm.sh            # build when missing, print the binary's path
#   e2e/scripts/build-helm.sh --force    # rebuild
#   e2e/scripts/build-helm.sh --print    # only print the path (no build)
#
# Output (PGPILOT_CACHE defaults to ~/.cache/pgpilot):
#   $PGPILOT_CACHE/helm-$HELM_VERSION/bin/helm
# The only thing written to stdout is that path, so callers can do
#   HELM=$(e2e/scripts/build-helm.sh)
# The binary is built like Helm's own Makefile builds it: CGO off, -trimpath, and the
# version, plus the Kubernetes version that `helm template`/`helm lint` assume
# (.Capabilities.KubeVersion), stamped in with -ldflags.
# Cold build (empty Go build cache, 34 modules to download): 6 min on 2 cores shared
# with other builds (4.5 CPU-minutes);
# with the binary cached the check takes well under a second.
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../versions.env
. "$E2E_DIR/versions.env"
: "${HELM_VERSION:?HELM_VERSION missing from e2e/versions.env}"

CACHE=${PGPILOT_CACHE:-$HOME/.cache/pgpilot}
HELM_DIR=$CACHE/helm-$HELM_VERSION
HELM_BIN=$HELM_DIR/bin
MODULE=helm.sh/helm/v3

FORCE=0
for arg in "$@"; do
  case $arg in
    --force) FORCE=1 ;;
    --print) echo "$HELM_BIN/helm"; exit 0 ;;
    *) echo "usage: $0 [--force] | --print" >&2; exit 2 ;;
  esac
done

log() { printf '[%s] build-helm: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# A binary that runs and reports the pinned version counts as built.
built() {
  [[ -x $HELM_BIN/helm ]] &&
    [[ $("$HELM_BIN/helm" version --template '{{.Version}}' 2>/dev/null) == "$HELM_VERSION" ]]
}

if [[ $FORCE == 0 ]] && built; then
  echo "$HELM_BIN/helm"
  exit 0
fi

command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin
command -v go >/dev/null || die "go not found (helm $HELM_VERSION needs Go >= 1.26)"

start=$(date +%s)
log "building helm $HELM_VERSION from $MODULE (a few minutes on 2 cores when cold)"
# Helm's Makefile derives the Kubernetes version it assumes from its client-go
# (v0.X.Y -> 1.X); do the same from the module's go.mod.
gomod=$(go mod download -json "$MODULE@$HELM_VERSION" |
  sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
[[ -f $gomod ]] || die "cannot download $MODULE@$HELM_VERSION from the Go module proxy"
client_go=$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$gomod")
[[ $client_go =~ ^v0\.([0-9]+)\. ]] || die "no k8s.io/client-go v0.X.Y in $gomod"
k8s_minor=${BASH_REMATCH[1]}

ldflags="-w -s"
ldflags+=" -X $MODULE/internal/version.version=$HELM_VERSION"
ldflags+=" -X $MODULE/internal/version.metadata="
ldflags+=" -X $MODULE/internal/version.gitTreeState=clean"
for pkg in pkg/lint/rules pkg/chartutil; do
  ldflags+=" -X $MODULE/$pkg.k8sVersionMajor=1 -X $MODULE/$pkg.k8sVersionMinor=$k8s_minor"
done

# Install into a scratch dir, then move into place: an interrupted build never leaves a
# half-written binary where built() would find it.
mkdir -p "$HELM_DIR"
tmp=$(mktemp -d "$HELM_DIR/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
GOBIN=$tmp CGO_ENABLED=0 go install -trimpath -ldflags "$ldflags" "$MODULE/cmd/helm@$HELM_VERSION"
mkdir -p "$HELM_BIN"
mv -f "$tmp/helm" "$HELM_BIN/helm"
built || die "$HELM_BIN/helm does not report version $HELM_VERSION"
log "built $HELM_BIN/helm in $(($(date +%s) - start))s"
echo "$HELM_BIN/helm"
