import type { Logger } from 'pino';
import type { EventStore } from '../store/event-store.js';
import type { EventHub } from './event-hub.js';
import { SIGNATURE_HEADER, signatureHeader } from './signature.js';
import type { WebhookEndpoint, WebhookTuning } from './webhook-config.js';

/**
 * Delivers the outbox at least once. Runs on its own timers, never inside an
 * API request: each attempt has a timeout, at most `concurrency` run at once,
 * failures back off exponentially with jitter and, after `maxAttempts`, are
 * dead-lettered. Everything pending in SQLite is resumed on start, so events
 * survive restarts and `kill -9`.
 */
export class WebhookWorker {
  private readonly inflight = new Set<number>();
  /** In-flight count per endpoint: one hanging receiver must not starve the others. */
  private readonly busy = new Map<string, number>();
  private timer: NodeJS.Timeout | null = null;
  private timerAt = Infinity;
  private stopped = false;
  private unsubscribe: (() => void) | null = null;
  private readonly byName: Map<string, WebhookEndpoint>;

  constructor(
    private readonly store: EventStore,
    private readonly hub: EventHub,
    endpoints: readonly WebhookEndpoint[],
    private readonly tuning: WebhookTuning,
    private readonly log: Logger,
  ) {
    this.byName = new Map(endpoints.map((e) => [e.name, e]));
  }

  start(): void {
    this.unsubscribe = this.hub.onEvents(() => this.pump());
    this.pump();
  }

  /** Stops scheduling; attempts in flight finish (or time out) on their own. */
  stop(): void {
    this.stopped = true;
    this.unsubscribe?.();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** Starts due deliveries up to the concurrency bound, then sleeps until the next one is due. */
  pump(): void {
    if (this.stopped) return;
    const open: string[] = [];
    for (const name of this.byName.keys()) {
      const free = this.tuning.concurrency - (this.busy.get(name) ?? 0);
      if (free <= 0) continue;
      const due = this.store.dueDeliveries(name, Date.now(), free, this.inflight);
      for (const d of due) {
        this.inflight.add(d.id);
        this.busy.set(name, (this.busy.get(name) ?? 0) + 1);
        void this.attempt(d).finally(() => {
          this.inflight.delete(d.id);
          this.busy.set(name, (this.busy.get(name) ?? 1) - 1);
          this.pump();
        });
      }
      if (due.length < free) open.push(name);
    }
    this.deadLetterUnknown();
    const next = this.store.nextDueAt(open);
    if (next === null) return;
    const at = Math.max(next, Date.now() + 10);
    if (this.timer && this.timerAt <= at) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.timerAt = Infinity;
      this.pump();
    }, at - Date.now());
  }

  /** Deliveries for endpoints no longer configured (config changed across a restart) cannot go anywhere. */
  private deadLetterUnknown(): void {
    if (this.checkedUnknown) return;
    this.checkedUnknown = true;
    this.store.deadLetterOtherEndpoints([...this.byName.keys()]);
  }

  private checkedUnknown = false;

  private async attempt(d: {
    id: number;
    endpoint: string;
    attempts: number;
    max_attempts: number;
    body: string;
    event_id: string;
  }): Promise<void> {
    const ep = this.byName.get(d.endpoint);
    const attempts = d.attempts + 1;
    if (!ep) {
      this.store.recordAttempt(d.id, {
        status: 'dead',
        attempts: d.attempts,
        next_attempt_at: 0,
        last_status: null,
        last_error: 'endpoint no longer configured',
      });
      return;
    }
    let status: number | null = null;
    let error: string | null = null;
    try {
      const res = await fetch(ep.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': 'sandforge-webhooks',
          [SIGNATURE_HEADER]: signatureHeader(ep.secret, d.body, Math.floor(Date.now() / 1000)),
        },
        body: d.body,
        redirect: 'manual',
        signal: AbortSignal.timeout(this.tuning.timeoutMs),
      });
      status = res.status;
      await res.body?.cancel().catch(() => undefined);
      if (status < 200 || status >= 300) error = `receiver answered HTTP ${status}`;
    } catch (err) {
      const e = err as Error & { cause?: { code?: string } };
      error = e.name === 'TimeoutError' ? `no answer within ${this.tuning.timeoutMs} ms` : (e.cause?.code ?? e.message);
    }
    if (this.stopped && error) return; // shutting down: leave it pending for the next start
    if (!error) {
      this.store.recordAttempt(d.id, { status: 'delivered', attempts, next_attempt_at: 0, last_status: status, last_error: null });
      return;
    }
    const dead = attempts >= d.max_attempts;
    const delay = backoffMs(attempts, this.tuning);
    this.store.recordAttempt(d.id, {
      status: dead ? 'dead' : 'pending',
      attempts,
      next_attempt_at: Date.now() + delay,
      last_status: status,
      last_error: error,
    });
    const msg = dead ? 'webhook delivery dead-lettered' : 'webhook delivery failed; will retry';
    this.log[dead ? 'warn' : 'info'](
      { delivery_id: d.id, event_id: d.event_id, endpoint: d.endpoint, attempts, err: error, retry_in_ms: dead ? undefined : delay },
      msg,
    );
  }
}

/** Exponential backoff with "equal jitter": half fixed, half random, capped. */
export function backoffMs(attempts: number, t: Pick<WebhookTuning, 'backoffMs' | 'backoffMaxMs'>): number {
  const exp = Math.min(t.backoffMaxMs, t.backoffMs * 2 ** Math.min(30, attempts - 1));
  return Math.round(exp / 2 + Math.random() * (exp / 2));
}
