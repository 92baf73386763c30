import type Database from 'better-sqlite3';
import { randomBytes } from 'node:crypto';
import type { AuditEntry, EventType, WebhookDelivery, WebhookDeliveryStatus } from '../shared/api-types.js';

/** One outbox event as stored: `body` is the exact compact JSON every delivery sends. */
export interface EventRow {
  seq: number;
  id: string;
  type: EventType;
  sandbox_id: string | null;
  created_at: string;
  body: string;
}

interface DeliveryRaw {
  id: number;
  event_seq: number;
  event_id: string;
  event_type: EventType;
  endpoint: string;
  url: string;
  status: WebhookDeliveryStatus;
  attempts: number;
  max_attempts: number;
  next_attempt_at: number;
  last_status: number | null;
  last_error: string | null;
  created_at: string;
  updated_at: string;
  delivered_at: string | null;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  type TEXT NOT NULL,
  sandbox_id TEXT,
  created_at TEXT NOT NULL,
  body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS event_sequences (
  sandbox_key TEXT PRIMARY KEY,
  last INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  event_seq INTEGER NOT NULL REFERENCES events(seq),
  endpoint TEXT NOT NULL,
  url TEXT NOT NULL,
  status TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  max_attempts INTEGER NOT NULL,
  next_attempt_at INTEGER NOT NULL,
  last_status INTEGER,
  last_error TEXT,
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL,
  delivered_at TEXT
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries(status, next_attempt_at);
CREATE TABLE IF NOT EXISTS audit_log (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  at TEXT NOT NULL,
  actor TEXT NOT NULL,
  kind TEXT NOT NULL,
  sandbox_id TEXT,
  request_id TEXT,
  detail TEXT NOT NULL,
  outcome TEXT NOT NULL,
  error_code TEXT,
  exit_code INTEGER,
  duration_ms REAL
);
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log(at);
CREATE INDEX IF NOT EXISTS audit_log_sandbox ON audit_log(sandbox_id, id);
`;

/** A delivery target, as the outbox needs it when an event is appended. */
export interface EndpointRef {
  name: string;
  url: string;
  maxAttempts: number;
  accepts(type: EventType): boolean;
}

/**
 * The outbox (events + one delivery row per endpoint) and the audit log, in the
 * supervisor's SQLite database. Appends are meant to run inside the caller's
 * `db.transaction` so an event commits with the state change that caused it.
 */
export class EventStore {
  constructor(readonly db: Database.Database) {
    db.exec(SCHEMA);
  }

  /** Appends an event; `data` gets `sandbox_id` and the per-sandbox `sequence`. Returns the row. */
  append(type: EventType, sandboxId: string | null, data: Record<string, unknown>, endpoints: readonly EndpointRef[]): EventRow {
    const key = sandboxId ?? '';
    const seqRow = this.db
      .prepare(
        'INSERT INTO event_sequences (sandbox_key, last) VALUES (?, 1) ON CONFLICT(sandbox_key) DO UPDATE SET last = last + 1 RETURNING last',
      )
      .get(key) as { last: number };
    const id = `evt_${randomBytes(12).toString('hex')}`;
    const now = new Date();
    const created_at = now.toISOString();
    const body = JSON.stringify({
      event: type,
      id,
      timestamp: created_at,
      data: { sandbox_id: sandboxId, sequence: seqRow.last, ...data },
    });
    const r = this.db
      .prepare('INSERT INTO events (id, type, sandbox_id, created_at, body) VALUES (?, ?, ?, ?, ?)')
      .run(id, type, sandboxId, created_at, body);
    const seq = Number(r.lastInsertRowid);
    const ins = this.db.prepare(
      `INSERT INTO webhook_deliveries (event_seq, endpoint, url, status, max_attempts, next_attempt_at, created_at, updated_at)
       VALUES (?, ?, ?, 'pending', ?, ?, ?, ?)`,
    );
    for (const e of endpoints) if (e.accepts(type)) ins.run(seq, e.name, e.url, e.maxAttempts, now.getTime(), created_at, created_at);
    return { seq, id, type, sandbox_id: sandboxId, created_at, body };
  }

  /** Events after global sequence `afterSeq`, oldest first (SSE replay). */
  eventsAfter(afterSeq: number, limit = 1000): EventRow[] {
    return this.db.prepare('SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?').all(afterSeq, limit) as EventRow[];
  }

  lastEventSeq(): number {
    return (this.db.prepare('SELECT COALESCE(MAX(seq), 0) AS s FROM events').get() as { s: number }).s;
  }

  /** Pending deliveries due by `nowMs`, oldest first, skipping the ones in flight. */
  dueDeliveries(endpoint: string, nowMs: number, limit: number, exclude: ReadonlySet<number>): (DeliveryRaw & { body: string })[] {
    const rows = this.db
      .prepare(
        `SELECT d.*, e.id AS event_id, e.type AS event_type, e.body AS body FROM webhook_deliveries d JOIN events e ON e.seq = d.event_seq
         WHERE d.status = 'pending' AND d.endpoint = ? AND d.next_attempt_at <= ? ORDER BY d.next_attempt_at, d.id LIMIT ?`,
      )
      .all(endpoint, nowMs, limit + exclude.size) as (DeliveryRaw & { body: string })[];
    return rows.filter((r) => !exclude.has(r.id)).slice(0, limit);
  }

  /** When the next pending delivery of one of `endpoints` is due (ms epoch), or null if none is pending. */
  nextDueAt(endpoints: readonly string[]): number | null {
    if (endpoints.length === 0) return null;
    const r = this.db
      .prepare(
        `SELECT MIN(next_attempt_at) AS t FROM webhook_deliveries WHERE status = 'pending' AND endpoint IN (${endpoints.map(() => '?').join(',')})`,
      )
      .get(...endpoints) as { t: number | null };
    return r.t;
  }

  /** Dead-letters pending deliveries whose endpoint is not among `names`. */
  deadLetterOtherEndpoints(names: readonly string[]): void {
    const now = new Date().toISOString();
    this.db
      .prepare(
        `UPDATE webhook_deliveries SET status = 'dead', last_error = 'endpoint no longer configured', updated_at = ?
         WHERE status = 'pending' AND endpoint NOT IN (SELECT value FROM json_each(?))`,
      )
      .run(now, JSON.stringify(names));
  }

  recordAttempt(
    id: number,
    patch: {
      status: WebhookDeliveryStatus;
      attempts: number;
      next_attempt_at: number;
      last_status: number | null;
      last_error: string | null;
    },
  ): void {
    const now = new Date().toISOString();
    this.db
      .prepare(
        `UPDATE webhook_deliveries SET status = @status, attempts = @attempts, next_attempt_at = @next_attempt_at, last_status = @last_status,
         last_error = @last_error, updated_at = @now, delivered_at = CASE WHEN @status = 'delivered' THEN @now ELSE delivered_at END WHERE id = @id`,
      )
      .run({ ...patch, id, now });
  }

  listDeliveries(q: { status?: WebhookDeliveryStatus; cursor?: number; limit: number }): {
    deliveries: WebhookDelivery[];
    next_cursor: string | null;
  } {
    const rows = this.db
      .prepare(
        `SELECT d.*, e.id AS event_id, e.type AS event_type FROM webhook_deliveries d JOIN events e ON e.seq = d.event_seq
         WHERE (@status IS NULL OR d.status = @status) AND (@cursor IS NULL OR d.id < @cursor) ORDER BY d.id DESC LIMIT @limit`,
      )
      .all({ status: q.status ?? null, cursor: q.cursor ?? null, limit: q.limit + 1 }) as DeliveryRaw[];
    const more = rows.length > q.limit;
    const page = rows.slice(0, q.limit);
    return { deliveries: page.map(toDelivery), next_cursor: more && page.length ? String(page[page.length - 1]!.id) : null };
  }

  getDelivery(id: number): WebhookDelivery | undefined {
    const r = this.db
      .prepare(
        'SELECT d.*, e.id AS event_id, e.type AS event_type FROM webhook_deliveries d JOIN events e ON e.seq = d.event_seq WHERE d.id = ?',
      )
      .get(id) as DeliveryRaw | undefined;
    return r ? toDelivery(r) : undefined;
  }

  /** Puts a delivery back in the queue with a fresh attempt budget; same event, same id. */
  requeue(id: number): void {
    const now = new Date();
    this.db
      .prepare(
        "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = ?, last_error = NULL, updated_at = ? WHERE id = ?",
      )
      .run(now.getTime(), now.toISOString(), id);
  }

  insertAudit(a: Omit<AuditEntry, 'id'>): void {
    this.db
      .prepare(
        `INSERT INTO audit_log (at, actor, kind, sandbox_id, request_id, detail, outcome, error_code, exit_code, duration_ms)
         VALUES (@at, @actor, @kind, @sandbox_id, @request_id, @detail, @outcome, @error_code, @exit_code, @duration_ms)`,
      )
      .run({ ...a, detail: JSON.stringify(a.detail) });
  }

  listAudit(q: { sandbox_id?: string; kind?: string; since?: string; until?: string; cursor?: number; limit: number }): {
    entries: AuditEntry[];
    next_cursor: string | null;
  } {
    const rows = this.db
      .prepare(
        `SELECT * FROM audit_log WHERE (@sandbox_id IS NULL OR sandbox_id = @sandbox_id) AND (@kind IS NULL OR kind = @kind)
         AND (@since IS NULL OR at >= @since) AND (@until IS NULL OR at < @until) AND (@cursor IS NULL OR id < @cursor)
         ORDER BY id DESC LIMIT @limit`,
      )
      .all({
        sandbox_id: q.sandbox_id ?? null,
        kind: q.kind ?? null,
        since: q.since ?? null,
        until: q.until ?? null,
        cursor: q.cursor ?? null,
        limit: q.limit + 1,
      }) as (Omit<AuditEntry, 'detail'> & { detail: string })[];
    const more = rows.length > q.limit;
    const page = rows.slice(0, q.limit);
    return {
      entries: page.map((r) => ({ ...r, detail: JSON.parse(r.detail) as Record<string, unknown> })),
      next_cursor: more && page.length ? String(page[page.length - 1]!.id) : null,
    };
  }

  /** Deletes audit rows older than `beforeIso`, and events whose deliveries are all settled. */
  prune(auditBeforeIso: string, eventsBeforeIso: string): { audit: number; events: number } {
    return this.db.transaction(() => {
      const audit = this.db.prepare('DELETE FROM audit_log WHERE at < ?').run(auditBeforeIso).changes;
      const old = `SELECT seq FROM events WHERE created_at < @before AND NOT EXISTS
        (SELECT 1 FROM webhook_deliveries d WHERE d.event_seq = events.seq AND d.status = 'pending')`;
      this.db.prepare(`DELETE FROM webhook_deliveries WHERE event_seq IN (${old})`).run({ before: eventsBeforeIso });
      const events = this.db.prepare(`DELETE FROM events WHERE seq IN (${old})`).run({ before: eventsBeforeIso }).changes;
      return { audit, events };
    })();
  }
}

function toDelivery(r: DeliveryRaw): WebhookDelivery {
  return {
    id: String(r.id),
    event_id: r.event_id,
    event: r.event_type,
    endpoint: r.endpoint,
    url: r.url,
    status: r.status,
    attempts: r.attempts,
    max_attempts: r.max_attempts,
    next_attempt_at: r.status === 'pending' ? new Date(r.next_attempt_at).toISOString() : null,
    last_status: r.last_status,
    last_error: r.last_error,
    created_at: r.created_at,
    delivered_at: r.delivered_at,
  };
}
