import { mkdtemp, rm, rename, link, copyFile, constants } from 'node:fs/promises';
import { join } from 'node:path';
import { SandforgeError } from '../shared/errors.js';

/** Prefix of every scratch entry the builder creates; `image ls` skips these. */
export const TEMP_PREFIX = '.tmp-';

/**
 * Scratch space for one build. Temp dirs live inside the images dir so the
 * final step is an atomic rename on the same filesystem. `dispose()` removes
 * every dir that was not committed; callers run it in `finally`.
 */
export class Workspace {
  private readonly dirs = new Set<string>();

  /** Creates `<parent>/.tmp-<label>-XXXXXX`. */
  async tempDir(parent: string, label: string): Promise<string> {
    const dir = await mkdtemp(join(parent, `${TEMP_PREFIX}${label}-`));
    this.dirs.add(dir);
    return dir;
  }

  /** Forgets a temp path that was renamed into place (nothing left to clean). */
  committed(path: string): void {
    this.dirs.delete(path);
  }

  /** Removes all remaining temp dirs; never throws. */
  async dispose(): Promise<void> {
    await Promise.all([...this.dirs].map((d) => rm(d, { recursive: true, force: true }).catch(() => {})));
    this.dirs.clear();
  }
}

/**
 * Runs `fn` with an AbortSignal that fires on SIGINT/SIGTERM, so child
 * processes are stopped and `finally` blocks (temp-dir cleanup) run before
 * the process exits. If a signal arrived, throws SandforgeError 'internal'
 * with `details.signal` (callers exit 130/143) instead of fn's own error.
 */
export async function withInterrupts<T>(fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const ac = new AbortController();
  let got: NodeJS.Signals | undefined;
  const handler = (sig: NodeJS.Signals) => {
    got = sig;
    ac.abort();
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  let result: T;
  try {
    result = await fn(ac.signal);
  } catch (err) {
    if (!got) throw err;
  } finally {
    process.off('SIGINT', handler);
    process.off('SIGTERM', handler);
  }
  if (got) throw new SandforgeError('internal', `interrupted by ${got}`, { signal: got });
  return result!;
}

/**
 * Places an immutable file at `dest`: a hard link when possible (cache and
 * image share blocks), else a reflink/copy.
 */
export async function linkOrCopy(src: string, dest: string): Promise<void> {
  try {
    await link(src, dest);
  } catch {
    await copyFile(src, dest, constants.COPYFILE_FICLONE);
  }
}

/** Replaces directory `dest` with `src` (rename), moving any old `dest` aside first. */
export async function replaceDir(src: string, dest: string, ws: Workspace, parent: string): Promise<void> {
  const old = await ws.tempDir(parent, 'old');
  let movedOld = false;
  try {
    await rename(dest, join(old, 'x'));
    movedOld = true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  try {
    await rename(src, dest);
    ws.committed(src);
  } catch (err) {
    // Put the previous image back so a failed replace loses nothing.
    if (movedOld) await rename(join(old, 'x'), dest).catch(() => {});
    throw err;
  }
}
