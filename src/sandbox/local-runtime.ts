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

  /** Starts a clone of the template for `shape` (building the template first if there is none). */
  async startSandbox(
    shape: TemplateShape,
    id = newSandboxId(),
    vmDir = join(this.dirs.vmsDir, id),
    mounts: readonly AcceptedMount[] = [],
  ): Promise<{ id: string; vm: MicroVm; template: Template; built: boolean; createMs: number }> {
    const t0 = performance.now();
    await checkMountSources(mounts);
    const { template, built } = await this.templates.get(shape);
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
      });
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
