import { copyFile, mkdir, readdir, realpath, rename, stat, chmod } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { AGENT_BUNDLE, PACKAGE_ROOT } from '../config/paths.js';
import { SandforgeError } from '../shared/errors.js';
import { hashFile, hashInputs } from './hash.js';
import { sharedLibs } from './ldd.js';
import { run } from './exec.js';
import { exists } from './cache.js';
import { Workspace } from './workspace.js';
import { BUILDER_VERSION } from './spec.js';

/** Overrides for {@link ensureAgentDisk}; defaults are the real inputs. */
export interface AgentDiskOptions {
  /** Agent bundle; default `AGENT_BUNDLE` (dist/agent-bundle/agent.mjs from `npm run build`). */
  agentBundle?: string;
  /** Node binary; default `process.execPath` (symlinks resolved). */
  node?: string;
  /** Static tini; default /usr/bin/tini-static. */
  tini?: string;
  /** node_modules holding @lydell/node-pty{,-linux-x64}; default `<repo>/node_modules`. */
  nodeModules?: string;
  signal?: AbortSignal;
}

/** The native PTY packages the agent requires at runtime (cannot be bundled). */
export const AGENT_NODE_PACKAGES = ['@lydell/node-pty', '@lydell/node-pty-linux-x64'];

/** Dynamic loader path the guest init runs node through. */
export const AGENT_LOADER = 'ld-linux-x86-64.so.2';

/** `<images>/.agents`: agent disks, shared by all images. */
export function agentsDir(imagesDir: string): string {
  return join(imagesDir, '.agents');
}

async function listTree(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) => {
      const parent = (e as unknown as { parentPath?: string; path: string }).parentPath ?? (e as unknown as { path: string }).path;
      return relative(dir, join(parent, e.name));
    })
    .sort();
}

/** Every file that goes onto the disk, as `{ dest (relative), src }`. */
async function collectInputs(o: Required<Omit<AgentDiskOptions, 'signal'>>): Promise<{ dest: string; src: string; mode: number }[]> {
  const files: { dest: string; src: string; mode: number }[] = [
    { dest: 'bin/node', src: o.node, mode: 0o755 },
    { dest: 'bin/tini', src: o.tini, mode: 0o755 },
    { dest: 'agent.mjs', src: o.agentBundle, mode: 0o644 },
  ];
  for (const pkg of AGENT_NODE_PACKAGES) {
    const pkgDir = join(o.nodeModules, pkg);
    if (!(await exists(join(pkgDir, 'package.json')))) {
      throw new SandforgeError('internal', `${pkgDir} is missing; run \`npm install\` in ${PACKAGE_ROOT}`);
    }
    for (const rel of await listTree(pkgDir)) {
      const src = join(pkgDir, rel);
      files.push({ dest: join('node_modules', pkg, rel), src, mode: (await stat(src)).mode & 0o777 });
    }
  }
  // Libraries of node and of the PTY addon, flattened under lib/ by soname,
  // copied as real files: the guest runs node through this loader and path.
  const natives = files.filter((f) => f.dest === 'bin/node' || f.dest.endsWith('.node')).map((f) => f.src);
  const libs = await sharedLibs(natives);
  if (!libs.some((l) => l.name === AGENT_LOADER)) {
    throw new SandforgeError('internal', `ldd ${o.node} did not list ${AGENT_LOADER}; only x86-64 glibc hosts are supported`);
  }
  for (const lib of libs) files.push({ dest: join('lib', lib.name), src: await realpath(lib.path), mode: 0o755 });
  return files;
}

/** Content hashes by file identity: a create must not re-hash the 100 MB node binary every time. */
const hashMemo = new Map<string, { id: string; hash: string }>();

async function hashFileMemo(path: string): Promise<string> {
  const st = await stat(path);
  const id = `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}`;
  const hit = hashMemo.get(path);
  if (hit && hit.id === id) return hit.hash;
  const hash = await hashFile(path);
  hashMemo.set(path, { id, hash });
  return hash;
}

/**
 * Ensures the agent disk exists and returns it: `<images>/.agents/<hash>.erofs`,
 * where hash is over the content of every file on it (node, its libraries
 * and loader, tini, the agent bundle, the PTY module). The disk is shared by
 * all images; the same inputs are a cache hit (hashing only, no build).
 */
export async function ensureAgentDisk(imagesDir: string, opts: AgentDiskOptions = {}): Promise<{ path: string; hash: string }> {
  const o = {
    agentBundle: opts.agentBundle ?? AGENT_BUNDLE,
    node: await realpath(opts.node ?? process.execPath),
    tini: opts.tini ?? '/usr/bin/tini-static',
    nodeModules: opts.nodeModules ?? join(PACKAGE_ROOT, 'node_modules'),
  };
  if (!(await exists(o.agentBundle))) {
    throw new SandforgeError('internal', `agent bundle ${o.agentBundle} not found; run \`npm run build\` in ${PACKAGE_ROOT}`);
  }
  if (!(await exists(o.tini))) throw new SandforgeError('internal', `${o.tini} not found; install it with \`apt-get install tini\``);

  const files = await collectInputs(o);
  const hashes = await Promise.all(files.map(async (f) => [f.dest, f.mode, await hashFileMemo(f.src)] as const));
  const hash = hashInputs({ what: 'agent-disk', v: BUILDER_VERSION, files: hashes });
  const dir = agentsDir(imagesDir);
  const path = join(dir, `${hash}.erofs`);
  if (await exists(path)) return { path, hash };

  await mkdir(dir, { recursive: true });
  const ws = new Workspace();
  try {
    const tmp = await ws.tempDir(dir, 'agent');
    const tree = join(tmp, 'tree');
    for (const f of files) {
      const dest = join(tree, f.dest);
      await mkdir(join(dest, '..'), { recursive: true });
      await copyFile(f.src, dest);
      await chmod(dest, f.mode);
    }
    const img = join(tmp, 'agent.erofs');
    // Fixed owner and timestamps: the disk's bytes depend only on its inputs.
    await run('mkfs.erofs', ['--quiet', '--all-root', '-T0', img, tree], { signal: opts.signal });
    await rename(img, path);
    return { path, hash };
  } finally {
    await ws.dispose();
  }
}
