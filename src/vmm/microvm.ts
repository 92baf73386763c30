import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { copyFile, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentClient } from '../agent-client/index.js';
import type { GuestMount } from '../shared/protocol.js';
import { SandforgeError } from '../shared/errors.js';
import type { Accel } from './accel.js';
import { buildQemuArgs, type QemuSpec, type ShareSpec } from './qemu-args.js';
import { QemuProcess } from './qemu-process.js';
import { QmpClient } from './qmp-client.js';
import type { Template } from './template.js';

/** The files a VM boots from. Paths are absolute. */
export interface BootArtifacts {
  kernel: string;
  initrd: string;
  rootfs: string;
  agentDisk: string;
}

export interface VmFiles {
  dir: string;
  qmpSocket: string;
  agentSocket: string;
  consoleLog: string;
  qemuLog: string;
  scratch: string;
}

/** Files of one VM inside its own directory; removing the directory removes them all. */
export function vmFiles(dir: string, scratchName = 'scratch.qcow2'): VmFiles {
  return {
    dir,
    qmpSocket: join(dir, 'qmp.sock'),
    agentSocket: join(dir, 'agent.sock'),
    consoleLog: join(dir, 'console.log'),
    qemuLog: join(dir, 'qemu.log'),
    scratch: join(dir, scratchName),
  };
}

/** Kernel command line shared by templates and clones (clones inherit the booted kernel anyway). */
export const KERNEL_CMDLINE = 'console=ttyS0 reboot=t panic=-1 quiet loglevel=3';

/**
 * The kernel command line for an accelerator. Under TCG the guest TSC ticks
 * at the host's TSC rate, and microvm has no HPET/PM timer to calibrate it
 * against; PIT calibration fails now and then under emulation and the boot
 * hangs (measured: 8 of 12 cold boots hung; 0 of 12 with the rate given).
 * So the host's rate is handed over with `tsc_early_khz`.
 */
export function kernelCmdline(accel: Accel): string {
  const khz = accel === 'tcg' ? hostTscKhz() : null;
  return khz ? `${KERNEL_CMDLINE} tsc_early_khz=${khz}` : KERNEL_CMDLINE;
}

/** The host CPU's rate in kHz as /proc/cpuinfo reports it (the TSC rate on constant-TSC hosts). */
export function hostTscKhz(cpuinfo?: string): number | null {
  let text = cpuinfo;
  if (text === undefined) {
    try {
      text = readFileSync('/proc/cpuinfo', 'utf8');
    } catch {
      return null;
    }
  }
  const m = /^cpu MHz\s*:\s*([0-9.]+)/m.exec(text);
  const khz = m ? Math.round(Number(m[1]) * 1000) : NaN;
  return Number.isFinite(khz) && khz > 100_000 ? khz : null;
}

/** Number of 9p slots every template carries, so clones can mount host folders. */
export const SHARE_SLOTS = 4;

export interface VmOptions {
  accel: Accel;
  cpus: number;
  memoryMb: number;
  dieWithParent: boolean;
  /** A network device (network mode `full`). */
  nic?: boolean;
}

/** The last lines of the guest console, for error messages. */
export function consoleTail(path: string, lines = 15): string {
  try {
    return readFileSync(path, 'utf8').split('\n').slice(-lines).join('\n').trim();
  } catch {
    return '';
  }
}

/**
 * One running microVM: its QEMU process, QMP control and agent connection.
 * Knows nothing of HTTP or sandboxes; the sandbox layer owns ids and policy.
 */
export class MicroVm {
  private destroyed = false;
  private agentClient: AgentClient | null = null;
  /**
   * Resolves with the agent once it answered and (for clones) took its
   * identity. A clone is returned as soon as its CPUs run; agent work that
   * follows is pipelined behind this promise, so callers await it.
   */
  readonly ready: Promise<AgentClient>;

