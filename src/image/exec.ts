import { spawn, type ChildProcess } from 'node:child_process';
import { SandforgeError } from '../shared/errors.js';

/** Options for {@link run}. */
export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Aborting terminates the command's whole process group (see {@link KILL_GRACE_MS}). */
  signal?: AbortSignal;
  /** Pipe this process's stdout into the stdin of the command (a two-stage pipeline). */
  pipeTo?: { cmd: string; args: string[] };
}

/** Result of {@link run}: captured stdout of the last stage. */
export interface RunResult {
  stdout: string;
}

const STDERR_TAIL = 4000;

/**
 * SIGTERM first so mmdebstrap can unmount and remove its temp dir; SIGKILL
 * if it has not exited after this long.
 */
export const KILL_GRACE_MS = 10_000;

/** Signals a child's process group (children run detached, so it has one). */
function killGroup(child: ChildProcess, sig: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, sig);
  } catch {
    // Already gone.
  }
}

interface StageResult {
  name: string;
  code: number | null;
  sig: string | null;
  err?: Error;
  stderr: string;
}

/**
 * Runs a command (optionally `cmd | pipeTo`), capturing output. Each stage
 * gets its own process group so an abort reaches mmdebstrap's workers, not
 * just the perl parent (which ignores signals while a worker runs). Throws a
 * SandforgeError 'internal' with the tail of stderr when a stage fails,
 * because a failed mmdebstrap is only debuggable with its own message.
 */
export async function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const base = { cwd: opts.cwd, env: opts.env ?? process.env, detached: true };
  const first = spawn(cmd, args, { ...base, stdio: ['ignore', 'pipe', 'pipe'] });
  const stages: { name: string; child: ChildProcess }[] = [{ name: cmd, child: first }];
  if (opts.pipeTo) {
    const second = spawn(opts.pipeTo.cmd, opts.pipeTo.args, { ...base, stdio: ['pipe', 'pipe', 'pipe'] });
    first.stdout.pipe(second.stdin);
    // A dying consumer must not crash us with EPIPE; its exit code reports the failure.
    second.stdin.on('error', () => {});
    stages.push({ name: opts.pipeTo.cmd, child: second });
  }
  const last = stages[stages.length - 1]!.child;
  let stdout = '';
  last.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));

  let killTimer: NodeJS.Timeout | undefined;
  const terminate = () => {
    if (killTimer) return;
    stages.forEach((s) => killGroup(s.child, 'SIGTERM'));
    killTimer = setTimeout(() => stages.forEach((s) => killGroup(s.child, 'SIGKILL')), KILL_GRACE_MS);
  };
  opts.signal?.addEventListener('abort', terminate, { once: true });
  if (opts.signal?.aborted) terminate();
  try {
    const results = await Promise.all(
      stages.map(
        ({ name, child }, i) =>
          new Promise<StageResult>((resolve) => {
            let stderr = '';
            child.stderr!.setEncoding('utf8').on('data', (d: string) => {
              stderr = (stderr + d).slice(-STDERR_TAIL);
            });
            child.once('error', (err) => resolve({ name, code: null, sig: null, err, stderr }));
            child.once('close', (code, sig) => {
              // A failed stage dooms the pipeline: unblock the producer (else it
              // waits forever on a full pipe) and stop the other stage.
              if (code !== 0) {
                if (i > 0) first.stdout!.destroy();
                terminate();
              }
              resolve({ name, code, sig, stderr });
            });
          }),
      ),
    );
    if (opts.signal?.aborted) throw new SandforgeError('internal', 'interrupted');
    // Report the first stage that failed on its own, not the one we killed after it.
    const failed = results.find((r) => r.err || (r.code !== 0 && r.sig === null)) ?? results.find((r) => r.code !== 0);
    if (failed?.err) {
      const missing = (failed.err as NodeJS.ErrnoException).code === 'ENOENT';
      throw new SandforgeError('internal', missing ? `${failed.name}: command not found` : `${failed.name}: ${failed.err.message}`);
    }
    if (failed) {
      const how = failed.sig ? `killed by ${failed.sig}` : `exited with ${failed.code}`;
      throw new SandforgeError('internal', `${failed.name} ${how}${failed.stderr.trim() ? `:\n${failed.stderr.trim()}` : ''}`);
    }
    return { stdout };
  } finally {
    clearTimeout(killTimer);
    opts.signal?.removeEventListener('abort', terminate);
  }
}
