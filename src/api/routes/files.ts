import { posix } from 'node:path';
import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { ErrorEnvelope, FileEntry, MkdirRequest, PathQuery, RenameRequest } from '../../shared/api-types.js';
import { SandforgeError } from '../../shared/errors.js';
import type { FileInfo } from '../../shared/protocol.js';
import type { SandboxManager } from '../../sandbox/sandbox-manager.js';
import { IdParams } from './sandboxes.js';

type P = { Params: { id: string }; Querystring: PathQuery };
const errors = { 400: ErrorEnvelope, 401: ErrorEnvelope, 404: ErrorEnvelope, 409: ErrorEnvelope };

/** Largest single upload; the body is streamed to the guest, never held in memory. */
export const MAX_UPLOAD_BYTES = 2 * 1024 * 1024 * 1024;

export function toEntry(f: FileInfo, path: string): FileEntry {
  return { name: f.name, path, type: f.type, size: f.size, mode: f.mode, mtime: new Date(f.mtime_ms).toISOString() };
}

export function fileRoutes(app: FastifyInstance, manager: SandboxManager): void {
  // Raw uploads reach the handler as the request stream itself.
  app.addContentTypeParser('application/octet-stream', (_req, payload, done) => done(null, payload));

  app.get<P>(
    '/v1/sandboxes/:id/files',
    { schema: { summary: 'Download a file (raw bytes, streamed)', params: IdParams, querystring: PathQuery, response: errors } },
    async (req, reply) => {
      const agent = await manager.agent(req.params.id);
      const stream = await agent.readFile(req.query.path);
      return reply.type('application/octet-stream').send(stream);
    },
  );

  app.put<P>(
    '/v1/sandboxes/:id/files',
    {
      schema: {
        summary: 'Upload a file (raw body, streamed)',
        params: IdParams,
        querystring: PathQuery,
        response: { 200: Type.Object({ path: Type.String(), size: Type.Integer() }), ...errors },
      },
      bodyLimit: MAX_UPLOAD_BYTES,
    },
    async (req) => {
      const agent = await manager.agent(req.params.id);
      const body = req.body as NodeJS.ReadableStream | Buffer | string | undefined;
      if (body === undefined) throw new SandforgeError('bad_request', 'upload needs a body with Content-Type: application/octet-stream');
      const data = typeof body === 'string' ? Buffer.from(body) : body;
      const r = await agent.writeFile(req.query.path, data as never, { mkdirs: true });
      return { path: req.query.path, size: r.bytes_written };
    },
  );

  app.delete<P>(
    '/v1/sandboxes/:id/files',
    {
      schema: {
        summary: 'Remove a file or directory',
        params: IdParams,
        querystring: PathQuery,
        response: { 200: Type.Object({ path: Type.String(), deleted: Type.Boolean() }), ...errors },
      },
    },
    async (req) => {
      await (await manager.agent(req.params.id)).remove(req.query.path, { recursive: req.query.recursive === 'true' });
      return { path: req.query.path, deleted: true };
    },
  );

  app.get<P>(
    '/v1/sandboxes/:id/files/list',
    {
      schema: {
        summary: 'List a directory',
        params: IdParams,
        querystring: PathQuery,
        response: { 200: Type.Object({ path: Type.String(), entries: Type.Array(FileEntry) }), ...errors },
      },
    },
    async (req) => {
      const dir = req.query.path;
      const r = await (await manager.agent(req.params.id)).listDir(dir);
      return { path: dir, entries: r.entries.map((e) => toEntry(e, posix.join(dir, e.name))) };
    },
  );

  app.get<P>(
    '/v1/sandboxes/:id/files/stat',
    { schema: { summary: 'Stat a path', params: IdParams, querystring: PathQuery, response: { 200: FileEntry, ...errors } } },
    async (req) => toEntry(await (await manager.agent(req.params.id)).stat(req.query.path), req.query.path),
  );

  app.post<{ Params: { id: string }; Body: { path: string } }>(
    '/v1/sandboxes/:id/files/mkdir',
    {
      schema: {
        summary: 'Create a directory (with parents)',
        params: IdParams,
        body: MkdirRequest,
        response: { 200: FileEntry, ...errors },
      },
    },
    async (req) => {
      const agent = await manager.agent(req.params.id);
      await agent.mkdir(req.body.path, { recursive: true });
      return toEntry(await agent.stat(req.body.path), req.body.path);
    },
  );

  app.post<{ Params: { id: string }; Body: { from: string; to: string } }>(
    '/v1/sandboxes/:id/files/rename',
    {
      schema: {
        summary: 'Rename a path',
        params: IdParams,
        body: RenameRequest,
        response: { 200: Type.Object({ from: Type.String(), to: Type.String() }), ...errors },
      },
    },
    async (req) => {
      await (await manager.agent(req.params.id)).rename(req.body.from, req.body.to);
      return { from: req.body.from, to: req.body.to };
    },
  );
}
