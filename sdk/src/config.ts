import { SandforgeError } from '../../src/shared/errors.js';

/** Where the client looks when neither `baseUrl` nor `SANDFORGE_URL` is set. */
export const DEFAULT_BASE_URL = 'http://127.0.0.1:8585';
/** Default HTTP request timeout: 60 s. */
export const DEFAULT_TIMEOUT_MS = 60_000;
/** Default timeout of `client.create()`: 10 min, since the first sandbox of an image builds its template. */
export const DEFAULT_CREATE_TIMEOUT_MS = 600_000;

/**
 * A pino-compatible logger (`pino()` or a child of it fits). The SDK logs nothing unless
 * given one, and never logs the token.
 */
export interface SdkLogger {
  debug(fields: Record<string, unknown>, msg: string): void;
  warn(fields: Record<string, unknown>, msg: string): void;
}

export interface ClientOptions {
  /** Supervisor URL, e.g. `http://127.0.0.1:8585`. Default: env `SANDFORGE_URL`, else `http://127.0.0.1:8585`. */
  baseUrl?: string;
  /** API token (`sf_live_…`), sent as `Authorization: Bearer`. Default: env `SANDFORGE_TOKEN`. */
  token?: string;
  /** Default timeout of each HTTP request, in milliseconds. Default 60 000; `create()` uses 600 000. */
  timeoutMs?: number;
  /** Receives debug lines per request. Default: none (silent). */
  logger?: SdkLogger;
}

export interface ResolvedClientConfig {
  /** http(s) URL without a trailing slash; may carry a path prefix (reverse proxy). */
  baseUrl: string;
  token: string | undefined;
  timeoutMs: number;
}

const nonEmpty = (s: string | undefined): string | undefined => (s === undefined || s.trim() === '' ? undefined : s.trim());

/** Applies the precedence option → environment → default, and validates the result. */
export function resolveClientConfig(opts: ClientOptions = {}, env: NodeJS.ProcessEnv = process.env): ResolvedClientConfig {
  const rawUrl = nonEmpty(opts.baseUrl) ?? nonEmpty(env.SANDFORGE_URL) ?? DEFAULT_BASE_URL;
  const token = nonEmpty(opts.token) ?? nonEmpty(env.SANDFORGE_TOKEN);
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    throw new SandforgeError('invalid_argument', `timeoutMs must be a positive number of milliseconds, got ${timeoutMs}`);
  }
  return { baseUrl: normalizeBaseUrl(rawUrl), token, timeoutMs };
}

function normalizeBaseUrl(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw badUrl(raw, 'not a URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw badUrl(raw, 'use http:// or https://');
  if (url.username || url.password) throw badUrl(raw, 'credentials in the URL are not used; set SANDFORGE_TOKEN instead');
  if (url.search || url.hash) throw badUrl(raw, 'remove the query string and fragment');
  return `${url.origin}${url.pathname.replace(/\/+$/, '')}`;
}

const badUrl = (raw: string, why: string) =>
  new SandforgeError('invalid_argument', `invalid Sandforge URL "${raw}": ${why} (set SANDFORGE_URL or the baseUrl option, --url)`);

export type QueryValue = string | number | boolean | undefined;

/** `baseUrl` + `path` (starting with `/`) + the query, skipping undefined values. */
export function endpointUrl(baseUrl: string, path: string, query?: Record<string, QueryValue>): string {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined) params.set(k, String(v));
  const qs = params.toString();
  return `${baseUrl}${path}${qs ? `?${qs}` : ''}`;
}

/** The ws(s):// form of an http(s):// URL. */
export function websocketUrl(httpUrl: string): string {
  return httpUrl.replace(/^http(s?):/, 'ws$1:');
}

/** Path segment for a sandbox id, refusing ids that would change the route. */
export function sandboxPath(id: string, suffix = ''): string {
  if (typeof id !== 'string' || id === '') throw new SandforgeError('invalid_argument', 'sandbox id must be a non-empty string');
  return `/v1/sandboxes/${encodeURIComponent(id)}${suffix}`;
}
