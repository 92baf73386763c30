import { readFile, readdir } from 'node:fs/promises';
import { join, relative } from 'node:path';

/** Canonical module name: the kernel treats "-" and "_" alike. */
export const modName = (n: string): string => n.replace(/\.ko(\.xz|\.zst|\.gz)?$/, '').replace(/-/g, '_');

/** Fields of a module's `.modinfo` ELF section that ordering needs. */
export interface ModInfo {
  depends: string[];
  /** `softdep=pre: a b` names (module names or aliases). */
  softPre: string[];
  aliases: string[];
}

/**
 * Parses the `.modinfo` section of an uncompressed ELF64 little-endian .ko.
 * Done in-process because the host has no kmod (`modinfo`) and busybox's
 * modinfo needs a modules.dep the extracted tree lacks.
 */
export function parseModinfo(elf: Buffer): ModInfo {
  if (elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2 || elf[5] !== 1) {
    throw new Error('not an ELF64 little-endian object (compressed module?)');
  }
  const shoff = Number(elf.readBigUInt64LE(0x28));
  const shentsize = elf.readUInt16LE(0x3a);
  const shnum = elf.readUInt16LE(0x3c);
  const shstrndx = elf.readUInt16LE(0x3e);
  const sh = (i: number) => {
    const o = shoff + i * shentsize;
    return { name: elf.readUInt32LE(o), off: Number(elf.readBigUInt64LE(o + 0x18)), size: Number(elf.readBigUInt64LE(o + 0x20)) };
  };
  const strtab = sh(shstrndx);
  const info: ModInfo = { depends: [], softPre: [], aliases: [] };
  for (let i = 0; i < shnum; i++) {
    const s = sh(i);
    const nameEnd = elf.indexOf(0, strtab.off + s.name);
    if (elf.toString('latin1', strtab.off + s.name, nameEnd) !== '.modinfo') continue;
    for (const kv of elf.toString('latin1', s.off, s.off + s.size).split('\0')) {
      const eq = kv.indexOf('=');
      const key = kv.slice(0, eq);
      const val = kv.slice(eq + 1);
      if (key === 'depends') info.depends.push(...val.split(',').filter(Boolean).map(modName));
      else if (key === 'alias') info.aliases.push(val);
      else if (key === 'softdep') {
        const m = /pre:\s*([^:]*?)(\s+post:.*)?$/.exec(val);
        if (m?.[1]) info.softPre.push(...m[1].split(/\s+/).filter(Boolean));
      }
    }
  }
  return info;
}

/** Maps canonical module name → path relative to the modules dir, by walking `kernel/`. */
export async function indexModules(modulesDir: string): Promise<Map<string, string>> {
  const index = new Map<string, string>();
  const entries = await readdir(join(modulesDir, 'kernel'), { recursive: true, withFileTypes: true });
  for (const e of entries) {
    if (!e.isFile() || !/\.ko(\.xz|\.zst|\.gz)?$/.test(e.name)) continue;
    // `parentPath` is Node ≥20.12; `path` is the older spelling of the same thing.
    const parent = (e as unknown as { parentPath?: string; path: string }).parentPath ?? (e as unknown as { path: string }).path;
    index.set(modName(e.name), relative(modulesDir, join(parent, e.name)));
  }
  return index;
}

/** Result of {@link resolveModules}. */
export interface ModulePlan {
  /** Load order (dependencies first): canonical name and path relative to the modules dir. */
  order: { name: string; path: string }[];
  /** Requested modules that are neither shipped as .ko nor built in. */
  missing: string[];
}

/**
 * Closes `wanted` over hard and soft-pre dependencies and orders it so every
 * module comes after what it needs — the order `/init` insmods in.
 * Soft dependencies given as aliases (e.g. "crypto-crc32c") are resolved
 * against the aliases of the wanted modules only, so include a provider
 * (crc32c_generic) in `wanted`.
 */
export async function resolveModules(modulesDir: string, wanted: string[]): Promise<ModulePlan> {
  const index = await indexModules(modulesDir);
  const builtin = new Set(
    (await readFile(join(modulesDir, 'modules.builtin'), 'utf8').catch(() => ''))
      .split('\n')
      .filter(Boolean)
      .map((l) => modName(l.split('/').pop()!)),
  );
  const infos = new Map<string, ModInfo>();
  const infoOf = async (name: string): Promise<ModInfo> => {
    let i = infos.get(name);
    if (!i) {
      i = parseModinfo(await readFile(join(modulesDir, index.get(name)!)));
      infos.set(name, i);
    }
    return i;
  };
  const aliasOwner = new Map<string, string>();
  for (const w of wanted.map(modName)) {
    if (index.has(w)) for (const a of (await infoOf(w)).aliases) if (!aliasOwner.has(a)) aliasOwner.set(a, w);
  }

  const order: ModulePlan['order'] = [];
  const missing: string[] = [];
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = async (name: string, requested: boolean): Promise<void> => {
    if (state.has(name)) return; // done, or a cycle (kernel modules have none; be safe)
    if (!index.has(name)) {
      if (requested && !builtin.has(name)) missing.push(name);
      return;
    }
    state.set(name, 'visiting');
    const info = await infoOf(name);
    for (const s of info.softPre) {
      const target = index.has(modName(s)) ? modName(s) : aliasOwner.get(s);
      if (target) await visit(target, false);
    }
    for (const d of info.depends) await visit(d, true);
    state.set(name, 'done');
    order.push({ name, path: index.get(name)! });
  };
  for (const w of wanted) await visit(modName(w), true);
  return { order, missing };
}
