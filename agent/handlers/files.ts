/** /v1/files/*: read and write stream raw bytes; the rest take and return JSON. */
import type { IncomingHttpHeaders, ServerHttp2Stream } from 'node:http2';
import { createWriteStream, type Stats } from 'node:fs';
import { lstat, mkdir, open, opendir, rename, rm, rmdir, stat, unlink, chmod } from 'node:fs/promises';
import { basename, dirname, join, posix } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  ARGS_HEADER,
  ROUTES,
  MAX_DIR_ENTRIES,
  checkFilePathRequest,
  checkFileWriteArgs,
  checkMkdirRequest,
  checkRemoveRequest,
  checkRenameRequest,
  type EmptyResponse,
  type FileInfo,
  type FileListResponse,
  type FileWriteResponse,
} from '../../src/shared/protocol.js';
import type { AgentContext } from '../context.js';
import { AgentFailure, headerJson, readJson, sendJson } from '../http.js';

const norm = (p: string) => posix.resolve(p);

export function fileInfo(name: string, st: Stats): FileInfo {
  const type = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'other';
  return { name, type, size: st.size, mode: st.mode & 0o7777, mtime_ms: Math.trunc(st.mtimeMs) };
}

async function readFileRoute(stream: ServerHttp2Stream): Promise<void> {
  const { path } = await readJson(stream, checkFilePathRequest);
  const fh = await open(norm(path), 'r');
  try {
    const st = await fh.stat();
    if (st.isDirectory()) throw new AgentFailure('invalid_argument', `${path} is a directory`);
    stream.respond({ ':status': 200, 'content-type': 'application/octet-stream', 'sandforge-file-size': String(st.size) });
  } catch (err) {
    await fh.close();
    throw err;
  }
  // The read stream closes the handle. An error mid-body resets the stream
  // (sendFailure after headers), so a truncated file never looks complete.
  await pipeline(fh.createReadStream({ highWaterMark: 256 * 1024 }), stream);
}

async function writeFileRoute(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, ctx: AgentContext): Promise<void> {
  const args = headerJson(headers, ARGS_HEADER, checkFileWriteArgs);
  const target = norm(args.path);
  if (target === '/') throw new AgentFailure('invalid_argument', 'cannot write to /');
  const dir = dirname(target);
  if (args.mkdirs) await mkdir(dir, { recursive: true });
  const existing = await stat(target).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return null;
    throw err;
  });
  if (existing?.isDirectory()) throw new AgentFailure('invalid_argument', `${args.path} is a directory`);
  const mode = args.mode ?? (existing ? existing.mode & 0o7777 : 0o644);
  const tmp = join(dir, `.${basename(target).slice(0, 200)}.sf-${ctx.uniqueToken()}.tmp`);
  const out = createWriteStream(tmp, { flags: 'wx', mode: 0o600 });
  let bytes = 0;
  try {
    const counter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        bytes += chunk.length;
        cb(null, chunk);
      },
    });
    const aborted = new Promise<never>((_r, reject) =>
      stream.once('aborted', () => reject(new AgentFailure('invalid_argument', 'upload aborted'))),
    );
    aborted.catch(() => undefined);
    await Promise.race([pipeline(stream, counter, out), aborted]);
    await chmod(tmp, mode);
    await rename(tmp, target);
  } catch (err) {
    out.destroy();
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  sendJson(stream, 200, { bytes_written: bytes } satisfies FileWriteResponse);
}

async function listRoute(stream: ServerHttp2Stream): Promise<void> {
  const { path } = await readJson(stream, checkFilePathRequest);
  const dir = await opendir(norm(path), { bufferSize: 256 });
  const names: string[] = [];
  let truncated = false;
  for await (const d of dir) {
    if (names.length === MAX_DIR_ENTRIES) {
      truncated = true;
      break; // leaving the loop closes the Dir
    }
    names.push(d.name);
  }
  const entries: FileInfo[] = [];
  for (let i = 0; i < names.length; i += 64) {
    const batch = await Promise.all(
      names.slice(i, i + 64).map((n) =>
        lstat(join(norm(path), n)).then(
          (st) => fileInfo(n, st),
          () => null,
        ),
      ),
    );
    for (const e of batch) if (e) entries.push(e); // vanished meanwhile
  }
  sendJson(stream, 200, { entries, truncated } satisfies FileListResponse);
}

async function statRoute(stream: ServerHttp2Stream): Promise<void> {
  const { path } = await readJson(stream, checkFilePathRequest);
  const p = norm(path);
  sendJson(stream, 200, fileInfo(p === '/' ? '' : basename(p), await stat(p)));
}

async function mkdirRoute(stream: ServerHttp2Stream): Promise<void> {
  const req = await readJson(stream, checkMkdirRequest);
  await mkdir(norm(req.path), { recursive: req.recursive ?? true, ...(req.mode !== undefined ? { mode: req.mode } : {}) });
  sendJson(stream, 200, {} satisfies EmptyResponse);
}

async function removeRoute(stream: ServerHttp2Stream): Promise<void> {
  const req = await readJson(stream, checkRemoveRequest);
  const p = norm(req.path);
  if (p === '/') throw new AgentFailure('invalid_argument', 'refusing to remove /');
  if (req.recursive) {
    await lstat(p); // rm would report a missing path as ENOENT too, but only after walking
    await rm(p, { recursive: true, force: false });
  } else if ((await lstat(p)).isDirectory()) {
    await rmdir(p);
  } else {
    await unlink(p);
  }
  sendJson(stream, 200, {} satisfies EmptyResponse);
}

async function renameRoute(stream: ServerHttp2Stream): Promise<void> {
  const req = await readJson(stream, checkRenameRequest);
  await rename(norm(req.from), norm(req.to));
  sendJson(stream, 200, {} satisfies EmptyResponse);
}

/** Handlers by route; each validates its own input. */
export const fileRoutes = {
  [ROUTES.fileRead]: { method: 'POST', run: (s: ServerHttp2Stream) => readFileRoute(s) },
  [ROUTES.fileWrite]: {
    method: 'PUT',
    run: (s: ServerHttp2Stream, h: IncomingHttpHeaders, ctx: AgentContext) => writeFileRoute(s, h, ctx),
  },
  [ROUTES.fileList]: { method: 'POST', run: (s: ServerHttp2Stream) => listRoute(s) },
  [ROUTES.fileStat]: { method: 'POST', run: (s: ServerHttp2Stream) => statRoute(s) },
  [ROUTES.fileMkdir]: { method: 'POST', run: (s: ServerHttp2Stream) => mkdirRoute(s) },
  [ROUTES.fileRemove]: { method: 'POST', run: (s: ServerHttp2Stream) => removeRoute(s) },
  [ROUTES.fileRename]: { method: 'POST', run: (s: ServerHttp2Stream) => renameRoute(s) },
} as const;
