#!/usr/bin/env bash
# Sets up a fresh Debian/Ubuntu machine for Sandforge: system packages, npm
# dependencies, the build, and the default guest image. Idempotent; run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: run as root (sudo $0): it installs packages and builds the guest image with mmdebstrap" >&2
  exit 1
fi

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "setup: Node.js >= 20 is required (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi

APT_PACKAGES=(qemu-system-x86 qemu-utils busybox-static tini mmdebstrap erofs-utils e2fsprogs cpio util-linux nginx iproute2 openssl gcc libc6-dev)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
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
