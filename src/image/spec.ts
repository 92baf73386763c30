/**
 * What an image is made of. Everything here feeds the content hashes, so
 * changing a list rebuilds exactly the parts that depend on it.
 */

/** Bump when the builder's output changes for the same inputs (layout, flags, hooks). */
export const BUILDER_VERSION = 1;

/** Debian suite for rootfs and kernel. */
export const SUITE = 'bookworm';

/** apt sources; security carries the newest 6.1 kernel. */
export const MIRRORS = [
  'deb http://deb.debian.org/debian bookworm main',
  'deb http://deb.debian.org/debian bookworm-updates main',
  'deb http://deb.debian.org/debian-security bookworm-security main',
];

/** The kernel package (Debian archive, never the host's /boot). */
export const KERNEL_PACKAGE = 'linux-image-amd64';

/** Packages on top of minbase. */
export const DEFAULT_PACKAGES = ['bash', 'coreutils', 'python3', 'git', 'curl', 'ca-certificates', 'procps'];

/**
 * Guest kernel modules, roughly in load order (the builder computes the real
 * order from each module's dependencies). crc32c_generic provides the
 * "crc32c" crypto that libcrc32c/ext4/jbd2 ask for by alias at runtime.
 */
export const GUEST_MODULES = [
  'virtio_ring',
  'virtio',
  'virtio_mmio',
  'virtio_blk',
  'virtio_console',
  'crc32c_generic',
  'crc32c_intel',
  'libcrc32c',
  'erofs',
  'crc16',
  'mbcache',
  'jbd2',
  'ext4',
  'overlay',
  'netfs',
  'fscache',
  '9pnet',
  '9pnet_virtio',
  '9p',
  'failover',
  'net_failover',
  'virtio_net',
  'virtio_rng',
];

/** Without these the guest cannot mount its root; a build that lacks them fails. */
export const REQUIRED_MODULES = ['virtio_mmio', 'virtio_blk', 'erofs', 'ext4', 'overlay'];

/** Smallest RAM the default image boots with (kernel + initramfs + node). */
export const MIN_MEMORY_MB = 256;

/** Paths dpkg skips: docs and locales only cost space in a sandbox image. */
export const DPKG_EXCLUDES = ['/usr/share/man/*', '/usr/share/info/*', '/usr/share/doc/*', '/usr/share/locale/*', '/usr/share/lintian/*'];

/** Keep copyright files: licences travel with the image. */
export const DPKG_INCLUDES = ['/usr/share/doc/*/copyright'];

/** Full description of an image build; see {@link defaultSpec}. */
export interface ImageSpec {
  suite: string;
  mirrors: string[];
  kernelPackage: string;
  packages: string[];
  modules: string[];
  requiredModules: string[];
  minMemoryMb: number;
}

/** The spec `sandforge image build` uses. */
export function defaultSpec(): ImageSpec {
  return {
    suite: SUITE,
    mirrors: [...MIRRORS],
    kernelPackage: KERNEL_PACKAGE,
    packages: [...DEFAULT_PACKAGES],
    modules: [...GUEST_MODULES],
    requiredModules: [...REQUIRED_MODULES],
    minMemoryMb: MIN_MEMORY_MB,
  };
}