  private constructor(
    readonly files: VmFiles,
    readonly qemu: QemuProcess,
    readonly qmp: QmpClient,
    ready: Promise<AgentClient>,
  ) {
    this.ready = ready.then((a) => {
      this.agentClient = a;
      if (this.destroyed) a.destroy();
      return a;
    });
    // A failed readiness is reported to whoever awaits it; never unhandled.
    this.ready.catch(() => undefined);
  }

  /** The agent, once ready; throws if it is not (use `ready` to wait). */
  get agent(): AgentClient {
    if (!this.agentClient) throw new SandforgeError('agent_unavailable', 'the sandbox agent is not ready yet');
    return this.agentClient;
  }

  /** Builds the QEMU spec for a VM directory; templates and clones share it so device lists match. */
  static spec(opts: VmOptions, boot: BootArtifacts, files: VmFiles, shares: ShareSpec[], scratchFormat: 'raw' | 'qcow2'): QemuSpec {
    return {
      accel: opts.accel,
      cpus: opts.cpus,
      memoryMb: opts.memoryMb,
      kernel: boot.kernel,
      initrd: boot.initrd,
      cmdline: kernelCmdline(opts.accel),
      disks: [
        { path: boot.rootfs, format: 'raw', readOnly: true, serial: 'sf-root' },
        { path: boot.agentDisk, format: 'raw', readOnly: true, serial: 'sf-agent' },
        { path: files.scratch, format: scratchFormat, readOnly: false, serial: 'sf-scratch' },
      ],
      shares,
      nic: opts.nic,
      agentSocket: files.agentSocket,
      qmpSocket: files.qmpSocket,
      consoleLog: files.consoleLog,
    };
  }

  /**
   * Cold boot until the agent answers. Used to build templates; a create
   * request never waits for this when a template exists.
   */
  static async coldBoot(
    spec: QemuSpec,
    files: VmFiles,
    opts: { dieWithParent: boolean; timeoutMs: number; env?: Record<string, string> },
  ): Promise<MicroVm> {
    const qemu = QemuProcess.spawn({ args: buildQemuArgs(spec), logFile: files.qemuLog, dieWithParent: opts.dieWithParent, env: opts.env });
    return MicroVm.attach(files, qemu, opts.timeoutMs, 'boot');
  }

  /** Restores a clone of `template` into `files.dir` and hands the agent its identity. */
  static async restore(
    template: Template,
    files: VmFiles,
    opts: {
      dieWithParent: boolean;
      sandboxId: string;
      hostname: string;
      shares?: ShareSpec[];
      /** Slots the agent mounts after init; `ready` resolves only once they are mounted. */
      mounts?: GuestMount[];
      /** Network fetch: the guest's egress port and the env that points commands at it. */
      egress?: { port: number; env: Record<string, string> };
      /** Extra environment for QEMU (the egress guard of network `full`). */
      qemuEnv?: Record<string, string>;
    },
  ): Promise<MicroVm> {
    await copyFile(template.overlayPath, files.scratch);
    const spec: QemuSpec = {
      ...MicroVm.spec(template.vmOptions, template.boot, files, opts.shares ?? template.spareShares(), 'qcow2'),
      ramFile: { path: template.ramPath, share: false },
      incoming: true,
    };
    const qemu = QemuProcess.spawn({
      args: buildQemuArgs(spec),
      logFile: files.qemuLog,
      dieWithParent: opts.dieWithParent,
      env: opts.qemuEnv,
    });
    let qmp: QmpClient | undefined;
    try {
      qmp = await raceExit(qemu, files, QmpClient.connect(files.qmpSocket, 10_000), 'restore');
      await qmp.execute('migrate-set-capabilities', {
        capabilities: [{ capability: 'x-ignore-shared', state: true }],
      });
      await qmp.execute('migrate-incoming', { uri: `exec:cat ${shellQuote(template.statePath)}` });
      await raceExit(qemu, files, qmp.waitStatus('paused', 30_000), 'restore');
      await qmp.execute('cont');
      const ready = raceExit(qemu, files, AgentClient.connect(files.agentSocket, { timeoutMs: 30_000 }), 'restore').then(async (agent) => {
        try {
          await agent.init({
            time_ms: Date.now(),
            entropy_b64: randomBytes(64).toString('base64'),
            hostname: opts.hostname,
            sandbox_id: opts.sandboxId,
            ...(opts.egress ? { env: opts.egress.env } : {}),
          });
          if (opts.mounts?.length) await agent.mount({ mounts: opts.mounts });
          if (opts.egress) await agent.listenEgress({ port: opts.egress.port });
          return agent;
        } catch (err) {
          agent.destroy();
          throw err;
        }
      });
      return new MicroVm(files, qemu, qmp, ready);
    } catch (err) {
      qmp?.close();
      await qemu.killAndWait();
      throw err;
    }
  }

