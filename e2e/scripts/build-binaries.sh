#!/usr/bin/env bash
# Build the local test control plane (Kubernetes multi-call binary, etcd, kwok)
# from Go modules into a per-version cache, skipping whatever is already there.
#
#   e2e/scripts/build-binaries.sh            # build what is missing or stale
#   e2e/scripts/build-binaries.sh --force    # rebuild everything
#   e2e/scripts/build-binaries.sh --print    # only print the bin dirs (no build)
#   e2e/scripts/build-binaries.sh --node     # also what a real node needs (CoreDNS,
#                                            # local-path-provisioner); combines with --force
#
# Output (PGPILOT_CACHE defaults to ~/.cache/pgpilot):
#   $PGPILOT_CACHE/k8s-$K8S_VERSION/bin/{kube,kube-apiserver,kube-controller-manager,
#                                       kube-scheduler,kubectl,kubelet,kube-proxy}
#   $PGPILOT_CACHE/etcd-$ETCD_VERSION/bin/{etcd,etcdctl}
#   $PGPILOT_CACHE/kwok-$KWOK_VERSION/bin/kwok
#   $PGPILOT_CACHE/kwok-$KWOK_VERSION/etc/kwok.yaml  (kwok's default stages, taken from
#                                                   the module: the ones kwokctl uses)
# and with --node:
#   $PGPILOT_CACHE/coredns-$COREDNS_VERSION/bin/coredns
#   $PGPILOT_CACHE/local-path-$LOCAL_PATH_VERSION/bin/local-path-provisioner
#   $PGPILOT_CACHE/cri-reset-$K8S_VERSION/bin/cri-reset   (node teardown through the CRI)
#   $PGPILOT_CACHE/kube-router-$KUBE_ROUTER_VERSION/bin/kube-router (NetworkPolicies)
# Each version directory carries a .stamp (hash of its wrapper module's sources and the Go
# version); a different stamp means the wrapper changed and the directory is rebuilt.
# Cold build on 2 cores (empty Go build cache): Kubernetes ~11 min, etcd ~45 s,
# kwok ~2 min (--node: CoreDNS ~3 min, local-path-provisioner ~1 min, kube-router ~2 min); with
# everything cached the check takes well under a second.
set -euo pipefail

E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=../versions.env
. "$E2E_DIR/versions.env"

CACHE=${PGPILOT_CACHE:-$HOME/.cache/pgpilot}
K8S_DIR=$CACHE/k8s-$K8S_VERSION
ETCD_DIR=$CACHE/etcd-$ETCD_VERSION
KWOK_DIR=$CACHE/kwok-$KWOK_VERSION
K8S_BIN=$K8S_DIR/bin
ETCD_BIN=$ETCD_DIR/bin
KWOK_BIN=$KWOK_DIR/bin
COREDNS_DIR=$CACHE/coredns-$COREDNS_VERSION
LOCAL_PATH_DIR=$CACHE/local-path-$LOCAL_PATH_VERSION
COREDNS_BIN=$COREDNS_DIR/bin
LOCAL_PATH_BIN=$LOCAL_PATH_DIR/bin
CRI_RESET_DIR=$CACHE/cri-reset-$K8S_VERSION
CRI_RESET_BIN=$CRI_RESET_DIR/bin
KUBE_ROUTER_DIR=$CACHE/kube-router-$KUBE_ROUTER_VERSION
KUBE_ROUTER_BIN=$KUBE_ROUTER_DIR/bin
K8S_COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)

print_dirs() {
  printf 'K8S_BIN=%s\nETCD_BIN=%s\nKWOK_BIN=%s\nCOREDNS_BIN=%s\nLOCAL_PATH_BIN=%s\nCRI_RESET_BIN=%s\nKUBE_ROUTER_BIN=%s\n' \
    "$K8S_BIN" "$ETCD_BIN" "$KWOK_BIN" "$COREDNS_BIN" "$LOCAL_PATH_BIN" "$CRI_RESET_BIN" "$KUBE_ROUTER_BIN"
}

FORCE=0
NODE=0
for arg in "$@"; do
  case $arg in
    --force) FORCE=1 ;;
    --node) NODE=1 ;;
    --print) print_dirs; exit 0 ;;
    *) echo "usage: $0 [--force] [--node] | --print" >&2; exit 2 ;;
  esac
done

