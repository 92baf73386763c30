import websocket from '@fastify/websocket';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { SandforgeError } from '../shared/errors.js';
import type { Runtime } from '../sandbox/local-runtime.js';
import type { SandboxManager } from '../sandbox/sandbox-manager.js';
import type { EventHub } from '../events/event-hub.js';
import { requestContext } from '../events/request-context.js';
import type { WebhookWorker } from '../events/webhook-worker.js';
import { checkAuthorization, tokenId } from './auth.js';
import { errorHandler, toApiError } from './error-handler.js';
import { collectOpenApi } from './openapi.js';
import { execStreamRoute } from './routes/exec-stream.js';
import { fileRoutes } from './routes/files.js';
import { auditRoutes } from './routes/audit.js';
import { eventRoutes } from './routes/events.js';
import { infoRoutes } from './routes/info.js';
import { webhookRoutes } from './routes/webhooks.js';
import { sandboxRoutes } from './routes/sandboxes.js';

export interface AppOptions {
  manager: SandboxManager;
  runtime: Runtime;
  /** Bearer token every /v1/ route requires; null only with --insecure-no-auth. */
  token: string | null;
  logger: Logger;
  /** JSON body limit in bytes (file uploads have their own, larger limit). */
  bodyLimitBytes?: number;
  /** Proxy addresses whose X-Forwarded-For is believed (for logs). */
  trustProxy?: string[];
  /** Outbox and audit log: enables /v1/events, /v1/audit, /v1/webhooks/… and file-write audit. */
  events?: EventHub;
  webhookWorker?: WebhookWorker | null;
}

/** Builds the HTTP app without listening, so tests can `inject()` or listen on port 0. */
export async function buildApp(o: AppOptions): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: o.logger as unknown as FastifyBaseLogger,
    bodyLimit: o.bodyLimitBytes ?? 16 * 1024 * 1024,
    trustProxy: o.trustProxy && o.trustProxy.length ? o.trustProxy : false,
    genReqId: () => `req_${Math.random().toString(36).slice(2, 12)}`,
    // Unknown fields are rejected, not silently dropped; types are not coerced.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: false, allErrors: false } },
  });
  const openapi = collectOpenApi(app);
  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler((req, reply) => {
    const e = new SandforgeError('not_found', `no route ${req.method} ${req.url.split('?')[0]}`);
    void reply.status(404).send(e.toBody(req.id));
  });
  app.addHook('onRequest', async (req) => {
    if (req.url.startsWith('/v1/')) checkAuthorization(o.token, req.headers.authorization);
  });
  // Who acts: the token's id (never the token), carried to audit rows through the handler's async context.
  const actor = o.token ? tokenId(o.token) : 'anonymous';
  app.addHook('preHandler', (req, _reply, done) => requestContext.run({ actor, request_id: req.id }, done));
  if (o.events) auditFileWrites(app, o.events, actor);
  await app.register(websocket, { options: { maxPayload: 8 * 1024 * 1024 } });
  sandboxRoutes(app, o.manager);
  fileRoutes(app, o.manager);
  execStreamRoute(app, o.manager);
  infoRoutes(app, o.manager, o.runtime, openapi);
  if (o.events) {
    eventRoutes(app, o.events);
    auditRoutes(app, o.events.store);
    webhookRoutes(app, o.events.store, o.webhookWorker ?? null);
  }
  return app;
}

/** File uploads are audited here, after the response, so the route stays a plain agent call. */
function auditFileWrites(app: FastifyInstance, hub: EventHub, actor: string): void {
  const errorCodes = new WeakMap<object, string>();
  app.addHook('onError', async (req, _reply, err) => {
    errorCodes.set(req, toApiError(err).code);
  });
  app.addHook('onResponse', async (req, reply) => {
    if (req.method !== 'PUT' || req.routeOptions.url !== '/v1/sandboxes/:id/files') return;
    const id = (req.params as { id?: string }).id ?? null;
    const path = (req.query as { path?: string }).path ?? null;
    const code = errorCodes.get(req) ?? (reply.statusCode >= 400 ? 'internal' : null);
    hub.tx(() =>
      hub.audit({
        kind: 'file.write',
        sandbox_id: id,
        startedAt: Date.now() - reply.elapsedTime,
        detail: { path, bytes: Number(req.headers['content-length'] ?? NaN) || null, status: reply.statusCode },
        error_code: code,
        actor,
      }),
    );
  });
}
