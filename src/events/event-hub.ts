import type Database from 'better-sqlite3';
import type { AuditEntry, AuditKind, EventType } from '../shared/api-types.js';
import type { EndpointRef, EventStore } from '../store/event-store.js';
import { requestContext } from './request-context.js';

/** What an audit row needs from the caller; who and which request come from the request context. */
export interface AuditRecord {
  kind: AuditKind;
  sandbox_id: string | null;
  /** When the action started (ms epoch); the duration is measured to now. */
  startedAt: number;
  detail: Record<string, unknown>;
  error_code?: string | null;
  exit_code?: number | null;
  /** Overrides the request's actor (e.g. "system" for expiry). */
  actor?: string;
}

/**
 * The one place lifecycle code records events and audit rows. Callers run
 * `emit`/`audit` inside `tx()` together with their state change, so an event
 * exists if and only if the change committed; listeners (the webhook worker,
 * SSE streams) are woken after the commit.
 */
export class EventHub {
  private readonly listeners = new Set<() => void>();
  private wakeQueued = false;

  constructor(
    readonly store: EventStore,
    private readonly db: Database.Database,
    readonly endpoints: readonly EndpointRef[],
    /** Actor for actions with no request behind them (expiry, crash, adoption). */
    private readonly defaultActor = 'system',
  ) {}

  /** Runs `fn` in one SQLite transaction (nested calls join the outer one). */
  tx<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  emit(type: EventType, sandboxId: string | null, data: Record<string, unknown> = {}): void {
    this.store.append(type, sandboxId, data, this.endpoints);
    this.queueWake();
  }

  audit(r: AuditRecord): void {
    const ctx = requestContext.getStore();
    const entry: Omit<AuditEntry, 'id'> = {
      at: new Date(r.startedAt).toISOString(),
      actor: r.actor ?? ctx?.actor ?? this.defaultActor,
      kind: r.kind,
      sandbox_id: r.sandbox_id,
      request_id: ctx?.request_id ?? null,
      detail: r.detail,
      outcome: r.error_code ? 'error' : 'ok',
      error_code: r.error_code ?? null,
      exit_code: r.exit_code ?? null,
      duration_ms: Math.round((Date.now() - r.startedAt) * 10) / 10,
    };
    this.store.insertAudit(entry);
  }

  /** Called (after commit) whenever new events exist; returns an unsubscribe function. */
  onEvents(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Wakes listeners once the current synchronous transaction has committed. */
  private queueWake(): void {
    if (this.wakeQueued) return;
    this.wakeQueued = true;
    setImmediate(() => {
      this.wakeQueued = false;
      for (const l of this.listeners) l();
    });
  }
}

/** A hub that records nothing (a manager built without events, e.g. in unit tests). */
export function noopHub(): Pick<EventHub, 'tx' | 'emit' | 'audit'> {
  return { tx: (fn) => fn(), emit: () => undefined, audit: () => undefined };
}
