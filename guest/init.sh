#!/bin/sh
# Sandforge guest init: PID 1 inside the initramfs (busybox sh).
# Loads the virtio/fs modules, builds the root (read-only erofs lower +
# ext4 scratch upper, joined by overlayfs), mounts the agent disk at
# /.sandforge and hands PID 1 to tini, which runs the agent on Node.
# Runs under TCG on most hosts: every fork counts, so it stays small and quiet.
# Console protocol (the host watches for these): "SANDFORGE-INIT: ..." and
# "SANDFORGE-INIT-FAILED: <reason>".

export PATH=/bin

fail() {
  echo "SANDFORGE-INIT-FAILED: $*" >/dev/console
  # QEMU runs with -no-reboot: powering off (or the panic if PID 1 exits) ends it.
  poweroff -f
  sleep 5
  exit 1
}

mount -t devtmpfs -o nosuid,mode=0755 devtmpfs /dev || fail "mount devtmpfs"
mount -t proc -o nosuid,nodev,noexec proc /proc || fail "mount proc"
mount -t sysfs -o nosuid,nodev,noexec sysfs /sys || fail "mount sysfs"

# sandforge.debug=1 on the kernel cmdline traces this script; other keys are ignored.
read -r CMDLINE </proc/cmdline
case " $CMDLINE " in *" sandforge.debug=1 "*) set -x ;; esac

# Dependency-ordered by the image builder. A module that fails (absent,
# built in, unsupported CPU) is reported and skipped: mounts below decide
# what is actually fatal.
M=/lib/sandforge-modules
while read -r mod; do
  [ -n "$mod" ] || continue
  insmod "$M/$mod.ko" 2>/dev/null || echo "SANDFORGE-INIT: module $mod not loaded" >/dev/console
done <"$M/modules.order"

# Disks are identified by serial, never by vdX order (microvm may enumerate
# them in reverse). Probing can lag module load slightly, so poll briefly.
# Builtins only (no $(...)): each fork is expensive under TCG.
ROOT_DEV= AGENT_DEV= SCRATCH_DEV=
i=0
while :; do
  for s in /sys/block/vd*/serial; do
    [ -r "$s" ] || continue
    read -r serial <"$s"
    d=${s%/serial}
    case "$serial" in
      sf-root) ROOT_DEV=/dev/${d##*/} ;;
      sf-agent) AGENT_DEV=/dev/${d##*/} ;;
      sf-scratch) SCRATCH_DEV=/dev/${d##*/} ;;
    esac
  done
  [ -n "$ROOT_DEV" ] && [ -n "$AGENT_DEV" ] && [ -n "$SCRATCH_DEV" ] && break
  i=$((i + 1))
  [ $i -lt 50 ] || break
  usleep 20000
done
[ -n "$ROOT_DEV" ] || fail "no disk with serial sf-root"
[ -n "$AGENT_DEV" ] || fail "no disk with serial sf-agent"

mount -t erofs -o ro "$ROOT_DEV" /lower || fail "cannot mount sf-root ($ROOT_DEV) as erofs"
if [ -n "$SCRATCH_DEV" ]; then
  mount -t ext4 -o noatime "$SCRATCH_DEV" /scratch || fail "cannot mount sf-scratch ($SCRATCH_DEV) as ext4"
else
  # No scratch disk: keep writes in RAM rather than refuse to boot.
  echo "SANDFORGE-INIT: no sf-scratch disk, using tmpfs" >/dev/console
  mount -t tmpfs -o mode=0755 tmpfs /scratch || fail "mount tmpfs scratch"
fi
mkdir -p /scratch/upper /scratch/work || fail "cannot create overlay dirs on scratch"
mount -t overlay -o lowerdir=/lower,upperdir=/scratch/upper,workdir=/scratch/work overlay /newroot ||
  fail "cannot mount overlay root"

mkdir -p /newroot/.sandforge || fail "cannot create /.sandforge"
mount -t erofs -o ro "$AGENT_DEV" /newroot/.sandforge || fail "cannot mount sf-agent ($AGENT_DEV) as erofs"
[ -x /newroot/.sandforge/bin/tini ] || fail "agent disk has no bin/tini"

for d in proc sys dev; do
  mkdir -p "/newroot/$d"
  mount -o move "/$d" "/newroot/$d" || fail "cannot move /$d"
done
mkdir -p /newroot/dev/pts /newroot/dev/shm /newroot/run
mount -t devpts -o nosuid,noexec,newinstance,ptmxmode=0666,gid=5,mode=620 devpts /newroot/dev/pts || fail "mount devpts"
ln -sf pts/ptmx /newroot/dev/ptmx
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /newroot/dev/shm || fail "mount /dev/shm"
mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs /newroot/run || fail "mount /run"

# Loopback up (the network namespace outlives switch_root): commands talk to
# their own servers on localhost, and fetch/full reach the egress port there.
ifconfig lo 127.0.0.1 up || echo "SANDFORGE-INIT: loopback not brought up" >/dev/console

# A NIC exists only in network mode "full" (QEMU user-mode network, fixed
# addresses: no DHCP round trip at boot). resolv.conf is replaced, never
# written through: it may be a symlink that would resolve outside /newroot.
if [ -e /newroot/sys/class/net/eth0 ]; then
  ifconfig eth0 10.0.2.15 netmask 255.255.255.0 up && route add default gw 10.0.2.2 ||
    echo "SANDFORGE-INIT: eth0 not configured" >/dev/console
  rm -f /newroot/etc/resolv.conf
  echo "nameserver 10.0.2.3" >/newroot/etc/resolv.conf
fi

echo "SANDFORGE-INIT: switching root" >/dev/console
# env -i: the agent starts with exactly this environment, not the kernel's.
exec env -i UV_THREADPOOL_SIZE=16 HOME=/root \
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  switch_root /newroot /.sandforge/bin/tini -s -g -- \
  /.sandforge/lib/ld-linux-x86-64.so.2 --library-path /.sandforge/lib \
  /.sandforge/bin/node /.sandforge/agent.mjs
fail "switch_root failed"
