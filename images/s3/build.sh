#!/usr/bin/env bash
# localhost/pgpilot/s3:<version>: MinIO, a real S3-compatible server, for
# pgBackRest repositories in tests.
#
#   BUILD       go install github.com/minio/minio@<pseudo-version> (module
#               proxy), CGO_ENABLED=0 -trimpath, the ldflags MinIO's own
#               Makefile sets; cached in $PGPILOT_CACHE/bin-minio-<version>/
#   FROM        scratch + Debian's ca-certificates bundle, users root/nonroot
#   ADD         /usr/bin/minio
#   USER        nonroot 65532:65532
#   VOLUME      /data   EXPOSE 9000/tcp (S3 API), 9001/tcp (console)
#   ENTRYPOINT  ["/usr/bin/minio"]   CMD ["server", "/data", "--console-address", ":9001"]
#
# Version: MinIO's RELEASE.* tags are not semver, and the module proxy here
# answers 403 for them and for any pseudo-version it has not cached; it serves
# @latest, the final commit of the (now archived) repository, 2026-02-12.
# shellcheck source=SCRIPTDIR/../lib.sh
source "$(dirname "$0")/../lib.sh"

MODULE=github.com/minio/minio
MODVER=v0.0.0-20260212201848-7aac2a2c5b7c
COMMIT=7aac2a2c5b7c RELEASED=2026-02-12T20:18:48Z
TAG=minio-2026-02-12
LDFLAGS="-X $MODULE/cmd.Version=$RELEASED -X $MODULE/cmd.ReleaseTag=DEVELOPMENT.${RELEASED//:/-}"
LDFLAGS+=" -X $MODULE/cmd.CommitID=$COMMIT -X $MODULE/cmd.ShortCommitID=$COMMIT -X $MODULE/cmd.CopyrightYear=2026"

need_pkgs jq ca-certificates
HASH=$( { echo "$MODULE@$MODVER $LDFLAGS"; go version; dpkg_versions ca-certificates; } \
  | content_hash "$IMAGES_DIR/s3")
image_begin s3 "$TAG" "$HASH"
BIN=$(go_binary "$MODULE@$MODVER" minio "$LDFLAGS")
workdir
ROOT=$WORK/rootfs

scratch_rootfs "$ROOT"
install -m 0755 "$BIN" "$ROOT/usr/bin/minio"
install -d -o 65532 -g 65532 -m 0750 "$ROOT/data"
MINIO_VERSION=$("$ROOT/usr/bin/minio" --version | head -1)
log "$MINIO_VERSION"

IMAGE_USER=65532:65532
IMAGE_WORKDIR=/data
IMAGE_ENV=(PATH=/usr/bin:/bin HOME=/home/nonroot)
IMAGE_ENTRYPOINT=(/usr/bin/minio)
IMAGE_CMD=(server /data --console-address :9001)
IMAGE_PORTS=(9000/tcp 9001/tcp)
IMAGE_VOLUMES=(/data)
IMAGE_LABELS=(
  "org.opencontainers.image.title=minio"
  "org.opencontainers.image.version=$MODVER"
  "org.opencontainers.image.licenses=AGPL-3.0-or-later"
)
oci_pack "$ROOT" "localhost/pgpilot/s3:$TAG"
