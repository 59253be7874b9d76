#!/usr/bin/env bash
# images/import.sh [TARBALL...]: import cached image tarballs into containerd's
# k8s.io namespace (where the kubelet's CRI looks), starting containerd first
# if nothing answers on its socket.
#
# Without arguments it imports every $PGPILOT_CACHE/images/*.tar. A ref whose
# current digest already equals the tarball's manifest digest is skipped.
#
# containerd is started the simple way, no systemd: `containerd &` with
# Debian's /etc/containerd/config.toml (root /var/lib/containerd, socket
# /run/containerd/containerd.sock, CRI sandbox image registry.k8s.io/pause:3.6),
# pid and log under /var/lib/pgpilot/containerd/. Stop it with
#   kill "$(cat /var/lib/pgpilot/containerd/containerd.pid)"
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "$0")/lib.sh"

ADDRESS=${CONTAINERD_ADDRESS:-/run/containerd/containerd.sock}
CONFIG=${CONTAINERD_CONFIG:-/etc/containerd/config.toml}
STATE=/var/lib/pgpilot/containerd
NS=k8s.io
ctr_() { ctr --address "$ADDRESS" -n "$NS" "$@"; }

need_pkgs containerd runc jq

if ! ctr --address "$ADDRESS" version >/dev/null 2>&1; then
  mkdir -p "$STATE"
  log "starting containerd (log $STATE/containerd.log)"
  # setsid: not killed with this shell's process group; nohup: survives hangups.
  setsid nohup containerd --config "$CONFIG" --address "$ADDRESS" \
    >>"$STATE/containerd.log" 2>&1 </dev/null &
  echo $! >"$STATE/containerd.pid"
  for _ in $(seq 50); do
    ctr --address "$ADDRESS" version >/dev/null 2>&1 && break
    sleep 0.2
  done
  ctr --address "$ADDRESS" version >/dev/null 2>&1 || { tail -20 "$STATE/containerd.log" >&2; die "containerd did not come up"; }
fi

if (($#)); then TARBALLS=("$@"); else
  mapfile -t TARBALLS < <(find "$IMAGE_CACHE" -maxdepth 1 -name '*.tar' | sort)
fi
((${#TARBALLS[@]})) || die "no image tarballs in $IMAGE_CACHE (run images/build-all.sh)"

DISPLACED=() # manifest digests that a ref pointed at before this import
for t in "${TARBALLS[@]}"; do
  index=$(tar -xOf "$t" index.json)
  digest=$(jq -r '.manifests[0].digest' <<<"$index")
  todo=0
  while read -r ref; do
    have=$(ctr_ images ls "name==$ref" | awk 'NR > 1 { print $3 }')
    if [[ $have == "$digest" ]]; then log "present: $ref ($digest)"; continue; fi
    todo=1
    if [[ -n $have ]]; then DISPLACED+=("$have"); fi
  done < <(jq -r '.manifests[].annotations["io.containerd.image.name"]' <<<"$index")
  ((todo)) || continue
  log "importing $(basename "$t")"
  ctr_ images import --all-platforms "$t" >&2
done
# The CRI plugin names every image it sees also by its id ("sha256:<config
# digest>"); when a tag moves to a new build, that id name keeps the old image,
# its blobs and its unpacked snapshot alive. Drop the id names of displaced
# builds that no tag points at any more; --sync collects the garbage now
# (running containers keep what they use).
if ((${#DISPLACED[@]})); then
  images=$(ctr_ images ls | awk 'NR > 1 { print $1, $3 }')
  for d in $(printf '%s\n' "${DISPLACED[@]}" | sort -u); do
    grep -v '^sha256:' <<<"$images" | grep -q " $d\$" && continue
    awk -v d="$d" '$2 == d && $1 ~ /^sha256:/ { print $1 }' <<<"$images" | while read -r id; do
      log "removing $id (old build, no tag left)"
      ctr_ images rm --sync "$id" >/dev/null
    done
  done
fi
ctr_ images ls | awk 'NR == 1 || /pgpilot|pause/'
