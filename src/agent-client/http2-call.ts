/** Request/response plumbing over one HTTP/2 session to the agent. */
import type { ClientHttp2Session, ClientHttp2Stream, IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http2';
import { constants } from 'node:http2';
import { SandforgeError } from '../shared/errors.js';
import { MAX_JSON_BODY_BYTES, checkAgentErrorBody, parseJson, type Check } from '../shared/protocol.js';
import { fromAgentError, unavailable, violation } from './agent-errors.js';

export interface RawResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** Resolves with the response headers, or rejects if the stream dies first. */
export function awaitResponse(stream: ClientHttp2Stream, what: string): Promise<IncomingHttpHeaders> {
  return new Promise((resolve, reject) => {
    stream.once('response', resolve);
    stream.once('error', (err) => reject(unavailable(err, what)));
    stream.once('close', () => reject(unavailable(new Error(`stream closed (code ${stream.rstCode ?? '?'})`), what)));
  });
}

/** Reads a whole response body, refusing more than `maxBytes`. */
export function collectBody(stream: ClientHttp2Stream, what: string, maxBytes = MAX_JSON_BODY_BYTES): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    stream.on('data', (c: Buffer) => {
      size += c.length;
      if (size > maxBytes) {
        stream.close(constants.NGHTTP2_CANCEL);
        reject(violation(new Error(`response body over ${maxBytes} bytes`), `${what} response`));
        return;
      }
      chunks.push(c);
    });
    stream.once('end', () => resolve(Buffer.concat(chunks)));
    stream.once('error', (err) => reject(unavailable(err, what)));
    stream.once('close', () => reject(unavailable(new Error('stream closed before the body ended'), what)));
  });
}

/** Interprets a complete JSON response: the typed body on 2xx, else the agent's error. */
export function decodeJsonResponse<T>(res: RawResponse, check: Check<T>, what: string): T {
  if (res.status >= 200 && res.status < 300) {
    try {
      return parseJson(res.body, check, 'body');
    } catch (err) {
      throw violation(err, `${what} response`);
    }
  }
  let body;
  try {
    body = parseJson(res.body, checkAgentErrorBody, 'error body');
  } catch (err) {
    throw violation(err, `${what} error response (HTTP ${res.status})`);
  }
  throw fromAgentError(body.error, res.status);
}

export interface CallOptions {
  method: 'GET' | 'POST' | 'PUT';
  path: string;
  /** JSON request body; omitted for GET. */
  json?: unknown;
  headers?: OutgoingHttpHeaders;
  /** Whole-call deadline, ms. */
  timeoutMs: number;
  what: string;
}

/** One JSON round trip with a deadline. */
export async function callJson<T>(session: ClientHttp2Session, o: CallOptions, check: Check<T>): Promise<T> {
  if (session.closed || session.destroyed) throw new SandforgeError('agent_unavailable', `${o.what}: agent connection is closed`);
  const body = o.json === undefined ? undefined : Buffer.from(JSON.stringify(o.json));
  let stream: ClientHttp2Stream;
  try {
    stream = session.request(
      { ':method': o.method, ':path': o.path, ...(body ? { 'content-type': 'application/json' } : {}), ...o.headers },
      { endStream: body === undefined },
    );
  } catch (err) {
    throw unavailable(err, o.what);
  }
  stream.on('error', () => undefined); // reported through the promises below
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_r, reject) => {
    timer = setTimeout(() => {
      stream.close(constants.NGHTTP2_CANCEL);
      reject(new SandforgeError('timeout', `${o.what}: the agent did not answer within ${o.timeoutMs} ms`));
    }, o.timeoutMs);
  });
  try {
    if (body) stream.end(body);
    const res = Promise.all([awaitResponse(stream, o.what), collectBody(stream, o.what)]).then(([headers, b]): RawResponse => ({
      status: Number(headers[':status']),
      headers,
      body: b,
    }));
    res.catch(() => undefined); // the deadline may win the race
    return decodeJsonResponse(await Promise.race([res, deadline]), check, o.what);
  } finally {
    clearTimeout(timer);
    deadline.catch(() => undefined);
  }
}
