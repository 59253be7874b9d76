#!/usr/bin/env bash
# localhost/pgpilot/postgres:<tag>: PostgreSQL + Patroni + pgBackRest.
#
#   FROM     Debian, mmdebstrap --variant=minbase (no recommends, no docs)
#   TAG 17     trixie:   postgresql-17, patroni, pgbackrest (suite's current)
#   TAG 15.18  bookworm: postgresql-15 = 15.18-0+deb12u1 (bookworm main)
#   TAG 15.20  bookworm: postgresql-15 = 15.20-0+deb12u1 (bookworm-security)
#              (libpq5 and postgresql-client-15 pinned to the same version)
#   + ca-certificates. Patroni's Kubernetes DCS talks to the API server with
#     urllib3 (a hard dependency of Patroni); no python3-kubernetes.
#   PATRONI  4.0.11 from PyPI in all three: bookworm's 3.0.2 labels the
#            leader pod role=master and cannot be told otherwise, and trixie's
#            4.0.7 never rewrites a running standby's passfile when the
#            replication password changes on reload (fixed in 4.0.8). The
#            wheel is pinned by hash (patroni-requirements.txt), downloaded
#            once into $PGPILOT_CACHE/pip/, and installed with --no-deps by
#            Debian's own pip wheel (python3-pip-whl, used at build time only)
#            into /usr/local (pip's place on Debian); /usr/bin/patroni and
#            /usr/bin/patronictl link there. Its dependencies are the Debian
#            packages Debian's patroni would pull, minus the DCS client
#            libraries: psycopg2, urllib3, yaml, click, prettytable,
#            dateutil, psutil, and ydiff (trixie) or cdiff (bookworm has no
#            ydiff; patronictl falls back to cdiff) for patronictl's diff.
#   USER     postgres 999:999, created before postgresql-common is unpacked so
#            its `adduser --system postgres` keeps it (Debian would otherwise
#            pick the first free system uid, ~100-110, differing per image)
#   ENV      PATH=/usr/lib/postgresql/<major>/bin:$PATH  PGDATA  LANG=C.UTF-8
#   VOLUME   /var/lib/postgresql/data   (0700, owned by 999)
#   EXPOSE   5432/tcp (PostgreSQL), 8008/tcp (Patroni REST API)
#   CMD      ["patroni"]: no entrypoint script; the operator runs
#            `patroni <config>` (or PATRONI_* env) itself.
# Usage: images/postgres/build.sh 17|15.18|15.20   (prints the tarball path)
# shellcheck source=SCRIPTDIR/../lib.sh
source "$(dirname "$0")/../lib.sh"

TAG=${1:?usage: $0 17|15.18|15.20}
case $TAG in
  17) SUITE=trixie MAJOR=17 PIN='' DIFF=python3-ydiff ;;
  15.18) SUITE=bookworm MAJOR=15 PIN="=15.18-0+deb12u1" DIFF=python3-cdiff ;;
  15.20) SUITE=bookworm MAJOR=15 PIN="=15.20-0+deb12u1" DIFF=python3-cdiff ;;
  *) die "unknown postgres tag $TAG" ;;
esac
PATRONI_DEPS=(python3 python3-psycopg2 python3-urllib3 python3-yaml python3-click python3-prettytable
  python3-dateutil python3-psutil "$DIFF")
PKGS=("postgresql-$MAJOR$PIN" "postgresql-client-$MAJOR$PIN" "libpq5$PIN" "${PATRONI_DEPS[@]}" pgbackrest ca-certificates)

need_pkgs mmdebstrap jq
# A point release removes the previous minor from the archive (15.18 will go
# from bookworm main): keep serving the cached image then.
CLOSURE=$(apt_resolve "$SUITE" "${PKGS[@]}") || cached_or_die postgres "$TAG" "cannot resolve ${PKGS[*]} in $SUITE"
# The pip that installs Patroni is part of the recipe too.
PIP_DEB=$(apt_resolve "$SUITE" python3-pip-whl | grep '^python3-pip-whl=') \
  || cached_or_die postgres "$TAG" "cannot resolve python3-pip-whl in $SUITE"
