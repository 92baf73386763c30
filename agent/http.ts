/**
 * Small HTTP/2 helpers shared by the agent's handlers: bounded JSON bodies,
 * the error envelope, and errno → protocol error-code mapping.
 */
import type { ServerHttp2Stream, IncomingHttpHeaders } from 'node:http2';
import { ERROR_STATUS } from '../src/shared/errors.js';
import {
  MAX_JSON_BODY_BYTES,
  ProtocolViolation,
  parseJson,
  type AgentErrorBody,
  type AgentErrorCode,
  type Check,
} from '../src/shared/protocol.js';

/** An error the agent reports to the host with a protocol error code. */
export class AgentFailure extends Error {
  readonly code: AgentErrorCode;
  constructor(code: AgentErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AgentFailure';
    this.code = code;
  }
}

const ERRNO_CODES: Record<string, AgentErrorCode> = {
  ENOENT: 'not_found',
  ENOTDIR: 'not_found',
  EACCES: 'forbidden',
  EPERM: 'forbidden',
  EROFS: 'forbidden',
  EEXIST: 'conflict',
  ENOTEMPTY: 'conflict',
  EBUSY: 'conflict',
  EXDEV: 'conflict',
  EISDIR: 'invalid_argument',
  EINVAL: 'invalid_argument',
  ELOOP: 'invalid_argument',
  ENAMETOOLONG: 'invalid_argument',
  ERR_FS_EISDIR: 'invalid_argument',
  ENOSPC: 'limit_exceeded',
  EDQUOT: 'limit_exceeded',
  EFBIG: 'limit_exceeded',
  EMFILE: 'limit_exceeded',
  ENFILE: 'limit_exceeded',
};

/** Turns anything thrown into an AgentFailure with the right code. */
export function toFailure(err: unknown): AgentFailure {
  if (err instanceof AgentFailure) return err;
  if (err instanceof ProtocolViolation) return new AgentFailure('invalid_argument', err.message, { cause: err });
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const message = err instanceof Error ? err.message : String(err);
  return new AgentFailure((code && ERRNO_CODES[code]) || 'internal', message, { cause: err });
}

export function errorBody(f: AgentFailure): AgentErrorBody {
  return { error: { code: f.code, message: f.message.slice(0, 2000) } };
}

export function sendJson(stream: ServerHttp2Stream, status: number, body: unknown): void {
  if (stream.destroyed || stream.closed) return;
  const data = Buffer.from(JSON.stringify(body));
  if (!stream.headersSent) {
    stream.respond({ ':status': status, 'content-type': 'application/json', 'content-length': data.length });
  }
  stream.end(data);
}

export function sendFailure(stream: ServerHttp2Stream, err: unknown): void {
  const f = toFailure(err);
  if (stream.headersSent) {
    // Too late for a status: reset so the client sees the body as incomplete.
    stream.close(2 /* NGHTTP2_INTERNAL_ERROR */);
    return;
  }
  sendJson(stream, ERROR_STATUS[f.code], errorBody(f));
}

/** Reads a whole request body, refusing more than `maxBytes`. */
export function readBody(stream: ServerHttp2Stream, maxBytes = MAX_JSON_BODY_BYTES): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    stream.on('data', (c: Buffer) => {
      size += c.length;
      if (size > maxBytes) {
        reject(new AgentFailure('payload_too_large', `request body larger than ${maxBytes} bytes`));
        stream.pause();
        return;
      }
      chunks.push(c);
    });
    stream.once('end', () => resolve(Buffer.concat(chunks)));
    stream.once('error', reject);
    stream.once('aborted', () => reject(new AgentFailure('invalid_argument', 'request aborted')));
  });
}

export async function readJson<T>(stream: ServerHttp2Stream, check: Check<T>): Promise<T> {
  const body = await readBody(stream);
  return parseJson(body.length === 0 ? '{}' : body, check, 'body');
}

/** Parses the JSON in a request header. */
export function headerJson<T>(headers: IncomingHttpHeaders, name: string, check: Check<T>): T {
  const v = headers[name];
  if (typeof v !== 'string') throw new AgentFailure('invalid_argument', `missing header ${name}`);
  return parseJson(v, check, name);
}
