/**
 * Resource limits for the commands the agent runs, with cgroup v2 inside the guest.
 *
 *   /sys/fs/cgroup/agent      the agent and its helpers (system helper, mount, sync…);
 *                             no limits, memory.low so the workload cannot reclaim it away,
 *                             a high cpu.weight so a runaway workload cannot starve it
 *   /sys/fs/cgroup/workload   every command (pipes and PTY): memory.max = guest RAM minus a
 *                             reserve, pids.max; its OOM kills stay inside it
 *
 * Set up once at agent start, i.e. during the template's cold boot, so every
 * clone of the template wakes up with it (a template's RAM size is fixed, so
 * the memory.max computed then is right for all its clones).
 *
 * A command lands in `workload` before it can fork: the agent moves itself into
 * `workload` (one write of "0" to cgroup.procs), spawns (fork happens
 * synchronously inside spawn), and moves itself back. Measured under TCG:
 * ~0.35 ms for both moves; a wrapper process (`sh -c 'echo $$ > …; exec'`)
 * cost ~28 ms per command instead.
 *
 * The agent runs with oom_score_adj -1000, so it is never an OOM victim (not
 * even in the instant it sits in `workload`). A child inherits that value at
 * fork, so the agent resets the child's to 0 right after spawn returns; the
 * child cannot have forked yet in practice (spawn returns when it exec'd, and
 * a program needs far longer than that write to start), but it is not a
 * kernel guarantee. A grandchild that slipped through with -1000 is not an
 * OOM victim; its command's timeout or kill still ends it.
 *
 * Root inside the guest can lift all of this (the commands run as root by
 * default): these limits keep a runaway command from taking the agent down;
 * the VM's RAM, the scratch disk's size and the host cgroup are the boundary.
 */
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmdirSync, writeFileSync, writeSync } from 'node:fs';

export const CGROUP_ROOT = '/sys/fs/cgroup';
const MiB = 1024 * 1024;

export interface WorkloadLimits {
  /** MemTotal of the guest, bytes. */
  memoryTotalBytes: number;
  /** workload memory.max, bytes. */
  memoryMaxBytes: number;
  /** workload pids.max. */
  pidsMax: number;
  /** Whether the cpu controller is on (agent cpu.weight above the workload's). */
  cpuWeighted: boolean;
}

export interface WorkloadCgroupStatus {
  enabled: boolean;
  reason: string;
  limits: WorkloadLimits | null;
}

/**
 * memory.max for the workload: MemTotal minus a reserve for the agent (~50 MB
 * RSS with its helper), the kernel's own allocations and headroom for the
 * agent's buffers: an eighth of RAM, at least 96 MiB, at most 384 MiB.
 */
export function workloadMemoryMax(memTotalBytes: number): number {
  const reserve = Math.min(384 * MiB, Math.max(96 * MiB, Math.floor(memTotalBytes / 8)));
  // Whole pages; never below 32 MiB so a tiny VM can still run something.
  return Math.max(32 * MiB, Math.floor((memTotalBytes - reserve) / 4096) * 4096);
}

/** pids.max for the workload: 1024 per GiB of RAM, 512..8192. Counts threads too. */
export function workloadPidsMax(memTotalBytes: number): number {
  return Math.min(8192, Math.max(512, 1024 * Math.round(memTotalBytes / (1024 * MiB))));
}

/** MemTotal from /proc/meminfo text, bytes; null if absent. */
export function parseMemTotal(meminfo: string): number | null {
  const m = /^MemTotal:\s+(\d+) kB/m.exec(meminfo);
  return m ? Number(m[1]) * 1024 : null;
}

let status: WorkloadCgroupStatus = { enabled: false, reason: 'not set up', limits: null };
let workloadProcs = -1;
let agentProcs = -1;
let moveFailureLogged = false;
let commandCgroupFailureLogged = false;
let log: (msg: string) => void = () => undefined;

export function workloadCgroupStatus(): WorkloadCgroupStatus {
  return status;
}

/** True when PID 1 is the guest's tini from the agent disk: never touch a host's cgroups. */
function inSandforgeGuest(): boolean {
  try {
    return readFileSync('/proc/1/cmdline', 'utf8').startsWith('/.sandforge/bin/tini');
  } catch {
    return false;
  }
}

function cgroup2Mounted(): boolean {
  try {
    return readFileSync('/proc/self/mounts', 'utf8')
      .split('\n')
      .some((l) => l.split(' ')[1] === CGROUP_ROOT && l.split(' ')[2] === 'cgroup2');
  } catch {
    return false;
  }
}

