# shellcheck shell=bash
# images/lib.sh: shared helpers for images/*/build.sh. Source it, don't run it.
#
# Images are assembled without a container daemon:
#   rootfs   mmdebstrap (a faster debootstrap that takes pinned versions and
#            hooks) for Debian-based images, or a plain directory with a static
#            binary for the others;
#   packing  a small OCI image-layout writer (tar + gzip + sha256sum + jq):
#            one layer, one config, one manifest, and an index.json that names
#            every ref, so `ctr images import` tags the image by itself.
# A finished image is one tarball in the cache:
#   $PGPILOT_CACHE/images/<name>-<tag>-<hash>.tar
# where <hash> covers the recipe files, this file and the resolved package
# versions (or Go module versions), so an unchanged recipe is never rebuilt.
set -euo pipefail

IMAGES_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${PGPILOT_CACHE:-$HOME/.cache/pgpilot}
IMAGE_CACHE=$CACHE/images
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
DEBIAN_KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
# Where rootfs trees are assembled; removed after packing. Needs ~1 GiB free.
IMAGE_WORK_ROOT=${IMAGE_WORK_ROOT:-/var/tmp}
if [[ -x /usr/local/go/bin/go ]]; then PATH=$PATH:/usr/local/go/bin; fi
export LC_ALL=C TZ=UTC