  /** Re-attaches to a VM that outlived the process that started it. */
  static async adopt(files: VmFiles, pid: number, timeoutMs = 10_000): Promise<MicroVm | null> {
    const qemu = QemuProcess.adopt(pid, files.dir);
    if (!qemu) return null;
    try {
      return await MicroVm.attach(files, qemu, timeoutMs, 'adopt');
    } catch {
      await qemu.killAndWait();
      return null;
    }
  }

  private static async attach(files: VmFiles, qemu: QemuProcess, timeoutMs: number, what: string): Promise<MicroVm> {
    let qmp: QmpClient | undefined;
    try {
      qmp = await raceExit(qemu, files, QmpClient.connect(files.qmpSocket, 10_000), what);
      const agent = await raceExit(qemu, files, AgentClient.connect(files.agentSocket, { timeoutMs }), what);
      const vm = new MicroVm(files, qemu, qmp, Promise.resolve(agent));
      await vm.ready;
      return vm;
    } catch (err) {
      qmp?.close();
      await qemu.killAndWait();
      throw err;
    }
  }

  get pid(): number {
    return this.qemu.pid;
  }

  get alive(): boolean {
    return this.qemu.alive && !this.destroyed;
  }

  /**
   * Freezes the VM into `statePath` (device state only; RAM stays in the
   * shared RAM file) and stops QEMU. The VM must have a `share: true` RAM file.
   */
  async snapshotAndQuit(statePath: string): Promise<void> {
    await this.agent.prepareSnapshot();
    this.agent.destroy();
    // Let the agent see the host hang up before the CPUs stop, so clones wake up listening.
    await sleep(Number(process.env.SANDFORGE_SNAPSHOT_SETTLE_MS ?? 500));
    await this.qmp.execute('stop');
    await this.qmp.execute('migrate-set-capabilities', {
      capabilities: [{ capability: 'x-ignore-shared', state: true }],
    });
    await this.qmp.execute('migrate', { uri: `exec:cat > ${shellQuote(statePath)}` });
    await this.qmp.waitMigration(60_000);
    await this.qmp.execute('quit').catch(() => undefined);
    await Promise.race([this.qemu.exited, sleep(5000, undefined, { ref: false })]);
    await this.destroy();
  }

  /** Lets go of the VM without stopping it, so a later process can adopt it. */
  detach(): void {
    this.destroyed = true;
    this.agentClient?.close();
    this.qmp.close();
  }

  /** Stops QEMU and removes every file of this VM. Safe to call more than once. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    this.agentClient?.destroy();
    this.qmp.close();
    await this.qemu.killAndWait();
    await rm(this.files.dir, { recursive: true, force: true });
  }
}

/** Waits for `p`, but fails fast with the console tail if QEMU exits first. */
export async function raceExit<T>(qemu: QemuProcess, files: VmFiles, p: Promise<T>, what: string): Promise<T> {
  const exit = qemu.exited.then(async (info) => {
    await sleep(50);
    const log = [consoleTail(files.qemuLog, 5), consoleTail(files.consoleLog)].filter(Boolean).join('\n');
    throw new SandforgeError('vm_failed', `VM exited during ${what} (code ${info.code ?? info.signal})${log ? `:\n${log}` : ''}`);
  });
  p.catch(() => undefined);
  return Promise.race([p, exit]);
}

function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

export async function makeVmDir(dir: string): Promise<VmFiles> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  return vmFiles(dir);
}