function mountCgroup2(): string | null {
  if (cgroup2Mounted()) return null;
  if (!/\bcgroup2\b/.test(readFileSync('/proc/filesystems', 'utf8'))) return 'the guest kernel has no cgroup2 filesystem';
  if (existsSync(`${CGROUP_ROOT}/cgroup.procs`) || !existsSync(CGROUP_ROOT)) return `${CGROUP_ROOT} is not an empty sysfs mount point`;
  // favordynmods: cheap migrations (the agent moves itself for every command); kernels before 6.0 lack it.
  for (const opts of ['nsdelegate,favordynmods', 'nsdelegate']) {
    const r = spawnSync('mount', ['-t', 'cgroup2', '-o', opts, 'cgroup2', CGROUP_ROOT], { encoding: 'utf8', timeout: 10_000 });
    if (r.status === 0) return null;
    if (opts === 'nsdelegate') return `mount -t cgroup2 failed: ${(r.stderr || r.error?.message || `exit ${r.status}`).trim()}`;
  }
  return 'unreachable';
}

/**
 * tmpfs sizes: /dev/shm a quarter of the workload's memory, /run a
 * sixteenth. tmpfs pages are charged to the workload and cannot be reclaimed
 * (no swap), so with the kernel default (half of RAM each) full tmpfs mounts
 * could hold the whole workload limit and every later command would be
 * OOM-killed, `rm` included (measured). Capped, they leave it ≥ 60% free.
 */
export function tmpfsSizes(memTotalBytes: number): { devShm: number; run: number } {
  const max = workloadMemoryMax(memTotalBytes);
  return { devShm: Math.floor(max / 4 / MiB) * MiB, run: Math.max(16 * MiB, Math.floor(max / 16 / MiB) * MiB) };
}

function capTmpfs(memTotalBytes: number): void {
  const sizes = tmpfsSizes(memTotalBytes);
  for (const [path, size] of [
    ['/dev/shm', sizes.devShm],
    ['/run', sizes.run],
  ] as const) {
    const r = spawnSync('mount', ['-o', `remount,size=${size / 1024}k`, path], { encoding: 'utf8', timeout: 10_000 });
    if (r.status !== 0) log(`resource limits: cannot cap ${path}: ${(r.stderr || r.error?.message || `exit ${r.status}`).trim()}`);
  }
}

function write(path: string, value: string): void {
  writeFileSync(path, value);
}

/**
 * Mounts cgroup2, creates `agent` and `workload`, sets the limits, moves the
 * agent into `agent` and makes it OOM-proof. Call once at agent start, before
 * any helper is spawned (they inherit both). Never throws: on failure commands
 * run without limits and the reason is logged and kept in the status.
 */
export function setupWorkloadCgroup(logger: (msg: string) => void): WorkloadCgroupStatus {
  log = logger;
  if (status.enabled) return status;
  const off = (reason: string): WorkloadCgroupStatus => {
    status = { enabled: false, reason, limits: null };
    log(`resource limits off: ${reason}`);
    return status;
  };
  if (process.getuid?.() !== 0) return off('the agent does not run as root');
  if (!inSandforgeGuest()) return off('not inside a Sandforge guest (PID 1 is not its tini)');
  try {
    const mountErr = mountCgroup2();
    if (mountErr) return off(mountErr);
    const available = readFileSync(`${CGROUP_ROOT}/cgroup.controllers`, 'utf8').trim().split(/\s+/);
    const missing = ['memory', 'pids'].filter((c) => !available.includes(c));
    if (missing.length) return off(`cgroup controllers missing in the guest kernel: ${missing.join(', ')}`);
    const memTotal = parseMemTotal(readFileSync('/proc/meminfo', 'utf8'));
    if (!memTotal) return off('no MemTotal in /proc/meminfo');
    capTmpfs(memTotal);

    for (const g of ['agent', 'workload']) mkdirSync(`${CGROUP_ROOT}/${g}`, { recursive: true });
    // Leaves only below the root: the root may hold processes (tini, kernel threads) and still delegate.
    write(`${CGROUP_ROOT}/agent/cgroup.procs`, '0');
    write(`${CGROUP_ROOT}/cgroup.subtree_control`, '+memory +pids');
    let cpuWeighted = false;
    if (available.includes('cpu')) {
      try {
        write(`${CGROUP_ROOT}/cgroup.subtree_control`, '+cpu');
        // 100x the workload's default weight: a fork bomb with 1000 runnable tasks must not starve the agent.
        write(`${CGROUP_ROOT}/agent/cpu.weight`, '10000');
        cpuWeighted = true;
      } catch (err) {
        log(`resource limits: cpu controller not enabled: ${(err as Error).message}`);
      }
    }
    const limits: WorkloadLimits = {
      memoryTotalBytes: memTotal,
      memoryMaxBytes: workloadMemoryMax(memTotal),
      pidsMax: workloadPidsMax(memTotal),
      cpuWeighted,
    };
    write(`${CGROUP_ROOT}/workload/memory.max`, String(limits.memoryMaxBytes));
    write(`${CGROUP_ROOT}/workload/pids.max`, String(limits.pidsMax));
    // Keep the agent's pages (node binary, heap) resident when the workload presses on memory.
    write(`${CGROUP_ROOT}/agent/memory.low`, String(64 * MiB));
    write('/proc/self/oom_score_adj', '-1000');
    workloadProcs = openSync(`${CGROUP_ROOT}/workload/cgroup.procs`, 'w');
    agentProcs = openSync(`${CGROUP_ROOT}/agent/cgroup.procs`, 'w');
    status = { enabled: true, reason: 'cgroup v2 in the guest', limits };
    log(
      `resource limits: workload memory.max ${Math.round(limits.memoryMaxBytes / MiB)} MiB of ${Math.round(memTotal / MiB)} MiB, ` +
        `pids.max ${limits.pidsMax}${cpuWeighted ? ', agent cpu.weight 10000' : ''}`,
    );
    return status;
  } catch (err) {
    for (const fd of [workloadProcs, agentProcs]) if (fd >= 0) closeSync(fd);
    workloadProcs = agentProcs = -1;
    return off(`cgroup setup failed: ${(err as Error).message}`);
  }
}

