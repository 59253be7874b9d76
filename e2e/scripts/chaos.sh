#!/usr/bin/env bash
# The chaos suite (#20) on the node cluster, as `just e2e` brings it up: first the faults
# that stay inside a test's namespace, side by side (the primary's network partitioned; the
# manager SIGKILLed at --kills random points of create, scale, failover and rotation), then
# the `#[ignore]`d ones alone (kills during backups; kube-apiserver and etcd down; kubelet and
# containerd killed). Each fault is a row in target/chaos/results.jsonl, rendered into
# docs/reliability.md.
#
#   e2e/scripts/chaos.sh [--kills N]      (default 50)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
kills=50
while (($#)); do
  case $1 in
    --kills) kills=$2; shift 2 ;;
    *) echo "usage: $0 [--kills N]" >&2; exit 2 ;;
  esac
done

# shellcheck source=e2e-env.sh
. e2e/scripts/e2e-env.sh
built=$(e2e/scripts/e2e-build.sh)
mapfile -t tarballs <<<"$built"
started=1
for c in etcd kube-apiserver; do if pid_of "$c" >/dev/null; then started=0; fi; done
if [[ $started == 1 ]]; then
  down=(e2e/scripts/cluster-down.sh)
  if [[ -d $STATE_DIR/pki ]]; then down+=(--keep-state); fi
  trap '"${down[@]}"' EXIT
fi
e2e/scripts/cluster-up.sh --node >/dev/null
e2e/scripts/import-images.sh "${tarballs[@]}"
# shellcheck source=env.sh
. e2e/scripts/env.sh
set -a
# shellcheck disable=SC1091 # written by cluster-up.sh
. "$STATE_DIR/cluster.env"
set +a

report=$PWD/target/chaos/results.jsonl
mkdir -p "$(dirname "$report")"
rm -f "$report"
export PGPILOT_CHAOS_REPORT=$report PGPILOT_CHAOS_KILLS=$kills
status=0
cargo test -p pgpilot-manager --features e2e --test e2e -- --test-threads=2 chaos:: || status=$?
cargo test -p pgpilot-manager --features e2e --test e2e -- --test-threads=1 --ignored chaos:: || status=$?
if [[ -s $report ]]; then
  cargo run -q -p pgpilot-bench -- chaos-report --input "$report" --out docs/reliability.md \
    --command "just chaos --kills $kills"
fi
exit "$status"
