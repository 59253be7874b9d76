#!/usr/bin/env bash
# images/build-all.sh [--import]: build every image that is not cached yet,
# one after the other (the builds are CPU-bound), then print a summary.
# With --import, also run images/import.sh (containerd, namespace k8s.io).
# The operator image is not built here: it needs the manager binary
# (images/operator/build.sh PATH [TAG]).
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "$0")/lib.sh"

BUILDS=(
  "pause/build.sh"
  "postgres/build.sh 17"
  "postgres/build.sh 15.18"
  "postgres/build.sh 15.20"
  "pgclient/build.sh"
  "postgres-exporter/build.sh"
  "prometheus/build.sh"
  "s3/build.sh"
  "otelcol/build.sh"
)
OUTS=()
for b in "${BUILDS[@]}"; do
  t0=$SECONDS
  # shellcheck disable=SC2086 # "script arg" is split on purpose
  out=$(bash "$IMAGES_DIR"/$b)
  OUTS+=("$out")
  printf '%-26s %4ss  %s\n' "$b" $((SECONDS - t0)) "$out" >&2
done

echo "--- images (${PGPILOT_CACHE:-~/.cache/pgpilot}/images)" >&2
for out in "${OUTS[@]}"; do
  printf '%6s  %s  %s\n' "$(du -h "$out" | cut -f1)" "$(basename "$out")" \
    "$(tar -xOf "$out" index.json | jq -r '[.manifests[].annotations["io.containerd.image.name"]] | join(" ")')" >&2
done
if [[ ${1:-} == --import ]]; then bash "$IMAGES_DIR/import.sh" "${OUTS[@]}"; fi
