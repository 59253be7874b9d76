#!/usr/bin/env bash
# Build (or find in the cache) everything the node tier (`just e2e`) needs: the node
# binaries (build-binaries.sh --node: Kubernetes, etcd, kwok, CoreDNS,
# local-path-provisioner, cri-reset) and only the images it runs: pause, postgres 17,
# postgres 15.18 and 15.20 (the minor upgrade), pgclient 17, postgres-exporter (the
# metrics sidecar), prometheus (scrapes the tests' clusters), s3 (MinIO), otelcol, and the
# operator (this checkout's manager, for the in-cluster test). Everything is cached by content in
# $PGPILOT_CACHE (~/.cache/pgpilot): a warm run takes ~15 s (apt look-ups of the
# Debian images), a cold one is dominated by the Go compiles.
#
#   e2e/scripts/e2e-build.sh     # prints the ten image tarballs, one a line
#
# Two lanes run side by side, because they are bound by different things: the
# Debian images (mmdebstrap: downloads and dpkg, network/IO) and the Go compiles
# (CPU). Host packages are installed first, in one apt-get call, so the lanes never
# race for the dpkg lock. One instance at a time ($PGPILOT_CACHE/.e2e-build.lock): a
# second call waits for the first and then finds everything cached. `just test` and
# .ci/run start it early in the background (nice 19, log in target/e2e-build.log) so
# it overlaps with the Rust builds and the control-plane tests; `just e2e` calls it
# again in the foreground, which then only waits for that one to finish.
set -euo pipefail
E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO=$(cd "$E2E_DIR/.." && pwd)
CACHE=${PGPILOT_CACHE:-$HOME/.cache/pgpilot}
case ${1:-} in
  "") ;;
  -h | --help) sed -n '2,19p' "$0"; exit 0 ;;
  *) echo "usage: $0" >&2; exit 2 ;;
esac

t0=$SECONDS
log() { printf '[%s] e2e-build: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

mkdir -p "$CACHE"
exec 7>"$CACHE/.e2e-build.lock"
if ! flock -n 7; then
  log "another e2e-build.sh is running (just test: log in target/e2e-build.log): waiting for it"
  flock 7
fi

# Host packages of the image recipes (images/lib.sh need_pkgs) and of the node
# (node-up.sh), in one apt-get call before the lanes start.
need=()
for p in mmdebstrap jq ca-certificates gcc libc6-dev musl-tools gzip tar curl python3 file \
  containerd runc containernetworking-plugins iptables nftables conntrack; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need+=("$p")
done
if ((${#need[@]})); then
  log "installing host packages: ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# image SCRIPT [ARG]: build one image (or find it cached), one line of outcome;
# its tarball goes to $OUT/SCRIPT.
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
image() {
  local t=$SECONDS out
  out=$("$REPO/images/$1/build.sh" "${@:2}") || { log "FAILED: images/$1/build.sh ${*:2}"; return 1; }
  echo "$out" >"$OUT/$1${2:+-$2}"
  log "$1${2:+ $2}: $(basename "$out") ($((SECONDS - t)) s)"
}

# Lane 1 (network/IO): the Debian images, and pause (a C compile of one file).
debian_lane() {
  image pause && image postgres 17 && image pgclient && image postgres-exporter && image prometheus &&
    image postgres 15.18 && image postgres 15.20
}
# Lane 2 (CPU): the Go compiles. The node binaries last: build-binaries.sh takes the
# cache's build lock, which the control-plane tier's own build-binaries.sh may hold
# while it compiles Kubernetes; MinIO and the collector need no lock meanwhile.
node_binaries() {
  local t=$SECONDS
  "$E2E_DIR/scripts/build-binaries.sh" --node >/dev/null || { log "FAILED: build-binaries.sh --node"; return 1; }
  log "node binaries ($((SECONDS - t)) s)"
}
# The operator image of this checkout (the chart's, installed in the cluster by the
# operator test).
operator_image() {
  local t=$SECONDS
  "$REPO/images/operator/from-source.sh" e2e >"$OUT/operator" || { log "FAILED: images/operator/from-source.sh"; return 1; }
  log "operator: $(basename "$(cat "$OUT/operator")") ($((SECONDS - t)) s)"
}
go_lane() { image s3 && image otelcol && node_binaries && operator_image; }
debian_lane &
lane1=$!
lane2_rc=0
go_lane || lane2_rc=$?
lane1_rc=0
wait "$lane1" || lane1_rc=$?
if ((lane1_rc != 0 || lane2_rc != 0)); then
  log "FAILED after $((SECONDS - t0)) s (Debian images: rc $lane1_rc, Go builds: rc $lane2_rc)"
  exit 1
fi
log "done in $((SECONDS - t0)) s"
cat "$OUT"/{pause,postgres-17,postgres-15.18,postgres-15.20,pgclient,postgres-exporter,prometheus,s3,otelcol,operator}
