import type { FastifyInstance, RouteOptions } from 'fastify';
import { VERSION } from '../shared/version.js';

interface Collected {
  method: string;
  url: string;
  schema: Record<string, unknown> | undefined;
}

/**
 * Collects every route's schema as it is registered and turns them into an
 * OpenAPI 3.1 document; the schemas are the ones that validate requests.
 */
export function collectOpenApi(app: FastifyInstance): () => Record<string, unknown> {
  const routes: Collected[] = [];
  app.addHook('onRoute', (r: RouteOptions) => {
    const methods = Array.isArray(r.method) ? r.method : [r.method];
    for (const m of methods)
      if (m !== 'HEAD') routes.push({ method: m.toLowerCase(), url: r.url, schema: r.schema as Record<string, unknown> | undefined });
  });
  return () => {
    const paths: Record<string, Record<string, unknown>> = {};
    for (const r of routes) {
      const path = r.url.replace(/:([A-Za-z_]+)/g, '{$1}');
      const s = r.schema ?? {};
      const op: Record<string, unknown> = { summary: s.summary ?? '' };
      const params: unknown[] = [];
      for (const [where, key] of [
        ['path', 'params'],
        ['query', 'querystring'],
      ] as const) {
        const obj = s[key] as { properties?: Record<string, unknown>; required?: string[] } | undefined;
        for (const [name, schema] of Object.entries(obj?.properties ?? {})) {
          params.push({ name, in: where, required: where === 'path' || (obj?.required ?? []).includes(name), schema });
        }
      }
      if (params.length) op.parameters = params;
      if (s.body) op.requestBody = { required: true, content: { 'application/json': { schema: s.body } } };
      const responses: Record<string, unknown> = {};
      for (const [code, schema] of Object.entries((s.response as Record<string, unknown>) ?? {})) {
        responses[code] = { description: code.startsWith('2') ? 'OK' : 'Error', content: { 'application/json': { schema } } };
      }
      op.responses = Object.keys(responses).length ? responses : { 200: { description: 'OK' } };
      if (path.startsWith('/v1/')) op.security = [{ bearer: [] }];
      (paths[path] ??= {})[r.method] = op;
    }
    return {
      openapi: '3.1.0',
      info: { title: 'Sandforge API', version: VERSION },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      paths,
    };
  };
}

declare module 'fastify' {
  interface FastifySchema {
    /** One line for the OpenAPI document. */
    summary?: string;
  }
}
