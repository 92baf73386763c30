import type { DeleteResult, Sandbox } from '../../../src/shared/api-types.js';
import { sandboxPath } from '../config.js';
import type { CallOptions, HttpTransport } from '../http.js';
import { Commands } from './commands.js';
import { Filesystem } from './filesystem.js';

/** One sandbox: its last-known description plus its commands and files. */
export class SandboxHandle {
  readonly id: string;
  readonly commands: Commands;
  readonly files: Filesystem;
  readonly #http: HttpTransport;
  #info: Sandbox;

  constructor(http: HttpTransport, info: Sandbox) {
    this.#http = http;
    this.#info = info;
    this.id = info.id;
    this.commands = new Commands(http, info.id);
    this.files = new Filesystem(http, info.id);
  }

  /** The sandbox as last fetched (by create, get or `refresh()`); not live. */
  get info(): Sandbox {
    return this.#info;
  }

  /** Fetches the current description and updates `info`. */
  async refresh(opts: CallOptions = {}): Promise<Sandbox> {
    this.#info = await this.#http.json<Sandbox>('GET', sandboxPath(this.id), opts);
    return this.#info;
  }

  /** Destroys the sandbox (its VM and writable disk). */
  async kill(opts: CallOptions = {}): Promise<DeleteResult> {
    const res = await this.#http.json<DeleteResult>('DELETE', sandboxPath(this.id), opts);
    this.#info = { ...this.#info, status: 'terminated' };
    return res;
  }
}
