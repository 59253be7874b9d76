#!/usr/bin/env bash
# `just demo-down`: stops the demo's manager and its node cluster, leaving nothing behind.
set -euo pipefail
# shellcheck source=demo-env.sh
. "$(dirname "${BASH_SOURCE[0]}")/demo-env.sh"
if pid=$(pid_of pgpilot-manager); then
  kill -TERM "$pid" 2>/dev/null || true
  for _ in {1..50}; do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
fi
"$E2E_DIR/scripts/cluster-down.sh"
