#!/usr/bin/env bash
# localhost/pgpilot/postgres-exporter:<version>: the Prometheus community's
# PostgreSQL exporter from Debian trixie, run beside PostgreSQL in each pod.
#
#   FROM        scratch + Debian's ca-certificates bundle, users root/nonroot
#   ADD         the files of these .debs (unpacked, no maintainer scripts):
#               prometheus-postgres-exporter (/usr/bin/prometheus-postgres-exporter)
#               and libc6 (its only library); not adduser/passwd, which exist
#               only for the package's postinst
#   USER        nonroot 65532:65532
#   EXPOSE      9187/tcp
#   ENTRYPOINT  ["/usr/bin/prometheus-postgres-exporter"]
# One image for every PostgreSQL major: the exporter reads the server's version
# and picks its queries by it (15 and 17 are both in its range).
# shellcheck source=SCRIPTDIR/../lib.sh
source "$(dirname "$0")/../lib.sh"

SUITE=trixie
need_pkgs jq ca-certificates
PKGS=$(apt_resolve "$SUITE" prometheus-postgres-exporter | grep -E '^(prometheus-postgres-exporter|libc6)=')
VERSION=$(sed -n 's/^prometheus-postgres-exporter=\([0-9.]*\).*/\1/p' <<<"$PKGS")
[[ -n $VERSION ]] || die "prometheus-postgres-exporter not found in $SUITE"
HASH=$( { echo "$PKGS"; dpkg_versions ca-certificates; } | content_hash "$IMAGES_DIR/postgres-exporter")
image_begin postgres-exporter "$VERSION" "$HASH"
workdir
ROOT=$WORK/rootfs

scratch_rootfs "$ROOT"
mapfile -t DEBS <<<"$PKGS"
deb_extract "$SUITE" "$ROOT" "${DEBS[@]}"
# trixie's libc6 ships only under /usr; the merged-/usr links come from base-files.
for d in lib lib64; do [[ -e $ROOT/$d ]] || ln -s "usr/$d" "$ROOT/$d"; done
rm -rf "$ROOT"/usr/share/{doc,man,lintian} "$ROOT"/etc/{init.d,default,logrotate.d} "$ROOT"/lib/systemd "$ROOT"/usr/lib/systemd
# Nothing in the tree may be left unresolved: the exporter must start from it.
EXPORTER_VERSION=$(chroot_run "$ROOT" /usr/bin/prometheus-postgres-exporter --version 2>&1 | head -1)
[[ $EXPORTER_VERSION == "postgres_exporter, version $VERSION"* ]] || die "unexpected: $EXPORTER_VERSION"
log "$EXPORTER_VERSION"

IMAGE_USER=65532:65532
IMAGE_ENV=(PATH=/usr/sbin:/usr/bin:/sbin:/bin)
IMAGE_ENTRYPOINT=(/usr/bin/prometheus-postgres-exporter)
IMAGE_PORTS=(9187/tcp)
IMAGE_LABELS=(
  "org.opencontainers.image.title=prometheus-postgres-exporter (Debian $SUITE)"
  "org.opencontainers.image.version=$(sed -n 's/^prometheus-postgres-exporter=//p' <<<"$PKGS")"
)
oci_pack "$ROOT" "localhost/pgpilot/postgres-exporter:$VERSION"
