#!/usr/bin/env bash
# Installs Sandforge as a system service on a Debian/Ubuntu host. Run as root from a
# Sandforge checkout:
#
#   sudo deploy/install.sh [--no-image] [--prefix DIR]
#
#   --no-image     do not build the default guest image (build it later with
#                  `sandforge image build --images /var/lib/sandforge/images` as root)
#   --prefix DIR   where the built Sandforge goes (default /opt/sandforge);
#                  /usr/local/bin/sandforge links to DIR/bin/sandforge
#
# Idempotent: a second run leaves the same state (same user, same token, same modes).
# What it does:
#   - installs the Debian packages listed in scripts/setup.sh (QEMU, mmdebstrap, …)
#   - creates the system group/user `sandforge` (in group kvm; creates `kvm` if missing)
#   - /var/lib/sandforge/{images,state}: sandforge:sandforge 0750
#     /etc/sandforge: root:sandforge 0750
#   - copies this checkout to the prefix, `npm ci` (only when package-lock.json changed)
#     and `npm run build` there, links /usr/local/bin/sandforge
#   - builds the default image as root, then hands /var/lib/sandforge to sandforge
#   - writes SANDFORGE_TOKEN=sf_live_<32 hex> to /etc/sandforge/sandforge.env
#     (root:sandforge 0640) unless it already holds a token
#   - installs deploy/sandforge.service to /etc/systemd/system; with systemd running,
#     daemon-reload + enable (it does not start or restart the service)
set -euo pipefail

SRC=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=/opt/sandforge
BUILD_IMAGE=1
BIN_LINK=/usr/local/bin/sandforge
VAR=/var/lib/sandforge
ETC=/etc/sandforge
ENV_FILE=$ETC/sandforge.env
UNIT_DIR=/etc/systemd/system

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --no-image) BUILD_IMAGE=0 ;;
    --prefix) [ $# -ge 2 ] || { echo "install: --prefix needs a directory" >&2; exit 2; }; PREFIX=$2; shift ;;
    --prefix=*) PREFIX=${1#--prefix=} ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
case "$PREFIX" in /*) ;; *) echo "install: --prefix must be an absolute path" >&2; exit 2 ;; esac
PREFIX=${PREFIX%/}
if [ "$PREFIX" = "$SRC" ]; then
  echo "install: --prefix must not be the checkout itself ($SRC)" >&2
  exit 2
fi

log() { echo "install: $*"; }

# shellcheck source=scripts/prereqs.sh
. "$SRC/scripts/prereqs.sh"
require_root_and_node install

# --- Debian packages: the list in scripts/prereqs.sh, shared with setup.sh -----------
install_missing_packages install

# --- user and groups --------------------------------------------------------------------
if ! getent group kvm >/dev/null; then
  log "creating group kvm (the unit runs with Group=kvm)"
  groupadd --system kvm
fi
if ! getent group sandforge >/dev/null; then
  log "creating group sandforge"
  groupadd --system sandforge
fi
if ! id -u sandforge >/dev/null 2>&1; then
  log "creating user sandforge"
  useradd --system --gid sandforge --groups kvm --home-dir "$VAR" --no-create-home \
    --shell /usr/sbin/nologin --comment "Sandforge supervisor" sandforge
elif ! id -nG sandforge | tr ' ' '\n' | grep -qx kvm; then
  log "adding sandforge to group kvm"
  usermod -aG kvm sandforge
fi

# --- directories ------------------------------------------------------------------------
install -d -o root -g root -m 0755 /var/lib
install -d -o sandforge -g sandforge -m 0750 "$VAR" "$VAR/images" "$VAR/state"
install -d -o root -g sandforge -m 0750 "$ETC"

# --- Sandforge itself: copy the checkout to the prefix and build it there ---------------
# The build happens in the copy so that the checkout (which may be in use) is untouched.
log "copying $SRC to $PREFIX"
install -d -o root -g root -m 0755 "$PREFIX"
# Start from a clean tree (files removed upstream must not linger), keeping node_modules.
find "$PREFIX" -mindepth 1 -maxdepth 1 ! -name node_modules -exec rm -rf {} +
tar -C "$SRC" --exclude=./.git --exclude=./node_modules --exclude=./dist \
  --exclude=./bench/results -cf - . | tar -C "$PREFIX" --no-same-owner -xf -
lock_hash=$(sha256sum "$PREFIX/package-lock.json" | cut -d' ' -f1)
stamp="$PREFIX/node_modules/.sandforge-lock-sha256"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_hash" ]; then
  log "npm ci in $PREFIX"
  (cd "$PREFIX" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$lock_hash" >"$stamp"
else
  log "npm dependencies in $PREFIX are up to date"
fi
log "building in $PREFIX"
(cd "$PREFIX" && npm run --silent build)
chown -R root:root "$PREFIX"
chmod -R go-w,a+rX "$PREFIX"
ln -sfn "$PREFIX/bin/sandforge" "$BIN_LINK"

# --- the default image (as root: mmdebstrap), then hand the tree to sandforge -----------
if [ "$BUILD_IMAGE" = 1 ]; then
  log "building the default image in $VAR/images (first time: a few minutes; later: cached)"
  "$BIN_LINK" image build --name default --images "$VAR/images"
fi
chown -R sandforge:sandforge "$VAR"
chmod 0750 "$VAR" "$VAR/images" "$VAR/state"

# --- the API token -----------------------------------------------------------------------
if [ -f "$ENV_FILE" ] && grep -Eq '^SANDFORGE_TOKEN=.{16,}' "$ENV_FILE"; then
  log "keeping the token in $ENV_FILE"
else
  log "generating a token into $ENV_FILE"
  token="sf_live_$(openssl rand -hex 16)"
  tmp=$(mktemp "$ETC/.sandforge.env.XXXXXX")
  { [ -f "$ENV_FILE" ] && grep -v '^SANDFORGE_TOKEN=' "$ENV_FILE" || true; echo "SANDFORGE_TOKEN=$token"; } >"$tmp"
  mv -f "$tmp" "$ENV_FILE"
fi
chown root:sandforge "$ENV_FILE"
chmod 0640 "$ENV_FILE"

# --- the systemd unit --------------------------------------------------------------------
install -d -m 0755 "$UNIT_DIR"
install -o root -g root -m 0644 "$SRC/deploy/sandforge.service" "$UNIT_DIR/sandforge.service"
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable sandforge.service >/dev/null
  log "done. Start it with: systemctl start sandforge   (after an upgrade: systemctl restart sandforge)"
else
  log "done. systemd is not running here; the unit is installed in $UNIT_DIR/sandforge.service."
  log "start the supervisor by hand as the service user:"
  log "  runuser -u sandforge -g kvm -G sandforge -- env \$(cat $ENV_FILE) $BIN_LINK supervisor --port 8585 --host 127.0.0.1 --images $VAR/images"
fi
log "the API token is in $ENV_FILE (root-readable; clients need it as SANDFORGE_TOKEN)"
