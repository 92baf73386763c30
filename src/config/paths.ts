import { accessSync, constants } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Images dir: `--images`, else `$SANDFORGE_IMAGES`, else
 * `/var/lib/sandforge/images` as root or when this user may write it (the
 * service user), and `~/.local/share/sandforge/images` otherwise.
 */
export function resolveImagesDir(flag?: string): string {
  if (flag) return resolve(flag);
  const env = process.env.SANDFORGE_IMAGES;
  if (env) return resolve(env);
  if (process.getuid?.() === 0 || writable(SYSTEM_IMAGES_DIR)) return SYSTEM_IMAGES_DIR;
  return join(homedir(), '.local/share/sandforge/images');
}

/** Where root and the `sandforge` service user keep images (the systemd unit's --images). */
export const SYSTEM_IMAGES_DIR = '/var/lib/sandforge/images';

function writable(dir: string): boolean {
  try {
    accessSync(dir, constants.W_OK | constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** State lives next to the images: `<images>/../state` unless given. */
export function resolveDataDir(imagesDir: string, flag?: string): string {
  if (flag) return resolve(flag);
  const env = process.env.SANDFORGE_DATA;
  if (env) return resolve(env);
  return join(dirname(imagesDir), 'state');
}

/** Root of the Sandforge installation (the checkout or the npm package). */
export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

/** The bundled guest agent produced by `npm run build`. */
export const AGENT_BUNDLE = join(PACKAGE_ROOT, 'dist/agent-bundle/agent.mjs');
