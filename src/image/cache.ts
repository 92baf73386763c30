import { access, mkdir } from 'node:fs/promises';
import { join } from 'node:path';

/** `<images>/.cache`: kernel trees and rootfs images keyed by their input hash. */
export function cacheDir(imagesDir: string): string {
  return join(imagesDir, '.cache');
}

/** Creates the cache dir (and the images dir) if needed. */
export async function ensureCacheDir(imagesDir: string): Promise<string> {
  const dir = cacheDir(imagesDir);
  await mkdir(dir, { recursive: true });
  return dir;
}

/** True if `path` exists. */
export async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}
