# pgpilot developer commands. `./just` runs these even where just is not installed.
set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list --unsorted

# Everything CI checks: formatting, lints, fresh CRDs, the chart, and both test tiers.
ci: lint chart-test test

# `just gitops-test`, `just integration`, then `just e2e`; the node tier's binaries and
# images build meanwhile in the background (nice 19, log in target/e2e-build.log), and
# `just e2e` waits for them.
# Every test: GitOps health checks, unit, integration (control plane + kwok), then the node
# tier (real node).
test:
    #!/usr/bin/env bash
    set -euo pipefail
    # The two tiers never share a cluster: kwok-tier pods must not land on the real node.
    if [[ ${PGPILOT_CLUSTER_DIR:-/var/tmp/pgpilot/cluster} == "${PGPILOT_E2E_DIR:-/var/tmp/pgpilot/e2e}" ]]; then
      echo "PGPILOT_CLUSTER_DIR and PGPILOT_E2E_DIR name the same state dir: the tiers need one each" >&2
      exit 1
    fi
    # Unless one runs already (.ci/run starts it earlier). Stopped if a tier fails before
    # `just e2e` has waited for it.
    cache=${PGPILOT_CACHE:-$HOME/.cache/pgpilot}
    mkdir -p "$cache"
    if flock -n "$cache/.e2e-build.lock" true; then
      mkdir -p target
      setsid nice -n 19 e2e/scripts/e2e-build.sh >target/e2e-build.log 2>&1 </dev/null &
      bg=$!
      trap 'if [[ -e /proc/$bg ]]; then kill -TERM -- "-$bg" 2>/dev/null || true; fi' EXIT
    fi
    "{{just_executable()}}" --justfile "{{justfile()}}" gitops-test
    "{{just_executable()}}" --justfile "{{justfile()}}" integration
    "{{just_executable()}}" --justfile "{{justfile()}}" e2e

# Argo CD's health checks (gitops/argocd, in gopher-lua) and kstatus (Flux) against
# recorded statuses, and argocd-cm.yaml in step with the scripts (docs/gitops.md).
gitops-test:
    cd e2e/gitops && go test -count=1 ./...

# The control plane runs in the default state dir (PGPILOT_CLUSTER_DIR): built or reused,
# started, and stopped again at the end if this started it; never a node cluster.
# Unit and integration tests against a real local control plane with kwok's fake nodes.
integration:
    #!/usr/bin/env bash
    set -euo pipefail
    e2e/scripts/build-binaries.sh
    . e2e/scripts/lib.sh
    if [[ -f $NODE_MARKER ]]; then
      die "$STATE_DIR holds a node cluster: the integration tier needs a control-plane-only one (kwok pods must not land on a real node); use another PGPILOT_CLUSTER_DIR"
    fi
    # Leave a cluster we found running; stop the one we started (keeping a state dir we found).
    started=1
    for c in etcd kube-apiserver; do if pid_of "$c" >/dev/null; then started=0; fi; done
    if [[ $started == 1 ]]; then
      down=(e2e/scripts/cluster-down.sh)
      if [[ -d $STATE_DIR/pki ]]; then down+=(--keep-state); fi
      trap '"${down[@]}"' EXIT
    fi
    e2e/scripts/cluster-up.sh --kwok >/dev/null
    . e2e/scripts/env.sh
    cargo test --workspace --no-fail-fast

# Root only. Builds (or finds cached) the node binaries and the images it needs
# (e2e/scripts/e2e-build.sh); its own node cluster (e2e/scripts/e2e-env.sh:
# /var/tmp/pgpilot/e2e) is reused if running, stopped at the end only if this started it.
# Node tier: a real node (kubelet, containerd, CNI), node-smoke.sh, then the e2e tests.
e2e:
    #!/usr/bin/env bash
    set -euo pipefail
    . e2e/scripts/e2e-env.sh
    built=$(e2e/scripts/e2e-build.sh) # (not in <(...): its failure must stop the recipe)
    mapfile -t tarballs <<<"$built"
    started=1
    for c in etcd kube-apiserver; do if pid_of "$c" >/dev/null; then started=0; fi; done
    if [[ $started == 1 ]]; then
      down=(e2e/scripts/cluster-down.sh)
      if [[ -d $STATE_DIR/pki ]]; then down+=(--keep-state); fi
      trap '"${down[@]}"' EXIT # also undoes a start that failed half-way
    fi
    e2e/scripts/cluster-up.sh --node >/dev/null
    e2e/scripts/import-images.sh "${tarballs[@]}"
    e2e/scripts/node-smoke.sh
    . e2e/scripts/env.sh
    set -a; . "$STATE_DIR/cluster.env"; set +a
    # Two suites side by side (PGPILOT_E2E_THREADS): each test has its own namespace and
    # manager, and most of a test is waiting on pods, so the node keeps up. The kubectl
    # plugin's test runs the plugin binary through kubectl.
    cargo build -p kubectl-pgpilot
    cargo test -p pgpilot-manager --features e2e --test e2e -- --test-threads="${PGPILOT_E2E_THREADS:-2}"

# Unit tests only: no cluster needed.
unit:
    cargo test --workspace --lib --bins --test cel_rules

# Formatting, clippy (warnings as errors) and shellcheck.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    shellcheck -x just .ci/run e2e/scripts/*.sh charts/pgpilot/*.sh images/*.sh images/*/*.sh crates/pgpilot-upgrade/scripts/*.sh gitops/argocd/*.sh crates/kubectl-pgpilot/krew/*.sh

# Regenerate crds/ from the API types.
crds:
    cargo run -q -p pgpilot-manager -- crds --out-dir crds

