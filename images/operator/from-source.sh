#!/usr/bin/env bash
# localhost/pgpilot/operator:<tag> from this checkout: a static pgpilot-manager (release,
# x86_64-unknown-linux-musl, in its own target directory in the cache so a warm build
# recompiles only pgpilot's crates), wrapped by images/operator/build.sh. Prints the
# image's tarball.
# Usage: images/operator/from-source.sh [TAG=dev]
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${PGPILOT_CACHE:-$HOME/.cache/pgpilot}
TARGET=x86_64-unknown-linux-musl
rustup target add "$TARGET" >/dev/null 2>&1 || true
command -v musl-gcc >/dev/null ||
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends musl-tools >/dev/null
(cd "$REPO" && CARGO_TARGET_DIR=$CACHE/operator-target cargo build -q --release \
  --target "$TARGET" -p pgpilot-manager)
"$REPO/images/operator/build.sh" "$CACHE/operator-target/$TARGET/release/pgpilot-manager" "${1:-dev}"
