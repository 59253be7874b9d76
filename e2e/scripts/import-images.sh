#!/usr/bin/env bash
# Import image tarballs (OCI layouts made by images/*/build.sh) into the local
# node's own containerd, in the k8s.io namespace the kubelet's CRI uses.
#
#   e2e/scripts/import-images.sh                 # every ref found in the cache
#   e2e/scripts/import-images.sh REF|TARBALL...  # e.g. localhost/pgpilot/postgres:17
#
# Tarballs come from $PGPILOT_CACHE/images/*.tar (override with
# PGPILOT_IMAGE_CACHE). Each tarball's index.json names its refs; when several
# tarballs carry the same ref, the newest file wins. A ref whose digest in
# containerd already equals the tarball's is skipped, so a warm call costs a
# few ctr calls. Old builds that no tag names any more are removed. The socket
# is $PGPILOT_CONTAINERD_SOCKET from cluster.env (the node's containerd, started
# by cluster-up.sh --node), never the system one.
# Exits non-zero if a requested ref is in no tarball.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

IMAGE_CACHE=${PGPILOT_IMAGE_CACHE:-$CACHE/images}
command -v jq >/dev/null || die "jq is needed (apt-get install jq)"
nctr version >/dev/null 2>&1 ||
  die "the node's containerd does not answer on $CONTAINERD_SOCK: start the cluster with cluster-up.sh --node"

# index: "ref digest tarball" for every ref of every cached tarball, newest first.
declare -A tar_of=() digest_of=()
index() {
  local t
  while read -r t; do
    tar -xOf "$t" index.json 2>/dev/null |
      jq -r --arg t "$t" '.manifests[] | "\(.annotations["io.containerd.image.name"] // empty) \(.digest) \($t)"' || true
  done < <(find "$IMAGE_CACHE" -maxdepth 1 -name '*.tar' -printf '%T@ %p\n' 2>/dev/null | sort -rn | cut -d' ' -f2-)
}
while read -r ref digest t; do
  [[ -n $ref && -z ${tar_of[$ref]:-} ]] || continue
  tar_of[$ref]=$t
  digest_of[$ref]=$digest
done < <(index)

wanted=()
if (($# == 0)); then
  mapfile -t wanted < <(printf '%s\n' "${!tar_of[@]}" | sort)
  ((${#wanted[@]})) || die "no image tarballs in $IMAGE_CACHE (build them with images/build-all.sh)"
fi
for arg in "$@"; do
  if [[ -f $arg ]]; then # a tarball: all its refs, from this very file
    while read -r ref digest; do
      tar_of[$ref]=$arg digest_of[$ref]=$digest
      wanted+=("$ref")
    done < <(tar -xOf "$arg" index.json | jq -r '.manifests[] | "\(.annotations["io.containerd.image.name"]) \(.digest)"')
  else
    [[ -n ${tar_of[$arg]:-} ]] || die "no tarball in $IMAGE_CACHE carries $arg"
    wanted+=("$arg")
  fi
done

# One import per tarball, however many of its refs are wanted.
declare -A todo=()
for ref in "${wanted[@]}"; do
  have=$(nctr images ls "name==$ref" 2>/dev/null | awk 'NR > 1 { print $3 }')
  if [[ $have == "${digest_of[$ref]}" ]]; then
    log "present: $ref"
  else
    todo[${tar_of[$ref]}]=1
  fi
done
for t in "${!todo[@]}"; do
  log "importing $(basename "$t")"
  # --all-platforms: the tarballs hold one platform and no index of others;
  # without it ctr would look for a platform match it cannot make.
  nctr images import --all-platforms "$t" >/dev/null
done
# The CRI plugin also names every image by its id ("sha256:<config digest>"); when
# a tag moves to a new build, that name keeps the old build (blobs and unpacked
# snapshot, ~0.5 GB for postgres) alive for ever. Drop the id names no tag points
# at; --sync collects the garbage now (running containers keep what they use).
images=$(nctr images ls 2>/dev/null | awk 'NR > 1 { print $1, $3 }')
while read -r id digest; do
  if ! grep -v '^sha256:' <<<"$images" | grep -q " $digest\$"; then
    log "removing $id (an old build no tag points at)"
    nctr images rm --sync "$id" >/dev/null || log "WARNING: could not remove $id"
  fi
done < <(grep '^sha256:' <<<"$images" || true)
log "images in $CONTAINERD_SOCK: $(nctr images ls -q | grep -v '^sha256:' | tr '\n' ' ')"
