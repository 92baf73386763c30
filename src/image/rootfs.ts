import { mkdir, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { hashInputs } from './hash.js';
import { run } from './exec.js';
import { ensureCacheDir, exists } from './cache.js';
import { BUILDER_VERSION, DPKG_EXCLUDES, DPKG_INCLUDES, type ImageSpec } from './spec.js';
import type { Workspace } from './workspace.js';

/**
 * Runs on the host after packages are installed, with "$1" = the chroot.
 * Sets a fixed identity (the agent overrides it per sandbox), the slirp DNS
 * resolver, an unprivileged user, and the agent disk's mount point.
 */
export const CUSTOMIZE_HOOK = [
  'set -e',
  'echo sandbox > "$1/etc/hostname"',
  `printf '127.0.0.1\\tlocalhost\\n127.0.1.1\\tsandbox\\n::1\\tlocalhost ip6-localhost ip6-loopback\\nff02::1\\tip6-allnodes\\nff02::2\\tip6-allrouters\\n' > "$1/etc/hosts"`,
  `printf 'nameserver 10.0.2.3\\n' > "$1/etc/resolv.conf"`,
  'mkdir -p "$1/root" "$1/.sandforge" && chmod 700 "$1/root"',
  'chroot "$1" useradd --uid 1000 --user-group --create-home --shell /bin/bash sandbox',
  'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin',
].join('\n');

/** Inputs that decide the rootfs content. */
export function rootfsKey(spec: ImageSpec): string {
  return hashInputs({
    what: 'rootfs',
    v: BUILDER_VERSION,
    suite: spec.suite,
    mirrors: spec.mirrors,
    packages: spec.packages,
    hook: CUSTOMIZE_HOOK,
    excludes: DPKG_EXCLUDES,
    includes: DPKG_INCLUDES,
  });
}

/**
 * Returns the path of the cached rootfs erofs for `spec`, building it on a
 * miss: mmdebstrap (minbase + packages) streams a tar that is unpacked and
 * packed into an uncompressed erofs (no decompression cost under TCG).
 */
export async function ensureRootfs(
  imagesDir: string,
  spec: ImageSpec,
  ws: Workspace,
  opts: { signal?: AbortSignal; force?: boolean } = {},
): Promise<{ path: string; key: string; cached: boolean }> {
  const cache = await ensureCacheDir(imagesDir);
  const key = rootfsKey(spec);
  const path = join(cache, `rootfs-${key}.erofs`);
  if (!opts.force && (await exists(path))) return { path, key, cached: true };

  const tmp = await ws.tempDir(cache, 'rootfs');
  const root = join(tmp, 'root');
  await mkdir(root);
  const args = [
    '--variant=minbase',
    `--include=${spec.packages.join(',')}`,
    '--quiet',
    '--aptopt=Acquire::Retries "3"',
    ...DPKG_EXCLUDES.map((p) => `--dpkgopt=path-exclude=${p}`),
    ...DPKG_INCLUDES.map((p) => `--dpkgopt=path-include=${p}`),
    `--customize-hook=${CUSTOMIZE_HOOK}`,
    spec.suite,
    '-',
    ...spec.mirrors,
  ];
  // Tar to stdout rather than a directory target: mmdebstrap then keeps its
  // proc/sys/dev mounts in its own temp dir, so our cleanup never meets a mount.
  await run('mmdebstrap', args, {
    signal: opts.signal,
    pipeTo: { cmd: 'tar', args: ['-x', '-C', root, '-p', '--numeric-owner', '--xattrs', '--xattrs-include=*'] },
  });
  const img = join(tmp, 'rootfs.erofs');
  await run('mkfs.erofs', ['--quiet', img, root], { signal: opts.signal });
  await rename(img, path);
  return { path, key, cached: false };
}
