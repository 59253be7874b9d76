#!/usr/bin/env bash
# registry.k8s.io/pause:3.10 (also tagged :3.6, the sandbox image Debian's
# containerd 1.6 asks for by default): the pod sandbox process.
#
#   FROM        scratch
#   ADD         /pause   static binary from pause.c (gcc -static, glibc)
#   USER        65535:65535   (as the upstream pause image)
#   ENTRYPOINT  ["/pause"]
# shellcheck source=SCRIPTDIR/../lib.sh
source "$(dirname "$0")/../lib.sh"

need_pkgs gcc libc6-dev jq
HASH=$(dpkg_versions gcc libc6-dev | content_hash "$IMAGES_DIR/pause")
image_begin pause 3.10 "$HASH"
workdir
ROOT=$WORK/rootfs
mkdir -p "$ROOT"/{dev,proc,sys}
gcc -static -Os -s -Wall -Wextra -Werror -o "$ROOT/pause" "$IMAGES_DIR/pause/pause.c"
"$ROOT/pause" -v >&2

IMAGE_USER=65535:65535
IMAGE_ENV=()
IMAGE_ENTRYPOINT=(/pause)
IMAGE_LABELS=("org.opencontainers.image.title=pause" "org.opencontainers.image.version=3.10")
oci_pack "$ROOT" registry.k8s.io/pause:3.10 registry.k8s.io/pause:3.6