log() { printf '[%s] build-binaries: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin
command -v go >/dev/null || die "go not found (need Go >= 1.26 for kwok $KWOK_VERSION)"

# The wrapper go.mod files must pin the versions named in versions.env; a
# mismatch would silently cache one version under another version's name.
check_pin() { # module-dir module-path version
  grep -Eq "^[[:space:]]*(require[[:space:]]+)?$2 $3( |\$)" "$E2E_DIR/$1/go.mod" ||
    die "e2e/$1/go.mod does not require $2 $3 (see e2e/versions.env)"
}
check_pin k8s k8s.io/kubernetes "$K8S_VERSION"
check_pin etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
check_pin kwok sigs.k8s.io/kwok "$KWOK_VERSION"
check_pin coredns github.com/coredns/coredns "$COREDNS_VERSION"
check_pin local-path github.com/rancher/local-path-provisioner "$LOCAL_PATH_VERSION"
check_pin kube-router github.com/cloudnativelabs/kube-router/v2 "$KUBE_ROUTER_VERSION"
# Every staging module must be replaced by the matching v0.<minor>.<patch> tag.
k8s_staging=v0.${K8S_VERSION#v1.}
if grep -E '^[[:space:]]*k8s\.io/[a-z-]+ => ' "$E2E_DIR/k8s/go.mod" | grep -v " $k8s_staging\$" | grep -q .; then
  die "e2e/k8s/go.mod has staging replaces not at $k8s_staging"
fi
check_pin cri-reset k8s.io/cri-api "$k8s_staging"

# Stamp = Go version + build flags + content of the wrapper module; a change in
# any of them rebuilds that entry.
stamp_of() { # module-dir build-flags...
  local dir=$1
  shift
  { go env GOVERSION; printf '%s\n' "$@"
    cd "$E2E_DIR/$dir" && find . -type f \( -name '*.go' -o -name 'go.mod' -o -name 'go.sum' \) \
      -print0 | LC_ALL=C sort -z | xargs -0 sha256sum; } | sha256sum | cut -d' ' -f1
}

# up_to_date DIR STAMP FILE...: stamp matches and all files (relative to DIR) exist.
up_to_date() {
  local dir=$1 stamp=$2 f
  shift 2
  [[ $FORCE == 0 && -f $dir/.stamp && $(cat "$dir/.stamp") == "$stamp" ]] || return 1
  for f in "$@"; do [[ -e $dir/$f ]] || return 1; done
}

# install_dir TMP DEST: replace DEST with the finished TMP in one rename, so a
# crashed or concurrent build never leaves a half-filled directory behind.
install_dir() {
  local tmp=$1 dest=$2 old
  chmod 755 "$tmp"
  if [[ -e $dest ]]; then
    old=$(mktemp -d "$(dirname "$dest")/.old.XXXXXX")
    mv "$dest" "$old/"
    mv "$tmp" "$dest"
    rm -rf "$old"
  else
    mv "$tmp" "$dest"
  fi
}

# Common go build flags: static, reproducible paths, stripped binaries; the
# wrapper go.sum files are authoritative (-mod=readonly).
export CGO_ENABLED=0
GOBUILD=(go build -mod=readonly -buildvcs=false -trimpath)

mkdir -p "$CACHE"
# One builder at a time (parallel test jobs may all call this script).
exec 9>"$CACHE/.build.lock"
flock 9
# Leftovers of an interrupted build (we hold the lock, so none is in progress).
rm -rf "$CACHE"/.tmp.* "$CACHE"/.old.*

# Each build_* fills a temp dir beside the cache entry and swaps it in whole.
build_k8s() {
  local stamp tmp start ld p minor date tags
  # Version stamping as upstream's hack/lib/version.sh does, so /version and
  # `kubectl version` report $K8S_VERSION instead of v0.0.0. buildDate is the
  # release's publication time (deterministic across builds).
  minor=${K8S_VERSION#v1.}
  minor=${minor%%.*}
  date=$(cd "$E2E_DIR/k8s" && go list -m -f '{{if .Time}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' k8s.io/kubernetes) || true
  ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ld+=" -X $p.gitCommit= -X $p.gitTreeState=clean -X $p.buildDate=${date:-1970-01-01T00:00:00Z}"
  done
  # The build tags of upstream release builds (hack/lib/golang.sh).
  tags=selinux,notest,grpcnotrace
  stamp=$(stamp_of k8s "$ld" "$tags")
  if up_to_date "$K8S_DIR" "$stamp" bin/kube "${K8S_COMPONENTS[@]/#/bin/}"; then
    log "kubernetes $K8S_VERSION: up to date in $K8S_DIR"; return
  fi
  log "kubernetes $K8S_VERSION: building (a cold build takes ~11 min on 2 cores)"
  start=$SECONDS
  tmp=$(mktemp -d "$CACHE/.tmp.k8s.XXXXXX")
  mkdir "$tmp/bin"
  (cd "$E2E_DIR/k8s" && "${GOBUILD[@]}" -tags "$tags" -ldflags "$ld" -o "$tmp/bin/kube" .)
  for p in "${K8S_COMPONENTS[@]}"; do ln -s kube "$tmp/bin/$p"; done
  grep -qx "Kubernetes $K8S_VERSION" <<<"$("$tmp/bin/kube-apiserver" --version)" ||
    die "built kube-apiserver does not report $K8S_VERSION"
  echo "$stamp" >"$tmp/.stamp"
  install_dir "$tmp" "$K8S_DIR"
  log "kubernetes $K8S_VERSION: built in $((SECONDS - start)) s ($(du -h "$K8S_BIN/kube" | cut -f1))"
}

build_etcd() {
  local stamp tmp start
  stamp=$(stamp_of etcd "-s -w")
  if up_to_date "$ETCD_DIR" "$stamp" bin/etcd bin/etcdctl; then
    log "etcd $ETCD_VERSION: up to date in $ETCD_DIR"; return
  fi
  log "etcd $ETCD_VERSION: building"
  start=$SECONDS
  tmp=$(mktemp -d "$CACHE/.tmp.etcd.XXXXXX")
  mkdir "$tmp/bin"
  (cd "$E2E_DIR/etcd" && "${GOBUILD[@]}" -ldflags "-s -w" -o "$tmp/bin/" ./cmd/etcd ./cmd/etcdctl)
  grep -q "etcd Version: ${ETCD_VERSION#v}" <<<"$("$tmp/bin/etcd" --version)" ||
    die "built etcd does not report ${ETCD_VERSION#v}"
  echo "$stamp" >"$tmp/.stamp"
  install_dir "$tmp" "$ETCD_DIR"
  log "etcd $ETCD_VERSION: built in $((SECONDS - start)) s ($(du -h "$ETCD_BIN/etcd" | cut -f1))"
}

build_kwok() {
  local stamp tmp start src f
  stamp=$(stamp_of kwok "-s -w")
  if up_to_date "$KWOK_DIR" "$stamp" bin/kwok etc/kwok.yaml; then
    log "kwok $KWOK_VERSION: up to date in $KWOK_DIR"; return
  fi
  log "kwok $KWOK_VERSION: building"
  start=$SECONDS
  tmp=$(mktemp -d "$CACHE/.tmp.kwok.XXXXXX")
  mkdir "$tmp/bin" "$tmp/etc"
  (cd "$E2E_DIR/kwok" && "${GOBUILD[@]}" -ldflags "-s -w" -o "$tmp/bin/kwok" sigs.k8s.io/kwok/cmd/kwok)
  # The kwok binary has no built-in stages (only kwokctl adds defaults): copy
  # the default ones kwokctl uses from the same module version.
  src=$(cd "$E2E_DIR/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    echo "---"
    cat "$src/kustomize/stage/$f"
  done >"$tmp/etc/kwok.yaml"
  grep -q "${KWOK_VERSION#v}" <<<"$("$tmp/bin/kwok" --version)" || die "built kwok does not report ${KWOK_VERSION#v}"
  echo "$stamp" >"$tmp/.stamp"
  install_dir "$tmp" "$KWOK_DIR"
  log "kwok $KWOK_VERSION: built in $((SECONDS - start)) s ($(du -h "$KWOK_BIN/kwok" | cut -f1))"
}

# CoreDNS with the plugins e2e/coredns/main.go imports (cluster DNS of the node).
build_coredns() {
  local stamp tmp start
  stamp=$(stamp_of coredns "-s -w")
  if up_to_date "$COREDNS_DIR" "$stamp" bin/coredns; then
    log "coredns $COREDNS_VERSION: up to date in $COREDNS_DIR"; return
  fi
  log "coredns $COREDNS_VERSION: building"
  start=$SECONDS
  tmp=$(mktemp -d "$CACHE/.tmp.coredns.XXXXXX")
  mkdir "$tmp/bin"
  (cd "$E2E_DIR/coredns" && "${GOBUILD[@]}" -ldflags "-s -w" -o "$tmp/bin/coredns" .)
  grep -q "CoreDNS-${COREDNS_VERSION#v}" <<<"$("$tmp/bin/coredns" -version)" ||
    die "built coredns does not report ${COREDNS_VERSION#v}"
  echo "$stamp" >"$tmp/.stamp"
  install_dir "$tmp" "$COREDNS_DIR"
  log "coredns $COREDNS_VERSION: built in $((SECONDS - start)) s ($(du -h "$COREDNS_BIN/coredns" | cut -f1))"
}

# The dynamic volume provisioner of the node (StorageClass local-path).
build_local_path() {
  local stamp tmp start ld
  # As upstream's scripts/build: the version is a main-package variable.
  ld="-s -w -X main.VERSION=$LOCAL_PATH_VERSION"
  stamp=$(stamp_of local-path "$ld")
  if up_to_date "$LOCAL_PATH_DIR" "$stamp" bin/local-path-provisioner; then
    log "local-path-provisioner $LOCAL_PATH_VERSION: up to date in $LOCAL_PATH_DIR"; return
  fi
  log "local-path-provisioner $LOCAL_PATH_VERSION: building"
  start=$SECONDS
  tmp=$(mktemp -d "$CACHE/.tmp.local-path.XXXXXX")
  mkdir "$tmp/bin"
  (cd "$E2E_DIR/local-path" && "${GOBUILD[@]}" -ldflags "$ld" -o "$tmp/bin/local-path-provisioner" \
    github.com/rancher/local-path-provisioner)
  grep -q "$LOCAL_PATH_VERSION" <<<"$("$tmp/bin/local-path-provisioner" --version)" ||
    die "built local-path-provisioner does not report $LOCAL_PATH_VERSION"
  echo "$stamp" >"$tmp/.stamp"
  install_dir "$tmp" "$LOCAL_PATH_DIR"
  log "local-path-provisioner $LOCAL_PATH_VERSION: built in $((SECONDS - start)) s"
}

# cri-reset (e2e/cri-reset): stops and removes all pods through the CRI.
build_cri_reset() {
  local stamp tmp
  stamp=$(stamp_of cri-reset "-s -w")
  if up_to_date "$CRI_RESET_DIR" "$stamp" bin/cri-reset; then
    log "cri-reset: up to date in $CRI_RESET_DIR"; return
  fi
  log "cri-reset: building"
  tmp=$(mktemp -d "$CACHE/.tmp.cri-reset.XXXXXX")
  mkdir "$tmp/bin"
  (cd "$E2E_DIR/cri-reset" && "${GOBUILD[@]}" -ldflags "-s -w" -o "$tmp/bin/cri-reset" .)
  echo "$stamp" >"$tmp/.stamp"
  install_dir "$tmp" "$CRI_RESET_DIR"
}

# kube-router, of which the node runs only the network policy controller.
build_kube_router() {
  local stamp tmp start ld
  # As upstream's Makefile: the version is a package variable.
  ld="-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$KUBE_ROUTER_VERSION"
  stamp=$(stamp_of kube-router "$ld")
  if up_to_date "$KUBE_ROUTER_DIR" "$stamp" bin/kube-router; then
    log "kube-router $KUBE_ROUTER_VERSION: up to date in $KUBE_ROUTER_DIR"; return
  fi
  log "kube-router $KUBE_ROUTER_VERSION: building"
  start=$SECONDS
  tmp=$(mktemp -d "$CACHE/.tmp.kube-router.XXXXXX")
  mkdir "$tmp/bin"
  (cd "$E2E_DIR/kube-router" && "${GOBUILD[@]}" -ldflags "$ld" -o "$tmp/bin/kube-router" \
    github.com/cloudnativelabs/kube-router/v2/cmd/kube-router)
  grep -q "$KUBE_ROUTER_VERSION" <<<"$("$tmp/bin/kube-router" --version 2>&1)" ||
    die "built kube-router does not report $KUBE_ROUTER_VERSION"
  echo "$stamp" >"$tmp/.stamp"
  install_dir "$tmp" "$KUBE_ROUTER_DIR"
  log "kube-router $KUBE_ROUTER_VERSION: built in $((SECONDS - start)) s"
}

total=$SECONDS
build_etcd
build_kwok
build_k8s
if [[ $NODE == 1 ]]; then
  build_coredns
  build_local_path
  build_cri_reset
  build_kube_router
fi
log "done in $((SECONDS - total)) s"
print_dirs
