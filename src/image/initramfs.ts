import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { SandforgeError } from '../shared/errors.js';
import { run } from './exec.js';
import { writeCpio, type CpioEntry } from './cpio.js';
import { resolveModules } from './modules.js';
import type { KernelTree } from './kernel.js';

/** Where /init finds its modules and their load order inside the initramfs. */
export const INITRAMFS_MODULES_DIR = 'lib/sandforge-modules';

/** Inputs for {@link buildInitramfs}. */
export interface InitramfsInput {
  kernel: KernelTree;
  /** Content of guest/init.sh. */
  initScript: Buffer;
  /** A static busybox binary (busybox-static). */
  busybox: string;
  modules: string[];
  requiredModules: string[];
}

/**
 * Builds the gzip'd newc initramfs: busybox with applet links, the guest
 * modules (flattened, uncompressed .ko) with a `modules.order` file giving
 * the dependency-correct load order, and /init. Returns the module order.
 */
export async function buildInitramfs(input: InitramfsInput, out: string): Promise<string[]> {
  const plan = await resolveModules(input.kernel.modulesDir, input.modules);
  const lacking = input.requiredModules.filter((m) => plan.missing.includes(m));
  if (lacking.length) {
    throw new SandforgeError('internal', `kernel ${input.kernel.release} lacks required modules: ${lacking.join(', ')}`);
  }

  const applets = (await run(input.busybox, ['--list'])).stdout.split('\n').filter((a) => /^[\w.[-]+$/.test(a));
  const entries: CpioEntry[] = [
    ...['bin', 'dev', 'etc', 'lib', 'proc', 'sys', 'run', 'tmp', 'lower', 'scratch', 'newroot', INITRAMFS_MODULES_DIR].map((path) => ({
      type: 'dir' as const,
      path,
    })),
    // The kernel opens /dev/console for init's stdio before anything mounts devtmpfs.
    { type: 'chardev', path: 'dev/console', major: 5, minor: 1 },
    { type: 'file', path: 'bin/busybox', data: await readFile(input.busybox), mode: 0o755 },
    ...applets.filter((a) => a !== 'busybox').map((a) => ({ type: 'symlink' as const, path: `bin/${a}`, target: 'busybox' })),
    { type: 'symlink', path: 'sbin', target: 'bin' },
    { type: 'file', path: 'init', data: input.initScript, mode: 0o755 },
  ];
  for (const m of plan.order) {
    entries.push({
      type: 'file',
      path: `${INITRAMFS_MODULES_DIR}/${m.name}.ko`,
      data: await readFile(join(input.kernel.modulesDir, m.path)),
    });
  }
  const order = plan.order.map((m) => m.name);
  entries.push({ type: 'file', path: `${INITRAMFS_MODULES_DIR}/modules.order`, data: Buffer.from(`${order.join('\n')}\n`) });
  await writeFile(out, gzipSync(writeCpio(entries), { level: 9 }));
  return order;
}
