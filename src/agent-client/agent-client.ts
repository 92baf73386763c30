/**
 * Host-side client of the guest agent: HTTP/2 over the unix socket QEMU's
 * chardev exposes for the virtio-serial port. Everything the guest sends is
 * validated with the protocol module's checks before it is used.
 */
import { EventEmitter } from 'node:events';
import { connect as h2connect, constants, type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import { PassThrough, Readable } from 'node:stream';
import { SandforgeError } from '../shared/errors.js';
import {
  ARGS_HEADER,
  MAX_FRAME_PAYLOAD_BYTES,
  PROTOCOL_VERSION,
  ROUTES,
  checkEgressListenRequest,
  checkEgressListenResponse,
  checkEmptyResponse,
  checkExecSpec,
  checkFileInfo,
  checkFileListResponse,
  checkFilePathRequest,
  checkFileWriteArgs,
  checkFileWriteResponse,
  checkHealthResponse,
  checkInitRequest,
  checkInitResponse,
  checkMkdirRequest,
  checkMountRequest,
  checkMountResponse,
  checkPrepareSnapshotResponse,
  checkRemoveRequest,
  checkRenameRequest,
  encodeClientFrame,
  type Check,
  type EgressListenRequest,
  type EgressListenResponse,
  type ExecSpec,
  type FileInfo,
  type FileListResponse,
  type FileWriteResponse,
  type HealthResponse,
  type InitRequest,
  type InitResponse,
  type MountRequest,
  type MountResponse,
  type PrepareSnapshotResponse,
  ProtocolViolation,
} from '../shared/protocol.js';
import { unavailable, violation } from './agent-errors.js';
import { connectWithHandshake } from './handshake.js';
import { ExecHandle, type ExecHandlers, type ExecResult } from './exec-handle.js';
import { awaitResponse, callJson, collectBody, decodeJsonResponse } from './http2-call.js';

const STREAM_WINDOW_BYTES = 4 * 1024 * 1024;
const SESSION_WINDOW_BYTES = 32 * 1024 * 1024;
const DEFAULT_MAX_OUTPUT_BYTES = 10 * 1024 * 1024;

export interface AgentConnectOptions {
  /** Give up (with 'agent_unavailable') when health has not answered within this, ms. */
  timeoutMs: number;
  /** Deadline of each JSON call and idle limit of file transfers, ms (default 30000). */
  requestTimeoutMs?: number;
}

export interface RunOptions {
  /** Bytes fed to stdin, which is then closed (sets spec.stdin). */
  stdin?: Buffer | string;
  /** Per-stream output cap; more is dropped and flagged truncated (default 10 MiB). */
  maxOutputBytes?: number;
}

export interface RunResult extends ExecResult {
  stdout: string;
  stderr: string;
  stdout_truncated: boolean;
  stderr_truncated: boolean;
}

export interface WriteFileOptions {
  /** Permission bits; default: the replaced file's, else 0o644. */
  mode?: number;
  /** Create missing parent directories. */
  mkdirs?: boolean;
}

/** Validates a request before it leaves the host, as invalid_argument. */
function checkArg<T>(check: Check<T>, value: unknown, what: string): T {
  try {
    return check(value, what);
  } catch (err) {
    throw new SandforgeError('invalid_argument', err instanceof ProtocolViolation ? err.message : String(err));
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function openSession(sock: Socket): ClientHttp2Session {
  const session = h2connect('http://sandforge-agent', {
    createConnection: () => sock,
    // The guest is the server here: it may answer, never push streams of its own.
    settings: { initialWindowSize: STREAM_WINDOW_BYTES, enablePush: false },
  });
  session.on('error', () => undefined); // surfaces as 'close' and failed calls
  session.once('connect', () => session.setLocalWindowSize(SESSION_WINDOW_BYTES));
  return session;
}

/**
 * A connection to one guest agent. Emits 'close' once when the connection
 * ends for any reason (see `closed`).
 */
export class AgentClient extends EventEmitter {
  /** Resolves when the connection to the agent is gone. */
  readonly closed: Promise<void>;
  private readonly requestTimeoutMs: number;
  private sessionClosed = false;

  private constructor(
    private readonly session: ClientHttp2Session,
    options: { requestTimeoutMs?: number },
  ) {
    super();
    this.requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
    this.closed = new Promise((resolve) =>
      session.once('close', () => {
        this.sessionClosed = true;
        resolve();
        this.emit('close');
      }),
    );
  }

  /**
   * Connects and waits until the agent answers health. The VM may still be
   * booting: QEMU accepts the socket before the agent reads the port, so a
   * health call can hang; each attempt has its own deadline and a fresh
   * connection. Throws 'agent_unavailable' after `timeoutMs`, 'agent_error'
   * if the agent answers with a bad health body or another protocol version.
   */
  static async connect(socketPath: string, options: AgentConnectOptions): Promise<AgentClient> {
    const deadline = Date.now() + options.timeoutMs;
    let lastError: unknown = null;
    for (let attempt = 0; ; attempt++) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        const why = lastError instanceof Error ? lastError.message : 'no attempt finished';
        throw new SandforgeError(
          'agent_unavailable',
          `guest agent at ${socketPath} did not answer within ${options.timeoutMs} ms (${why})`,
          undefined,
          {
            cause: lastError,
          },
        );
      }
      const attemptMs = Math.min(remaining, 500 * 2 ** Math.min(attempt, 3));
      const started = Date.now();
      let client: AgentClient | null = null;
      try {
        const sock = await connectWithHandshake(socketPath, attemptMs);
        client = new AgentClient(openSession(sock), options);
        await client.health({ timeoutMs: Math.min(5000, Math.max(1000, deadline - Date.now())) });
        return client;
      } catch (err) {
        client?.destroy();
        if (err instanceof SandforgeError && err.code === 'agent_error') throw err;
        lastError = err;
      }
      // Fast failures (no socket yet, refused) back off a little; timeouts already waited.
      const spent = Date.now() - started;
      if (spent < 100) await sleep(Math.min(50 * 2 ** Math.min(attempt, 3), Math.max(0, deadline - Date.now())));
    }
  }

  /** True once the connection is gone. */
  get isClosed(): boolean {
    return this.sessionClosed || this.session.closed || this.session.destroyed;
  }

  async health(options?: { timeoutMs?: number }): Promise<HealthResponse> {
    const h = await callJson(
      this.session,
      { method: 'GET', path: ROUTES.health, timeoutMs: options?.timeoutMs ?? this.requestTimeoutMs, what: 'health' },
      checkHealthResponse,
    );
    if (h.protocol !== PROTOCOL_VERSION) {
      throw new SandforgeError(
        'agent_error',
        `guest agent speaks protocol ${h.protocol}, this host ${PROTOCOL_VERSION}: rebuild the image's agent disk`,
      );
    }
    return h;
  }

  /** Sets clock, entropy, hostname and default env; call after every boot and restore. */
  /** Mounts the clone's 9p slots at their guest paths (after init, before the sandbox is ready). */
  mount(req: MountRequest): Promise<MountResponse> {
    const body = checkArg(checkMountRequest, req, 'mount');
    return this.json('POST', ROUTES.mounts, body, checkMountResponse, 'mount');
  }

  init(req: InitRequest): Promise<InitResponse> {
    const body = checkArg(checkInitRequest, req, 'init');
    return this.json('POST', ROUTES.init, body, checkInitResponse, 'init');
  }

  /** Asks the agent to flush filesystems before the host freezes the VM. */
  prepareSnapshot(): Promise<PrepareSnapshotResponse> {
    return this.json('POST', ROUTES.prepareSnapshot, {}, checkPrepareSnapshotResponse, 'prepare-snapshot');
  }

  /** Closes the connection (gracefully: open streams may finish, up to 2 s). */
  close(): void {
    if (this.session.destroyed) return;
    this.session.close();
    setTimeout(() => this.session.destroy(), 2000).unref();
  }

  /** Opens the guest's egress port (network fetch/full); idempotent for the same port. */
  listenEgress(req: EgressListenRequest): Promise<EgressListenResponse> {
    const body = checkArg(checkEgressListenRequest, req, 'egress listen');
    return this.json('POST', ROUTES.egressListen, body, checkEgressListenResponse, 'egress listen');
  }

  /**
   * Waits for the next guest connection to the egress port and returns it as
   * a duplex stream (writes reach the guest process, reads come from it).
   * Rejects when the session ends or the agent refuses.
   */
  async acceptEgress(): Promise<ClientHttp2Stream> {
    if (this.isClosed) throw new SandforgeError('agent_unavailable', 'egress accept: agent connection is closed');
    let stream: ClientHttp2Stream;
    try {
      stream = this.session.request({ ':method': 'POST', ':path': ROUTES.egressAccept }, { endStream: false });
    } catch (err) {
      throw unavailable(err, 'egress accept');
    }
    stream.on('error', () => undefined);
    const headers = await awaitResponse(stream, 'egress accept');
    const status = Number(headers[':status']);
    if (status === 200) return stream;
    const body = await collectBody(stream, 'egress accept');
    decodeJsonResponse({ status, headers, body }, checkEmptyResponse, 'egress accept');
    throw violation(new Error(`HTTP ${status} without a tunnel`), 'egress accept');
  }

  /** Drops the connection at once. */
  destroy(): void {
    this.session.destroy();
  }

  /**
   * Starts a command. Throws 'invalid_argument' for a bad spec; everything
   * else (cannot start, channel failure) rejects `wait()`.
   */
  exec(spec: ExecSpec, handlers: ExecHandlers = {}): ExecHandle {
    const s = checkArg(checkExecSpec, spec, 'spec');
    if (encodeClientFrame({ type: 'spec', spec: s }).length > MAX_FRAME_PAYLOAD_BYTES) {
      throw new SandforgeError('invalid_argument', 'exec spec is larger than one frame (1 MiB)');
    }
    if (this.isClosed) throw new SandforgeError('agent_unavailable', 'exec: agent connection is closed');
    let stream: ClientHttp2Stream;
    try {
      stream = this.session.request({ ':method': 'POST', ':path': ROUTES.exec });
    } catch (err) {
      throw unavailable(err, 'exec');
    }
    const handle = new ExecHandle(stream, s.stdin === true || s.pty !== undefined, handlers);
    stream.write(encodeClientFrame({ type: 'spec', spec: s }));
    return handle;
  }

  /** Runs a command to the end with buffered output (each stream capped; see RunOptions). */
  async run(spec: ExecSpec, options: RunOptions = {}): Promise<RunResult> {
    const cap = options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT_BYTES;
    const out = { stdout: [] as Buffer[], stderr: [] as Buffer[], stdoutBytes: 0, stderrBytes: 0, stdoutTrunc: false, stderrTrunc: false };
    const sink = (which: 'stdout' | 'stderr') => (chunk: Buffer) => {
      const have = which === 'stdout' ? out.stdoutBytes : out.stderrBytes;
      const take = Math.min(chunk.length, cap - have);
      if (take < chunk.length) {
        if (which === 'stdout') out.stdoutTrunc = true;
        else out.stderrTrunc = true;
      }
      if (take <= 0) return;
      out[which].push(take === chunk.length ? chunk : chunk.subarray(0, take));
      if (which === 'stdout') out.stdoutBytes += take;
      else out.stderrBytes += take;
    };
    const withStdin = options.stdin !== undefined ? { ...spec, stdin: true } : spec;
    const h = this.exec(withStdin, { onStdout: sink('stdout'), onStderr: sink('stderr') });
    if (options.stdin !== undefined) {
      void h.writeStdin(options.stdin);
      void h.closeStdin();
    }
    const exit = await h.wait();
    return {
      ...exit,
      stdout: Buffer.concat(out.stdout).toString('utf8'),
      stderr: Buffer.concat(out.stderr).toString('utf8'),
      stdout_truncated: out.stdoutTrunc,
      stderr_truncated: out.stderrTrunc,
    };
  }

  /**
   * Streams a guest file. Resolves once the agent opened it (so not_found
   * etc. reject here); the stream errors with 'agent_unavailable' if the
   * transfer breaks. The guest controls the size: consumers must bound it.
   */
  async readFile(path: string): Promise<Readable> {
    const body = checkArg(checkFilePathRequest, { path }, 'readFile');
    const stream = this.request({ ':method': 'POST', ':path': ROUTES.fileRead, 'content-type': 'application/json' }, 'readFile');
    stream.end(JSON.stringify({ path: body.path }));
    const headers = await this.withIdleTimeout(stream, awaitResponse(stream, 'readFile'), 'readFile');
    const status = Number(headers[':status']);
    if (status !== 200) {
      decodeJsonResponse({ status, headers, body: await collectBody(stream, 'readFile') }, checkEmptyResponse, 'readFile');
      throw violation(new Error(`HTTP ${status} without an error body`), 'readFile response');
    }
    const out = new PassThrough();
    let ended = false;
    stream.once('end', () => (ended = true));
    stream.once('close', () => {
      if (!ended || (stream.rstCode !== undefined && stream.rstCode !== constants.NGHTTP2_NO_ERROR)) {
        out.destroy(unavailable(new Error(`transfer of ${path} broke off (code ${stream.rstCode ?? '?'})`), 'readFile'));
      }
    });
    out.once('close', () => {
      if (!ended) stream.close(constants.NGHTTP2_CANCEL); // the consumer gave up
    });
    stream.pipe(out);
    return out;
  }

  /**
   * Writes a guest file atomically (temp file in the same directory, then
   * rename). Checks that the agent stored exactly the bytes sent.
   */
  async writeFile(path: string, data: Buffer | Readable, options: WriteFileOptions = {}): Promise<FileWriteResponse> {
    const args = checkArg(checkFileWriteArgs, { path, ...options }, 'writeFile');
    const stream = this.request(
      { ':method': 'PUT', ':path': ROUTES.fileWrite, [ARGS_HEADER]: JSON.stringify(args), 'content-type': 'application/octet-stream' },
      'writeFile',
    );
    let sent = 0;
    if (Buffer.isBuffer(data)) {
      sent = data.length;
      stream.end(data);
    } else {
      data.on('data', (c: Buffer | string) => (sent += typeof c === 'string' ? Buffer.byteLength(c) : c.length));
      // A failing source resets the stream; the agent then deletes its temp file.
      data.once('error', () => stream.close(constants.NGHTTP2_CANCEL));
      data.pipe(stream);
    }
    const response = Promise.all([awaitResponse(stream, 'writeFile'), collectBody(stream, 'writeFile')]);
    const [headers, body] = await this.withIdleTimeout(stream, response, 'writeFile');
    const r = decodeJsonResponse({ status: Number(headers[':status']), headers, body }, checkFileWriteResponse, 'writeFile');
    if (r.bytes_written !== sent) {
      throw violation(new Error(`agent stored ${r.bytes_written} bytes, host sent ${sent}`), 'writeFile response');
    }
    return r;
  }

  listDir(path: string): Promise<FileListResponse> {
    return this.json('POST', ROUTES.fileList, checkArg(checkFilePathRequest, { path }, 'listDir'), checkFileListResponse, 'listDir');
  }

  /** Follows symlinks. */
  stat(path: string): Promise<FileInfo> {
    return this.json('POST', ROUTES.fileStat, checkArg(checkFilePathRequest, { path }, 'stat'), checkFileInfo, 'stat');
  }

  /** Creates a directory; recursive (default true) also accepts an existing one. */
  async mkdir(path: string, options: { recursive?: boolean; mode?: number } = {}): Promise<void> {
    await this.json('POST', ROUTES.fileMkdir, checkArg(checkMkdirRequest, { path, ...options }, 'mkdir'), checkEmptyResponse, 'mkdir');
  }

  /** Removes a file, symlink or empty directory; `recursive` removes a tree. */
  async remove(path: string, options: { recursive?: boolean } = {}): Promise<void> {
    await this.json('POST', ROUTES.fileRemove, checkArg(checkRemoveRequest, { path, ...options }, 'remove'), checkEmptyResponse, 'remove');
  }

  async rename(from: string, to: string): Promise<void> {
    await this.json('POST', ROUTES.fileRename, checkArg(checkRenameRequest, { from, to }, 'rename'), checkEmptyResponse, 'rename');
  }

  private json<T>(method: 'POST', path: string, body: unknown, check: Check<T>, what: string): Promise<T> {
    return callJson(this.session, { method, path, json: body, timeoutMs: this.requestTimeoutMs, what }, check);
  }

  private request(headers: Record<string, string>, what: string): ClientHttp2Stream {
    if (this.isClosed) throw new SandforgeError('agent_unavailable', `${what}: agent connection is closed`);
    try {
      const stream = this.session.request(headers);
      stream.on('error', () => undefined); // reported through the promises
      return stream;
    } catch (err) {
      throw unavailable(err, what);
    }
  }

  /** Fails `p` with 'timeout' if the stream sees no traffic for requestTimeoutMs. */
  private async withIdleTimeout<T>(stream: ClientHttp2Stream, p: Promise<T>, what: string): Promise<T> {
    let onTimeout!: () => void;
    const idle = new Promise<never>((_r, reject) => {
      onTimeout = () => {
        stream.close(constants.NGHTTP2_CANCEL);
        reject(new SandforgeError('timeout', `${what}: no progress for ${this.requestTimeoutMs} ms`));
      };
    });
    idle.catch(() => undefined);
    p.catch(() => undefined);
    stream.setTimeout(this.requestTimeoutMs, onTimeout);
    try {
      return await Promise.race([p, idle]);
    } finally {
      stream.setTimeout(0);
    }
  }
}
