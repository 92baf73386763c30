import { readFile } from 'node:fs/promises';
import { SandforgeError } from '../shared/errors.js';

/** Current manifest schema; bump when the image layout changes incompatibly. */
export const MANIFEST_SCHEMA = 1;

/** File names inside an image dir. Fixed: the VMM driver relies on them. */
export const IMAGE_FILES = { kernel: 'vmlinuz', initramfs: 'initramfs.img', rootfs: 'rootfs.erofs' } as const;

/**
 * `<images>/<name>/manifest.json`. The VMM driver reads this to boot an image:
 * paths in `files` are relative to the image dir.
 */
export interface ImageManifest {
  schema: 1;
  name: string;
  /** 16 hex chars: sha256 over every build input (suite, packages, init, modules, builder version). */
  id: string;
  /** ISO 8601 build time. */
  created_at: string;
  /** e.g. "6.1.0-28-amd64". */
  kernel_release: string;
  /** Smallest guest RAM the image boots with. */
  min_memory_mb: number;
  /** Debian packages installed on top of minbase. */
  packages: string[];
  files: { kernel: string; initramfs: string; rootfs: string };
}

const ID_RE = /^[0-9a-f]{16}$/;

/** Validates parsed JSON as an {@link ImageManifest}; throws 'internal' naming the bad field. */
export function parseManifest(raw: unknown, where: string): ImageManifest {
  const bad = (field: string): never => {
    throw new SandforgeError('internal', `${where}: invalid image manifest (field "${field}")`);
  };
  if (!raw || typeof raw !== 'object') return bad('<root>');
  const m = raw as Record<string, unknown>;
  if (m.schema !== MANIFEST_SCHEMA) bad('schema');
  if (typeof m.name !== 'string' || !m.name) bad('name');
  if (typeof m.id !== 'string' || !ID_RE.test(m.id)) bad('id');
  if (typeof m.created_at !== 'string') bad('created_at');
  if (typeof m.kernel_release !== 'string' || !m.kernel_release) bad('kernel_release');
  if (typeof m.min_memory_mb !== 'number' || m.min_memory_mb <= 0) bad('min_memory_mb');
  if (!Array.isArray(m.packages) || !m.packages.every((p) => typeof p === 'string')) bad('packages');
  const f = m.files as Record<string, unknown> | undefined;
  if (!f || typeof f !== 'object') return bad('files');
  for (const k of ['kernel', 'initramfs', 'rootfs'] as const) {
    const v = f[k];
    // Plain names only: a manifest must not point outside its own dir.
    if (typeof v !== 'string' || !v || v.includes('/') || v.startsWith('.')) bad(`files.${k}`);
  }
  return raw as ImageManifest;
}

/** Reads and validates a manifest file. ENOENT propagates unchanged so callers can map it. */
export async function readManifest(path: string): Promise<ImageManifest> {
  const text = await readFile(path, 'utf8');
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new SandforgeError('internal', `${path}: manifest is not valid JSON`);
  }
  return parseManifest(raw, path);
}
