# pgpilot developer commands. `./just` runs these even where just is not installed.
set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes.
default:
    @just --list --unsorted

# Everything CI checks: formatting, lints, fresh CRDs, the chart, unit and integration tests.
ci: lint chart-test test

# Unit tests, then integration tests against a real local control plane (built or reused,
# started, and stopped again at the end).
test:
    #!/usr/bin/env bash
    set -euo pipefail
    e2e/scripts/build-binaries.sh
    started=0
    if ! e2e/scripts/cluster-status.sh >/dev/null 2>&1; then started=1; fi
    e2e/scripts/cluster-up.sh --kwok
    # Leave a cluster we found running; stop the one we started.
    if [ "$started" = 1 ]; then trap 'e2e/scripts/cluster-down.sh' EXIT; fi
    source e2e/scripts/env.sh
    cargo test --workspace --no-fail-fast

# Unit tests only: no cluster needed.
unit:
    cargo test --workspace --lib --bins --test cel_rules

# Formatting, clippy (warnings as errors) and shellcheck.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    shellcheck -x just .ci/run e2e/scripts/*.sh charts/pgpilot/*.sh images/*.sh images/*/build.sh

# Regenerate crds/ from the API types.
crds:
    cargo run -q -p pgpilot-manager -- crds --out-dir crds

# Copy crds/ into the chart and regenerate its RBAC files from the manager.
chart-sync:
    charts/pgpilot/sync.sh

# Lint and render the Helm chart (helm built from its Go module) and check it against the
# manager's own CRDs and RBAC.
chart-test:
    charts/pgpilot/sync.sh --check
    charts/pgpilot/test.sh

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
    kubectl apply --server-side -f crds/
    cargo run -p pgpilot-manager -- --log-format text --default-image 17=localhost/pgpilot/postgres:17 \
        --metrics-bind-address 127.0.0.1:8080 --health-probe-bind-address 127.0.0.1:8081 {{ARGS}}
