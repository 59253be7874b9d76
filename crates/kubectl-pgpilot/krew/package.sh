#!/usr/bin/env bash
# Builds kubectl-pgpilot for this machine (release profile), packs it as a krew archive and
# writes the krew manifest for it, both in target/krew/:
#   kubectl-pgpilot-<os>-<arch>.tar.gz   the binary and the licence notice
#   pgpilot.yaml                          krew's Plugin manifest, with the archive's sha256
# Install from them: kubectl krew install --manifest=target/krew/pgpilot.yaml \
#   --archive=target/krew/kubectl-pgpilot-<os>-<arch>.tar.gz
# RELEASE_URL is where the archive will be published (the manifest's uri).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$REPO"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
os=$(uname -s | tr '[:upper:]' '[:lower:]')
case $(uname -m) in
  x86_64) arch=amd64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) arch=$(uname -m) ;;
esac
url=${RELEASE_URL:-https://example.invalid/pgpilot/releases/download/v$version}
out=target/krew
archive=kubectl-pgpilot-$os-$arch.tar.gz

cargo build -q --release -p kubectl-pgpilot
rm -rf "$out/stage" && mkdir -p "$out/stage"
cp target/release/kubectl-pgpilot "$out/stage/"
echo "kubectl-pgpilot $version, Apache-2.0 (the pgpilot project)" >"$out/stage/LICENSE"
tar -C "$out/stage" -czf "$out/$archive" kubectl-pgpilot LICENSE
sha=$(sha256sum "$out/$archive" | cut -d' ' -f1)
sed -e "s|@VERSION@|$version|g" -e "s|@URI@|$url/$archive|" -e "s|@SHA256@|$sha|" \
  -e "s|@OS@|$os|" -e "s|@ARCH@|$arch|" crates/kubectl-pgpilot/krew/pgpilot.yaml.in >"$out/pgpilot.yaml"
echo "$out/$archive"
echo "$out/pgpilot.yaml"
