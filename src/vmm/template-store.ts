import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ensureAgentDisk } from '../image/agent-disk.js';
import { loadImage } from '../image/store.js';
import { SandforgeError } from '../shared/errors.js';
import type { Accel } from './accel.js';
import { pidAlive } from './qemu-process.js';
import { buildTemplate, loadTemplate, templateKey, type Template, type TemplateInputs, type TemplateShape } from './template.js';

export interface TemplateStoreOptions {
  imagesDir: string;
  templatesDir: string;
  accel: Accel;
  /** Template-building VMs die with this process (CLI) or not (supervisor). */
  dieWithParent: boolean;
  onProgress?: (msg: string) => void;
}

/** Status of template builds, for `/v1/info` and logs. */
export interface TemplateBuildState {
  key: string;
  shape: TemplateShape;
  state: 'building' | 'ready' | 'failed';
  message?: string;
}

/**
 * Finds or builds the template for a shape. Builds of the same key share
 * one promise, so twenty concurrent creates cause one cold boot.
 */
export class TemplateStore {
  private readonly inflight = new Map<string, Promise<Template>>();
  readonly builds = new Map<string, TemplateBuildState>();
  /** The agent disk depends only on this installation's files: resolved once per process. */
  private agentDisk: Promise<{ path: string; hash: string }> | null = null;

  constructor(readonly opts: TemplateStoreOptions) {}

  /** Resolves image and agent disk into the inputs that name a template. */
  async inputs(shape: TemplateShape): Promise<TemplateInputs & { minMemoryMb: number; kernelRelease: string }> {
    const image = await loadImage(this.opts.imagesDir, shape.image);
    if (shape.memoryMb < image.manifest.min_memory_mb) {
      throw new SandforgeError(
        'invalid_argument',
        `memory ${shape.memoryMb} MB is below image "${shape.image}"'s minimum of ${image.manifest.min_memory_mb} MB`,
        { limit: 'memory_mb', minimum: image.manifest.min_memory_mb },
      );
    }
    this.agentDisk ??= ensureAgentDisk(this.opts.imagesDir);
    this.agentDisk.catch(() => (this.agentDisk = null));
    const agent = await this.agentDisk;
    const files = image.manifest.files;
    return {
      shape,
      accel: this.opts.accel,
      imageId: image.manifest.id,
      agentHash: agent.hash,
      boot: {
        kernel: join(image.dir, files.kernel),
        initrd: join(image.dir, files.initramfs),
        rootfs: join(image.dir, files.rootfs),
        agentDisk: agent.path,
      },
      minMemoryMb: image.manifest.min_memory_mb,
      kernelRelease: image.manifest.kernel_release,
    };
  }

  /** Returns the ready template for `shape`, building it first if needed. */
  async get(shape: TemplateShape): Promise<{ template: Template; built: boolean }> {
    const inputs = await this.inputs(shape);
    const key = templateKey(inputs);
    const existing = await loadTemplate(join(this.opts.templatesDir, key));
    if (existing) return { template: existing, built: false };
    let p = this.inflight.get(key);
    if (!p) {
      this.builds.set(key, { key, shape, state: 'building' });
      p = buildTemplate(this.opts.templatesDir, inputs, {
        dieWithParent: this.opts.dieWithParent,
        onProgress: this.opts.onProgress,
      });
      this.inflight.set(key, p);
      p.then(
        () => this.builds.set(key, { key, shape, state: 'ready' }),
        (err: Error) => this.builds.set(key, { key, shape, state: 'failed', message: err.message }),
      ).finally(() => this.inflight.delete(key));
    }
    return { template: await p, built: true };
  }

  /** Removes leftovers of builds whose process died mid-build; another live process's build is left alone. */
  async sweep(): Promise<void> {
    let names: string[] = [];
    try {
      names = await readdir(this.opts.templatesDir);
    } catch {
      return;
    }
    await Promise.all(
      names
        .filter((n) => n.startsWith('.build-') && !pidAlive(Number(n.split('-')[2])))
        .map((n) => rm(join(this.opts.templatesDir, n), { recursive: true, force: true })),
    );
  }
}
