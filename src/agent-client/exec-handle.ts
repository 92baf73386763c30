/** The host's side of one command: frames in, frames out, strict about order. */
import type { ClientHttp2Stream } from 'node:http2';
import { constants } from 'node:http2';
import { SandforgeError } from '../shared/errors.js';
import {
  EXEC_CONTENT_TYPE,
  FrameDecoder,
  MAX_FRAME_PAYLOAD_BYTES,
  SIGNALS,
  checkAgentErrorBody,
  decodeAgentFrame,
  encodeClientFrame,
  parseJson,
  type AgentFrame,
  type ClientFrame,
  type ExecExit,
  type SignalName,
} from '../shared/protocol.js';
import { fromAgentError, unavailable, violation } from './agent-errors.js';
import { collectBody } from './http2-call.js';

export interface ExecHandlers {
  /** Called with each stdout chunk (the terminal's output for a PTY command). */
  onStdout?: (chunk: Buffer) => void;
  onStderr?: (chunk: Buffer) => void;
}

export type ExecResult = ExecExit;

export class ExecHandle {
  /** Resolves with the command's pid once it started; rejects like wait(). */
  readonly started: Promise<number>;
  private pidValue: number | undefined;
  private readonly decoder = new FrameDecoder('to_client');
  private readonly result: Promise<ExecResult>;
  private settle!: { resolve: (r: ExecResult) => void; reject: (e: SandforgeError) => void };
  private startSettle!: { resolve: (pid: number) => void; reject: (e: SandforgeError) => void };
  private state: 'starting' | 'running' | 'done' = 'starting';
  private stdinClosed = false;
  private sendChain: Promise<void> = Promise.resolve();
  private endedCleanly = false;

  /** @internal Created by AgentClient.exec. */
  constructor(
    private readonly stream: ClientHttp2Stream,
    private readonly stdinAllowed: boolean,
    private readonly handlers: ExecHandlers,
  ) {
    this.result = new Promise((resolve, reject) => (this.settle = { resolve, reject }));
    this.started = new Promise((resolve, reject) => (this.startSettle = { resolve, reject }));
    // Callers that only wait() must not see unhandled rejections from started.
    this.started.catch(() => undefined);
    this.result.catch(() => undefined);
    stream.on('error', () => undefined);
    stream.once('response', (headers) => {
      const status = Number(headers[':status']);
      if (status !== 200) return void this.readErrorBody(status);
      if (headers['content-type'] !== EXEC_CONTENT_TYPE) {
        return this.fail(violation(new Error(`content-type ${String(headers['content-type'])}`), 'exec response'));
      }
      stream.on('data', (chunk: Buffer) => this.onData(chunk));
      stream.once('end', () => this.onEnd());
    });
    const session = stream.session;
    stream.once('close', () => {
      if (this.state === 'done') return;
      // A clean end without an exit frame is the agent's fault; anything else is the channel's.
      const sessionAlive = session !== undefined && !session.destroyed && !session.closed;
      if (this.endedCleanly && sessionAlive && stream.rstCode === constants.NGHTTP2_NO_ERROR) {
        this.fail(violation(new Error('stream ended without an exit frame'), 'exec response'));
      } else {
        this.fail(unavailable(new Error(`stream closed (code ${stream.rstCode ?? '?'})`), 'exec'));
      }
    });
  }

  /** The pid inside the guest, once started. */
  get pid(): number | undefined {
    return this.pidValue;
  }

  /** Resolves when the command exits; rejects with SandforgeError if it could not run or the channel failed. */
  wait(): Promise<ExecResult> {
    return this.result;
  }

  /**
   * Sends stdin bytes (the spec must have `stdin: true` or `pty`). Resolves
   * when the stream accepted them; failures also surface through wait().
   */
  writeStdin(data: Buffer | string): Promise<void> {
    if (!this.stdinAllowed) throw new SandforgeError('invalid_argument', 'writeStdin needs an exec spec with stdin: true or pty');
    if (this.stdinClosed) throw new SandforgeError('invalid_argument', 'stdin was already closed');
    const buf = typeof data === 'string' ? Buffer.from(data) : data;
    const frames: ClientFrame[] = [];
    for (let off = 0; off < buf.length; off += MAX_FRAME_PAYLOAD_BYTES) {
      frames.push({ type: 'stdin', data: buf.subarray(off, off + MAX_FRAME_PAYLOAD_BYTES) });
    }
    return this.sendFrames(frames);
  }

