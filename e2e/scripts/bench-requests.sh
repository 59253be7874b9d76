#!/usr/bin/env bash
# The API requests a converged reconcile costs, measured from the API server's own metrics
# (apiserver_request_total), for the manager built from this checkout and, as the baseline in
# the same run, one built from an earlier commit (default f79ac22: before the watch caches).
# Runs on the control-plane cluster (kwok nodes): a 3-instance cluster from
# examples/cluster.yaml is created, left to converge, then poked N times (an annotation: a
# watch event, so a full reconcile); the requests the API server counted meanwhile for the
# cluster's kinds, watches and the pokes themselves aside, are divided by the reconciles the
# manager counted. Results: target/bench/requests.md, then spliced into docs/benchmarks.md.
#
#   e2e/scripts/bench-requests.sh [--baseline COMMIT] [--pokes N]
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"
baseline=f79ac22
pokes=10
while (($#)); do
  case $1 in
    --baseline) baseline=$2; shift 2 ;;
    --pokes) pokes=$2; shift 2 ;;
    *) echo "usage: $0 [--baseline COMMIT] [--pokes N]" >&2; exit 2 ;;
  esac
done

# shellcheck source=e2e/scripts/lib.sh
. e2e/scripts/lib.sh
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Both managers, built into this checkout's target dir (the baseline from a worktree).
cargo build -q -p pgpilot-manager
current=$REPO/target/debug/pgpilot-manager
tree=$REPO/target/bench/baseline-src
if [[ ! -d $tree ]] || [[ $(git -C "$tree" rev-parse HEAD 2>/dev/null) != $(git rev-parse "$baseline") ]]; then
  rm -rf "$tree"
  git worktree prune
  git worktree add --detach "$tree" "$baseline" >/dev/null
fi
(cd "$tree" && CARGO_TARGET_DIR=$REPO/target/bench/baseline-target cargo build -q -p pgpilot-manager)
old=$REPO/target/bench/baseline-target/debug/pgpilot-manager

e2e/scripts/build-binaries.sh >/dev/null
started=1
for c in etcd kube-apiserver; do if pid_of "$c" >/dev/null; then started=0; fi; done
if [[ $started == 1 ]]; then trap 'e2e/scripts/cluster-down.sh >/dev/null' EXIT; fi
e2e/scripts/cluster-up.sh --kwok >/dev/null
# shellcheck source=e2e/scripts/env.sh
. e2e/scripts/env.sh
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for condition=established crd/postgresclusters.pgpilot.io >/dev/null

