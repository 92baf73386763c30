import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import {
  CreateSandboxRequest,
  DeleteResult,
  ErrorEnvelope,
  ExecuteRequest,
  ExecuteResult,
  Sandbox,
  type StreamServerMessage,
} from '../../shared/api-types.js';
import { toSandforgeError } from '../../shared/errors.js';
import type { SandboxManager } from '../../sandbox/sandbox-manager.js';

export const IdParams = Type.Object({ id: Type.String({ maxLength: 64 }) });
const errors = { 400: ErrorEnvelope, 401: ErrorEnvelope, 404: ErrorEnvelope, 409: ErrorEnvelope };

export function sandboxRoutes(app: FastifyInstance, manager: SandboxManager): void {
  app.post<{ Body: CreateSandboxRequest }>(
    '/v1/sandboxes',
    {
      schema: {
        summary: 'Create a sandbox (a clone of a ready template)',
        body: CreateSandboxRequest,
        response: { 201: Sandbox, ...errors },
      },
    },
    async (req, reply) => {
      const sb = await manager.create(req.body ?? {});
      return reply.status(201).send(sb);
    },
  );

  app.get('/v1/sandboxes', { schema: { summary: 'List sandboxes', response: { 200: Type.Array(Sandbox) } } }, async () => manager.list());

  app.get<{ Params: { id: string } }>(
    '/v1/sandboxes/:id',
    { schema: { summary: 'Get one sandbox', params: IdParams, response: { 200: Sandbox, ...errors } } },
    async (req) => manager.get(req.params.id),
  );

  app.delete<{ Params: { id: string } }>(
    '/v1/sandboxes/:id',
    { schema: { summary: 'Destroy a sandbox', params: IdParams, response: { 200: DeleteResult, ...errors } } },
    async (req) => manager.destroy(req.params.id),
  );

  app.post<{ Params: { id: string }; Body: ExecuteRequest }>(
    '/v1/sandboxes/:id/execute',
    {
      schema: {
        summary: 'Run a command; buffered JSON result, or NDJSON stream with Accept: application/x-ndjson',
        params: IdParams,
        body: ExecuteRequest,
        response: { 200: ExecuteResult, ...errors },
      },
    },
    async (req, reply) => {
      const id = req.params.id;
      if (!wantsNdjson(req.headers.accept)) return manager.execute(id, req.body);

      const spec = manager.execSpec(id, { ...req.body, stdin: req.body.stdin !== undefined });
      await manager.agent(id); // 404/409 as JSON before the stream starts
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store', 'x-request-id': req.id });
      const send = (m: StreamServerMessage) => res.write(JSON.stringify(m) + '\n');
      try {
        const h = await manager.stream(id, spec, {
          onStarted: (pid) => send({ type: 'started', pid }),
          onStdout: (b) => send({ type: 'stdout', data: b.toString('base64') }),
          onStderr: (b) => send({ type: 'stderr', data: b.toString('base64') }),
        });
        if (req.body.stdin !== undefined) {
          h.writeStdin(Buffer.from(req.body.stdin));
          h.closeStdin();
        }
        // The client hanging up ends the command (the request's own 'close' fires once its body is read).
        res.on('close', () => {
          if (!res.writableFinished) h.signal('SIGKILL');
        });
        const exit = await manager.whileAlive(id, h.wait());
        send({ type: 'exit', exit_code: exit.exit_code, signal: exit.signal, timed_out: exit.timed_out, duration_ms: exit.duration_ms });
      } catch (err) {
        const e = toSandforgeError(err);
        send({ type: 'error', code: e.code, message: e.message });
      }
      res.end();
    },
  );
}

function wantsNdjson(accept: string | undefined): boolean {
  return !!accept && /application\/(x-)?ndjson/i.test(accept);
}
