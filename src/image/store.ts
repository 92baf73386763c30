import { readdir, stat, rename, rm, mkdtemp } from 'node:fs/promises';
import { join } from 'node:path';
import { SandforgeError } from '../shared/errors.js';
import { readManifest, type ImageManifest } from './manifest.js';
import { TEMP_PREFIX } from './workspace.js';

/** Image names double as directory names: keep them boring. */
export const IMAGE_NAME_RE = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/** The default image name used by the CLI and the supervisor. */
export const DEFAULT_IMAGE = 'default';

/** An image on disk. */
export interface ImageEntry {
  name: string;
  dir: string;
  manifest: ImageManifest;
  /** Total size of the files the manifest names. */
  size_bytes: number;
}

/** Throws 'invalid_argument' unless `name` is a valid image name. */
export function assertImageName(name: string): void {
  if (!IMAGE_NAME_RE.test(name)) {
    throw new SandforgeError(
      'invalid_argument',
      `invalid image name "${name}": use lowercase letters, digits, ".", "_" and "-" (max 63, not starting with "." or "-")`,
    );
  }
}

/**
 * Loads `<imagesDir>/<name>`. Throws 'image_not_found' (with the command to
 * build it) when there is no manifest.
 */
export async function loadImage(imagesDir: string, name: string): Promise<{ dir: string; manifest: ImageManifest }> {
  assertImageName(name);
  const dir = join(imagesDir, name);
  try {
    return { dir, manifest: await readManifest(join(dir, 'manifest.json')) };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new SandforgeError(
        'image_not_found',
        `image "${name}" not found in ${imagesDir}; run \`sandforge image build --name ${name}\``,
      );
    }
    throw err;
  }
}

/** Sum of the sizes of the image's files (missing files count as 0). */
export async function imageSize(dir: string, manifest: ImageManifest): Promise<number> {
  const sizes = await Promise.all(
    Object.values(manifest.files).map((f) =>
      stat(join(dir, f)).then(
        (s) => s.size,
        () => 0,
      ),
    ),
  );
  return sizes.reduce((a, b) => a + b, 0);
}

/**
 * Every valid image in `imagesDir`, sorted by name. Hidden entries (cache,
 * agent disks, temp dirs) and dirs without a readable manifest are skipped.
 */
export async function listImages(imagesDir: string): Promise<ImageEntry[]> {
  let names: string[];
  try {
    names = (await readdir(imagesDir, { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => d.name);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const out: ImageEntry[] = [];
  for (const name of names.filter((n) => IMAGE_NAME_RE.test(n)).sort()) {
    try {
      const { dir, manifest } = await loadImage(imagesDir, name);
      out.push({ name, dir, manifest, size_bytes: await imageSize(dir, manifest) });
    } catch {
      // A half-written or foreign dir is not an image; `ls` should not fail on it.
    }
  }
  return out;
}

/** Removes an image. Throws 'image_not_found' if it does not exist. Running VMs keep their open files. */
export async function removeImage(imagesDir: string, name: string): Promise<void> {
  const { dir } = await loadImage(imagesDir, name);
  // Rename first so a concurrent reader never sees a half-deleted image.
  const trash = await mkdtemp(join(imagesDir, `${TEMP_PREFIX}rm-`));
  await rename(dir, join(trash, name));
  await rm(trash, { recursive: true, force: true });
}
