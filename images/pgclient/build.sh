#!/usr/bin/env bash
# localhost/pgpilot/pgclient:17: psql and pgbench, for tests and load runs.
#
#   FROM     Debian trixie, mmdebstrap --variant=minbase (no recommends, no docs)
#   PACKAGES postgresql-client-17 (psql, pg_dump, ...), ca-certificates
#   + /usr/lib/postgresql/17/bin/pgbench taken from postgresql-17 of the same
#     version: Debian ships pgbench in the server package, whose dependencies
#     (LLVM, ICU, ...) would triple the image; pgbench itself needs only libpq5.
#   USER     postgres 999:999 (same ids as the postgres images)
#   ENV      PATH=/usr/lib/postgresql/17/bin:$PATH  LANG=C.UTF-8
#   CMD      ["psql"]
# shellcheck source=SCRIPTDIR/../lib.sh
source "$(dirname "$0")/../lib.sh"

SUITE=trixie MAJOR=17
need_pkgs mmdebstrap jq
CLOSURE=$(apt_resolve "$SUITE" postgresql-client-$MAJOR ca-certificates)
PG_DEB_VERSION=$(sed -n "s/^postgresql-client-$MAJOR=//p" <<<"$CLOSURE")
HASH=$(content_hash "$IMAGES_DIR/pgclient" <<<"$CLOSURE")
image_begin pgclient "$MAJOR" "$HASH"
workdir
ROOT=$WORK/rootfs

debian_rootfs "$ROOT" "$SUITE" postgresql-client-$MAJOR ca-certificates
deb_extract "$SUITE" "$WORK/server" "postgresql-$MAJOR=$PG_DEB_VERSION"
install -m 0755 "$WORK/server/usr/lib/postgresql/$MAJOR/bin/pgbench" "$ROOT/usr/lib/postgresql/$MAJOR/bin/pgbench"
rm -rf "$WORK/server"
add_user "$ROOT" postgres 999 999 /var/lib/postgresql /bin/bash
install -d -o 999 -g 999 -m 0755 "$ROOT/var/lib/postgresql"

in_root() { chroot_run "$ROOT" env PATH=/usr/lib/postgresql/$MAJOR/bin:/usr/bin:/bin "$@"; }
PSQL_VERSION=$(in_root psql --version)
PGBENCH_VERSION=$(in_root pgbench --version)
[[ ${PSQL_VERSION##* } == "${PGBENCH_VERSION##* }" ]] || die "psql/pgbench mismatch: $PSQL_VERSION / $PGBENCH_VERSION"
log "$PSQL_VERSION | $PGBENCH_VERSION"
dpkg_versions --admindir="$ROOT/var/lib/dpkg" >"$IMAGE_CACHE/pgclient-$MAJOR.packages"

IMAGE_USER=999:999
IMAGE_WORKDIR=/var/lib/postgresql
IMAGE_ENV=(
  "PATH=/usr/lib/postgresql/$MAJOR/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  LANG=C.UTF-8
)
IMAGE_CMD=(psql)
IMAGE_LABELS=(
  "org.opencontainers.image.title=pgpilot pgclient $MAJOR"
  "org.opencontainers.image.version=${PSQL_VERSION##* }"
)
oci_pack "$ROOT" "localhost/pgpilot/pgclient:$MAJOR"