CLOSURE+=$'\n'"$PIP_DEB"
# The hash covers this directory, so patroni-requirements.txt too.
HASH=$(content_hash "$IMAGES_DIR/postgres" <<<"tag=$TAG
$CLOSURE")
image_begin postgres "$TAG" "$HASH"
workdir
ROOT=$WORK/rootfs

# shellcheck disable=SC2016 # "$1" is the rootfs, expanded by mmdebstrap's hook shell
MMDEBSTRAP_ARGS=(
  # After the Essential set, before our packages: fix the postgres ids and
  # tell postgresql-common not to create a default "main" cluster.
  --essential-hook='echo "postgres:x:999:999:PostgreSQL administrator:/var/lib/postgresql:/bin/bash" >>"$1/etc/passwd"'
  --essential-hook='echo "postgres:x:999:" >>"$1/etc/group"'
  --essential-hook='mkdir -p "$1/etc/postgresql-common/createcluster.d" && echo "create_main_cluster = false" >"$1/etc/postgresql-common/createcluster.d/pgpilot.conf"'
)
debian_rootfs "$ROOT" "$SUITE" "${PKGS[@]}"

# No baked-in cluster, no shared snakeoil TLS key; the runtime dirs the
# server and Patroni write to belong to postgres.
rm -rf "$ROOT"/etc/postgresql/"$MAJOR" "$ROOT"/var/lib/postgresql/"$MAJOR" \
  "$ROOT"/etc/ssl/private/ssl-cert-snakeoil.key "$ROOT"/etc/ssl/certs/ssl-cert-snakeoil.pem
install -d -o 999 -g 999 -m 0755 "$ROOT"/var/lib/postgresql
install -d -o 999 -g 999 -m 0700 "$ROOT"/var/lib/postgresql/data
install -d -o 999 -g 999 -m 2775 "$ROOT"/run/postgresql
install -d -o 999 -g 999 -m 0750 "$ROOT"/var/log/postgresql

# pypi_patroni: download the hash-pinned wheel(s) once (cached by the
# requirements file's hash), then install them into the tree with the suite's
# pip wheel run by the tree's own python3. Nothing of pip stays in the image.
pypi_patroni() {
  local req=$IMAGES_DIR/postgres/patroni-requirements.txt pipwhl wheels
  deb_extract "$SUITE" "$WORK/pip" "$PIP_DEB"
  pipwhl=$(echo "$WORK"/pip/usr/share/python-wheels/pip-*.whl)
  [[ -f $pipwhl ]] || die "no pip wheel in $PIP_DEB"
  wheels=$CACHE/pip/patroni-$(sha256sum "$req" | cut -c1-12)
  if [[ ! -d $wheels ]]; then
    need_pkgs python3
    log "pip download (PyPI): $(grep -o '^[A-Za-z0-9_.-]*==[^ ]*' "$req" | tr '\n' ' ')"
    rm -rf "$wheels.part"
    /usr/bin/python3 "$pipwhl/pip" download --isolated --disable-pip-version-check --quiet \
      --no-deps --only-binary=:all: --require-hashes -r "$req" -d "$wheels.part" >&2
    mv "$wheels.part" "$wheels"
  fi
  mkdir -p "$ROOT/tmp/pip"
  cp "$pipwhl" "$req" "$wheels"/*.whl "$ROOT/tmp/pip/"
  # --break-system-packages: PEP 668's marker is for people sharing a Debian
  # system with apt; here pip writes to /usr/local only, which dpkg never touches.
  chroot_run "$ROOT" python3 "/tmp/pip/${pipwhl##*/}/pip" install --isolated --disable-pip-version-check \
    --quiet --root-user-action=ignore --no-cache-dir --break-system-packages \
    --no-index --find-links /tmp/pip --no-deps --require-hashes -r /tmp/pip/patroni-requirements.txt >&2
  rm -rf "${ROOT:?}/tmp/pip" "$WORK/pip"
  ln -s ../local/bin/patroni "$ROOT/usr/bin/patroni"
  ln -s ../local/bin/patronictl "$ROOT/usr/bin/patronictl"
}
pypi_patroni

# Prove the tree is what the tag says before packing it.
in_root() { chroot_run "$ROOT" env PATH=/usr/lib/postgresql/$MAJOR/bin:/usr/bin:/bin "$@"; }
[[ $(stat -c %u:%g "$ROOT"/var/lib/postgresql/data) == 999:999 ]] || die "postgres is not 999:999"
[[ $(in_root id -u postgres) == 999 ]] || die "postgres uid is $(in_root id -u postgres)"
PG_VERSION=$(in_root postgres --version)
case $TAG in 1[0-9].*) [[ $PG_VERSION == "postgres (PostgreSQL) $TAG "* ]] || die "want $TAG, got: $PG_VERSION" ;; esac
PATRONI_VERSION=$(in_root patroni --version)
# Patroni 4 labels the leader "primary" (and knows kubernetes.leader_label_value).
[[ $PATRONI_VERSION == "patroni 4."* ]] || die "want Patroni 4, got: $PATRONI_VERSION"
PGBACKREST_VERSION=$(in_root pgbackrest version)
in_root python3 -c 'import patroni.dcs.kubernetes' || die "Patroni's Kubernetes DCS does not import"
in_root python3 -c 'import patroni.ctl, psycopg2' || die "patronictl or psycopg2 does not import"
log "$PG_VERSION | $PATRONI_VERSION (PyPI) | $PGBACKREST_VERSION"
{
  dpkg_versions --admindir="$ROOT/var/lib/dpkg"
  echo "pypi:patroni=${PATRONI_VERSION##* }"
} >"$IMAGE_CACHE/postgres-$TAG.packages"

IMAGE_USER=999:999
IMAGE_WORKDIR=/var/lib/postgresql
IMAGE_ENV=(
  "PATH=/usr/lib/postgresql/$MAJOR/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  PGDATA=/var/lib/postgresql/data
  LANG=C.UTF-8
)
IMAGE_CMD=(patroni)
IMAGE_PORTS=(5432/tcp 8008/tcp)
IMAGE_VOLUMES=(/var/lib/postgresql/data)
IMAGE_LABELS=(
  "org.opencontainers.image.title=pgpilot postgres $TAG"
  "org.opencontainers.image.version=${PG_VERSION##* }"
  "io.pgpilot.patroni.version=${PATRONI_VERSION##* }"
  "io.pgpilot.patroni.source=pypi"
  "io.pgpilot.pgbackrest.version=${PGBACKREST_VERSION##* }"
  "io.pgpilot.debian.suite=$SUITE"
)
oci_pack "$ROOT" "localhost/pgpilot/postgres:$TAG"