log() { printf '[images] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# need_pkgs PKG...: install missing host tools from Debian (apt-get update once).
need_pkgs() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  log "installing host packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# debian_sources SUITE: the one-line apt sources (main, -updates, -security).
debian_sources() {
  local s=$1 o="[signed-by=$DEBIAN_KEYRING]"
  printf 'deb %s %s %s main\n' "$o" "$DEBIAN_MIRROR" "$s" "$o" "$DEBIAN_MIRROR" "$s-updates" \
    "$o" "$DEBIAN_SECURITY_MIRROR" "$s-security"
}

# A private apt state per suite (lists only, no dpkg database) lets us ask
# "which exact versions would be installed" before building anything; that
# answer goes into the cache key. Lists are refreshed at most every 6 hours
# (APT_REFRESH=1 forces it).
_apt_opts() {
  local d=$CACHE/apt/$1
  printf '%s\n' -o "Dir=$d" -o "Dir::State::status=$d/var/lib/dpkg/status" \
    -o Debug::NoLocking=1 -o APT::Sandbox::User=root -o Acquire::Languages=none
}
apt_state() {
  local s=$1 d=$CACHE/apt/$1
  mkdir -p "$d"/etc/apt/{apt.conf.d,preferences.d,sources.list.d} "$d"/var/lib/apt/lists/partial \
    "$d"/var/cache/apt/archives/partial "$d"/var/lib/dpkg
  touch "$d/var/lib/dpkg/status"
  debian_sources "$s" >"$d/etc/apt/sources.list"
  if [[ ${APT_REFRESH:-0} == 1 || ! -e $d/.updated ]] || [[ -n $(find "$d/.updated" -mmin +360) ]]; then
    log "apt: refreshing $s package lists"
    local -a o; mapfile -t o < <(_apt_opts "$s")
    apt-get "${o[@]}" -qq update >&2
    touch "$d/.updated"
  fi
}
# apt_resolve SUITE PKG[=VER]...: "name=version" for the whole dependency
# closure of PKG (no recommends), as apt would install it today.
apt_resolve() {
  local s=$1; shift
  apt_state "$s"
  local -a o; mapfile -t o < <(_apt_opts "$s")
  apt-get "${o[@]}" -s -qq --no-install-recommends install "$@" \
    | awk '$1 == "Inst" { v = $3; gsub(/[()]/, "", v); print $2 "=" v }' | sort
}

# deb_extract SUITE DIR PKG=VER...: unpack exactly these .debs into DIR (no
# maintainer scripts, no dependencies): for taking a few files out of a
# package into an otherwise scratch image.
deb_extract() {
  local s=$1 root=$2 deb; shift 2
  local -a o; mapfile -t o < <(_apt_opts "$s")
  mkdir -p "$WORK/debs" "$root"
  (cd "$WORK/debs" && apt-get "${o[@]}" -qq download "$@" >&2)
  for deb in "$WORK"/debs/*.deb; do dpkg-deb -x "$deb" "$root"; done
  rm -rf "$WORK/debs"
}

# dpkg_versions [--admindir=ROOT/var/lib/dpkg] [PKG...]: "name=version" lines.
dpkg_versions() {
  # shellcheck disable=SC2016 # dpkg-query's own ${field} syntax
  dpkg-query -W -f='${Package}=${Version}\n' "$@"
}

# content_hash FILE|DIR...: 12 hex digits over the named recipe files, lib.sh
# and whatever is piped on stdin (package versions, Go module versions).
content_hash() {
  {
    local f p
    for f in "$IMAGES_DIR/lib.sh" "$@"; do
      while IFS= read -r p; do printf '== %s\n' "${p#"$IMAGES_DIR"/}"; cat "$p"; done \
        < <(find "$f" -type f | sort)
    done
    cat
  } | sha256sum | cut -c1-12
}

# image_begin NAME TAG HASH: sets IMAGE_OUT; exits 0 (from the build script)
# when that exact image is already cached.
image_begin() {
  IMAGE_NAME=$1 IMAGE_TAG=$2 IMAGE_HASH=$3
  IMAGE_OUT=$IMAGE_CACHE/$1-$2-$3.tar
  if [[ -s $IMAGE_OUT && ${FORCE:-0} != 1 ]]; then
    log "cached: $IMAGE_OUT"
    echo "$IMAGE_OUT"
    exit 0
  fi
  mkdir -p "$IMAGE_CACHE"
  IMAGE_T0=$SECONDS
  log "building $1:$2 (hash $3)"
}

# cached_or_die NAME TAG WHY: when the inputs can no longer be resolved (a
# pinned Debian version left the archive, no network), fall back to the newest
# cached build of NAME:TAG rather than fail; exits the build script.
cached_or_die() {
  local t; t=$(find "$IMAGE_CACHE" -maxdepth 1 -name "$1-$2-*.tar" -printf '%T@ %p\n' 2>/dev/null | sort -n | tail -1 | cut -d' ' -f2-)
  [[ -n $t ]] || die "$1:$2: $3, and no cached build to fall back to"
  log "warning: $1:$2: $3; using the cached $t"
  echo "$t"
  exit 0
}

# workdir: a scratch dir removed when the build script exits, however it exits.
workdir() {
  WORK=$(mktemp -d "$IMAGE_WORK_ROOT/pgpilot-image.XXXXXX")
  trap 'rm -rf --one-file-system "$WORK"' EXIT
}

# debian_rootfs DIR SUITE PKG[=VER]...: minimal Debian tree with PKG installed.
# --variant=minbase is debootstrap's minbase (Essential + Priority:required,
# which includes apt so derived images can still apt-get install). Docs, man
# pages and translations are never unpacked; copyright files are kept.
# Extra mmdebstrap options (hooks) come from the MMDEBSTRAP_ARGS array.
debian_rootfs() {
  local root=$1 suite=$2; shift 2
  local inc; inc=$(IFS=,; echo "$*")
  local -a src; mapfile -t src < <(debian_sources "$suite")
  need_pkgs mmdebstrap
  mmdebstrap --quiet --mode=root --variant=minbase --format=directory \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*/LC_MESSAGES/*.mo' \
    --include="$inc" "${MMDEBSTRAP_ARGS[@]}" \
    "$suite" "$root" "${src[@]}"
  rootfs_clean "$root"
}

# rootfs_clean DIR: drop what a container never needs from the tree.
rootfs_clean() {
  local r=${1:?}
  rm -rf "$r"/var/cache/apt/* "$r"/var/lib/apt/lists/* "$r"/var/log/* \
    "$r"/var/cache/debconf/*-old "$r"/var/lib/dpkg/*-old "$r"/tmp/* "$r"/var/tmp/*
  # /dev, /proc, /sys are provided by the runtime; keep the empty mount points.
  rm -rf "${r:?}"/dev "${r:?}"/proc "${r:?}"/sys
  mkdir -p "$r"/dev "$r"/proc "$r"/sys "$r"/tmp "$r"/var/tmp
  chmod 1777 "$r"/tmp "$r"/var/tmp
  : >"$r"/etc/machine-id 2>/dev/null || true
}

# chroot_run ROOT CMD...: run CMD in the tree with a fresh /proc (psutil, ps
# and friends need it); the private mount namespace drops the mount on exit.
chroot_run() {
  local r=$1; shift
  # shellcheck disable=SC2016 # expanded by the inner sh
  unshare --mount --propagation private --fork -- \
    sh -c 'r=$1; shift; mount -t proc proc "$r/proc" && exec chroot "$r" "$@"' sh "$r" "$@"
}

# add_user ROOT NAME UID GID HOME [SHELL]: passwd/group/shadow entries written
# directly (no useradd needed, works on scratch images too). Idempotent.
add_user() {
  local r=$1 n=$2 u=$3 g=$4 h=$5 sh=${6:-/usr/sbin/nologin}
  mkdir -p "$r/etc"
  touch "$r/etc/passwd" "$r/etc/group"
  grep -q "^$n:" "$r/etc/group" || echo "$n:x:$g:" >>"$r/etc/group"
  grep -q "^$n:" "$r/etc/passwd" || echo "$n:x:$u:$g:$n:$h:$sh" >>"$r/etc/passwd"
  if [[ -e $r/etc/shadow ]]; then grep -q "^$n:" "$r/etc/shadow" || echo "$n:*:19000:0:99999:7:::" >>"$r/etc/shadow"; fi
  if [[ -e $r/etc/gshadow ]]; then grep -q "^$n:" "$r/etc/gshadow" || echo "$n:!::" >>"$r/etc/gshadow"; fi
}

# scratch_rootfs DIR: the bare minimum for a static binary: root/nonroot
# users, /tmp, CA certificates (from the host's Debian ca-certificates).
scratch_rootfs() {
  local r=$1
  mkdir -p "$r"/{etc/ssl/certs,tmp,dev,proc,sys,usr/bin}
  chmod 1777 "$r/tmp"
  printf 'root:x:0:0:root:/root:/usr/sbin/nologin\n' >"$r/etc/passwd"
  printf 'root:x:0:\n' >"$r/etc/group"
  add_user "$r" nonroot 65532 65532 /home/nonroot
  mkdir -p "$r/home/nonroot" && chown 65532:65532 "$r/home/nonroot"
  need_pkgs ca-certificates
  cp /etc/ssl/certs/ca-certificates.crt "$r/etc/ssl/certs/"
  printf 'hosts: files dns\n' >"$r/etc/nsswitch.conf"
}

# Image config, set by the build script before oci_pack (Containerfile-like):
#   IMAGE_USER="999:999"  IMAGE_WORKDIR=/   IMAGE_ENV=(K=V ...)
#   IMAGE_ENTRYPOINT=(...)  IMAGE_CMD=(...)  IMAGE_PORTS=(5432/tcp ...)
#   IMAGE_VOLUMES=(/path ...)  IMAGE_LABELS=(k=v ...)
IMAGE_USER=0:0 IMAGE_WORKDIR=/
IMAGE_ENV=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
IMAGE_ENTRYPOINT=() IMAGE_CMD=() IMAGE_PORTS=() IMAGE_VOLUMES=() IMAGE_LABELS=()
MMDEBSTRAP_ARGS=()

# Bash arrays to JSON (values are single-line strings).
_json_array() { (($#)) && printf '%s\n' "$@" | jq -Rnc '[inputs]' || echo null; }
_json_set() { (($#)) && printf '%s\n' "$@" | jq -Rnc '[inputs | {(.): {}}] | add' || echo null; }
_json_kv() {
  (($#)) && printf '%s\n' "$@" | jq -Rnc '[inputs | capture("^(?<key>[^=]+)=(?<value>.*)$")] | from_entries' || echo null
}

_blob() { # FILE MEDIATYPE -> moves FILE into blobs/, prints its descriptor
  local f=$1 mt=$2 d s
  d=$(sha256sum "$f" | cut -d' ' -f1); s=$(stat -c %s "$f")
  mv "$f" "$LAYOUT/blobs/sha256/$d"
  jq -nc --arg mt "$mt" --arg d "sha256:$d" --argjson s "$s" '{mediaType: $mt, digest: $d, size: $s}'
}

# oci_pack ROOTFS REF...: writes IMAGE_OUT, an OCI image layout tarball with
# the one-layer image tagged with every REF, then prints its path, removes
# older builds of the same name-tag and the rootfs.
oci_pack() {
  local root=$1; shift
  need_pkgs jq gzip tar
  LAYOUT=$(mktemp -d "${WORK:-$IMAGE_WORK_ROOT}/oci.XXXXXX")
  mkdir -p "$LAYOUT/blobs/sha256"
  # Sorted names and numeric owners: the layer does not depend on the host's
  # users or on readdir order.
  tar --numeric-owner --sort=name -C "$root" -cf "$LAYOUT/layer.tar" .
  local diff_id layer config manifest created
  diff_id=sha256:$(sha256sum "$LAYOUT/layer.tar" | cut -d' ' -f1)
  gzip -n -6 "$LAYOUT/layer.tar"
  layer=$(_blob "$LAYOUT/layer.tar.gz" application/vnd.oci.image.layer.v1.tar+gzip)
  created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  jq -nc --arg created "$created" --arg user "$IMAGE_USER" --arg wd "$IMAGE_WORKDIR" \
    --argjson env "$(_json_array "${IMAGE_ENV[@]}")" \
    --argjson ep "$(_json_array "${IMAGE_ENTRYPOINT[@]}")" \
    --argjson cmd "$(_json_array "${IMAGE_CMD[@]}")" \
    --argjson ports "$(_json_set "${IMAGE_PORTS[@]}")" \
    --argjson vols "$(_json_set "${IMAGE_VOLUMES[@]}")" \
    --argjson labels "$(_json_kv "${IMAGE_LABELS[@]}" "io.pgpilot.image.hash=$IMAGE_HASH")" \
    --arg diff "$diff_id" --arg by "images/$IMAGE_NAME/build.sh ($IMAGE_TAG)" '
    {created: $created, architecture: "amd64", os: "linux",
     config: ({User: $user, WorkingDir: $wd, Env: $env, Entrypoint: $ep, Cmd: $cmd,
               ExposedPorts: $ports, Volumes: $vols, Labels: $labels}
              | with_entries(select(.value != null))),
     rootfs: {type: "layers", diff_ids: [$diff]},
     history: [{created: $created, created_by: $by}]}' >"$LAYOUT/config.json"
  config=$(_blob "$LAYOUT/config.json" application/vnd.oci.image.config.v1+json)
  jq -nc --argjson c "$config" --argjson l "$layer" \
    '{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", config: $c, layers: [$l]}' \
    >"$LAYOUT/manifest.json"
  manifest=$(_blob "$LAYOUT/manifest.json" application/vnd.oci.image.manifest.v1+json)
  # One index entry per ref: containerd takes io.containerd.image.name as the
  # full image name; org.opencontainers.image.ref.name is the OCI tag.
  printf '%s\n' "$@" | jq -Rn --argjson m "$manifest" '
    {schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
     manifests: [inputs | . as $ref | $m + {platform: {architecture: "amd64", os: "linux"},
       annotations: {"io.containerd.image.name": $ref,
                     "org.opencontainers.image.ref.name": ($ref | sub("^.*:"; ""))}}]}' \
    >"$LAYOUT/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$LAYOUT/oci-layout"
  tar --numeric-owner --sort=name -C "$LAYOUT" -cf "$IMAGE_OUT.part" oci-layout index.json blobs
  mv "$IMAGE_OUT.part" "$IMAGE_OUT"
  rm -rf "$LAYOUT"
  if [[ $root == "${WORK:-/nonexistent}"/* ]]; then rm -rf --one-file-system "$root"; fi
  # Older builds of the same name and tag are superseded: free the disk.
  find "$IMAGE_CACHE" -maxdepth 1 -name "$IMAGE_NAME-$IMAGE_TAG-*.tar" ! -path "$IMAGE_OUT" -delete
  log "built $IMAGE_OUT ($(du -h "$IMAGE_OUT" | cut -f1), $((SECONDS - IMAGE_T0))s) refs: $*"
  echo "$IMAGE_OUT"
}

# go_binary MODULE/PKG@VERSION NAME [LDFLAGS]: static build (CGO off) cached in
# $CACHE/bin-NAME-VERSION/NAME; prints the path. The cache key is the version
# only: delete that directory after changing LDFLAGS.
go_binary() {
  local pkg=$1 name=$2 ldflags=${3:-} ver=${1##*@}
  local dir=$CACHE/bin-$name-$ver
  if [[ ! -x $dir/$name ]]; then
    command -v go >/dev/null || die "go not found (expected /usr/local/go/bin/go)"
    log "go install $pkg (cold: several minutes on 2 cores)"
    mkdir -p "$dir.part"
    CGO_ENABLED=0 GOBIN=$dir.part GOFLAGS=-buildvcs=false \
      go install -trimpath -ldflags "-s -w $ldflags" "$pkg"
    rm -rf "$dir"; mv "$dir.part" "$dir"
  fi
  echo "$dir/$name"
}
