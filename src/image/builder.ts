import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { PACKAGE_ROOT } from '../config/paths.js';
import { SandforgeError } from '../shared/errors.js';
import { hashFile, hashInputs } from './hash.js';
import { ensureKernel, kernelKey } from './kernel.js';
import { ensureRootfs, rootfsKey } from './rootfs.js';
import { buildInitramfs } from './initramfs.js';
import { IMAGE_FILES, MANIFEST_SCHEMA, readManifest, type ImageManifest } from './manifest.js';
import { assertImageName, DEFAULT_IMAGE, imageSize } from './store.js';
import { BUSYBOX, checkBuildPrereqs } from './prereqs.js';
import { BUILDER_VERSION, defaultSpec, type ImageSpec } from './spec.js';
import { Workspace, linkOrCopy, replaceDir } from './workspace.js';
import { exists } from './cache.js';

/** The guest init shipped in the initramfs. */
export const INIT_SCRIPT = join(PACKAGE_ROOT, 'guest/init.sh');

/** Receives build steps; the CLI renders them (see src/cli/progress.ts). */
export interface BuildProgress {
  step<T>(name: string, fn: () => Promise<T>): Promise<T>;
}

/** Options for {@link buildImage}. */
export interface BuildOptions {
  name?: string;
  spec?: ImageSpec;
  /** Rebuild everything, ignoring the image and the kernel/rootfs caches. */
  force?: boolean;
  progress?: BuildProgress;
  signal?: AbortSignal;
  /** Overrides for tests and experiments. */
  initScript?: string;
  busybox?: string;
}

/** What a build produced (the CLI's `--json` output is this minus `manifest`). */
export interface BuildResult {
  name: string;
  id: string;
  dir: string;
  kernel_release: string;
  size_bytes: number;
  /** True if the image was already up to date and nothing was built. */
  cached: boolean;
  manifest: ImageManifest;
}

const noProgress: BuildProgress = { step: (_n, fn) => fn() };

/** The image id: a short hash over every input that shapes the image. */
export async function computeImageId(spec: ImageSpec, initScript: string, busybox: string): Promise<string> {
  return hashInputs({
    what: 'image',
    v: BUILDER_VERSION,
    kernel: kernelKey(spec),
    rootfs: rootfsKey(spec),
    modules: spec.modules,
    required: spec.requiredModules,
    min_memory_mb: spec.minMemoryMb,
    init: await hashFile(initScript),
    busybox: await hashFile(busybox).catch(() => 'missing'),
  });
}

async function upToDate(dir: string, id: string): Promise<ImageManifest | undefined> {
  const manifest = await readManifest(join(dir, 'manifest.json')).catch(() => undefined);
  if (!manifest || manifest.id !== id) return undefined;
  for (const f of Object.values(manifest.files)) if (!(await exists(join(dir, f)))) return undefined;
  return manifest;
}

/**
 * Builds image `name` into `<imagesDir>/<name>/`, or returns at once if its
 * manifest already carries the id of the current inputs. Kernel and rootfs
 * come from `<imagesDir>/.cache/` when their own inputs are unchanged. The
 * new image is assembled in a temp dir and renamed into place; temp dirs
 * never outlive the call, including on failure or interrupt.
 */
export async function buildImage(imagesDir: string, opts: BuildOptions = {}): Promise<BuildResult> {
  const name = opts.name ?? DEFAULT_IMAGE;
  assertImageName(name);
  const spec = opts.spec ?? defaultSpec();
  const progress = opts.progress ?? noProgress;
  const initScript = opts.initScript ?? INIT_SCRIPT;
  const busybox = opts.busybox ?? BUSYBOX;
  const dest = join(imagesDir, name);

  const id = await computeImageId(spec, initScript, busybox);
  const result = async (manifest: ImageManifest, cached: boolean): Promise<BuildResult> => ({
    name,
    id,
    dir: dest,
    kernel_release: manifest.kernel_release,
    size_bytes: await imageSize(dest, manifest),
    cached,
    manifest,
  });
  if (!opts.force) {
    const current = await upToDate(dest, id);
    if (current) return result(current, true);
  }

  await checkBuildPrereqs(busybox);
  await mkdir(imagesDir, { recursive: true });
  const ws = new Workspace();
  const checkAbort = () => {
    if (opts.signal?.aborted) throw new SandforgeError('internal', 'interrupted');
  };
  try {
    const sub = { signal: opts.signal, force: opts.force };
    const kernel = await progress.step('kernel', () => ensureKernel(imagesDir, spec, ws, sub));
    checkAbort();
    const rootfs = await progress.step('rootfs', () => ensureRootfs(imagesDir, spec, ws, sub));
    checkAbort();
    const tmp = await ws.tempDir(imagesDir, name);
    await progress.step('initramfs', async () => {
      const initScriptData = await readFile(initScript);
      await buildInitramfs(
        { kernel, initScript: initScriptData, busybox, modules: spec.modules, requiredModules: spec.requiredModules },
        join(tmp, IMAGE_FILES.initramfs),
      );
    });
    checkAbort();
    const manifest: ImageManifest = {
      schema: MANIFEST_SCHEMA,
      name,
      id,
      created_at: new Date().toISOString(),
      kernel_release: kernel.release,
      min_memory_mb: spec.minMemoryMb,
      packages: [...spec.packages],
      files: { ...IMAGE_FILES },
    };
    await progress.step('install', async () => {
      await linkOrCopy(kernel.vmlinuz, join(tmp, IMAGE_FILES.kernel));
      await linkOrCopy(rootfs.path, join(tmp, IMAGE_FILES.rootfs));
      // Manifest last: its presence marks a complete image.
      await writeFile(join(tmp, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
      // mkdtemp made it 0700; the supervisor may run as an unprivileged user.
      await chmod(tmp, 0o755);
      await replaceDir(tmp, dest, ws, imagesDir);
    });
    return await result(manifest, false);
  } finally {
    await ws.dispose();
  }
}
