import websocket from '@fastify/websocket';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { SandforgeError } from '../shared/errors.js';
import type { Runtime } from '../sandbox/local-runtime.js';
import type { SandboxManager } from '../sandbox/sandbox-manager.js';
import { checkAuthorization } from './auth.js';
import { errorHandler } from './error-handler.js';
import { collectOpenApi } from './openapi.js';
import { execStreamRoute } from './routes/exec-stream.js';
import { fileRoutes } from './routes/files.js';
import { infoRoutes } from './routes/info.js';
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
  await app.register(websocket, { options: { maxPayload: 8 * 1024 * 1024 } });
  sandboxRoutes(app, o.manager);
  fileRoutes(app, o.manager);
  execStreamRoute(app, o.manager);
  infoRoutes(app, o.manager, o.runtime, openapi);
  return app;
}
