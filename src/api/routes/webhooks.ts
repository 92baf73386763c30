import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { DeliveryList, DeliveryListQuery, ErrorEnvelope, WebhookDelivery } from '../../shared/api-types.js';
import { SandforgeError } from '../../shared/errors.js';
import type { EventStore } from '../../store/event-store.js';
import type { WebhookWorker } from '../../events/webhook-worker.js';
import { pageLimit } from './audit.js';

export function webhookRoutes(app: FastifyInstance, store: EventStore, worker: WebhookWorker | null): void {
  app.get<{ Querystring: DeliveryListQuery }>(
    '/v1/webhooks/deliveries',
    {
      schema: {
        summary: 'Webhook deliveries, newest first (?status=pending|delivered|dead)',
        querystring: DeliveryListQuery,
        response: { 200: DeliveryList, 400: ErrorEnvelope },
      },
    },
    async (req) =>
      store.listDeliveries({
        ...(req.query.status ? { status: req.query.status } : {}),
        ...(req.query.cursor ? { cursor: Number(req.query.cursor) } : {}),
        limit: pageLimit(req.query.limit),
      }),
  );

  app.post<{ Params: { id: string } }>(
    '/v1/webhooks/deliveries/:id/redeliver',
    {
      schema: {
        summary: 'Queue a delivery again (same event id, fresh attempt budget)',
        params: Type.Object({ id: Type.String({ pattern: '^[0-9]+$', maxLength: 20 }) }),
        response: { 202: WebhookDelivery, 400: ErrorEnvelope, 404: ErrorEnvelope, 409: ErrorEnvelope },
      },
    },
    async (req, reply) => {
      const id = Number(req.params.id);
      const d = store.getDelivery(id);
      if (!d) throw new SandforgeError('not_found', `no webhook delivery with id "${req.params.id}"`);
      if (d.status === 'pending')
        throw new SandforgeError('conflict', `delivery ${id} is already pending (attempt ${d.attempts + 1} is queued)`);
      store.requeue(id);
      worker?.pump();
      return reply.status(202).send(store.getDelivery(id));
    },
  );
}
