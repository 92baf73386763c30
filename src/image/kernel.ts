import { readdir, readFile, rename, writeFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { SandforgeError } from '../shared/errors.js';
import { hashInputs } from './hash.js';
import { run } from './exec.js';
import { ensureCacheDir, exists } from './cache.js';
import { BUILDER_VERSION, type ImageSpec } from './spec.js';
import type { Workspace } from './workspace.js';

/** A cached kernel tree: `vmlinuz`, `release`, `modules/` (= /lib/modules/<release>). */
export interface KernelTree {
  dir: string;
  release: string;
  vmlinuz: string;
  modulesDir: string;
  key: string;
  cached: boolean;
}

/** Inputs that decide the kernel tree's content. */
export function kernelKey(spec: ImageSpec): string {
  return hashInputs({ what: 'kernel', v: BUILDER_VERSION, suite: spec.suite, mirrors: spec.mirrors, pkg: spec.kernelPackage });
}

/**
 * Returns the kernel tree for `spec`, fetching it on a cache miss: mmdebstrap
 * extracts the kernel package (and its deps) without installing anything,
 * and only /boot/vmlinuz-* and the modules are kept.
 */
export async function ensureKernel(
  imagesDir: string,
  spec: ImageSpec,
  ws: Workspace,
  opts: { signal?: AbortSignal; force?: boolean } = {},
): Promise<KernelTree> {
  const cache = await ensureCacheDir(imagesDir);
  const key = kernelKey(spec);
  const dir = join(cache, `kernel-${key}`);
  const tree = async (cached: boolean): Promise<KernelTree> => {
    const release = (await readFile(join(dir, 'release'), 'utf8')).trim();
    return { dir, release, vmlinuz: join(dir, 'vmlinuz'), modulesDir: join(dir, 'modules'), key, cached };
  };
  if (!opts.force && (await exists(join(dir, 'release')))) return tree(true);

  const tmp = await ws.tempDir(cache, 'kernel');
  const x = join(tmp, 'x');
  const out = join(tmp, 'out');
  await run('mkdir', ['-p', x, out]);
  await run(
    'mmdebstrap',
    ['--variant=extract', `--include=${spec.kernelPackage}`, '--quiet', '--aptopt=Acquire::Retries "3"', spec.suite, '-', ...spec.mirrors],
    // Only the kernel image and module tree are needed out of ~500 MB.
    { signal: opts.signal, pipeTo: { cmd: 'tar', args: ['-x', '-C', x, '--wildcards', './boot/vmlinuz-*', '*lib/modules/*'] } },
  );
  const kernels = (await readdir(join(x, 'boot'))).filter((f) => f.startsWith('vmlinuz-'));
  if (kernels.length !== 1) {
    throw new SandforgeError('internal', `expected one kernel in ${spec.kernelPackage}, found: ${kernels.join(', ') || 'none'}`);
  }
  const release = kernels[0]!.slice('vmlinuz-'.length);
  const modsrc = (await exists(join(x, 'usr/lib/modules', release)))
    ? join(x, 'usr/lib/modules', release)
    : join(x, 'lib/modules', release);
  if (!(await exists(modsrc))) throw new SandforgeError('internal', `no modules for kernel ${release} in ${spec.kernelPackage}`);
  await rename(join(x, 'boot', kernels[0]!), join(out, 'vmlinuz'));
  await rename(modsrc, join(out, 'modules'));
  await writeFile(join(out, 'release'), `${release}\n`);
  await rm(dir, { recursive: true, force: true });
  await rename(out, dir);
  return tree(false);
}