# Regenerate the PostgreSQL parameter tables (crates/pgpilot-api/src/parameters/) from
# the images themselves: every parameter, its type, range and accepted values.
pg-parameters:
    images/postgres-parameters.sh 17
    images/postgres-parameters.sh 15.20

# Copy crds/ into the chart and regenerate its RBAC files from the manager.
chart-sync:
    charts/pgpilot/sync.sh

# Lint and render the Helm chart (helm built from its Go module) and check it against the
# manager's own CRDs and RBAC; its alerts checked and unit-tested with promtool; what it
# renders and examples/ validated by kubeconform against Kubernetes' and the CRDs' schemas.
chart-test: alerts-test
    charts/pgpilot/sync.sh --check
    charts/pgpilot/test.sh
    e2e/scripts/kubeconform.sh

# The chart's alert rules: `promtool check rules`, their unit tests, their runbooks exist.
alerts-test:
    e2e/scripts/alerts-test.sh

# Build the Kubernetes, etcd and kwok binaries (cached in ~/.cache/pgpilot).
k8s-binaries:
    e2e/scripts/build-binaries.sh

# Start the local control plane (etcd, apiserver, controller-manager, scheduler); idempotent.
cluster-up *FLAGS:
    e2e/scripts/build-binaries.sh
    e2e/scripts/cluster-up.sh {{FLAGS}}

# A real node, images from Debian packages, the manager, and a three-instance PostgreSQL
# cluster answering a query: from nothing (or from the cache) in one command.
demo:
    e2e/scripts/demo.sh

# Stop the demo and remove everything it started.
demo-down:
    e2e/scripts/demo-down.sh

# Stop the local cluster and remove its state.
cluster-down:
    e2e/scripts/cluster-down.sh

# Show what runs.
cluster-status:
    e2e/scripts/cluster-status.sh

# Run the manager against the local cluster with the CRDs installed.
run *ARGS:
    #!/usr/bin/env bash
    set -euo pipefail
    source e2e/scripts/env.sh
    kubectl apply --server-side --force-conflicts -f crds/
    cargo run -p pgpilot-manager -- --log-format text --default-image 17=localhost/pgpilot/postgres:17 \
        --metrics-bind-address 127.0.0.1:8080 --health-probe-bind-address 127.0.0.1:8081 {{ARGS}}

# The cluster controller's benchmarks on the node cluster (time to Ready against two
# baselines, failover and switchover write gaps), written to docs/benchmarks.md. Not tests:
# nothing is asserted on timings. Arguments go to `pgpilot-bench all` (e.g. --repeat 5).
bench *ARGS:
    e2e/scripts/bench-run.sh {{ARGS}}

# Scale (#20): 1,000 PostgresClusters (--sizes 1000,10000 for both) of three instances on one
# manager, kwok's fake nodes on a fresh control plane per size: time to converge, requests
# per cluster, 429s, memory and CPU, a steady window and a restart (writes must be 0). Into
# docs/benchmarks.md. More flags go to `pgpilot-bench scale` (e.g. --manager-arg=--concurrency=16).
bench-scale *ARGS:
    e2e/scripts/bench-scale.sh {{ARGS}}

# The backup controller's benchmarks (#13): a pgbench database of scale 70 (≈ 1 GB) in a
# one-instance cluster archiving to MinIO over TLS; full backup beside tar-to-disk and
# PUT-to-MinIO of the same bytes, pgBackRest settings, restore, WAL archive lag under load.
# Into the backup section of docs/benchmarks.md. Arguments: [--scale N] [--repeat N]
# [--load-seconds N] [--clients N] [--keep].
bench-backup *ARGS:
    e2e/scripts/bench-run.sh backup {{ARGS}}

# The upgrade controller's benchmarks (#14): a minor upgrade's write gap (15.18 → 15.20, three
# instances) beside a switchover, and a major upgrade's (15.20 → 17, --link, pgbench scale 70)
# total time and write downtime beside initdb + pg_upgrade --link by hand and a restart.
# Into the upgrade section of docs/benchmarks.md. Arguments: [--scale N] [--instances N]
# [--repeat N] [--only minor|major].
bench-upgrade *ARGS:
    e2e/scripts/bench-run.sh upgrade {{ARGS}}

# The secret-rotation controller's benchmarks: AlternatingUsers rotations (one-instance cluster,
# role app) under client pods that connect for every insert; request → Secret updated →
# consumers rolled (beside a `kubectl rollout restart`) → old login revoked → complete, refused
# logins, the load added beside a window without rotation. Into the rotation section of
# docs/benchmarks.md. Arguments: [--repeat N] [--clients N] [--grace SECONDS].
bench-rotation *ARGS:
    e2e/scripts/bench-run.sh rotation {{ARGS}}

# TLS cost (#16): pgbench TPS without and with TLS (verify-full), on persistent connections and
# with a new connection per transaction, alternating in one run; into docs/benchmarks.md.
# Arguments: [--repeat N] [--seconds N] [--clients N].
bench-tls *ARGS:
    e2e/scripts/bench-run.sh tls {{ARGS}}

# Chaos (#20), root only, on the node tier's cluster: a primary's network partitioned, the
# manager SIGKILLed at random points (--kills N, default 50), kube-apiserver and etcd down,
# kubelet and containerd killed — under sequence writers; every fault must lose no
# acknowledged write. Into docs/reliability.md. CI runs the partition and two kills.
chaos *ARGS:
    e2e/scripts/chaos.sh {{ARGS}}

# API requests per converged reconcile, this checkout beside a baseline commit (default
# f79ac22, before the watch caches), from the API server's metrics on the control-plane
# cluster; written to docs/benchmarks.md. Arguments: [--baseline COMMIT] [--pokes N].
bench-requests *ARGS:
    e2e/scripts/bench-requests.sh {{ARGS}}
