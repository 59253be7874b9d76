#!/usr/bin/env bash
# localhost/pgpilot/prometheus:<version>: Prometheus from Debian trixie (bookworm's
# 2.42 is built without Kubernetes service discovery; trixie's 2.53 has it).
#
#   FROM        scratch + Debian's ca-certificates bundle, users root/nonroot
#   ADD         the files of these .debs (unpacked, no maintainer scripts):
#               prometheus and promtool (/usr/bin/prometheus, promtool, /etc/prometheus with
#               consoles + console_libraries, web UI), libc6 (the binary is
#               dynamically linked against glibc only), and the JavaScript/font
#               packages the web UI links to
#   USER        nonroot 65532:65532
#   VOLUME      /prometheus (TSDB)
#   EXPOSE      9090/tcp
#   ENTRYPOINT  ["/usr/bin/prometheus"]
#   CMD         --config.file=/etc/prometheus/prometheus.yml --storage.tsdb.path=/prometheus ...
# shellcheck source=SCRIPTDIR/../lib.sh
source "$(dirname "$0")/../lib.sh"

SUITE=trixie
need_pkgs jq ca-certificates
# The .debs to unpack: prometheus, glibc and the web UI's static assets; not
# adduser/perl/passwd, which exist only for the package's postinst.
PKGS=$(apt_resolve "$SUITE" prometheus promtool | grep -E '^(prometheus|promtool|libc6|libjs-[^=]+|fonts-[^=]+|javascript-common)=')
VERSION=$(sed -n 's/^prometheus=\([0-9.]*\).*/\1/p' <<<"$PKGS")
HASH=$( { echo "$PKGS"; dpkg_versions ca-certificates; } | content_hash "$IMAGES_DIR/prometheus")
image_begin prometheus "$VERSION" "$HASH"
workdir
ROOT=$WORK/rootfs

scratch_rootfs "$ROOT"
mapfile -t DEBS <<<"$PKGS"
deb_extract "$SUITE" "$ROOT" "${DEBS[@]}"
# trixie's libc6 ships only under /usr; the merged-/usr links come from base-files.
for d in lib lib64; do [[ -e $ROOT/$d ]] || ln -s "usr/$d" "$ROOT/$d"; done
# moment-timezone's data/ holds every historical tz database as raw JSON
# (~210 MB); the web UI only loads the prebuilt moment-timezone*.js bundles.
rm -rf "$ROOT"/usr/share/javascript/moment-timezone/data
rm -rf "$ROOT"/usr/share/{doc,man,lintian} "$ROOT"/etc/{init.d,default,logrotate.d} "$ROOT"/lib/systemd "$ROOT"/usr/lib/systemd
install -d -o 65532 -g 65532 -m 0755 "$ROOT/prometheus"
# Nothing in the tree may be left unresolved: prometheus must start from it.
PROM_VERSION=$(chroot_run "$ROOT" /usr/bin/prometheus --version 2>&1 | head -1)
[[ $PROM_VERSION == "prometheus, version $VERSION"* ]] || die "unexpected: $PROM_VERSION"
chroot_run "$ROOT" /usr/bin/promtool check config /etc/prometheus/prometheus.yml >&2
log "$PROM_VERSION"

IMAGE_USER=65532:65532
IMAGE_WORKDIR=/prometheus
IMAGE_ENV=(PATH=/usr/sbin:/usr/bin:/sbin:/bin)
IMAGE_ENTRYPOINT=(/usr/bin/prometheus)
IMAGE_CMD=(
  --config.file=/etc/prometheus/prometheus.yml
  --storage.tsdb.path=/prometheus
  --web.console.libraries=/etc/prometheus/console_libraries
  --web.console.templates=/etc/prometheus/consoles
)
IMAGE_PORTS=(9090/tcp)
IMAGE_VOLUMES=(/prometheus)
IMAGE_LABELS=(
  "org.opencontainers.image.title=prometheus (Debian $SUITE)"
  "org.opencontainers.image.version=$(sed -n 's/^prometheus=//p' <<<"$PKGS")"
)
oci_pack "$ROOT" "localhost/pgpilot/prometheus:$VERSION"
