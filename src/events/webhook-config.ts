import { readFileSync } from 'node:fs';
import { EVENT_TYPES, type EventType } from '../shared/api-types.js';
import { SandforgeError } from '../shared/errors.js';
import type { EndpointRef } from '../store/event-store.js';

/** One webhook receiver; the secret lives in memory only, never in the database. */
export interface WebhookEndpoint extends EndpointRef {
  secret: string;
}

/** Delivery tuning; every value has a flag (see `sandforge supervisor --help`). */
export interface WebhookTuning {
  /** Attempts before a delivery is dead-lettered (default 10). */
  maxAttempts: number;
  /** First retry delay; doubles each attempt, with jitter (default 1000 ms). */
  backoffMs: number;
  /** Largest retry delay (default 300 000 ms). */
  backoffMaxMs: number;
  /** Per-request timeout (default 10 000 ms). */
  timeoutMs: number;
  /** Deliveries in flight at once (default 4). */
  concurrency: number;
}

export const DEFAULT_WEBHOOK_TUNING: WebhookTuning = {
  maxAttempts: 10,
  backoffMs: 1000,
  backoffMaxMs: 300_000,
  timeoutMs: 10_000,
  concurrency: 4,
};

export interface WebhookFlags {
  webhookUrl: string[];
  webhookSecret?: string;
  webhookSecretFile?: string;
  webhooksConfig?: string;
}

interface ConfigFileEndpoint {
  name?: unknown;
  url?: unknown;
  secret?: unknown;
  secret_file?: unknown;
  events?: unknown;
  max_attempts?: unknown;
}

const bad = (msg: string) => new SandforgeError('invalid_argument', msg);

function readSecretFile(path: string, what: string): string {
  try {
    const s = readFileSync(path, 'utf8').trim();
    if (!s) throw new Error('file is empty');
    return s;
  } catch (err) {
    throw bad(`cannot read ${what} ${path}: ${(err as Error).message}`);
  }
}

function checkUrl(url: string, what: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw bad(`${what}: "${url}" is not a URL`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw bad(`${what}: only http(s) URLs are supported`);
  if (u.username || u.password) throw bad(`${what}: put credentials in the signing secret, not in the URL`);
  return u.toString();
}

/** `sandbox.*` style filters; no filter means every event. */
function matcher(filters: string[] | undefined): (t: EventType) => boolean {
  if (!filters || filters.length === 0) return () => true;
  for (const f of filters) {
    const known = f.endsWith('.*') ? EVENT_TYPES.some((t) => t.startsWith(f.slice(0, -1))) : (EVENT_TYPES as readonly string[]).includes(f);
    if (!known && f !== '*') throw bad(`webhook event filter "${f}" matches no event (known: ${EVENT_TYPES.join(', ')})`);
  }
  return (t) => filters.some((f) => f === '*' || f === t || (f.endsWith('.*') && t.startsWith(f.slice(0, -1))));
}

/**
 * Endpoints from `--webhook-url` (repeatable; else `$SANDFORGE_WEBHOOK_URL`,
 * comma-separated) signed with `--webhook-secret-file`, `$SANDFORGE_WEBHOOK_SECRET`
 * or `--webhook-secret`, plus those of `--webhooks-config FILE`:
 * `{"endpoints": [{"name", "url", "secret" | "secret_file", "events": ["sandbox.*"], "max_attempts"}]}`.
 */
export function loadWebhookEndpoints(o: WebhookFlags, tuning: WebhookTuning, env: NodeJS.ProcessEnv = process.env): WebhookEndpoint[] {
  const out: WebhookEndpoint[] = [];
  const urls = o.webhookUrl.length
    ? o.webhookUrl
    : (env.SANDFORGE_WEBHOOK_URL ?? '')
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);
  if (urls.length) {
    const secret = o.webhookSecretFile
      ? readSecretFile(o.webhookSecretFile, '--webhook-secret-file')
      : env.SANDFORGE_WEBHOOK_SECRET?.trim() || o.webhookSecret;
    if (!secret) throw bad('--webhook-url needs a signing secret: set SANDFORGE_WEBHOOK_SECRET, --webhook-secret-file or --webhook-secret');
    for (const url of urls) {
      const u = checkUrl(url, '--webhook-url');
      out.push({ name: u, url: u, secret, maxAttempts: tuning.maxAttempts, accepts: () => true });
    }
  }
  if (o.webhooksConfig) {
    let parsed: { endpoints?: ConfigFileEndpoint[] };
    try {
      parsed = JSON.parse(readFileSync(o.webhooksConfig, 'utf8')) as { endpoints?: ConfigFileEndpoint[] };
    } catch (err) {
      throw bad(`cannot read --webhooks-config ${o.webhooksConfig}: ${(err as Error).message}`);
    }
    if (!Array.isArray(parsed.endpoints)) throw bad(`--webhooks-config ${o.webhooksConfig}: needs {"endpoints": [...]}`);
    parsed.endpoints.forEach((e, i) => {
      const where = `--webhooks-config endpoints[${i}]`;
      for (const k of Object.keys(e))
        if (!['name', 'url', 'secret', 'secret_file', 'events', 'max_attempts'].includes(k)) throw bad(`${where}: unknown field "${k}"`);
      if (typeof e.url !== 'string') throw bad(`${where}: "url" is required`);
      const url = checkUrl(e.url, where);
      const secret = typeof e.secret_file === 'string' ? readSecretFile(e.secret_file, `${where} secret_file`) : e.secret;
      if (typeof secret !== 'string' || !secret) throw bad(`${where}: needs "secret" or "secret_file"`);
      if (e.events !== undefined && (!Array.isArray(e.events) || e.events.some((x) => typeof x !== 'string')))
        throw bad(`${where}: "events" must be an array of strings`);
      const maxAttempts = e.max_attempts ?? tuning.maxAttempts;
      if (!Number.isInteger(maxAttempts) || (maxAttempts as number) < 1) throw bad(`${where}: "max_attempts" must be a positive integer`);
      const name = typeof e.name === 'string' && e.name ? e.name : url;
      out.push({ name, url, secret, maxAttempts: maxAttempts as number, accepts: matcher(e.events as string[] | undefined) });
    });
  }
  const names = new Set<string>();
  for (const e of out) {
    if (names.has(e.name)) throw bad(`webhook endpoint "${e.name}" is configured twice: give each a distinct "name"`);
    names.add(e.name);
  }
  return out;
}
