import type { ExecuteRequest, ExecuteResult } from '../../../src/shared/api-types.js';
import { sandboxPath, websocketUrl, endpointUrl } from '../config.js';
import { errorFromStreamMessage } from '../errors.js';
import type { CallOptions, HttpTransport } from '../http.js';
import { readNdjsonMessages } from '../ndjson.js';
import { decodeData, type CommandExit } from '../stream-messages.js';
import { CommandStream, type CommandStreamCallbacks } from './command-stream.js';

/** The supervisor's default command timeout, in seconds, used to size the request timeout. */
export const DEFAULT_COMMAND_TIMEOUT_SECONDS = 300;
/** Extra time the HTTP request gets beyond the command's own timeout, in milliseconds. */
const REQUEST_MARGIN_MS = 30_000;

export interface CommandOptions {
  /** Environment variables added for this command. */
  env?: Record<string, string>;
  /** Working directory in the guest. Default: the guest user's home. */
  cwd?: string;
  /** Guest user to run as. Default: the image's default user. */
  user?: string;
  /** Kill the command after this many seconds. Default: the supervisor's (300). */
  timeoutSeconds?: number;
}

export interface RunOptions extends CommandOptions, CallOptions, CommandStreamCallbacks {
  /** Text fed to the command's stdin (up to 10 MiB). Default: none (stdin is empty). */
  stdin?: string;
}

export interface StreamOptions extends CommandOptions, CommandStreamCallbacks {
  /** Run under a pseudo-terminal of this size; stdout then carries the terminal output and stderr is unused. */
  pty?: { rows: number; cols: number };
  /** Timeout of the WebSocket handshake in milliseconds. Default: the client's `timeoutMs` (60 000). */
  requestTimeoutMs?: number;
  /** Aborting it drops the connection; `wait()` rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** Runs commands in one sandbox. A string command runs under `/bin/sh -c`; an array runs as argv. */
export class Commands {
  readonly #http: HttpTransport;
  readonly #id: string;

  constructor(http: HttpTransport, sandboxId: string) {
    this.#http = http;
    this.#id = sandboxId;
  }

  /**
   * Runs a command to completion and returns its buffered output. With `onStdout`/`onStderr`,
   * output also arrives live (NDJSON stream) and the result holds all of it, untruncated.
   * The request timeout defaults to the command timeout plus 30 s.
   */
  async run(command: string | string[], opts: RunOptions = {}): Promise<ExecuteResult> {
    const body: ExecuteRequest = { command, ...commandFields(opts) };
    if (opts.stdin !== undefined) body.stdin = opts.stdin;
    const call = {
      json: body,
      requestTimeoutMs: opts.requestTimeoutMs ?? (opts.timeoutSeconds ?? DEFAULT_COMMAND_TIMEOUT_SECONDS) * 1000 + REQUEST_MARGIN_MS,
      signal: opts.signal,
    };
    const path = sandboxPath(this.#id, '/execute');
    if (!opts.onStdout && !opts.onStderr) return this.#http.json<ExecuteResult>('POST', path, call);

    const opened = await this.#http.open('POST', path, { ...call, accept: 'application/x-ndjson' });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let exit: CommandExit | undefined;
    try {
      if (!opened.res.body) throw new Error('empty response body');
      for await (const msg of readNdjsonMessages(opened.res.body as unknown as AsyncIterable<Uint8Array>)) {
        if (msg.type === 'stdout' || msg.type === 'stderr') {
          const data = decodeData(msg);
          (msg.type === 'stdout' ? out : err).push(data);
          (msg.type === 'stdout' ? opts.onStdout : opts.onStderr)?.(data);
        } else if (msg.type === 'error') {
          throw errorFromStreamMessage(msg);
        } else if (msg.type === 'exit') {
          const { type: _type, ...rest } = msg;
          exit = rest;
        }
      }
    } catch (e) {
      throw opened.mapError(e);
    } finally {
      opened.release();
    }
    if (!exit) throw opened.mapError(new Error('the output stream ended before the command exited'));
    return { ...exit, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') };
  }

  /**
   * Starts a command over a WebSocket and returns once it is sent. Feed stdin with
   * `sendStdin()`/`closeStdin()`; `wait()` resolves with the exit status.
   */
  stream(command: string | string[], opts: StreamOptions = {}): Promise<CommandStream> {
    const path = sandboxPath(this.#id, '/exec');
    const start: Parameters<typeof CommandStream.open>[0]['start'] = { type: 'start', command, ...commandFields(opts) };
    if (opts.pty) start.pty = { rows: opts.pty.rows, cols: opts.pty.cols };
    return CommandStream.open({
      url: websocketUrl(endpointUrl(this.#http.baseUrl, path)),
      headers: this.#http.headersFor(path),
      start,
      handshakeTimeoutMs: opts.requestTimeoutMs ?? this.#http.defaultTimeoutMs,
      signal: opts.signal,
      onStdout: opts.onStdout,
      onStderr: opts.onStderr,
    });
  }
}

function commandFields(opts: CommandOptions): Omit<ExecuteRequest, 'command' | 'stdin'> {
  const f: Omit<ExecuteRequest, 'command' | 'stdin'> = {};
  if (opts.env) f.env = opts.env;
  if (opts.cwd !== undefined) f.cwd = opts.cwd;
  if (opts.user !== undefined) f.user = opts.user;
  if (opts.timeoutSeconds !== undefined) f.timeout_seconds = opts.timeoutSeconds;
  return f;
}
