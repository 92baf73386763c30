import type { CreateSandboxRequest, DeleteResult, InfoResponse, Sandbox } from '../../src/shared/api-types.js';
import { DEFAULT_CREATE_TIMEOUT_MS, resolveClientConfig, sandboxPath, type ClientOptions } from './config.js';
import { HttpTransport, type CallOptions } from './http.js';
import { SandboxHandle } from './sandbox/handle.js';

/**
 * Client of a Sandforge supervisor.
 *
 * ```ts
 * const client = new Client(); // SANDFORGE_URL / SANDFORGE_TOKEN
 * const sb = await client.create({ cpu: 2, memory_mb: 1024 });
 * const r = await sb.commands.run('echo hi');
 * await sb.kill();
 * ```
 */
export class Client {
  readonly #http: HttpTransport;

  /** Throws `invalid_argument` for a malformed URL or timeout. A missing token fails at the first /v1 call. */
  constructor(opts: ClientOptions = {}) {
    this.#http = new HttpTransport(resolveClientConfig(opts), opts.logger);
  }

  /** The resolved supervisor URL (no trailing slash). */
  get baseUrl(): string {
    return this.#http.baseUrl;
  }

  /**
   * Creates a sandbox and waits until it runs. The request timeout defaults to 600 000 ms,
   * because the first sandbox of an image/size builds its template first.
   */
  async create(req: CreateSandboxRequest = {}, opts: CallOptions = {}): Promise<SandboxHandle> {
    const info = await this.#http.json<Sandbox>('POST', '/v1/sandboxes', {
      ...opts,
      json: req,
      requestTimeoutMs: opts.requestTimeoutMs ?? Math.max(DEFAULT_CREATE_TIMEOUT_MS, this.#http.defaultTimeoutMs),
    });
    return new SandboxHandle(this.#http, info);
  }

  /** A handle to an existing sandbox; rejects with `sandbox_not_found` if there is none. */
  async get(id: string, opts: CallOptions = {}): Promise<SandboxHandle> {
    return new SandboxHandle(this.#http, await this.#http.json<Sandbox>('GET', sandboxPath(id), opts));
  }

  /** All sandboxes the supervisor knows. */
  list(opts: CallOptions = {}): Promise<Sandbox[]> {
    return this.#http.json<Sandbox[]>('GET', '/v1/sandboxes', opts);
  }

  /** Destroys a sandbox by id, without fetching it first. */
  kill(id: string, opts: CallOptions = {}): Promise<DeleteResult> {
    return this.#http.json<DeleteResult>('DELETE', sandboxPath(id), opts);
  }

  /** Version, acceleration, images, templates, capacity and counters of the supervisor. */
  info(opts: CallOptions = {}): Promise<InfoResponse> {
    return this.#http.json<InfoResponse>('GET', '/v1/info', opts);
  }

  /** `GET /healthz` (no token needed). */
  health(opts: CallOptions = {}): Promise<{ ok: boolean }> {
    return this.#http.json<{ ok: boolean }>('GET', '/healthz', opts);
  }
}
