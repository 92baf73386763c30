import { Option, type Command } from 'commander';
import type { AuditEntry } from '../../shared/api-types.js';
import { apiCall, formatTable } from './api-call.js';
import { printJson, withClientOptions, type ClientFlags } from './client-options.js';

type AuditFlags = ClientFlags & { sandbox?: string; kind?: string; since?: string; until?: string; limit?: string };

export function registerAuditCommand(program: Command): void {
  withClientOptions(
    program
      .command('audit')
      .description('show the audit log, newest first')
      .option('--sandbox <id>', 'only this sandbox')
      .addOption(
        new Option('--kind <kind>', 'only this kind').choices(['sandbox.create', 'sandbox.execute', 'sandbox.destroy', 'file.write']),
      )
      .option('--since <time>', 'ISO time, inclusive')
      .option('--until <time>', 'ISO time, exclusive')
      .option('--limit <n>', 'at most this many (1..500)', '100'),
  ).action(async (o: AuditFlags) => {
    const q = new URLSearchParams({ limit: o.limit ?? '100' });
    if (o.sandbox) q.set('sandbox_id', o.sandbox);
    if (o.kind) q.set('kind', o.kind);
    if (o.since) q.set('since', o.since);
    if (o.until) q.set('until', o.until);
    const r = await apiCall<{ entries: AuditEntry[] }>(o, 'GET', `v1/audit?${q}`);
    if (o.json) return printJson(r.entries);
    const rows = [['TIME', 'ACTOR', 'KIND', 'SANDBOX', 'OUTCOME', 'MS', 'WHAT']];
    for (const e of r.entries) {
      const outcome = e.outcome === 'ok' ? (e.exit_code !== null ? `exit ${e.exit_code}` : 'ok') : `error ${e.error_code ?? ''}`;
      const d = e.detail as { shell?: string; argv?: string[]; path?: string; reason?: string };
      const what = d.shell ?? (d.argv ? JSON.stringify(d.argv) : (d.path ?? d.reason ?? ''));
      rows.push([
        e.at,
        e.actor,
        e.kind,
        e.sandbox_id ?? '-',
        outcome,
        e.duration_ms === null ? '' : String(Math.round(e.duration_ms)),
        what,
      ]);
    }
    process.stdout.write(formatTable(rows));
  });
}