function moveSelf(fd: number): boolean {
  try {
    writeSync(fd, '0');
    return true;
  } catch (err) {
    if (!moveFailureLogged) {
      moveFailureLogged = true;
      log(`resource limits: cannot move the agent between cgroups: ${(err as Error).message}`);
    }
    return false;
  }
}

/**
 * The cgroup of one command (`workload/c<n>`): everything the command starts
 * stays in it, whatever process group or session it makes, so `kill()`
 * (cgroup.kill: atomic, forks included) ends the whole tree.
 */
export class CommandCgroup {
  private released = false;
  constructor(readonly path: string) {}

  kill(): void {
    try {
      writeFileSync(`${this.path}/cgroup.kill`, '1');
    } catch {
      // kernel before 5.14, or gone already: the process-group kill stands alone
    }
  }

  /** The command ended: remove the cgroup once whatever it left running is gone. */
  release(): void {
    if (this.released) return;
    this.released = true;
    lingering.add(this.path);
    sweepLingering();
  }
}

/** Cgroups of ended commands that may still hold background processes. */
const lingering = new Set<string>();
let commandSeq = 0;

function sweepLingering(): void {
  for (const path of lingering) {
    try {
      rmdirSync(path);
      lingering.delete(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') lingering.delete(path);
      // EBUSY: background processes still run there (a server, say); tried again later
    }
  }
}

/**
 * Runs `spawnNow` (which must fork synchronously and return the child's pid,
 * or undefined when nothing started) with the agent inside a fresh command
 * cgroup under `workload`, so the child starts there; then moves the agent
 * back and gives the child a normal oom_score_adj. Without cgroups it just
 * calls `spawnNow`. `onCgroup` receives the command's cgroup.
 */
export function spawnInWorkload<T>(spawnNow: () => T, pidOf: (r: T) => number | undefined, onCgroup?: (cg: CommandCgroup) => void): T {
  if (!status.enabled) return spawnNow();
  sweepLingering();
  let cg: CommandCgroup | null = null;
  let fd = workloadProcs;
  try {
    const path = `${CGROUP_ROOT}/workload/c${++commandSeq}`;
    mkdirSync(path);
    fd = openSync(`${path}/cgroup.procs`, 'w');
    cg = new CommandCgroup(path);
  } catch (err) {
    if (!commandCgroupFailureLogged) log(`resource limits: no per-command cgroup (${(err as Error).message}); using workload`);
    commandCgroupFailureLogged = true;
  }
  const moved = moveSelf(fd);
  let r: T;
  try {
    r = spawnNow();
  } finally {
    // Back out before anything else runs on this thread; retried once, since staying in workload would cap the agent.
    if (moved && !moveSelf(agentProcs)) moveSelf(agentProcs);
    if (fd !== workloadProcs) closeSync(fd);
  }
  if (cg) {
    if (pidOf(r) === undefined) cg.release();
    else onCgroup?.(cg);
  }
  const pid = pidOf(r);
  if (pid !== undefined) {
    try {
      writeFileSync(`/proc/${pid}/oom_score_adj`, '0');
    } catch {
      // exited already
    }
  }
  return r;
}
