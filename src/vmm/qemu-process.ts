import { spawn } from 'node:child_process';
import { openSync, closeSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { HostCgroup, cgroupNameForVmDir, limitsFromQemuArgs } from './host-cgroup.js';

export const QEMU_BINARY = process.env.SANDFORGE_QEMU ?? 'qemu-system-x86_64';

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface SpawnOptions {
  args: string[];
  /** QEMU's own stdout/stderr go here (diagnostics on failure). */
  logFile: string;
  /**
   * Kill QEMU when this process dies (`sandforge run`). The supervisor leaves
   * it off so VMs outlive a restart and are adopted again.
   */
  dieWithParent: boolean;
  /** Added to QEMU's environment (e.g. the egress guard's LD_PRELOAD). */
  env?: Record<string, string>;
}

/** A QEMU process, either spawned here or adopted by pid after a restart. */
export class QemuProcess {
  readonly exited: Promise<ExitInfo>;
  private exitInfo: ExitInfo | null = null;

  private constructor(
    readonly pid: number,
    exited: Promise<ExitInfo>,
    /** Its host cgroup (./host-cgroup.ts), removed once QEMU is gone, before `exited` resolves. */
    readonly cgroup: HostCgroup | null = null,
  ) {
    this.exited = exited.then(async (info) => {
      await cgroup?.remove();
      this.exitInfo = info;
      return info;
    });
  }

  static spawn(opts: SpawnOptions): QemuProcess {
    const fd = openSync(opts.logFile, 'a', 0o600);
    try {
      const [cmd, argv] = opts.dieWithParent
        ? ['setpriv', ['--pdeathsig', 'KILL', '--', QEMU_BINARY, ...opts.args]]
        : [QEMU_BINARY, opts.args];
      // Own process group: a Ctrl-C at the terminal reaches us, not QEMU; we tear down in order.
      const child = spawn(cmd, argv, {
        stdio: ['ignore', fd, fd],
        detached: true,
        ...(opts.env ? { env: { ...process.env, ...opts.env } } : {}),
      });
      const exited = new Promise<ExitInfo>((resolve) => {
        child.once('exit', (code, signal) => resolve({ code, signal }));
        child.once('error', () => resolve({ code: 127, signal: null }));
      });
      if (!opts.dieWithParent) child.unref();
      if (child.pid === undefined) throw new Error(`cannot start ${cmd}`);
      // The VM dir (the log's folder) names the cgroup, -m sizes it; setpriv execs QEMU in the same pid.
      const limits = limitsFromQemuArgs(opts.args);
      // A host that offers cgroups but refuses this one: QEMU runs unconfined, and the operator hears it (stderr, journald).
      const cgroup = limits
        ? HostCgroup.attach(cgroupNameForVmDir(dirname(opts.logFile)), child.pid, limits, (msg) => process.emitWarning(msg))
        : null;
      return new QemuProcess(child.pid, exited, cgroup);
    } finally {
      closeSync(fd);
    }
  }

  /**
   * Adopts a running QEMU by pid, only if its command line still mentions
   * `marker` (guards against pid reuse). Returns null if it is gone.
   */
  static adopt(pid: number, marker: string): QemuProcess | null {
    if (!isQemuWithMarker(pid, marker)) {
      void HostCgroup.find(cgroupNameForVmDir(marker))?.remove();
      return null;
    }
    const exited = (async (): Promise<ExitInfo> => {
      while (isQemuWithMarker(pid, marker)) await sleep(250);
      return { code: null, signal: null };
    })();
    // The marker is the VM dir: the cgroup the first supervisor made for it, if any.
    return new QemuProcess(pid, exited, HostCgroup.find(cgroupNameForVmDir(marker)));
  }

  get alive(): boolean {
    return this.exitInfo === null;
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (!this.alive) return;
    try {
      process.kill(this.pid, signal);
    } catch {
      // already gone
    }
  }

  /** SIGKILL and wait for the exit, bounded. */
  async killAndWait(timeoutMs = 5000): Promise<void> {
    this.kill('SIGKILL');
    await Promise.race([this.exited, sleep(timeoutMs, undefined, { ref: false })]);
  }
}

/** SIGKILLs a QEMU left from an earlier run, only if its command line still names `marker` (pid-reuse guard). */
export function killStaleQemu(pid: number, marker: string): void {
  // Its cgroup goes too (once the process is gone; remove() waits for that, bounded).
  const cgroup = HostCgroup.find(cgroupNameForVmDir(marker));
  if (isQemuWithMarker(pid, marker)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone meanwhile
    }
  }
  void cgroup?.remove();
}

function isQemuWithMarker(pid: number, marker: string): boolean {
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    if (!cmdline.includes(marker)) return false;
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // A zombie is dead for our purposes.
    return !/\) Z /.test(stat);
  } catch {
    return false;
  }
}

/** True if a process with this pid exists (EPERM: it exists but is not ours). */
export function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
