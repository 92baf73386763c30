import { Readable } from 'node:stream';
import type { ReadableStream as NodeReadableStream } from 'node:stream/web';
import { SandforgeError } from '../../src/shared/errors.js';
import { VERSION } from '../../src/shared/version.js';
import { endpointUrl, type QueryValue, type ResolvedClientConfig, type SdkLogger } from './config.js';
import { SandforgeConnectionError, SandforgeTimeoutError, errorFromResponse } from './errors.js';

/** Raw request bodies: sent as `application/octet-stream`; a Readable is streamed, never buffered. */
export type BodyData = Buffer | Uint8Array | string | Readable;

/** Per-call options shared by every SDK method that makes a request. */
export interface CallOptions {
  /** Timeout of this request in milliseconds. Default: the client's `timeoutMs` (60 000) unless the method says otherwise. */
  requestTimeoutMs?: number;
  /** Cancels the request; the promise rejects with the signal's reason. */
  signal?: AbortSignal;
}

export interface RequestOptions extends CallOptions {
  query?: Record<string, QueryValue>;
  json?: unknown;
  body?: BodyData;
  accept?: string;
}

/** An open response whose timeout keeps running until `release()`. */
interface Opened {
  res: Response;
  release(): void;
  /** Maps an error thrown while reading the body (timeout, abort, reset). */
  mapError(err: unknown): unknown;
}

/** HTTP transport: auth, timeouts, cancellation, logging, and the error adapter in one place. */
export class HttpTransport {
  readonly #config: ResolvedClientConfig;
  readonly #logger: SdkLogger | undefined;

  constructor(config: ResolvedClientConfig, logger?: SdkLogger) {
    this.#config = config;
    this.#logger = logger;
  }

  get baseUrl(): string {
    return this.#config.baseUrl;
  }

  get defaultTimeoutMs(): number {
    return this.#config.timeoutMs;
  }

  /** Headers for a request to `path`; throws a clear error when a /v1 call has no token. */
  headersFor(path: string): Record<string, string> {
    const headers: Record<string, string> = { 'user-agent': `sandforge-sdk/${VERSION}` };
    if (path.startsWith('/v1/')) {
      if (!this.#config.token) {
        throw new SandforgeError('unauthorized', 'no API token: set SANDFORGE_TOKEN or pass the token option (--token)');
      }
      headers.authorization = `Bearer ${this.#config.token}`;
    }
    return headers;
  }

  /** Sends a request and parses the JSON answer; the timeout covers the whole exchange. */
  async json<T>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    const opened = await this.open(method, path, { accept: 'application/json', ...opts });
    let text: string;
    try {
      text = await opened.res.text();
    } catch (err) {
      throw opened.mapError(err);
    } finally {
      opened.release();
    }
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new SandforgeError('internal', `${method} ${path} answered with invalid JSON (is ${this.baseUrl} a Sandforge supervisor?)`);
    }
  }

  /** Sends a request and returns the body as a stream; the timeout covers only the response headers. */
  async stream(method: string, path: string, opts: RequestOptions = {}): Promise<Readable> {
    const opened = await this.open(method, path, opts);
    opened.release();
    const body = opened.res.body;
    return body ? Readable.fromWeb(body as unknown as NodeReadableStream<Uint8Array>) : Readable.from([]);
  }

  /**
   * Sends a request, throws the mapped error on non-2xx, and returns the open response.
   * The caller must `release()` once it has read what it needs.
   */
  async open(method: string, path: string, opts: RequestOptions = {}): Promise<Opened> {
    const url = endpointUrl(this.#config.baseUrl, path, opts.query);
    const what = `${method} ${this.#config.baseUrl}${path}`;
    const timeoutMs = opts.requestTimeoutMs ?? this.#config.timeoutMs;
    const headers = this.headersFor(path);
    if (opts.accept) headers.accept = opts.accept;

    let body: RequestInit['body'];
    let streaming = false;
    if (opts.json !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(opts.json);
    } else if (opts.body !== undefined) {
      headers['content-type'] = 'application/octet-stream';
      streaming = opts.body instanceof Readable;
      body = opts.body as unknown as RequestInit['body'];
    }

    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, timeoutMs);
    const onAbort = () => controller.abort(opts.signal?.reason);
    if (opts.signal?.aborted) onAbort();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    const release = () => {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
    };
    const mapError = (err: unknown): unknown => {
      if (timedOut) return new SandforgeTimeoutError(what, timeoutMs);
      if (opts.signal?.aborted) return opts.signal.reason ?? err;
      if (err instanceof SandforgeError) return err;
      return new SandforgeConnectionError(this.#config.baseUrl, err);
    };

    const started = Date.now();
    let res: Response;
    try {
      const init: RequestInit & { duplex?: 'half' } = { method, headers, body, signal: controller.signal };
      if (streaming) init.duplex = 'half';
      res = await fetch(url, init);
    } catch (err) {
      release();
      throw mapError(err);
    }
    const requestId = res.headers.get('x-request-id');
    this.#logger?.debug(
      { method, path, status: res.status, duration_ms: Date.now() - started, request_id: requestId ?? undefined },
      'sandforge request',
    );
    if (!res.ok) {
      let text = '';
      try {
        text = await res.text();
      } catch (err) {
        release();
        throw mapError(err);
      }
      release();
      throw errorFromResponse(res.status, text, { method, url: `${this.#config.baseUrl}${path}`, requestId });
    }
    return { res, release, mapError };
  }
}