  /** Ends stdin (a PTY command gets ^D). */
  closeStdin(): Promise<void> {
    if (!this.stdinAllowed || this.stdinClosed) return Promise.resolve();
    this.stdinClosed = true;
    return this.sendFrames([{ type: 'stdin_eof' }]);
  }

  /** Signals the command's whole process group. */
  signal(name: SignalName): void {
    if (!(SIGNALS as readonly string[]).includes(name)) throw new SandforgeError('invalid_argument', `unknown signal ${String(name)}`);
    void this.sendFrames([{ type: 'signal', signal: name }]);
  }

  /** Resizes the command's terminal (ignored without a PTY). */
  resize(rows: number, cols: number): void {
    for (const [k, v] of [
      ['rows', rows],
      ['cols', cols],
    ] as const) {
      if (!Number.isInteger(v) || v < 1 || v > 1000) throw new SandforgeError('invalid_argument', `${k} must be an integer in 1..1000`);
    }
    void this.sendFrames([{ type: 'resize', rows, cols }]);
  }

  /** Abandons the command: the agent kills its process group. */
  cancel(): void {
    this.fail(new SandforgeError('agent_error', 'exec cancelled by the host'));
  }

  /** Frames leave in call order, even while an earlier write waits for drain. */
  private sendFrames(frames: ClientFrame[]): Promise<void> {
    const p = this.sendChain.then(async () => {
      for (const f of frames) {
        if (this.state === 'done' || this.stream.destroyed || this.stream.writableEnded) {
          throw new SandforgeError('invalid_argument', 'the command has already finished');
        }
        if (!this.stream.write(encodeClientFrame(f))) {
          await new Promise<void>((resolve) => {
            const done = () => {
              this.stream.off('drain', done);
              this.stream.off('close', done);
              resolve();
            };
            this.stream.on('drain', done);
            this.stream.on('close', done);
          });
        }
      }
    });
    this.sendChain = p.catch(() => undefined);
    p.catch(() => undefined); // callers may fire and forget
    return p;
  }

  private async readErrorBody(status: number): Promise<void> {
    try {
      const body = parseJson(await collectBody(this.stream, 'exec'), checkAgentErrorBody, 'error body');
      this.fail(fromAgentError(body.error, status));
    } catch (err) {
      this.fail(err instanceof SandforgeError ? err : violation(err, `exec error response (HTTP ${status})`));
    }
  }

  private onData(chunk: Buffer): void {
    let frames: AgentFrame[];
    try {
      frames = this.decoder.push(chunk).map(decodeAgentFrame);
    } catch (err) {
      return this.fail(violation(err, 'exec frame'));
    }
    for (const f of frames) {
      if (this.state === 'done') return;
      this.onFrame(f);
    }
  }

  private onFrame(f: AgentFrame): void {
    const bad = (why: string) => this.fail(violation(new Error(why), 'exec frame sequence'));
    switch (f.type) {
      case 'started':
        if (this.state !== 'starting') return bad('second started frame');
        this.state = 'running';
        this.pidValue = f.pid;
        this.startSettle.resolve(f.pid);
        return;
      case 'stdout':
      case 'stderr': {
        if (this.state !== 'running') return bad(`${f.type} before started`);
        const cb = f.type === 'stdout' ? this.handlers.onStdout : this.handlers.onStderr;
        try {
          cb?.(f.data);
        } catch (err) {
          this.fail(new SandforgeError('internal', `exec output handler threw: ${String(err)}`, undefined, { cause: err }));
        }
        return;
      }
      case 'exit':
        if (this.state !== 'running') return bad('exit before started');
        this.finish();
        this.settle.resolve(f.exit);
        return;
      case 'error': {
        const e = fromAgentError(f.error);
        this.fail(e);
        return;
      }
    }
  }

  private onEnd(): void {
    if (this.state === 'done') return;
    if (this.decoder.pending > 0) return this.fail(violation(new Error('stream ended inside a frame'), 'exec frame'));
    this.endedCleanly = true; // judged on 'close', when the reason is known
  }

  private finish(): void {
    this.state = 'done';
    if (!this.stream.destroyed && !this.stream.writableEnded) this.stream.end();
  }

  private fail(err: SandforgeError): void {
    if (this.state === 'done') return;
    this.state = 'done';
    this.startSettle.reject(err);
    this.settle.reject(err);
    // Resetting the stream makes the agent kill the command, which nobody awaits any more.
    if (!this.stream.destroyed) this.stream.close(constants.NGHTTP2_CANCEL);
  }
}
