import { Value } from '@sinclair/typebox/value';
import type { FastifyInstance } from 'fastify';
import type { WebSocket } from 'ws';
import { StreamStart, type StreamServerMessage } from '../../shared/api-types.js';
import { SandforgeError, toSandforgeError } from '../../shared/errors.js';
import { SIGNALS, type SignalName } from '../../shared/protocol.js';
import type { SandboxManager } from '../../sandbox/sandbox-manager.js';
import { IdParams } from './sandboxes.js';

/** Largest client message we accept on a command stream (stdin chunks are base64 in JSON). */
const MAX_WS_MESSAGE_BYTES = 4 * 1024 * 1024;

type Handle = Awaited<ReturnType<SandboxManager['stream']>>;

/**
 * `GET /v1/sandboxes/{id}/exec` upgraded to a WebSocket: a `start` message,
 * then stdin/signal/resize messages; the server streams stdout/stderr and
 * ends with `exit` (or `error`) and a normal close.
 */
export function execStreamRoute(app: FastifyInstance, manager: SandboxManager): void {
  app.get<{ Params: { id: string } }>(
    '/v1/sandboxes/:id/exec',
    { websocket: true, schema: { summary: 'Command stream over WebSocket (PTY optional)', params: IdParams } },
    (socket: WebSocket, req) => {
      const id = req.params.id;
      /** The command, once started; later messages apply in arrival order behind it. */
      let handle: Promise<Handle> | null = null;
      let started: Handle | null = null;
      let done = false;
      const send = (m: StreamServerMessage) => {
        if (socket.readyState === socket.OPEN) socket.send(JSON.stringify(m));
      };
      const finish = (m: StreamServerMessage) => {
        if (done) return;
        done = true;
        send(m);
        socket.close(1000, m.type);
      };
      const fail = (err: unknown) => {
        const e = toSandforgeError(err);
        finish({ type: 'error', code: e.code, message: e.message });
      };

      socket.on('message', (data, isBinary) => {
        try {
          const raw = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
          if (raw.length > MAX_WS_MESSAGE_BYTES) throw new SandforgeError('payload_too_large', 'stream message too large');
          if (isBinary) {
            if (!handle) throw new SandforgeError('bad_request', 'send a "start" message first');
            void handle.then((h) => h.writeStdin(raw)).catch(fail);
            return;
          }
          const msg = JSON.parse(raw.toString('utf8')) as Record<string, unknown>;
          if (!handle) {
            if (!Value.Check(StreamStart, msg)) {
              const first = [...Value.Errors(StreamStart, msg)][0];
              throw new SandforgeError(
                'invalid_argument',
                `invalid start message${first ? `: ${first.path || '/'} ${first.message}` : ''}`,
              );
            }
            const spec = manager.execSpec(id, { ...msg, stdin: true });
            handle = manager.stream(id, spec, {
              onStarted: (pid) => send({ type: 'started', pid }),
              onStdout: (b) => send({ type: 'stdout', data: b.toString('base64') }),
              onStderr: (b) => send({ type: 'stderr', data: b.toString('base64') }),
            });
            handle
              .then((h) => {
                started = h;
                return manager.whileAlive(id, h.wait());
              })
              .then(
                (x) =>
                  finish({ type: 'exit', exit_code: x.exit_code, signal: x.signal, timed_out: x.timed_out, duration_ms: x.duration_ms }),
                fail,
              );
            return;
          }
          const apply = parseControl(msg);
          void handle.then(apply).catch(fail);
        } catch (err) {
          if (started && !done) killQuietly(started);
          fail(err instanceof SyntaxError ? new SandforgeError('bad_request', 'messages must be JSON text frames') : err);
        }
      });
      socket.on('close', () => {
        // Client went away: the command does not outlive its stream.
        if (!done && handle) void handle.then(killQuietly, () => undefined);
        done = true;
      });
    },
  );
}

/** Validates a control message and returns what it does to the command. */
function parseControl(msg: Record<string, unknown>): (h: Handle) => unknown {
  switch (msg.type) {
    case 'stdin': {
      if (typeof msg.data !== 'string') throw new SandforgeError('invalid_argument', 'stdin.data must be base64 text');
      const data = Buffer.from(msg.data, 'base64');
      return (h) => h.writeStdin(data);
    }
    case 'stdin_close':
      return (h) => h.closeStdin();
    case 'signal': {
      if (!SIGNALS.includes(msg.signal as SignalName)) throw new SandforgeError('invalid_argument', `unknown signal ${String(msg.signal)}`);
      const sig = msg.signal as SignalName;
      return (h) => h.signal(sig);
    }
    case 'resize': {
      const { rows, cols } = msg;
      if (!isDim(rows) || !isDim(cols)) throw new SandforgeError('invalid_argument', 'resize needs integer rows and cols in 1..1000');
      return (h) => h.resize(rows, cols);
    }
    default:
      throw new SandforgeError('invalid_argument', `unknown message type ${JSON.stringify(msg.type)}`);
  }
}

function isDim(x: unknown): x is number {
  return Number.isInteger(x) && (x as number) >= 1 && (x as number) <= 1000;
}

function killQuietly(h: Handle): void {
  try {
    h.signal('SIGKILL');
  } catch {
    // already finished
  }
}
