/**
 * HTTP/2 sessions over a character device (the virtio-serial port), which
 * Node cannot wrap in a net.Socket.
 *
 * Reads are a loop of blocking `fs.read` calls in the libuv threadpool. The
 * virtio-serial contract shapes the loop: while the host end is not
 * connected, read() returns 0 at once; while it is connected, read() blocks
 * until data arrives. So a 0-byte read ends the current session and starts
 * polling with a short backoff, and the next data that arrives starts a new
 * session (every host connection is a fresh HTTP/2 connection).
 *
 * A session starts only after the host's hello line (see HELLO_PREFIX in the
 * protocol): bytes before it are stale and dropped, and the guest answers
 * with the same nonce. That also covers a reconnect the guest never saw as
 * EOF: the new hello breaks the old HTTP/2 session, and the loop finds the
 * hello again in the bytes that session was last given.
 *
 * Writes go out one `fs.write` at a time, in one queue for the whole port. A
 * write issued while the host is gone blocks in the kernel until the host
 * reconnects and then lands in the next connection — before that
 * connection's ready line, which is queued behind it, so the host drops it.
 */
import { Duplex } from 'node:stream';
import { read, write } from 'node:fs';
import { HELLO_LINE_RE, READY_PREFIX } from '../../src/shared/protocol.js';

const WRITE_SLICE_BYTES = 64 * 1024;
/** Bytes kept while waiting for a hello (a hello line is 49 bytes). */
const HELLO_WINDOW_BYTES = 4096;

export interface FdSessionOptions {
  readFd: number;
  writeFd: number;
  /** Called with a fresh duplex for each host connection. */
  onSession: (duplex: Duplex) => void;
  /** First poll delay after EOF, ms (default 2). */
  initialBackoffMs?: number;
  /** Largest poll delay while the host is away, ms (default 100). */
  maxBackoffMs?: number;
  /** Bytes per read (default 64 KiB). */
  readBytes?: number;
  log?: (msg: string) => void;
}

const readAsync = (fd: number, buf: Buffer) =>
  new Promise<number>((resolve, reject) => read(fd, buf, 0, buf.length, null, (err, n) => (err ? reject(err) : resolve(n))));
const writeAsync = (fd: number, buf: Buffer) =>
  new Promise<number>((resolve, reject) => write(fd, buf, 0, buf.length, null, (err, n) => (err ? reject(err) : resolve(n))));
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** One host connection's byte stream. */
class SessionDuplex extends Duplex {
  /** Set once the session is over: writes are dropped from then on. */
  finished = false;
  /** The last chunk handed to the consumer, searched for a hello if the session breaks. */
  lastChunk: Buffer | null = null;
  private demand: (() => void) | null = null;

  constructor(
    private readonly writer: PortWriter,
    private readonly onDestroyed: (d: SessionDuplex) => void,
  ) {
    super({ allowHalfOpen: false });
  }

  /** Resolves when the consumer wants more data or the duplex is gone. */
  waitForDemand(): Promise<void> {
    return new Promise((resolve) => {
      if (this.destroyed) return resolve();
      this.demand = resolve;
    });
  }

  private wake(): void {
    const d = this.demand;
    this.demand = null;
    d?.();
  }

  override _read(): void {
    this.wake();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.writer.write(chunk, () => this.finished).then(() => cb(), cb);
  }

  override _writev(chunks: { chunk: Buffer }[], cb: (err?: Error | null) => void): void {
    this.writer.write(Buffer.concat(chunks.map((c) => c.chunk)), () => this.finished).then(() => cb(), cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    // A serial port cannot be half-closed. The consumer ending its side means
    // the HTTP/2 session is over (GOAWAY, or a protocol error such as a new
    // hello arriving without an EOF): destroy, so the loop looks for a hello.
    cb();
    setImmediate(() => this.destroy());
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.finished = true;
    this.wake();
    this.onDestroyed(this);
    cb(err);
  }
}

/** Serializes every write to the port, so nothing written later can overtake a blocked write. */
class PortWriter {
  private chain: Promise<void> = Promise.resolve();

  constructor(private readonly fd: number) {}

