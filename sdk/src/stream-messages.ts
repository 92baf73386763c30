/**
 * Command-stream messages (WebSocket text frames and NDJSON lines), validated at the
 * boundary: a `type` tag alone is not trusted.
 */
import type { StreamClientMessage, StreamServerMessage } from '../../src/shared/api-types.js';
import { SandforgeError } from '../../src/shared/errors.js';

export type ExitMessage = Extract<StreamServerMessage, { type: 'exit' }>;
/** How a streamed command ended. */
export type CommandExit = Omit<ExitMessage, 'type'>;

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

const malformed = (why: string) => new SandforgeError('internal', `malformed command-stream message from the supervisor: ${why}`);

/** Parses and validates one server message (a text frame or an NDJSON line). Throws `internal` if malformed. */
export function parseServerMessage(text: string): StreamServerMessage {
  let m: Record<string, unknown>;
  try {
    m = JSON.parse(text) as Record<string, unknown>;
  } catch {
    throw malformed(`not JSON: ${text.slice(0, 80)}`);
  }
  if (!m || typeof m !== 'object' || Array.isArray(m)) throw malformed('not an object');
  const str = (k: string) => {
    if (typeof m[k] !== 'string') throw malformed(`${String(m.type)}.${k} must be a string`);
    return m[k] as string;
  };
  const num = (k: string) => {
    if (typeof m[k] !== 'number' || !Number.isFinite(m[k])) throw malformed(`${String(m.type)}.${k} must be a number`);
    return m[k] as number;
  };
  switch (m.type) {
    case 'started':
      return { type: 'started', pid: num('pid') };
    case 'stdout':
    case 'stderr': {
      const data = str('data');
      if (data.length % 4 !== 0 || !BASE64.test(data)) throw malformed(`${m.type}.data is not base64`);
      return { type: m.type, data };
    }
    case 'exit': {
      const exitCode = m.exit_code === null ? null : num('exit_code');
      if (exitCode !== null && !Number.isInteger(exitCode)) throw malformed('exit.exit_code must be an integer or null');
      const signal = m.signal === null ? null : str('signal');
      if (typeof m.timed_out !== 'boolean') throw malformed('exit.timed_out must be a boolean');
      return { type: 'exit', exit_code: exitCode, signal, timed_out: m.timed_out, duration_ms: num('duration_ms') };
    }
    case 'error':
      return { type: 'error', code: str('code'), message: str('message') };
    default:
      throw malformed(`unknown type ${JSON.stringify(m.type)}`);
  }
}

/** Bytes of a `stdout`/`stderr` message. */
export function decodeData(msg: { data: string }): Buffer {
  return Buffer.from(msg.data, 'base64');
}

/** Largest stdin payload put in one frame, in bytes (before base64). */
export const STDIN_CHUNK_BYTES = 1 << 20;

/** `stdin` messages for `data`, split so that no frame carries more than `STDIN_CHUNK_BYTES`. */
export function stdinMessages(data: Buffer | Uint8Array | string): StreamClientMessage[] {
  const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const out: StreamClientMessage[] = [];
  for (let i = 0; i < buf.length; i += STDIN_CHUNK_BYTES) {
    out.push({ type: 'stdin', data: buf.subarray(i, i + STDIN_CHUNK_BYTES).toString('base64') });
  }
  return out;
}

/** Wire form of a client message (one text frame). */
export function encodeClientMessage(msg: StreamClientMessage): string {
  return JSON.stringify(msg);
}
