import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, realpath, rename, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { SandforgeError } from '../shared/errors.js';
import type { Accel } from './accel.js';
import { MicroVm, SHARE_SLOTS, vmFiles, type BootArtifacts, type VmFiles, type VmOptions } from './microvm.js';
import type { QemuSpec, ShareSpec } from './qemu-args.js';
import { templateGuardEnv } from '../net/egress-guard.js';

const run = promisify(execFile);

/**
 * Bump when the template's device list or layout changes: old templates are then rebuilt.
 * 4: the agent sets up the guest's cgroups (workload limits, oom_score_adj) at start.
 */
const TEMPLATE_LAYOUT = 4;

/** What a template is a snapshot of. Clones take exactly this shape. */
export interface TemplateShape {
  image: string;
  cpus: number;
  memoryMb: number;
  diskMb: number;
  /** A network device on QEMU's user-mode network (network mode `full`); its own template, as the device list differs. */
  nic?: boolean;
}

export interface TemplateMeta {
  schema: 1;
  key: string;
  shape: TemplateShape;
  accel: Accel;
  image_id: string;
  agent_hash: string;
  boot: BootArtifacts;
  created_at: string;
  build_ms: number;
}

/** A frozen VM on disk: RAM file, device state, scratch disk and an empty overlay for clones. */
export class Template {
  constructor(
    readonly dir: string,
    readonly meta: TemplateMeta,
  ) {}

  get ramPath(): string {
    return join(this.dir, 'ram');
  }
  get statePath(): string {
    return join(this.dir, 'dev.state');
  }
  get overlayPath(): string {
    return join(this.dir, 'scratch-overlay.qcow2');
  }
  get emptyDir(): string {
    return join(this.dir, 'empty');
  }
  get boot(): BootArtifacts {
    return this.meta.boot;
  }
  get vmOptions(): VmOptions {
    const { cpus, memoryMb, nic } = this.meta.shape;
    return { accel: this.meta.accel, cpus, memoryMb, dieWithParent: false, nic };
  }

  /** 9p slots pointing at an empty read-only folder: present so the device list matches, harmless if mounted. */
  spareShares(): ShareSpec[] {
    return spareShares(this.emptyDir);
  }
}

export function spareShares(emptyDir: string): ShareSpec[] {
  return Array.from({ length: SHARE_SLOTS }, (_, i) => ({ tag: `sf${i}`, path: emptyDir, readOnly: true }));
}

export interface TemplateInputs {
  shape: TemplateShape;
  accel: Accel;
  imageId: string;
  agentHash: string;
  boot: BootArtifacts;
}

export function templateKey(i: TemplateInputs): string {
  const h = createHash('sha256');
  h.update(
    JSON.stringify({
      layout: TEMPLATE_LAYOUT,
      image: i.imageId,
      agent: i.agentHash,
      accel: i.accel,
      cpus: i.shape.cpus,
      memoryMb: i.shape.memoryMb,
      diskMb: i.shape.diskMb,
      ...(i.shape.nic ? { nic: true } : {}),
    }),
  );
  return h.digest('hex').slice(0, 16);
}

export async function loadTemplate(dir: string): Promise<Template | null> {
  try {
    const meta = JSON.parse(await readFile(join(dir, 'template.json'), 'utf8')) as TemplateMeta;
    return new Template(dir, meta);
  } catch {
    return null;
  }
}

export type TemplateProgress = (msg: string) => void;

/**
 * Cold boots a VM of the given shape, snapshots it and stores the template
 * under `templatesDir/<key>`. Built in a temp dir and renamed, so readers
 * never see half a template; a concurrent builder's result wins.
 */
