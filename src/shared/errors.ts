/**
 * The one error-code registry. Every error Sandforge reports carries one of
 * these codes; the HTTP status for each is fixed here, and the SDK maps the
 * JSON envelope `{error: {code, message, details?, request_id?}}` back to
 * `SandforgeError` by the same table.
 */
export const ERROR_STATUS = {
  bad_request: 400,
  invalid_argument: 400,
  limit_exceeded: 400,
  unauthorized: 401,
  forbidden: 403,
  policy_denied: 403,
  not_found: 404,
  image_not_found: 404,
  sandbox_not_found: 404,
  conflict: 409,
  sandbox_not_running: 409,
  payload_too_large: 413,
  rate_limited: 429,
  internal: 500,
  not_implemented: 501,
  vm_failed: 502,
  agent_error: 502,
  agent_unavailable: 503,
  capacity_exhausted: 503,
  timeout: 504,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

export const ERROR_CODES = Object.keys(ERROR_STATUS) as ErrorCode[];

export function isErrorCode(x: unknown): x is ErrorCode {
  return typeof x === 'string' && Object.prototype.hasOwnProperty.call(ERROR_STATUS, x);
}

export interface ErrorBody {
  error: { code: ErrorCode; message: string; details?: Record<string, unknown>; request_id?: string };
}

/** Base class of every error Sandforge raises on purpose. */
export class SandforgeError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SandforgeError';
    this.code = code;
    this.details = details;
  }

  get status(): number {
    return ERROR_STATUS[this.code];
  }

  toBody(requestId?: string): ErrorBody {
    const error: ErrorBody['error'] = { code: this.code, message: this.message };
    if (this.details) error.details = this.details;
    if (requestId) error.request_id = requestId;
    return { error };
  }
}

export const invalidArgument = (message: string, details?: Record<string, unknown>) =>
  new SandforgeError('invalid_argument', message, details);

export const notFound = (code: 'not_found' | 'image_not_found' | 'sandbox_not_found', message: string) => new SandforgeError(code, message);

/** Wraps anything thrown into a SandforgeError, keeping the original as cause. */
export function toSandforgeError(err: unknown, fallback: ErrorCode = 'internal'): SandforgeError {
  if (err instanceof SandforgeError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new SandforgeError(fallback, message, undefined, { cause: err });
}
