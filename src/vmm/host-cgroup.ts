/**
 * Host cgroups for QEMU, best effort: each VM's QEMU goes into its own
 * cgroup `sandforge/<name>` with a memory limit (guest RAM plus QEMU's own
 * overhead) and a pids limit, below the cgroup the supervisor itself runs in
 * (never above it: a limit set on us by systemd or a container stays in
 * force). The cgroup is removed when QEMU is gone.
 *
 * Where it works:
 * - cgroup v2 (unified): the supervisor's cgroup must offer memory (and pids)
 *   and be writable — root, or a systemd unit with `Delegate=yes`. If that
 *   cgroup holds processes, the supervisor moves itself into a `supervisor`
 *   leaf next to `sandforge` first (cgroup v2 allows controllers only in
 *   cgroups without processes of their own).
 * - cgroup v1 (legacy or hybrid): the memory (and pids) hierarchies are
 *   mounted and our cgroup in them is writable (root).
 * Elsewhere it does nothing, and {@link hostCgroupStatus} says why.
 *
 * QEMU is moved right after spawn returns (it has exec'd, before it parsed
 * its arguments): the few MB it allocates before that stay charged to the
 * supervisor's cgroup. `SANDFORGE_HOST_CGROUP=off` turns it off.
 */
import { createHash } from 'node:crypto';
import { accessSync, constants, mkdirSync, readFileSync, readdirSync, rmdirSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface HostCgroupStatus {
  enabled: boolean;
  version: 'v1' | 'v2' | null;
  reason: string;
}

export interface HostCgroupLimits {
  memoryBytes: number;
  pidsMax: number;
}

const MiB = 1024 * 1024;
/** QEMU's TCG translation cache (tb-size) defaults to 1 GiB on 64-bit hosts with enough RAM. */
const TCG_DEFAULT_TB_MB = 1024;
/** QEMU's heap, device state, block and 9p buffers, page cache of the disk images. Measured idle clone: ~100 MB anon. */
const QEMU_OVERHEAD_MB = 256;
/** Threads QEMU may start: vCPUs, I/O and block thread pools (64 each), migration helpers. Stops a fork bomb, not QEMU. */
export const QEMU_PIDS_MAX = 512;
const PARENT = 'sandforge';

/**
 * Memory limit for one QEMU: guest RAM + the TCG translation cache (under
 * TCG) + fixed overhead. Generous on purpose: crossing it kills the VM.
 */
export function qemuCgroupLimits(o: { memoryMb: number; tcg: boolean; tbSizeMb?: number }): HostCgroupLimits {
  const tb = o.tcg ? (o.tbSizeMb ?? TCG_DEFAULT_TB_MB) : 0;
  return { memoryBytes: (o.memoryMb + tb + QEMU_OVERHEAD_MB) * MiB, pidsMax: QEMU_PIDS_MAX };
}

/** Limits from a QEMU argv built by buildQemuArgs (`-m <N>M`, `-accel tcg[,tb-size=N]`); null if it has no `-m`. */
export function limitsFromQemuArgs(args: readonly string[]): HostCgroupLimits | null {
  const m = args.indexOf('-m');
  const mem = m >= 0 ? /^(\d+)M?$/.exec(args[m + 1] ?? '') : null;
  if (!mem) return null;
  const a = args.indexOf('-accel');
  const accel = a >= 0 ? (args[a + 1] ?? '') : 'tcg';
  const tb = /(?:^|,)tb-size=(\d+)/.exec(accel);
  return qemuCgroupLimits({ memoryMb: Number(mem[1]), tcg: accel.startsWith('tcg'), ...(tb ? { tbSizeMb: Number(tb[1]) } : {}) });
}

/**
 * The cgroup name for a VM directory: the sandbox id when the folder is named
 * after one, else the folder name plus a hash of the path (template builds
 * and `sandforge run` folders are not unique by name alone).
 */
export function cgroupNameForVmDir(dir: string): string {
  const base =
    basename(dir)
      .replace(/[^A-Za-z0-9_.-]/g, '_')
      .slice(0, 64) || 'vm';
  if (/^sb_[0-9a-z]+$/.test(base)) return base;
  return `${base}-${createHash('sha256').update(dir).digest('hex').slice(0, 10)}`;
}

interface Mount {
  root: string;
  point: string;
  fstype: string;
  superOpts: string[];
}

/** /proc/self/mountinfo: the mount's root inside its filesystem matters for cgroup paths in containers. */
export function parseMountinfo(text: string): Mount[] {
  const out: Mount[] = [];
  for (const line of text.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const a = line.slice(0, sep).split(' ');
    const b = line.slice(sep + 3).split(' ');
    if (a.length < 5 || b.length < 3) continue;
    const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    out.push({ root: unescape(a[3]!), point: unescape(a[4]!), fstype: b[0]!, superOpts: b[2]!.split(',') });
  }
  return out;
}

/** /proc/self/cgroup → controller (or '' for v2) → path. */
export function parseProcCgroup(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^\d+:([^:]*):(.*)$/.exec(line);
    if (!m) continue;
    if (m[1] === '') out.set('', m[2]!);
    else for (const c of m[1]!.split(',')) out.set(c, m[2]!);
  }
  return out;
}

