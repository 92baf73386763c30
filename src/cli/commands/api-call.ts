import { SandforgeApiError } from '../../../sdk/src/errors.js';
import { SandforgeError, isErrorCode } from '../../shared/errors.js';
import type { ClientFlags } from './client-options.js';

/** A JSON call to a /v1 route the SDK does not wrap (events, audit, webhooks); errors become SandforgeApiError. */
export async function apiCall<T>(flags: ClientFlags, method: 'GET' | 'POST', path: string): Promise<T> {
  const url = new URL(path, flags.url.endsWith('/') ? flags.url : `${flags.url}/`);
  let res: Response;
  try {
    res = await fetch(url, {
      method,
      headers: flags.token ? { authorization: `Bearer ${flags.token}` } : {},
      signal: AbortSignal.timeout(30_000),
    });
  } catch (err) {
    throw new SandforgeError(
      'agent_unavailable',
      `cannot reach the Sandforge supervisor at ${flags.url} (${(err as Error).message}); check SANDFORGE_URL or --url`,
    );
  }
  const text = await res.text();
  const body = text ? (JSON.parse(text) as unknown) : null;
  if (!res.ok) {
    const e = (body as { error?: { code?: string; message?: string; details?: Record<string, unknown>; request_id?: string } })?.error;
    const code = isErrorCode(e?.code) ? e.code : 'internal';
    throw new SandforgeApiError(code, e?.message ?? `HTTP ${res.status}`, {
      status: res.status,
      requestId: e?.request_id,
      details: e?.details,
    });
  }
  return body as T;
}

/** Left-aligned columns, two spaces apart. */
export function formatTable(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ') + '\n').join('');
}