# Sum of apiserver_request_total for the cluster's kinds, by verb, watches left out.
# Events are left out: the controller-manager's PDB controller writes them too, and requests
# are not counted by client here (the manager's own counter below has its Events).
kinds='statefulsets|services|secrets|configmaps|pods|persistentvolumeclaims|serviceaccounts|roles|rolebindings|poddisruptionbudgets|postgresclusters|storageclasses'
counts() {
  kubectl get --raw /metrics | awk -v kinds="^($kinds)\$" '
    /^apiserver_request_total\{/ {
      verb = $0; sub(/.*verb="/, "", verb); sub(/".*/, "", verb)
      res = $0; sub(/.*[{,]resource="/, "", res); sub(/".*/, "", res)
      sub_ = ""; if ($0 ~ /subresource="/) { sub_ = $0; sub(/.*subresource="/, "", sub_); sub(/".*/, "", sub_) }
      if (verb == "WATCH" || res !~ kinds) next
      key = verb " " res (sub_ != "" ? "/" sub_ : "")
      n[key] += $NF
    }
    END { for (k in n) print k, n[k] }' | sort
}

# The manager's own count of its requests (watches aside), where it has one.
own_requests() {
  curl -sf "http://127.0.0.1:$1/metrics" |
    awk '/^pgpilot_api_requests_total\{controller="cluster"/ {found = 1; if (!/verb="watch/) n += $NF}
         END {if (found) print n + 0}'
}

reconciles() {
  curl -sf "http://127.0.0.1:$1/metrics" | awk '/^pgpilot_reconcile_total\{controller="cluster"/ {n += $NF} END {print n + 0}'
}

# measure NAME BINARY: prints "verb resource delta" lines and the reconcile count.
measure() {
  local name=$1 bin=$2 ns port probes pid
  ns=bench-requests-$name-$$
  port=$(free_port) probes=$(free_port)
  kubectl create namespace "$ns" >/dev/null
  "$bin" rbac --name "pgpilot-manager-$ns" --namespace "$ns" --bind user:pgpilot-manager | kubectl apply -f - >/dev/null
  KUBECONFIG=$STATE_DIR/pgpilot-manager.kubeconfig "$bin" --controllers=cluster --namespace "$ns" \
    --default-image 17=localhost/pgpilot/postgres:17 --log-format text \
    --metrics-bind-address "127.0.0.1:$port" --health-probe-bind-address "127.0.0.1:$probes" \
    >"target/bench/requests-$name.log" 2>&1 &
  pid=$!
  kubectl apply -n "$ns" -f examples/cluster.yaml >/dev/null
  local gen
  for _ in $(seq 120); do
    gen=$(kubectl get pgc demo -n "$ns" -o jsonpath='{.metadata.generation}/{.status.observedGeneration}' 2>/dev/null || true)
    [[ $gen == */* && ${gen%/*} == "${gen#*/}" ]] && break
    sleep 0.5
  done
  [[ $gen == */* && ${gen%/*} == "${gen#*/}" ]] || die "$name: the cluster did not converge (see target/bench/requests-$name.log)"
  sleep 5 # the StatefulSet controller's own status updates settle
  local before_r before before_own
  before_r=$(reconciles "$port")
  before_own=$(own_requests "$port")
  before=$(counts)
  for i in $(seq "$pokes"); do
    kubectl annotate pgc demo -n "$ns" --overwrite "bench/poke=$i" >/dev/null
    sleep 1
  done
  sleep 2
  local after_r after after_own
  after_r=$(reconciles "$port")
  after_own=$(own_requests "$port")
  after=$(counts)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  # Wait for the namespace's deletion: its clean-up by the controller-manager is requests too.
  kubectl delete namespace "$ns" --timeout=120s >/dev/null
  kubectl delete clusterrole,clusterrolebinding "pgpilot-manager-$ns" --ignore-not-found >/dev/null
  echo "reconciles $((after_r - before_r))"
  if [[ -n $after_own ]]; then echo "own $((after_own - before_own))"; fi
  join -a2 -e 0 -o 0,1.2,2.2 <(echo "$before" | awk '{print $1"_"$2, $3}') <(echo "$after" | awk '{print $1"_"$2, $3}') |
    awk -v pokes="$pokes" '{d = $3 - $2; if ($1 == "PATCH_postgresclusters" || $1 == "GET_postgresclusters") d -= pokes; if (d > 0) print $1, d}'
}

mkdir -p target/bench
log "baseline $baseline"
base=$(measure baseline "$old")
log "current $(git rev-parse --short HEAD)"
cur=$(measure current "$current")
log "baseline requests by verb and resource: $(grep -v '^reconciles' <<<"$base" | tr '\n' ' ')"
log "current requests by verb and resource: $(grep -v '^reconciles' <<<"$cur" | tr '\n' ' ')"

# Lines of a controller's wiring: controller.rs without its RBAC rules, blank and comment
# lines left out; and the `run` function alone (what joins the runner).
wiring() {
  git show "$1:crates/pgpilot-cluster/src/controller.rs" |
    awk '/fn rbac_rules/ {skip = 1} skip && /^    }$/ {skip = 0; next} !skip' |
    grep -cv '^[[:space:]]*\(//.*\)\{0,1\}$'
}
run_fn() {
  git show "$1:crates/pgpilot-cluster/src/controller.rs" |
    awk '/fn run\(&self, ctx: RunContext\)/ {on = 1} on {n++} on && /^    }$/ {on = 0} END {print n + 0}'
}

per() { # LINES: "verb_resource n" and "reconciles N" → per-reconcile table rows
  awk '/^reconciles/ {r = $2; next} /^own/ {own = $2; next}
       {split($1, a, "_"); by[a[1]] += $2; total += $2}
       END {printf "%d reconciles; %d requests, %.1f per reconcile", r, total, (r ? total / r : 0)
            for (v in by) printf "; %s %.1f", v, by[v] / (r ? r : 1)
            if (own != "") printf " (the manager counted %d of its own, Events included)", own
            printf "\n"}'
}
{
  echo "<!-- requests:begin -->"
  echo "## API requests per converged reconcile"
  echo
  echo "\`e2e/scripts/bench-requests.sh\` ($(date -u +%Y-%m-%dT%H:%MZ)): a converged 3-instance cluster on the"
  echo "control plane (kwok nodes) poked $pokes times; requests for the cluster's kinds from the API server's"
  echo "\`apiserver_request_total\` (watches, Events and the pokes' GET and PATCH aside), per reconcile the"
  echo "manager counted; the current manager also counts its own requests (\`pgpilot_api_requests_total\`)."
  echo
  echo "| manager | requests |"
  echo "|---|---|"
  echo "| baseline $baseline (before the watch caches) | $(per <<<"$base") |"
  echo "| current $(git rev-parse --short HEAD) | $(per <<<"$cur") |"
  echo
  echo "Target: 0 writes and at most 2 requests per converged reconcile."
  echo
  echo "### Wiring of a controller"
  echo
  echo "| | $baseline | $(git rev-parse --short HEAD) |"
  echo "|---|---|---|"
  echo "| \`crates/pgpilot-cluster/src/controller.rs\` without its RBAC rules (non-blank, non-comment lines) | $(wiring "$baseline") | $(wiring HEAD) |"
  echo "| the \`run\` function (watches, caches, context: what joins the runner) | $(run_fn "$baseline") (plus \`run_in\`, \`reconcile_measured\`, \`error_policy\`) | $(run_fn HEAD) |"
  echo
  echo "Plus one entry in \`crates/pgpilot-manager/src/registry.rs\` (4 lines). Target: under 60 lines of wiring (runner + registry)."
  echo "<!-- requests:end -->"
} >target/bench/requests.md
cat target/bench/requests.md
python3 - docs/benchmarks.md target/bench/requests.md <<'EOF'
import re, sys
doc, new = open(sys.argv[1]).read(), open(sys.argv[2]).read().strip()
pat = re.compile(r"<!-- requests:begin -->.*?<!-- requests:end -->", re.S)
doc = pat.sub(new, doc) if pat.search(doc) else doc.rstrip() + "\n\n" + new + "\n"
open(sys.argv[1], "w").write(doc)
EOF
log "written to docs/benchmarks.md"
