import type { Command } from 'commander';
import type { Sandbox } from '../../shared/api-types.js';
import { clientFromFlags, printJson, withClientOptions, type ClientFlags } from './client-options.js';

export function registerPsCommand(program: Command): void {
  withClientOptions(program.command('ps').description('list sandboxes')).action(async (o: ClientFlags) => {
    const sandboxes = await clientFromFlags(o).list();
    if (o.json) return printJson(sandboxes);
    process.stdout.write(formatTable(sandboxTable(sandboxes, Date.now())));
  });
}

function sandboxTable(sandboxes: Sandbox[], now: number): string[][] {
  const rows = [['ID', 'STATUS', 'IMAGE', 'CPU', 'MEM', 'CREATED']];
  for (const s of sandboxes) {
    rows.push([s.id, s.status, s.image, String(s.cpu), `${s.memory_mb}MB`, age(s.created_at, now)]);
  }
  return rows;
}

function formatTable(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('   ') + '\n').join('');
}

function age(iso: string, now: number): string {
  const seconds = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (!Number.isFinite(seconds)) return iso;
  const units: [number, string][] = [
    [86400, 'day'],
    [3600, 'hour'],
    [60, 'minute'],
  ];
  for (const [size, name] of units) {
    if (seconds >= size) {
      const n = Math.floor(seconds / size);
      return `${n} ${name}${n === 1 ? '' : 's'} ago`;
    }
  }
  return `${seconds} second${seconds === 1 ? '' : 's'} ago`;
}
