# Sourced (not run) by scripts/setup.sh and deploy/install.sh: the Debian packages
# Sandforge needs and the checks both scripts start with, kept in one place.

APT_PACKAGES=(qemu-system-x86 qemu-utils busybox-static tini mmdebstrap erofs-utils e2fsprogs cpio util-linux nginx iproute2 openssl gcc libc6-dev)

# require_root_and_node WHO [WHY]: exits unless running as root with Node.js >= 20.
require_root_and_node() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "$1: run as root (sudo $0)${2:+: $2}" >&2
    exit 1
  fi
  local node_major
  node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
  if [ "$node_major" -lt 20 ]; then
    echo "$1: Node.js >= 20 is required (found: $(node --version 2>/dev/null || echo none))" >&2
    exit 1
  fi
}

# install_missing_packages WHO: apt-installs what of APT_PACKAGES is missing;
# sets PACKAGES_INSTALLED=1 when it installed anything.
install_missing_packages() {
  local missing=() p
  PACKAGES_INSTALLED=0
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "$1: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    PACKAGES_INSTALLED=1
  fi
}
