import WebSocket from 'ws';
import type { StreamClientMessage } from '../../../src/shared/api-types.js';
import { SandforgeError } from '../../../src/shared/errors.js';
import type { SignalName } from '../../../src/shared/protocol.js';
import { SandforgeConnectionError, SandforgeTimeoutError, errorFromResponse, errorFromStreamMessage } from '../errors.js';
import { decodeData, encodeClientMessage, parseServerMessage, stdinMessages, type CommandExit } from '../stream-messages.js';

/** How long to wait for the supervisor to answer our close frame, in milliseconds. */
const CLOSE_GRACE_MS = 1000;

export interface CommandStreamCallbacks {
  /** Called with each chunk of stdout (with a PTY: the terminal's output). */
  onStdout?(data: Buffer): void;
  /** Called with each chunk of stderr (never called with a PTY). */
  onStderr?(data: Buffer): void;
}

export interface OpenStreamParams extends CommandStreamCallbacks {
  url: string;
  headers: Record<string, string>;
  start: Extract<StreamClientMessage, { type: 'start' }>;
  /** Timeout of the WebSocket handshake, in milliseconds. */
  handshakeTimeoutMs: number;
  signal?: AbortSignal | undefined;
}

/**
 * A command running in a sandbox over `GET /v1/sandboxes/{id}/exec` (WebSocket). Output
 * arrives through the callbacks; `wait()` resolves when the command exits.
 */
export class CommandStream {
  /** Process id in the guest, once the supervisor reported `started`. */
  pid: number | undefined;
  readonly #ws: WebSocket;
  readonly #done: Promise<CommandExit>;
  #settled = false;
  #resolve!: (exit: CommandExit) => void;
  #reject!: (err: unknown) => void;

  private constructor(ws: WebSocket, callbacks: CommandStreamCallbacks, signal: AbortSignal | undefined) {
    this.#ws = ws;
    this.#done = new Promise<CommandExit>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    this.#done.catch(() => {}); // reported through wait(); not unhandled if nobody waits

    ws.on('message', (data, isBinary) => {
      if (this.#settled) return;
      try {
        if (isBinary) throw new SandforgeError('internal', 'unexpected binary frame on the command stream');
        const msg = parseServerMessage(data.toString());
        switch (msg.type) {
          case 'started':
            this.pid = msg.pid;
            break;
          case 'stdout':
            callbacks.onStdout?.(decodeData(msg));
            break;
          case 'stderr':
            callbacks.onStderr?.(decodeData(msg));
            break;
          case 'exit': {
            const { type: _type, ...exit } = msg;
            this.#finish(exit);
            break;
          }
          case 'error':
            this.#fail(errorFromStreamMessage(msg));
            break;
        }
      } catch (err) {
        this.#fail(err);
      }
    });
    ws.on('close', (code, reason) => {
      const why = reason.length ? `: ${reason.toString()}` : '';
      this.#fail(
        new SandforgeError('agent_unavailable', `command stream closed before the command exited (WebSocket close ${code}${why})`),
      );
    });
    ws.on('error', (err) => this.#fail(new SandforgeConnectionError(ws.url, err)));
    if (signal) {
      const onAbort = () => this.#fail(signal.reason ?? new SandforgeError('internal', 'aborted'));
      signal.addEventListener('abort', onAbort, { once: true });
      this.#done.then(
        () => signal.removeEventListener('abort', onAbort),
        () => signal.removeEventListener('abort', onAbort),
      );
    }
  }

  /** Opens the WebSocket and sends `start`; rejects with the mapped error if the upgrade fails. */
  static open(params: OpenStreamParams): Promise<CommandStream> {
    return new Promise<CommandStream>((resolve, reject) => {
      if (params.signal?.aborted) return reject(params.signal.reason);
      const ws = new WebSocket(params.url, {
        headers: params.headers,
        handshakeTimeout: params.handshakeTimeoutMs,
        perMessageDeflate: false,
      });
      const cleanup = () => {
        ws.removeAllListeners('open').removeAllListeners('error').removeAllListeners('unexpected-response');
        params.signal?.removeEventListener('abort', onAbort);
      };
      const onAbort = () => {
        cleanup();
        ws.terminate();
        reject(params.signal?.reason);
      };
      params.signal?.addEventListener('abort', onAbort, { once: true });
      ws.once('open', () => {
        cleanup();
        const stream = new CommandStream(ws, params, params.signal);
        ws.send(encodeClientMessage(params.start), (err) => {
          if (err) stream.#fail(new SandforgeConnectionError(params.url, err));
        });
        resolve(stream);
      });
      ws.once('unexpected-response', (req, res) => {
        cleanup();
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', () => {});
        res.on('end', () => {
          req.destroy();
          const requestId = res.headers['x-request-id'];
          reject(
            errorFromResponse(res.statusCode ?? 500, Buffer.concat(chunks).toString('utf8'), {
              method: 'GET',
              url: params.url,
              requestId: typeof requestId === 'string' ? requestId : undefined,
            }),
          );
        });
      });
      ws.once('error', (err) => {
        cleanup();
        ws.on('error', () => {});
        const timedOut = /timed out/i.test(err.message);
        reject(
          timedOut
            ? new SandforgeTimeoutError(`WebSocket upgrade to ${params.url}`, params.handshakeTimeoutMs)
            : new SandforgeConnectionError(params.url, err),
        );
      });
    });
  }

  /** Resolves with how the command ended; rejects on a stream `error` or a lost connection. */
  wait(): Promise<CommandExit> {
    return this.#done;
  }

  /** Whether the command has exited or the stream failed. Sends after that are ignored. */
  get finished(): boolean {
    return this.#settled;
  }

  /** Writes to the command's stdin; resolves once handed to the socket (await it for backpressure). */
  async sendStdin(data: Buffer | Uint8Array | string): Promise<void> {
    for (const msg of stdinMessages(data)) await this.#send(msg);
  }

  /** Closes the command's stdin (EOF). */
  closeStdin(): Promise<void> {
    return this.#send({ type: 'stdin_close' });
  }

  /** Sends a signal by name, e.g. `SIGINT`, `SIGTERM`, `SIGKILL` (the set the supervisor accepts). */
  signal(name: SignalName): Promise<void> {
    return this.#send({ type: 'signal', signal: name });
  }

  /** Resizes the PTY (only meaningful when started with `pty`). */
  resize(rows: number, cols: number): Promise<void> {
    return this.#send({ type: 'resize', rows, cols });
  }

  /** Drops the connection without waiting for the command; `wait()` rejects if it had not exited. */
  close(): void {
    this.#fail(new SandforgeError('internal', 'command stream closed by the client'));
  }

  #send(msg: StreamClientMessage): Promise<void> {
    if (this.#settled || this.#ws.readyState !== WebSocket.OPEN) return Promise.resolve();
    return new Promise((resolve) => {
      this.#ws.send(encodeClientMessage(msg), (err) => {
        if (err) this.#fail(new SandforgeConnectionError(this.#ws.url, err));
        resolve();
      });
    });
  }

  #finish(exit: CommandExit): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#resolve(exit);
    this.#ws.close(1000);
    // A peer that never answers the close frame must not keep the process alive.
    setTimeout(() => this.#ws.terminate(), CLOSE_GRACE_MS).unref();
  }

  #fail(err: unknown): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#reject(err);
    if (this.#ws.readyState === WebSocket.OPEN || this.#ws.readyState === WebSocket.CONNECTING) this.#ws.terminate();
  }
}
