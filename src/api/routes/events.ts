import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { EventHub } from '../../events/event-hub.js';

/** Keep-alive comment interval; proxies drop idle streams after ~30–60 s. */
const KEEPALIVE_MS = 15_000;

/**
 * `GET /v1/events`: Server-Sent Events of the outbox. `id:` is the event's
 * global outbox sequence, so `Last-Event-ID` (or `?after=`) resumes exactly.
 */
export function eventRoutes(app: FastifyInstance, hub: EventHub): void {
  // Open streams would hold app.close() forever; end them so shutdown can drain.
  const open = new Set<import('node:http').ServerResponse>();
  app.addHook('preClose', async () => {
    for (const res of open) res.end();
  });
  app.get<{ Querystring: { after?: string } }>(
    '/v1/events',
    {
      schema: {
        summary: 'Live event stream (text/event-stream), resumable with Last-Event-ID',
        querystring: Type.Object(
          { after: Type.Optional(Type.String({ pattern: '^[0-9]+$', maxLength: 20 })) },
          { additionalProperties: false },
        ),
      },
    },
    (req, reply) => {
      const header = req.headers['last-event-id'];
      const fromHeader = typeof header === 'string' && /^\d+$/.test(header.trim()) ? Number(header.trim()) : null;
      let last = fromHeader ?? (req.query.after !== undefined ? Number(req.query.after) : hub.store.lastEventSeq());
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, {
        'content-type': 'text/event-stream',
        'cache-control': 'no-store',
        connection: 'keep-alive',
        'x-accel-buffering': 'no',
      });
      open.add(res);
      res.write(': connected\n\n');
      const flush = () => {
        for (;;) {
          const rows = hub.store.eventsAfter(last, 500);
          for (const e of rows) {
            res.write(`id: ${e.seq}\nevent: ${e.type}\ndata: ${e.body}\n\n`);
            last = e.seq;
          }
          if (rows.length < 500) break;
        }
      };
      flush();
      const unsubscribe = hub.onEvents(flush);
      const keepalive = setInterval(() => res.write(': keep-alive\n\n'), KEEPALIVE_MS);
      res.on('close', () => {
        open.delete(res);
        clearInterval(keepalive);
        unsubscribe();
      });
    },
  );
}
