#!/usr/bin/env bash
# localhost/pgpilot/operator:<tag>: wraps a static pgpilot-manager binary.
#
#   FROM        scratch + Debian's ca-certificates bundle, users root/nonroot
#   ADD         /usr/bin/pgpilot-manager (the binary given on the command line;
#               must be statically linked, e.g. built for x86_64-unknown-linux-musl)
#   USER        nonroot 65532:65532; writes nothing, so it runs with
#               readOnlyRootFilesystem: true
#   ENTRYPOINT  ["/usr/bin/pgpilot-manager"]
# Usage: images/operator/build.sh PATH/TO/pgpilot-manager [TAG=dev]
# shellcheck source=SCRIPTDIR/../lib.sh
source "$(dirname "$0")/../lib.sh"

BIN=${1:?usage: $0 PATH/TO/pgpilot-manager [TAG]}
TAG=${2:-dev}
[[ -x $BIN ]] || die "$BIN is not an executable"
need_pkgs jq ca-certificates file
# A dynamically linked binary would not find its loader in a scratch image.
if file -b "$BIN" | grep -q 'dynamically linked'; then die "$BIN is dynamically linked; build it static"; fi
HASH=$( { sha256sum <"$BIN"; dpkg_versions ca-certificates; } | content_hash "$IMAGES_DIR/operator")
image_begin operator "$TAG" "$HASH"
workdir
ROOT=$WORK/rootfs

scratch_rootfs "$ROOT"
install -m 0755 "$BIN" "$ROOT/usr/bin/pgpilot-manager"

IMAGE_USER=65532:65532
IMAGE_ENV=(PATH=/usr/bin:/bin)
IMAGE_ENTRYPOINT=(/usr/bin/pgpilot-manager)
IMAGE_LABELS=("org.opencontainers.image.title=pgpilot operator" "org.opencontainers.image.version=$TAG")
oci_pack "$ROOT" "localhost/pgpilot/operator:$TAG"
