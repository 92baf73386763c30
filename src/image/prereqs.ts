import { access, constants, open } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { SandforgeError } from '../shared/errors.js';

/** Host tools the image build runs, with the Debian package that provides each. */
export const BUILD_TOOLS: { cmd: string; pkg: string }[] = [
  { cmd: 'mmdebstrap', pkg: 'mmdebstrap' },
  { cmd: 'mkfs.erofs', pkg: 'erofs-utils' },
  { cmd: 'tar', pkg: 'tar' },
];

/** The static busybox that goes into the initramfs. */
export const BUSYBOX = '/bin/busybox';

async function onPath(cmd: string): Promise<boolean> {
  const dirs = (process.env.PATH ?? '').split(delimiter).concat(['/usr/sbin', '/sbin']);
  for (const d of dirs) {
    if (
      await access(join(d, cmd), constants.X_OK).then(
        () => true,
        () => false,
      )
    )
      return true;
  }
  return false;
}

/** True if `path` is an ELF executable without a PT_INTERP header (i.e. statically linked). */
export async function isStaticElf(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const head = Buffer.alloc(64);
    await fh.read(head, 0, 64, 0);
    if (head.readUInt32BE(0) !== 0x7f454c46 || head[4] !== 2) return false;
    const phoff = Number(head.readBigUInt64LE(0x20));
    const phentsize = head.readUInt16LE(0x36);
    const phnum = head.readUInt16LE(0x38);
    const ph = Buffer.alloc(phentsize * phnum);
    await fh.read(ph, 0, ph.length, phoff);
    for (let i = 0; i < phnum; i++) if (ph.readUInt32LE(i * phentsize) === 3 /* PT_INTERP */) return false;
    return true;
  } finally {
    await fh.close();
  }
}

/**
 * Fails fast, before any download, with one message listing everything
 * missing and how to get it.
 */
export async function checkBuildPrereqs(busybox = BUSYBOX): Promise<void> {
  const problems: string[] = [];
  if (process.getuid?.() !== 0) {
    problems.push(
      'image builds must run as root: mmdebstrap needs root (or unshare mode, which Sandforge does not use) to create device nodes and file ownership; re-run with sudo',
    );
  }
  const missing = [];
  for (const t of BUILD_TOOLS) if (!(await onPath(t.cmd))) missing.push(t);
  if (missing.length) {
    problems.push(
      `missing ${missing.map((t) => t.cmd).join(', ')}; install with \`apt-get install ${[...new Set(missing.map((t) => t.pkg))].join(' ')}\``,
    );
  }
  const staticBusybox = await isStaticElf(busybox).catch(() => false);
  if (!staticBusybox) problems.push(`${busybox} is missing or not statically linked; install with \`apt-get install busybox-static\``);
  if (problems.length) throw new SandforgeError('internal', `cannot build images:\n  - ${problems.join('\n  - ')}`);
}
