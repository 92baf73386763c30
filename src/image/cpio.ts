/**
 * Minimal writer for the "newc" cpio format the kernel unpacks as initramfs.
 * Written in-process so the archive is deterministic (fixed inode numbers,
 * mtimes, root ownership) and /dev/console can be created without mknod.
 */

/** One archive member. `path` has no leading slash. */
export type CpioEntry =
  | { type: 'dir'; path: string; mode?: number }
  | { type: 'file'; path: string; data: Buffer; mode?: number }
  | { type: 'symlink'; path: string; target: string }
  | { type: 'chardev'; path: string; major: number; minor: number; mode?: number };

const TYPE_BITS = { dir: 0o040000, file: 0o100000, symlink: 0o120000, chardev: 0o020000 } as const;

const hex8 = (n: number) => n.toString(16).toUpperCase().padStart(8, '0');
const pad4 = (n: number) => Buffer.alloc((4 - (n % 4)) % 4);

function header(ino: number, mode: number, nlink: number, size: number, name: string, rmaj = 0, rmin = 0): Buffer {
  const nameBuf = Buffer.from(`${name}\0`);
  const fields = [ino, mode, 0, 0, nlink, 0, size, 0, 0, rmaj, rmin, nameBuf.length, 0];
  const head = Buffer.from(`070701${fields.map(hex8).join('')}`, 'latin1');
  return Buffer.concat([head, nameBuf, pad4(head.length + nameBuf.length)]);
}

/** Serialises `entries` (in order) plus the trailer into one newc archive. */
export function writeCpio(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  entries.forEach((e, i) => {
    const ino = i + 1;
    if (e.type === 'dir') {
      parts.push(header(ino, TYPE_BITS.dir | (e.mode ?? 0o755), 2, 0, e.path));
    } else if (e.type === 'chardev') {
      parts.push(header(ino, TYPE_BITS.chardev | (e.mode ?? 0o600), 1, 0, e.path, e.major, e.minor));
    } else {
      const data = e.type === 'file' ? e.data : Buffer.from(e.target);
      const mode = e.type === 'file' ? TYPE_BITS.file | (e.mode ?? 0o644) : TYPE_BITS.symlink | 0o777;
      parts.push(header(ino, mode, 1, data.length, e.path), data, pad4(data.length));
    }
  });
  parts.push(header(0, 0, 1, 0, 'TRAILER!!!'));
  return Buffer.concat(parts);
}
