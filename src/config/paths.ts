import { homedir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Images dir: `--images`, else `$SANDFORGE_IMAGES`, else
 * `/var/lib/sandforge/images` as root and `~/.local/share/sandforge/images`
 * otherwise.
 */
export function resolveImagesDir(flag?: string): string {
  if (flag) return resolve(flag);
  const env = process.env.SANDFORGE_IMAGES;
  if (env) return resolve(env);
  if (process.getuid?.() === 0) return '/var/lib/sandforge/images';
  return join(homedir(), '.local/share/sandforge/images');
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
