import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, IMAGES_DIR, SHARED_DATA_DIR } from './env.js';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** A real `sandforge supervisor` process on loopback, with its own state dir (templates shared). */
export class SupervisorProcess {
  child!: ChildProcess;
  port!: number;
  readonly token: string;
  readonly dataDir: string;
  log = '';

  constructor(dataDir?: string, token?: string) {
    this.token = token ?? `sf_live_${randomBytes(16).toString('hex')}`;
    if (dataDir) {
      this.dataDir = dataDir;
    } else {
      this.dataDir = mkdtempSync(join(tmpdir(), 'sf-sup-'));
      // One template serves every test file: share the templates dir with `sandforge run`.
      mkdirSync(join(SHARED_DATA_DIR, 'templates'), { recursive: true });
      symlinkSync(join(SHARED_DATA_DIR, 'templates'), join(this.dataDir, 'templates'));
    }
  }

  /** One authenticated JSON call. */
  async api(method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
    const r = await fetch(`${this.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${this.token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    return { status: r.status, body: await r.json() };
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /**
   * `wrap`: a command line the supervisor runs under, e.g. `unshare -m …`
   * to give it its own /etc/hosts; it must exec its arguments.
   */
  async start(extraArgs: string[] = [], port?: number, wrap: string[] = []): Promise<void> {
    this.port = port ?? (await freePort());
    const argv = [
      process.execPath,
      CLI,
      'supervisor',
      '--port',
      String(this.port),
      '--host',
      '127.0.0.1',
      '--images',
      IMAGES_DIR,
      '--data',
      this.dataDir,
      ...extraArgs,
    ];
    const [cmd, ...args] = [...wrap, ...argv] as [string, ...string[]];
    this.child = spawn(cmd, args, { env: { ...process.env, SANDFORGE_TOKEN: this.token }, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout!.on('data', (b: Buffer) => (this.log += b.toString()));
    this.child.stderr!.on('data', (b: Buffer) => (this.log += b.toString()));
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (this.child.exitCode !== null) throw new Error(`supervisor exited: ${this.log}`);
      try {
        const r = await fetch(`${this.url}/healthz`);
        if (r.ok) return;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`supervisor did not start: ${this.log}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** SIGKILL: no chance to clean up, as in a crash. */
  async kill9(): Promise<void> {
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGKILL');
    await exited;
  }

  async stop(): Promise<void> {
    if (!this.child || this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGTERM');
    await exited;
  }

  removeDataDir(): void {
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}
