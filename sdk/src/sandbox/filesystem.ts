import type { Readable } from 'node:stream';
import type { FileEntry } from '../../../src/shared/api-types.js';
import { SandforgeError } from '../../../src/shared/errors.js';
import { sandboxPath } from '../config.js';
import type { BodyData, CallOptions, HttpTransport } from '../http.js';

/** Answer of `files.write()`. (Not yet a schema in api-types.) */
export interface WriteResult {
  path: string;
  /** Bytes written. */
  size: number;
}

/** Files in one sandbox. Paths are absolute guest paths. */
export class Filesystem {
  readonly #http: HttpTransport;
  readonly #id: string;

  constructor(http: HttpTransport, sandboxId: string) {
    this.#http = http;
    this.#id = sandboxId;
  }

  /** Reads a whole file into memory. The request timeout covers the whole download. */
  async read(path: string, opts: CallOptions = {}): Promise<Buffer> {
    const opened = await this.#http.open('GET', this.#route(''), { ...opts, query: { path: absolute(path) } });
    try {
      return Buffer.from(await opened.res.arrayBuffer());
    } catch (err) {
      throw opened.mapError(err);
    } finally {
      opened.release();
    }
  }

  /** Streams a file without buffering it. The request timeout covers only the response headers. */
  readStream(path: string, opts: CallOptions = {}): Promise<Readable> {
    return this.#http.stream('GET', this.#route(''), { ...opts, query: { path: absolute(path) } });
  }

  /** Creates or replaces a file; a Readable is streamed. The request timeout covers the whole upload. */
  write(path: string, data: BodyData, opts: CallOptions = {}): Promise<WriteResult> {
    return this.#http.json('PUT', this.#route(''), { ...opts, query: { path: absolute(path) }, body: data });
  }

  /** Entries of a directory. */
  async list(path: string, opts: CallOptions = {}): Promise<FileEntry[]> {
    const res = await this.#http.json<{ path: string; entries: FileEntry[] }>('GET', this.#route('/list'), {
      ...opts,
      query: { path: absolute(path) },
    });
    return res.entries;
  }

  /** Metadata of one path (not following a final symlink is up to the supervisor). */
  stat(path: string, opts: CallOptions = {}): Promise<FileEntry> {
    return this.#http.json('GET', this.#route('/stat'), { ...opts, query: { path: absolute(path) } });
  }

  /** Whether a path exists. */
  async exists(path: string, opts: CallOptions = {}): Promise<boolean> {
    try {
      await this.stat(path, opts);
      return true;
    } catch (err) {
      if (err instanceof SandforgeError && err.status === 404 && err.code !== 'sandbox_not_found') return false;
      throw err;
    }
  }

  /** Creates a directory (and its parents). */
  mkdir(path: string, opts: CallOptions = {}): Promise<FileEntry> {
    return this.#http.json('POST', this.#route('/mkdir'), { ...opts, json: { path: absolute(path) } });
  }

  /** Deletes a file, or a directory with `recursive: true` (default false). */
  async remove(path: string, opts: CallOptions & { recursive?: boolean } = {}): Promise<void> {
    const { recursive, ...call } = opts;
    await this.#http.json('DELETE', this.#route(''), {
      ...call,
      query: { path: absolute(path), recursive: recursive ? 'true' : undefined },
    });
  }

  /** Moves or renames a path. */
  async rename(from: string, to: string, opts: CallOptions = {}): Promise<void> {
    await this.#http.json('POST', this.#route('/rename'), { ...opts, json: { from: absolute(from), to: absolute(to) } });
  }

  #route(suffix: string): string {
    return sandboxPath(this.#id, `/files${suffix}`);
  }
}

function absolute(path: string): string {
  if (typeof path !== 'string' || !path.startsWith('/')) {
    throw new SandforgeError('invalid_argument', `sandbox file paths must be absolute (start with "/"), got ${JSON.stringify(path)}`);
  }
  return path;
}
