import { EventEmitter } from 'node:events';
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { SandforgeError } from '../shared/errors.js';

/** A QMP event as QEMU sends it. */
export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

/** Maximum QMP line we accept; QEMU's answers here are small. */
const MAX_LINE = 1 << 20;

/**
 * Minimal QMP client: JSON lines over a unix socket, commands matched to
 * replies by id, events emitted as 'event'. No text is ever scraped.
 */
export class QmpClient extends EventEmitter {
  private buf = '';
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private closedErr: Error | null = null;

  private constructor(private readonly sock: Socket) {
    super();
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => this.onData(chunk));
    sock.on('error', (err) => this.fail(err));
    sock.on('close', () => this.fail(new Error('QMP connection closed')));
  }

  /** Connects, waits for the greeting and negotiates capabilities; retries until `timeoutMs`. */
  static async connect(path: string, timeoutMs = 10_000): Promise<QmpClient> {
    const deadline = Date.now() + timeoutMs;
    let lastErr: unknown;
    while (Date.now() < deadline) {
      try {
        const sock = await new Promise<Socket>((resolve, reject) => {
          const s = connect(path);
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        });
        const client = new QmpClient(sock);
        await client.waitGreeting(Math.max(500, deadline - Date.now()));
        await client.execute('qmp_capabilities');
        return client;
      } catch (err) {
        lastErr = err;
        await sleep(2);
      }
    }
    throw new SandforgeError('vm_failed', `QMP socket ${path} did not answer: ${String(lastErr)}`);
  }

  private greeting: ((v: unknown) => void) | null = null;

  private waitGreeting(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('no QMP greeting')), timeoutMs);
      this.greeting = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }

  private onData(chunk: string): void {
    this.buf += chunk;
    if (this.buf.length > MAX_LINE) {
      this.fail(new Error('QMP line too long'));
      this.sock.destroy();
      return;
    }
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (line) this.onMessage(line);
    }
  }

  private onMessage(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    if ('QMP' in msg) {
      this.greeting?.(msg);
      this.greeting = null;
      return;
    }
    if (typeof msg.event === 'string') {
      this.emit('event', msg as unknown as QmpEvent);
      return;
    }
    const id = typeof msg.id === 'string' ? msg.id : undefined;
    const p = id ? this.pending.get(id) : undefined;
    if (!id || !p) return;
    this.pending.delete(id);
    if ('error' in msg) {
      const e = msg.error as { class?: string; desc?: string };
      p.reject(new SandforgeError('vm_failed', `QMP error: ${e.desc ?? e.class ?? 'unknown'}`));
    } else {
      p.resolve(msg.return);
    }
  }

  private fail(err: Error): void {
    if (this.closedErr) return;
    this.closedErr = err;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    this.emit('close', err);
  }

  get closed(): boolean {
    return this.closedErr !== null;
  }

  /** Runs one QMP command and resolves with its `return` value. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closedErr) return Promise.reject(this.closedErr);
    const id = String(this.nextId++);
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.sock.write(JSON.stringify(args ? { execute: command, arguments: args, id } : { execute: command, id }) + '\n');
    });
  }

  /** Polls `query-migrate` until it completes; throws on failure or timeout. */
  async waitMigration(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let delay = 1;
    for (;;) {
      const r = await this.execute<{ status?: string; 'error-desc'?: string }>('query-migrate');
      if (r.status === 'completed') return;
      if (r.status === 'failed' || r.status === 'cancelled') {
        throw new SandforgeError('vm_failed', `migration ${r.status}: ${r['error-desc'] ?? 'no detail'}`);
      }
      if (Date.now() > deadline) throw new SandforgeError('timeout', 'migration did not complete in time');
      await sleep(delay);
      delay = Math.min(delay * 2, 20);
    }
  }

  /** Polls `query-status` until the VM is in `want` (e.g. 'paused', 'running'). */
  async waitStatus(want: string, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let delay = 1;
    for (;;) {
      const r = await this.execute<{ status: string }>('query-status');
      if (r.status === want) return;
      if (r.status === 'internal-error' || r.status === 'guest-panicked') {
        throw new SandforgeError('vm_failed', `VM entered state ${r.status}`);
      }
      if (Date.now() > deadline) throw new SandforgeError('timeout', `VM did not reach ${want} (is ${r.status})`);
      await sleep(delay);
      delay = Math.min(delay * 2, 4);
    }
  }

  close(): void {
    this.sock.destroy();
  }
}
