/**
 * The SDK's one adapter from transport failures to typed errors: every error the SDK
 * throws on purpose is a `SandforgeError` (from the shared registry), refined here.
 */
import { ERROR_STATUS, SandforgeError, isErrorCode, type ErrorCode } from '../../src/shared/errors.js';

export { SandforgeError, isErrorCode, type ErrorCode };

/** An error the supervisor reported: a non-2xx response, or an `error` message on a command stream. */
export class SandforgeApiError extends SandforgeError {
  /** Request id the supervisor logged this under, when it sent one; quote it in bug reports. */
  readonly requestId: string | undefined;
  readonly #status: number;

  constructor(
    code: ErrorCode,
    message: string,
    init: { status: number; requestId?: string | undefined; details?: Record<string, unknown> | undefined },
  ) {
    super(code, message, init.details);
    this.name = 'SandforgeApiError';
    this.#status = init.status;
    this.requestId = init.requestId;
  }

  /** HTTP status of the response (for stream errors: the status the registry assigns the code). */
  override get status(): number {
    return this.#status;
  }
}

/** The supervisor could not be reached at all (refused, DNS, reset, TLS). Code `agent_unavailable`. */
export class SandforgeConnectionError extends SandforgeError {
  readonly url: string;

  constructor(url: string, cause: unknown) {
    super(
      'agent_unavailable',
      `cannot reach the Sandforge supervisor at ${url} (${describeNetworkError(cause)}); ` +
        'is it running? check SANDFORGE_URL or the baseUrl option (--url)',
      { url },
      { cause },
    );
    this.name = 'SandforgeConnectionError';
    this.url = url;
  }
}

/** A request got no complete answer in time. Code `timeout`. */
export class SandforgeTimeoutError extends SandforgeError {
  readonly timeoutMs: number;

  constructor(what: string, timeoutMs: number) {
    super('timeout', `${what} got no answer within ${timeoutMs} ms; raise the timeoutMs client option or requestTimeoutMs on the call`, {
      timeout_ms: timeoutMs,
    });
    this.name = 'SandforgeTimeoutError';
    this.timeoutMs = timeoutMs;
  }
}

/** Fallback code for a response without a (known) envelope, e.g. from a proxy in front of the supervisor. */
export function codeForStatus(status: number): ErrorCode {
  const byStatus: Record<number, ErrorCode> = {
    400: 'bad_request',
    401: 'unauthorized',
    403: 'forbidden',
    404: 'not_found',
    409: 'conflict',
    413: 'payload_too_large',
    429: 'rate_limited',
    501: 'not_implemented',
    504: 'timeout',
  };
  return byStatus[status] ?? (status >= 400 && status < 500 ? 'bad_request' : 'internal');
}

export interface ResponseContext {
  method: string;
  /** URL without credentials; named in messages when the body has no envelope. */
  url: string;
  /** `x-request-id` response header, if any. */
  requestId?: string | null | undefined;
}

/** Maps a non-2xx response body to a `SandforgeApiError`. Pure: the adapter's core, unit-tested. */
export function errorFromResponse(status: number, body: string, ctx: ResponseContext): SandforgeApiError {
  const env = parseEnvelope(body);
  const headerId = ctx.requestId ?? undefined;
  if (env) {
    const code = env.code;
    const known = isErrorCode(code);
    const details = known ? env.details : { ...env.details, server_code: code };
    return new SandforgeApiError(known ? code : codeForStatus(status), env.message, {
      status,
      requestId: env.request_id ?? headerId,
      details,
    });
  }
  const snippet = body.replace(/\s+/g, ' ').trim().slice(0, 200);
  const hint = status === 401 ? '; check SANDFORGE_TOKEN or the token option (--token)' : '';
  return new SandforgeApiError(
    codeForStatus(status),
    `${ctx.method} ${ctx.url} failed with HTTP ${status}${snippet ? `: ${snippet}` : ''}${hint}`,
    { status, requestId: headerId },
  );
}

interface Envelope {
  code: string;
  message: string;
  details?: Record<string, unknown>;
  request_id?: string;
}

function parseEnvelope(body: string): Envelope | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    return undefined;
  }
  const e = (parsed as { error?: unknown } | null)?.error as Record<string, unknown> | undefined;
  if (!e || typeof e !== 'object' || typeof e.code !== 'string' || typeof e.message !== 'string') return undefined;
  const out: Envelope = { code: e.code, message: e.message };
  if (e.details && typeof e.details === 'object' && !Array.isArray(e.details)) out.details = e.details as Record<string, unknown>;
  if (typeof e.request_id === 'string') out.request_id = e.request_id;
  return out;
}

/** An `error` message on a command stream, as a typed error. */
export function errorFromStreamMessage(msg: { code: string; message: string }): SandforgeApiError {
  const code: ErrorCode = isErrorCode(msg.code) ? msg.code : 'internal';
  const details = code === msg.code ? undefined : { server_code: msg.code };
  return new SandforgeApiError(code, msg.message, { status: ERROR_STATUS[code], details });
}

/** The most useful short reason in a fetch/ws failure: a system error code if there is one. */
export function describeNetworkError(err: unknown): string {
  let deepest = err;
  for (let e: unknown = err, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && (/^E[A-Z_]+$/.test(code) || code.startsWith('UND_ERR'))) return code;
    deepest = e;
  }
  // fetch wraps everything in "fetch failed"; the innermost cause says why (e.g. "bad port").
  const msg = deepest instanceof Error ? deepest.message : String(deepest);
  return msg || 'network error';
}
