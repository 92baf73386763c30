import { readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { resolveDataDir, resolveImagesDir } from '../config/paths.js';
import { detectAccel, type AccelReport } from '../vmm/accel.js';
import { makeVmDir, MicroVm } from '../vmm/microvm.js';
import { pidAlive } from '../vmm/qemu-process.js';
import { TemplateStore } from '../vmm/template-store.js';
import type { Template, TemplateShape } from '../vmm/template.js';
import { newSandboxId } from '../shared/ids.js';
import { SandforgeError } from '../shared/errors.js';
import type { AcceptedMount } from '../policy/mount-policy.js';
import type { ShareSpec } from '../vmm/qemu-args.js';
import type { NetworkMode } from '../shared/api-types.js';
import { EGRESS_PROXY_PORT } from '../shared/protocol.js';
import { EgressProxy, type EgressRefusal } from '../net/egress-proxy.js';
import { EgressTunnel } from '../net/egress-tunnel.js';
import { egressGuardEnv, egressGuardLibrary, followGuardLog } from '../net/egress-guard.js';
import type { NetworkPolicy } from '../policy/network-policy.js';

/** What commands in fetch/full sandboxes find in their environment. */
export function egressEnv(port = EGRESS_PROXY_PORT): Record<string, string> {
  const url = `http://127.0.0.1:${port}`;
  const none = 'localhost,127.0.0.1,::1';
  return { HTTP_PROXY: url, HTTPS_PROXY: url, http_proxy: url, https_proxy: url, NO_PROXY: none, no_proxy: none };
}

export interface EgressHooks {
  onRefusal: (r: EgressRefusal) => void;
  onError?: (sandboxId: string, message: string) => void;
  onTunnelStop?: (sandboxId: string, why: string) => void;
}

/** Where a process keeps images, templates and VM directories. */
export interface RuntimeDirs {
  imagesDir: string;
  dataDir: string;
  templatesDir: string;
  /** VMs of the supervisor's sandboxes. */
  vmsDir: string;
  /** VMs of one-shot `sandforge run`s, named `<owner pid>-<id>` so a later run can sweep a killed one's files. */
  runsDir: string;
}

export function runtimeDirs(opts: { images?: string; data?: string }): RuntimeDirs {
  const imagesDir = resolveImagesDir(opts.images);
  const dataDir = resolveDataDir(imagesDir, opts.data);
  return { imagesDir, dataDir, templatesDir: join(dataDir, 'templates'), vmsDir: join(dataDir, 'vms'), runsDir: join(dataDir, 'runs') };
}

/**
 * The VM-level runtime both the CLI's one-shot `run` and the supervisor use:
 * accelerator choice, template store, and starting clones.
 */
export class Runtime {
  readonly templates: TemplateStore;
  private egressProxy: EgressProxy | null = null;
  private egressHooks: EgressHooks | null = null;
  private egressPolicy: NetworkPolicy | null = null;
  private readonly tunnels = new Map<string, EgressTunnel>();

  constructor(
    readonly dirs: RuntimeDirs,
    readonly accel: AccelReport,
    readonly dieWithParent: boolean,
    onProgress?: (msg: string) => void,
  ) {
    this.templates = new TemplateStore({
      imagesDir: dirs.imagesDir,
      templatesDir: dirs.templatesDir,
      accel: accel.accel,
      dieWithParent,
      ...(onProgress ? { onProgress } : {}),
    });
  }

  static create(opts: {
    images?: string;
    data?: string;
    accel?: string;
    dieWithParent: boolean;
    onProgress?: (m: string) => void;
  }): Runtime {
    return new Runtime(runtimeDirs(opts), detectAccel(opts.accel), opts.dieWithParent, opts.onProgress);
  }

  /** The policy network modes fetch and full are judged by; null until enableEgress. */
  get networkPolicy(): NetworkPolicy | null {
    return this.egressPolicy;
  }

  /** Enables network modes fetch (the proxy) and full (NAT behind the guard), both judged by `policy`. */
  enableEgress(policy: NetworkPolicy, hooks: EgressHooks): void {
    this.egressPolicy = policy;
    this.egressProxy = new EgressProxy({ policy, onRefusal: hooks.onRefusal, ...(hooks.onError ? { onError: hooks.onError } : {}) });
    this.egressHooks = hooks;
  }

  /**
   * Hooks a running VM's egress up (after create, and after adoption by a
   * restarted supervisor): fetch connects its egress port to the proxy, full
   * follows its guard's refusal log. Offline sandboxes have nothing to attach.
   */
  attachEgress(vm: MicroVm, sandboxId: string, mode: NetworkMode): void {
    if (mode === 'offline') return;
    if (mode === 'full') {
      // NAT through QEMU's user-mode network; the guard in QEMU logs what it refuses.
      const stop = followGuardLog(vm.files.dir, (r) =>
        this.egressHooks?.onRefusal({
          sandboxId,
          mode,
          host: r.address,
          port: r.port,
          rule: r.rule,
          message: `${r.address}:${r.port} refused by the egress guard (${r.rule})`,
        }),
      );
      void vm.qemu.exited.then(stop);
      return;
    }
    const proxy = this.egressProxy;
    if (!proxy) throw new SandforgeError('not_implemented', `network mode "${mode}" needs the egress proxy, which is not enabled`);
    void vm.ready.then(
      (agent) => {
        const t = new EgressTunnel(
          agent,
          (conn) => proxy.handle(conn, { sandboxId, mode }),
          (why) => {
            this.tunnels.delete(sandboxId);
            this.egressHooks?.onTunnelStop?.(sandboxId, why);
          },
        );
        this.tunnels.set(sandboxId, t);
        t.start();
        void agent.closed.then(() => {
          t.stop();
          if (this.tunnels.get(sandboxId) === t) this.tunnels.delete(sandboxId);
        });
      },
      () => undefined,
    );
  }

  /** Open egress connections per sandbox (for /v1/info). */
  egressConnections(): number {
    let n = 0;
    for (const t of this.tunnels.values()) n += t.connections;
    return n;
  }

  /** Starts a clone of the template for `shape` (building the template first if there is none). */
  async startSandbox(
    shape: TemplateShape,
    id = newSandboxId(),
    vmDir = join(this.dirs.vmsDir, id),
    mounts: readonly AcceptedMount[] = [],
    network: NetworkMode = 'offline',
  ): Promise<{ id: string; vm: MicroVm; template: Template; built: boolean; createMs: number }> {
    const t0 = performance.now();
    if (network !== 'offline' && !this.egressProxy) {
      throw new SandforgeError('not_implemented', `network mode "${network}" needs the egress proxy, which is not enabled`);
    }
    // Fails early and clearly, before any template build, if this install has no guard.
    const guard = network === 'full' ? egressGuardLibrary() : null;
    await checkMountSources(mounts);
    const { template, built } = await this.templates.get(network === 'full' ? { ...shape, nic: true } : shape);
    const files = await makeVmDir(vmDir);
    try {
      const vm = await MicroVm.restore(template, files, {
        dieWithParent: this.dieWithParent,
        sandboxId: id,
        hostname: id.replace('_', '-'),
        ...(mounts.length
          ? {
              shares: sharesFor(template.spareShares(), mounts),
              mounts: mounts.map((m) => ({ tag: m.tag, guest_path: m.guestPath, read_only: m.readOnly })),
            }
          : {}),
        ...(network === 'fetch' ? { egress: { port: EGRESS_PROXY_PORT, env: egressEnv() } } : {}),
        ...(guard ? { qemuEnv: egressGuardEnv(this.egressPolicy!, files.dir, guard) } : {}),
      });
      this.attachEgress(vm, id, network);
      return { id, vm, template, built, createMs: performance.now() - t0 };
    } catch (err) {
      await rm(files.dir, { recursive: true, force: true });
      throw err;
    }
  }
}

/** Removes VM dirs of `sandforge run`s whose process is gone (killed with -9: QEMU died with it, files stayed). */
export async function sweepRuns(runsDir: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(runsDir);
  } catch {
    return;
  }
  for (const name of names) {
    const pid = Number(name.split('-')[0]);
    if (pid === process.pid || pidAlive(pid)) continue;
    await rm(join(runsDir, name), { recursive: true, force: true });
  }
}

/**
 * The clone's 9p slots: slot i exports the i-th accepted mount (read-only
 * enforced by QEMU itself, `readonly=on`), the rest keep the template's
 * empty read-only folder so the device list matches the snapshot.
 */
export function sharesFor(spare: ShareSpec[], mounts: readonly AcceptedMount[]): ShareSpec[] {
  return spare.map((slot) => {
    const m = mounts.find((x) => x.tag === slot.tag);
    return m ? { tag: slot.tag, path: m.hostPath, readOnly: m.readOnly } : slot;
  });
}

/** QEMU exports folders only, and fails to start on a missing one: say so clearly first. */
async function checkMountSources(mounts: readonly AcceptedMount[]): Promise<void> {
  for (const m of mounts) {
    const st = await stat(m.hostPath).catch(() => null);
    if (!st) throw new SandforgeError('invalid_argument', `mount host_path ${m.requested} does not exist`);
    if (!st.isDirectory())
      throw new SandforgeError('invalid_argument', `mount host_path ${m.requested} is not a directory (only folders can be mounted)`);
  }
}
