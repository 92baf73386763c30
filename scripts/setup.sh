#!/usr/bin/env bash
# Sets up a fresh Debian/Ubuntu machine for Sandforge: system packages, npm
# dependencies, the build, and the default guest image. Idempotent; run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/prereqs.sh
. scripts/prereqs.sh
require_root_and_node setup "it installs packages and builds the guest image with mmdebstrap"
install_missing_packages setup
if [ "$PACKAGES_INSTALLED" = 1 ]; then
  # nginx starts itself on install; Sandforge's tests run their own instance.
  systemctl disable --now nginx >/dev/null 2>&1 || true
fi

echo "setup: installing npm dependencies"
npm ci --no-audit --no-fund --loglevel=error
echo "setup: building"
npm run --silent build
echo "setup: building the default guest image (first time: a few minutes; later: cached)"
./bin/sandforge image build --name default
echo "setup: done. Try: ./bin/sandforge run -- uname -r"
