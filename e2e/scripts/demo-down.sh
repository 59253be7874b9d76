#!/usr/bin/env bash
# `just demo-down`: stops the demo's manager and its node cluster, leaving nothing behind.
set -euo pipefail
# shellcheck source=demo-env.sh
. "$(dirname "${BASH_SOURCE[0]}")/demo-env.sh"
if pid=$(pid_of pgpilot-manager); then stop_pids "$pid"; fi
"$E2E_DIR/scripts/cluster-down.sh"