export async function buildTemplate(
  templatesDir: string,
  inputs: TemplateInputs,
  opts: { dieWithParent: boolean; onProgress?: TemplateProgress; bootTimeoutMs?: number },
): Promise<Template> {
  const key = templateKey(inputs);
  // The overlay records its backing file's absolute path: resolve symlinks so it outlives them.
  await mkdir(templatesDir, { recursive: true });
  templatesDir = await realpath(templatesDir);
  const finalDir = join(templatesDir, key);
  const tmp = join(templatesDir, `.build-${key}-${process.pid}-${randomBytes(4).toString('hex')}`);
  const started = Date.now();
  await mkdir(join(tmp, 'empty'), { recursive: true, mode: 0o700 });
  try {
    const scratch = join(tmp, 'scratch.raw');
    await truncate(await createEmpty(scratch), inputs.shape.diskMb * 1024 * 1024);
    await run('mkfs.ext4', ['-q', '-F', '-m', '0', '-E', 'lazy_itable_init=1,lazy_journal_init=1,nodiscard', scratch]);

    const files = { ...vmFiles(join(tmp, 'vm')), scratch };
    await mkdir(files.dir, { mode: 0o700 });
    const vmOpts: VmOptions = {
      accel: inputs.accel,
      cpus: inputs.shape.cpus,
      memoryMb: inputs.shape.memoryMb,
      dieWithParent: opts.dieWithParent,
      nic: inputs.shape.nic,
    };
    const spec = {
      ...MicroVm.spec(vmOpts, inputs.boot, files, spareShares(join(tmp, 'empty')), 'raw'),
      ramFile: { path: join(tmp, 'ram'), share: true },
    };
    const vm = await bootWithRetries(spec, files, inputs, opts);
    opts.onProgress?.(`agent ready after ${((Date.now() - started) / 1000).toFixed(1)}s; taking snapshot`);
    await vm.snapshotAndQuit(join(tmp, 'dev.state'));

    // Clones get a copy of this empty overlay; its backing path is the final location.
    await run('qemu-img', [
      'create',
      '-q',
      '-f',
      'qcow2',
      '-u',
      '-F',
      'raw',
      '-b',
      join(finalDir, 'scratch.raw'),
      join(tmp, 'scratch-overlay.qcow2'),
      `${inputs.shape.diskMb}M`,
    ]);
    await chmod(scratch, 0o444);
    const meta: TemplateMeta = {
      schema: 1,
      key,
      shape: inputs.shape,
      accel: inputs.accel,
      image_id: inputs.imageId,
      agent_hash: inputs.agentHash,
      boot: inputs.boot,
      created_at: new Date().toISOString(),
      build_ms: Date.now() - started,
    };
    await writeFile(join(tmp, 'template.json'), JSON.stringify(meta, null, 2));
    try {
      await rename(tmp, finalDir);
    } catch (err) {
      const existing = await loadTemplate(finalDir);
      if (!existing) throw err;
      return existing;
    }
    opts.onProgress?.(`template ${key} ready in ${(meta.build_ms / 1000).toFixed(1)}s`);
    return new Template(finalDir, meta);
  } catch (err) {
    throw err instanceof SandforgeError ? err : new SandforgeError('vm_failed', `template build failed: ${(err as Error).message}`);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** Cold boots under TCG occasionally hang in early timer setup; a bounded retry makes template builds dependable. */
const BOOT_ATTEMPTS = 3;

async function bootWithRetries(
  spec: QemuSpec,
  files: VmFiles,
  inputs: TemplateInputs,
  opts: { dieWithParent: boolean; onProgress?: TemplateProgress; bootTimeoutMs?: number },
): Promise<MicroVm> {
  let last: unknown;
  for (let attempt = 1; attempt <= BOOT_ATTEMPTS; attempt++) {
    opts.onProgress?.(
      `cold booting ${inputs.shape.image} (${inputs.shape.cpus} cpu, ${inputs.shape.memoryMb} MB) under ${inputs.accel}` +
        (attempt > 1 ? ` (attempt ${attempt} of ${BOOT_ATTEMPTS})` : ''),
    );
    try {
      return await MicroVm.coldBoot(spec, files, {
        dieWithParent: opts.dieWithParent,
        timeoutMs: opts.bootTimeoutMs ?? 60_000,
        // A template with a NIC boots behind the guard too, refusing everything: it needs no network.
        env: inputs.shape.nic ? templateGuardEnv() : undefined,
      });
    } catch (err) {
      last = err;
      opts.onProgress?.(`boot attempt ${attempt} failed: ${(err as Error).message.split('\n')[0]}`);
      // Fresh files for the next attempt: the RAM file and console belong to the dead VM.
      await rm(spec.ramFile!.path, { force: true });
      await rm(files.consoleLog, { force: true });
    }
  }
  throw last;
}

async function createEmpty(path: string): Promise<string> {
  await writeFile(path, '');
  return path;
}