  /** Queues `buf`; slices are skipped once `cancelled()` says the session is over. */
  write(buf: Buffer, cancelled: () => boolean): Promise<void> {
    const run = async () => {
      let off = 0;
      while (off < buf.length && !cancelled()) {
        off += await writeAsync(this.fd, buf.subarray(off, Math.min(off + WRITE_SLICE_BYTES, buf.length)));
      }
    };
    const p = this.chain.then(run);
    this.chain = p.catch(() => undefined);
    return p;
  }
}

/** Finds the last complete hello line; returns its nonce and the bytes after it. */
export function findHello(buf: Buffer): { nonce: string; rest: Buffer } | null {
  const text = buf.toString('latin1');
  let last: RegExpExecArray | null = null;
  HELLO_LINE_RE.lastIndex = 0;
  for (let m = HELLO_LINE_RE.exec(text); m; m = HELLO_LINE_RE.exec(text)) last = m;
  if (!last) return null;
  return { nonce: last[1]!, rest: buf.subarray(last.index + last[0].length) };
}

/** Runs the read loop until stop() and hands each host connection to onSession. */
export class FdSessionLoop {
  private current: SessionDuplex | null = null;
  /** Bytes seen while no session is open, searched for the next hello. */
  private pending: Buffer = Buffer.alloc(0);
  private stopped = false;
  private done: Promise<void> | null = null;
  private readonly writer: PortWriter;
  private readonly o: Required<Omit<FdSessionOptions, 'log'>> & Pick<FdSessionOptions, 'log'>;

  constructor(options: FdSessionOptions) {
    this.o = { initialBackoffMs: 2, maxBackoffMs: 100, readBytes: 64 * 1024, ...options };
    this.writer = new PortWriter(this.o.writeFd);
  }

  start(): this {
    this.done ??= this.run();
    return this;
  }

  /** Stops after the read in flight returns (a blocked read cannot be cancelled). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.endSession();
    await this.done;
  }

  private async run(): Promise<void> {
    const buf = Buffer.allocUnsafe(this.o.readBytes);
    let backoff = this.o.initialBackoffMs;
    while (!this.stopped) {
      let n: number;
      try {
        n = await readAsync(this.o.readFd, buf);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'EAGAIN' && code !== 'EINTR') this.o.log?.(`agent port read failed: ${String(err)}`);
        this.endSession();
        await sleep(this.o.maxBackoffMs);
        continue;
      }
      if (this.stopped) break;
      if (n === 0) {
        this.endSession();
        this.pending = Buffer.alloc(0);
        await sleep(backoff);
        backoff = Math.min(backoff * 2, this.o.maxBackoffMs);
        continue;
      }
      backoff = this.o.initialBackoffMs;
      const chunk = Buffer.from(buf.subarray(0, n));
      if (this.current) await this.feed(this.current, chunk);
      else await this.awaitHello(chunk);
    }
  }

  /** No session: look for a hello in what has come so far; start a session after it. */
  private async awaitHello(chunk: Buffer): Promise<void> {
    const seen = Buffer.concat([this.pending, chunk]);
    const hello = findHello(seen);
    if (!hello) {
      this.pending = seen.subarray(Math.max(0, seen.length - HELLO_WINDOW_BYTES));
      return;
    }
    this.pending = Buffer.alloc(0);
    const session = this.startSession(hello.nonce);
    if (hello.rest.length > 0) await this.feed(session, hello.rest);
  }

  private startSession(nonce: string): SessionDuplex {
    const session = new SessionDuplex(this.writer, (d) => this.onDestroyed(d));
    this.current = session;
    void this.writer.write(Buffer.from(`${READY_PREFIX}${nonce}\n`, 'latin1'), () => session.finished).catch(() => undefined);
    this.o.onSession(session);
    return session;
  }

  private async feed(session: SessionDuplex, chunk: Buffer): Promise<void> {
    session.lastChunk = chunk;
    if (!session.push(chunk)) await session.waitForDemand();
  }

  /** The host went away: end the session's input and drop its pending output. */
  private endSession(): void {
    const s = this.current;
    if (!s) return;
    this.current = null;
    s.finished = true;
    s.push(null);
    setImmediate(() => s.destroy());
  }

  private onDestroyed(d: SessionDuplex): void {
    if (this.current !== d) return;
    // Broken by the consumer (an HTTP/2 protocol error) while the host is still
    // connected: most often a new connection's hello arrived without an EOF
    // first. Look for it in the bytes the broken session was last given.
    this.current = null;
    this.pending = d.lastChunk ?? Buffer.alloc(0);
    const hello = findHello(this.pending);
    if (hello) {
      this.pending = Buffer.alloc(0);
      const s = this.startSession(hello.nonce);
      if (hello.rest.length > 0) void this.feed(s, hello.rest);
    }
  }
}
