import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root (tests run from dist/test/...). */
export const ROOT = resolve(fileURLToPath(import.meta.url), '../../../..');
export const CLI = join(ROOT, 'bin/sandforge');
export const IMAGES_DIR = process.env.SANDFORGE_IMAGES ?? '/var/lib/sandforge/images';
export const SHARED_DATA_DIR = join(resolve(IMAGES_DIR, '..'), 'state');

/** Real-VM tests need the default image; CI builds it in setup, so there it is an error to lack it. */
export function imageSkipReason(): string | false {
  if (existsSync(join(IMAGES_DIR, 'default/manifest.json'))) return false;
  if (process.env.CI) throw new Error(`no default image in ${IMAGES_DIR}: CI must run scripts/setup.sh first`);
  return `no default image in ${IMAGES_DIR} (run: sudo ./scripts/setup.sh)`;
}

export function imageManifest(): { kernel_release: string; min_memory_mb: number } {
  return JSON.parse(readFileSync(join(IMAGES_DIR, 'default/manifest.json'), 'utf8')) as { kernel_release: string; min_memory_mb: number };
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Arrival time (ms since spawn) of each stdout chunk. */
  chunks: { atMs: number; text: string }[];
}

export function runCli(
  args: string[],
  opts: {
    env?: Record<string, string>;
    input?: Buffer | string;
    onSpawn?: (c: ChildProcess) => void;
    timeoutMs?: number;
    cwd?: string;
  } = {},
): Promise<CliResult> {
  return new Promise((resolvePromise, reject) => {
    const t0 = Date.now();
    const child = spawn(process.execPath, [CLI, ...args], {
      env: { ...process.env, SANDFORGE_IMAGES: IMAGES_DIR, ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
      ...(opts.cwd ? { cwd: opts.cwd } : {}),
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    const chunks: CliResult['chunks'] = [];
    child.stdout.on('data', (b: Buffer) => {
      out.push(b);
      chunks.push({ atMs: Date.now() - t0, text: b.toString() });
    });
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`sandforge ${args.join(' ')} did not finish in ${opts.timeoutMs ?? 180_000} ms`));
    }, opts.timeoutMs ?? 180_000);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolvePromise({ code, signal, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString(), chunks });
    });
    if (opts.input !== undefined) child.stdin.end(opts.input);
    else child.stdin.end();
    opts.onSpawn?.(child);
  });
}

/** QEMU processes whose command line mentions `marker` (a data dir). */
export function qemuProcesses(marker: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const cmd = readFileSync(`/proc/${name}/cmdline`, 'utf8');
      if (cmd.startsWith('qemu-system') || cmd.includes('/qemu-system')) {
        if (cmd.includes(marker)) pids.push(Number(name));
      }
    } catch {
      // exited meanwhile
    }
  }
  return pids;
}

/** What a data dir still holds under vms/ (or runs/): must be nothing once every sandbox is gone. */
export function vmLeftovers(dataDir: string, sub: 'vms' | 'runs' = 'vms'): string[] {
  const vms = join(dataDir, sub);
  return existsSync(vms) ? readdirSync(vms) : [];
}

export async function waitFor<T>(what: string, fn: () => T | Promise<T>, timeoutMs = 20_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