/** Where our cgroup of a hierarchy lives in the mounted tree. */
function ownDir(mount: Mount, path: string): string | null {
  const root = mount.root === '/' ? '' : mount.root;
  if (root && path !== root && !path.startsWith(`${root}/`)) return null; // our cgroup is outside this mount
  return join(mount.point, path.slice(root.length));
}

/** The plan: which directories get a `sandforge/<name>` child, and which files hold the limits. */
interface Layout {
  version: 'v1' | 'v2';
  /** Parent dirs ("<own cgroup>/sandforge") per hierarchy; v2 has one. */
  parents: { dir: string; memory: boolean; pids: boolean }[];
  reason: string;
}

interface Detection {
  layout: Layout | null;
  /** v2: our own cgroup (may need the `supervisor` leaf move). */
  v2Own?: string;
  reason: string;
}

function writable(path: string): boolean {
  try {
    accessSync(path, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

function readOr(path: string, fallback = ''): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return fallback;
  }
}

/** What the host allows, without changing anything (for `sandforge doctor`). */
export function detectHostCgroup(files: { mountinfo?: string; cgroup?: string } = {}, env: NodeJS.ProcessEnv = process.env): Detection {
  if (/^(0|off|false|no)$/i.test(env.SANDFORGE_HOST_CGROUP ?? '')) return { layout: null, reason: 'turned off by SANDFORGE_HOST_CGROUP' };
  const mounts = parseMountinfo(files.mountinfo ?? readOr('/proc/self/mountinfo'));
  const own = parseProcCgroup(files.cgroup ?? readOr('/proc/self/cgroup'));
  const v1 = (c: string) => mounts.find((m) => m.fstype === 'cgroup' && m.superOpts.includes(c));
  const v2 = mounts.find((m) => m.fstype === 'cgroup2');

  // Pure v2: controllers live in the unified tree (a hybrid host's unified mount has none).
  if (v2 && !v1('memory') && own.has('')) {
    const dir = ownDir(v2, own.get('')!);
    if (!dir) return { layout: null, reason: `our cgroup ${own.get('')} is outside the mounted cgroup2 tree` };
    const controllers = readOr(join(dir, 'cgroup.controllers')).trim().split(/\s+/);
    if (!controllers.includes('memory')) {
      return { layout: null, reason: `cgroup v2: the memory controller is not delegated to ${dir} (systemd: Delegate=yes)` };
    }
    if (!writable(dir) || !writable(join(dir, 'cgroup.subtree_control'))) {
      return {
        layout: null,
        reason: `cgroup v2: ${dir} is not writable by uid ${process.getuid?.()} (run as root or with systemd Delegate=yes)`,
      };
    }
    const pids = controllers.includes('pids');
    return {
      layout: {
        version: 'v2',
        parents: [{ dir: join(dir, PARENT), memory: true, pids }],
        reason: `cgroup v2 under ${dir}${pids ? '' : ' (no pids controller: memory only)'}`,
      },
      v2Own: dir,
      reason: '',
    };
  }

  const mem = v1('memory');
  if (!mem)
    return {
      layout: null,
      reason: v2 ? 'cgroup v2 without a memory controller, and no v1 memory hierarchy' : 'no cgroup filesystem mounted',
    };
  const memDir = own.has('memory') ? ownDir(mem, own.get('memory')!) : null;
  if (!memDir) return { layout: null, reason: 'cgroup v1: cannot place our memory cgroup in the mounted hierarchy' };
  if (!writable(memDir)) return { layout: null, reason: `cgroup v1: ${memDir} is not writable by uid ${process.getuid?.()} (run as root)` };
  const pidsMount = v1('pids');
  const pidsDir = pidsMount && own.has('pids') ? ownDir(pidsMount, own.get('pids')!) : null;
  const pids = pidsDir !== null && writable(pidsDir);
  const parents = [{ dir: join(memDir, PARENT), memory: true, pids: false }];
  if (pids) parents.push({ dir: join(pidsDir, PARENT), memory: false, pids: true });
  return {
    layout: {
      version: 'v1',
      parents,
      reason: `cgroup v1 memory${pids ? ' + pids' : ' only (pids hierarchy missing or not writable)'} under ${memDir}`,
    },
    reason: '',
  };
}

/** {@link detectHostCgroup} as a status, without creating anything (`sandforge doctor`). */
export function probeHostCgroup(): HostCgroupStatus {
  const d = detectHostCgroup();
  return d.layout
    ? { enabled: true, version: d.layout.version, reason: d.layout.reason }
    : { enabled: false, version: null, reason: d.reason };
}

let prepared: { status: HostCgroupStatus; layout: Layout | null } | null = null;

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** v2: turn on memory/pids for our children, moving ourselves into a leaf if our cgroup holds processes. */
function enableV2(own: string, layout: Layout): void {
  const want = layout.parents[0]!.pids ? '+memory +pids' : '+memory';
  const enabled = readOr(join(own, 'cgroup.subtree_control')).split(/\s+/);
  if (!(enabled.includes('memory') && (!layout.parents[0]!.pids || enabled.includes('pids')))) {
    try {
      writeFileSync(join(own, 'cgroup.subtree_control'), want);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EBUSY') throw err;
      // "No internal processes": step out of our own cgroup into a leaf, then retry.
      mkdirSync(join(own, 'supervisor'), { recursive: true });
      writeFileSync(join(own, 'supervisor', 'cgroup.procs'), String(process.pid));
      writeFileSync(join(own, 'cgroup.subtree_control'), want);
    }
  }
  mkdirSync(layout.parents[0]!.dir, { recursive: true });
  writeFileSync(join(layout.parents[0]!.dir, 'cgroup.subtree_control'), want);
}

/**
 * Whether QEMU processes get their own cgroup here, and why (for /v1/info,
 * logs). The first call prepares `sandforge/` (and sweeps empty cgroups left
 * by VMs that died with a killed process); later calls are free.
 */
export function hostCgroupStatus(): HostCgroupStatus {
  if (prepared) return prepared.status;
  const d = detectHostCgroup();
  if (!d.layout) {
    prepared = { status: { enabled: false, version: null, reason: d.reason }, layout: null };
    return prepared.status;
  }
  const layout = d.layout;
  try {
    if (layout.version === 'v2') enableV2(d.v2Own!, layout);
    else for (const p of layout.parents) mkdirSync(p.dir, { recursive: true });
    sweepEmpty(layout);
    prepared = { status: { enabled: true, version: layout.version, reason: layout.reason }, layout };
  } catch (err) {
    prepared = {
      status: { enabled: false, version: layout.version, reason: `${layout.reason}, but setting it up failed: ${errText(err)}` },
      layout: null,
    };
  }
  return prepared.status;
}

/** For tests: forget the prepared state. */
export function resetHostCgroupForTests(): void {
  prepared = null;
}

/** Removes empty per-VM cgroups (their VM is gone); a populated one says EBUSY and stays. */
function sweepEmpty(layout: Layout): void {
  for (const p of layout.parents) {
    let names: string[] = [];
    try {
      names = readdirSync(p.dir, { withFileTypes: true })
        .filter((e) => e.isDirectory())
        .map((e) => e.name);
    } catch {
      continue;
    }
    for (const n of names) {
      try {
        if (readOr(join(p.dir, n, 'cgroup.procs')).trim() === '') rmdirSync(join(p.dir, n));
      } catch {
        // populated or raced with its owner: leave it
      }
    }
  }
}

/** One QEMU's cgroup (a directory per hierarchy). */
export class HostCgroup {
  private removed = false;

  private constructor(
    readonly name: string,
    readonly dirs: string[],
  ) {}

  /**
   * Creates `sandforge/<name>` with the limits and moves `pid` into it.
   * Returns null when host cgroups are off here or anything fails (then
   * nothing is left behind and `onError` hears why). Never throws.
   */
  static attach(name: string, pid: number, limits: HostCgroupLimits, onError?: (msg: string) => void): HostCgroup | null {
    hostCgroupStatus();
    const layout = prepared?.layout;
    if (!layout) return null;
    const dirs: string[] = [];
    try {
      for (const p of layout.parents) {
        const dir = join(p.dir, name);
        // A leftover of the same name (a VM dir reused after a crash) is removed once, if empty.
        for (let attempt = 0; ; attempt++) {
          try {
            mkdirSync(p.dir, { recursive: true });
            mkdirSync(dir);
            break;
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code === 'EEXIST' && attempt === 0) {
              rmdirSync(dir); // a stale, empty one of the same name; populated → throws EBUSY
              continue;
            }
            throw err;
          }
        }
        dirs.push(dir);
        if (p.memory) {
          writeFileSync(join(dir, layout.version === 'v2' ? 'memory.max' : 'memory.limit_in_bytes'), String(limits.memoryBytes));
        }
        if (p.pids) writeFileSync(join(dir, 'pids.max'), String(limits.pidsMax));
        writeFileSync(join(dir, 'cgroup.procs'), String(pid));
      }
      return new HostCgroup(name, dirs);
    } catch (err) {
      for (const d of dirs.reverse()) {
        try {
          rmdirSync(d);
        } catch {
          // QEMU is in it: it goes when QEMU exits (sweep)
        }
      }
      onError?.(`host cgroup ${name}: ${errText(err)}`);
      return null;
    }
  }

  /** The cgroup of an adopted QEMU (a restarted supervisor), if it exists. */
  static find(name: string): HostCgroup | null {
    hostCgroupStatus();
    const layout = prepared?.layout;
    if (!layout) return null;
    const dirs = layout.parents.map((p) => join(p.dir, name)).filter((d) => readOr(join(d, 'cgroup.procs'), '\0') !== '\0');
    return dirs.length ? new HostCgroup(name, dirs) : null;
  }

  /** Memory in use (bytes) as the kernel charges it, or null. */
  memoryUsage(): number | null {
    for (const d of this.dirs) {
      const v = readOr(join(d, 'memory.current'), '') || readOr(join(d, 'memory.usage_in_bytes'), '');
      if (v.trim()) return Number(v.trim());
    }
    return null;
  }

  /**
   * Removes the cgroup once QEMU has exited. Helpers QEMU started (the
   * `exec:cat` of a migration) may linger a moment: after a second they are
   * killed — they are in this cgroup only because QEMU started them.
   */
  async remove(timeoutMs = 3000): Promise<void> {
    if (this.removed) return;
    this.removed = true;
    const deadline = Date.now() + timeoutMs;
    let left = [...this.dirs];
    for (let i = 0; left.length; i++) {
      left = left.filter((d) => {
        try {
          rmdirSync(d);
          return false;
        } catch (err) {
          return (err as NodeJS.ErrnoException).code !== 'ENOENT';
        }
      });
      if (!left.length || Date.now() > deadline) break;
      if (i === 10) {
        for (const d of left) {
          for (const p of readOr(join(d, 'cgroup.procs')).split('\n').filter(Boolean)) {
            try {
              process.kill(Number(p), 'SIGKILL');
            } catch {
              // gone
            }
          }
        }
      }
      await sleep(100, undefined, { ref: false });
    }
  }
}
