import type { FastifyInstance } from 'fastify';
import { AuditList, AuditQuery, ErrorEnvelope } from '../../shared/api-types.js';
import { SandforgeError } from '../../shared/errors.js';
import type { EventStore } from '../../store/event-store.js';

/** Parses `?limit=` (1..500, default 100). */
export function pageLimit(raw: string | undefined): number {
  if (raw === undefined) return 100;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 500)
    throw new SandforgeError('invalid_argument', 'querystring/limit: must be an integer in 1..500');
  return n;
}

function isoTime(raw: string | undefined, name: string): string | undefined {
  if (raw === undefined) return undefined;
  const t = Date.parse(raw);
  if (Number.isNaN(t)) throw new SandforgeError('invalid_argument', `querystring/${name}: must be an ISO 8601 time`);
  return new Date(t).toISOString();
}

export function auditRoutes(app: FastifyInstance, store: EventStore): void {
  app.get<{ Querystring: AuditQuery }>(
    '/v1/audit',
    {
      schema: {
        summary: 'Audit log, newest first; cursor pagination',
        querystring: AuditQuery,
        response: { 200: AuditList, 400: ErrorEnvelope },
      },
    },
    async (req) => {
      const q = req.query;
      return store.listAudit({
        ...(q.sandbox_id ? { sandbox_id: q.sandbox_id } : {}),
        ...(q.kind ? { kind: q.kind } : {}),
        ...(q.since ? { since: isoTime(q.since, 'since')! } : {}),
        ...(q.until ? { until: isoTime(q.until, 'until')! } : {}),
        ...(q.cursor ? { cursor: Number(q.cursor) } : {}),
        limit: pageLimit(q.limit),
      });
    },
  );
}
