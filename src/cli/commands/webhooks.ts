import { Option, type Command } from 'commander';
import type { WebhookDelivery } from '../../shared/api-types.js';
import { apiCall, formatTable } from './api-call.js';
import { printJson, withClientOptions, type ClientFlags } from './client-options.js';

type ListFlags = ClientFlags & { status?: string; limit?: string };

export function registerWebhooksCommands(program: Command): void {
  const wh = program.command('webhooks').description('webhook deliveries: list, redeliver');
  withClientOptions(
    wh
      .command('ls')
      .description('list deliveries, newest first')
      .addOption(new Option('--status <status>', 'only this status').choices(['pending', 'delivered', 'dead']))
      .option('--limit <n>', 'at most this many (1..500)', '100'),
  ).action(async (o: ListFlags) => {
    const q = new URLSearchParams({ limit: o.limit ?? '100', ...(o.status ? { status: o.status } : {}) });
    const r = await apiCall<{ deliveries: WebhookDelivery[] }>(o, 'GET', `v1/webhooks/deliveries?${q}`);
    if (o.json) return printJson(r.deliveries);
    const rows = [['ID', 'EVENT', 'EVENT ID', 'ENDPOINT', 'STATUS', 'ATTEMPTS', 'LAST ERROR']];
    for (const d of r.deliveries)
      rows.push([d.id, d.event, d.event_id, d.endpoint, d.status, `${d.attempts}/${d.max_attempts}`, d.last_error ?? '']);
    process.stdout.write(formatTable(rows));
  });
  withClientOptions(wh.command('redeliver').description('queue a delivery again (same event id)').argument('<id>', 'delivery id')).action(
    async (id: string, o: ClientFlags) => {
      const d = await apiCall<WebhookDelivery>(o, 'POST', `v1/webhooks/deliveries/${encodeURIComponent(id)}/redeliver`);
      if (o.json) return printJson(d);
      process.stdout.write(`${d.id} queued (${d.event} ${d.event_id} → ${d.endpoint})\n`);
    },
  );
}
