/**
 * The guest end of egress: a loopback listener whose connections wait here
 * until the host claims them with an accept stream. The guest has no network
 * device, so this port is the only way out, and the host decides every
 * connection.
 */
import { createServer, type Server, type Socket } from 'node:net';

/** Connections waiting for the host; beyond this new ones are refused. */
const MAX_QUEUED = 64;
/** A connection nobody claims within this is closed, ms. */
const CLAIM_TIMEOUT_MS = 30_000;

interface Waiter {
  give(sock: Socket): void;
}

export class EgressListener {
  private server: Server | null = null;
  private port = 0;
  private readonly queue: Socket[] = [];
  private readonly waiters: Waiter[] = [];

  get listening(): boolean {
    return this.server !== null;
  }

  async listen(port: number): Promise<{ address: string; port: number }> {
    if (this.server) {
      if (this.port !== port) throw new Error(`egress already listens on port ${this.port}`);
      return { address: '127.0.0.1', port };
    }
    const server = createServer({ pauseOnConnect: true }, (sock) => this.arrive(sock));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: '127.0.0.1', port, exclusive: true }, () => resolve());
    });
    server.on('error', () => undefined);
    this.server = server;
    this.port = port;
    return { address: '127.0.0.1', port };
  }

  /** Resolves with the next guest connection, or null once `cancel` gives up the claim. */
  claim(): { socket: Promise<Socket | null>; cancel: () => void } {
    const queued = this.queue.shift();
    if (queued) return { socket: Promise.resolve(queued), cancel: () => undefined };
    let waiter!: Waiter;
    let settle!: (s: Socket | null) => void;
    const socket = new Promise<Socket | null>((resolve) => {
      settle = resolve;
      waiter = { give: resolve };
    });
    this.waiters.push(waiter);
    return {
      socket,
      cancel: () => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        settle(null);
      },
    };
  }

  /** A claimed connection whose accept stream died before it was used: next in line again. */
  giveBack(sock: Socket): void {
    if (sock.destroyed) return;
    const w = this.waiters.shift();
    if (w) return w.give(sock);
    this.queue.unshift(sock);
  }

  close(): void {
    this.server?.close();
    this.server = null;
    for (const s of this.queue.splice(0)) s.destroy();
  }

  private arrive(sock: Socket): void {
    sock.on('error', () => undefined);
    const w = this.waiters.shift();
    if (w) return w.give(sock);
    if (this.queue.length >= MAX_QUEUED) return void sock.destroy();
    this.queue.push(sock);
    const t = setTimeout(() => {
      const i = this.queue.indexOf(sock);
      if (i >= 0) {
        this.queue.splice(i, 1);
        sock.destroy();
      }
    }, CLAIM_TIMEOUT_MS);
    t.unref();
    sock.once('close', () => clearTimeout(t));
  }
}
