import { basename } from 'node:path';
import { run } from './exec.js';

/** A shared library an executable needs: `name` is what the loader looks up (soname). */
export interface SharedLib {
  name: string;
  path: string;
}

/**
 * Parses `ldd` output. Lines look like `libc.so.6 => /lib/.../libc.so.6 (0x…)`
 * or `/lib64/ld-linux-x86-64.so.2 (0x…)` (the loader); the vDSO has no file.
 */
export function parseLdd(output: string): SharedLib[] {
  const libs: SharedLib[] = [];
  for (const raw of output.split('\n')) {
    const line = raw.trim();
    const arrow = /^(\S+)\s+=>\s+(\/\S+)\s+\(0x[0-9a-f]+\)$/.exec(line);
    if (arrow) {
      libs.push({ name: arrow[1]!, path: arrow[2]! });
      continue;
    }
    const direct = /^(\/\S+)\s+\(0x[0-9a-f]+\)$/.exec(line);
    if (direct) libs.push({ name: basename(direct[1]!), path: direct[1]! });
  }
  return libs;
}

/** Shared libraries (loader included) of each file, de-duplicated by soname. */
export async function sharedLibs(files: string[]): Promise<SharedLib[]> {
  const byName = new Map<string, SharedLib>();
  for (const f of files) {
    for (const lib of parseLdd((await run('ldd', [f])).stdout)) if (!byName.has(lib.name)) byName.set(lib.name, lib);
  }
  return [...byName.values()].sort((a, b) => a.name.localeCompare(b.name));
}
