/**
 * Keeps accept streams open to one sandbox's agent so that guest connections
 * to its egress port reach the proxy without waiting for a round trip.
 */
import type { Duplex } from 'node:stream';
import type { AgentClient } from '../agent-client/index.js';

/** Accepts held open in advance: new guest connections are claimed at once. */
const SPARE_ACCEPTS = 2;
/** Tunnels one sandbox may have open at once; more wait in the guest's queue. */
export const MAX_EGRESS_CONNECTIONS = 64;

export class EgressTunnel {
  private pending = 0;
  private active = 0;
  private stopped = false;

  constructor(
    private readonly agent: AgentClient,
    private readonly onConnection: (conn: Duplex) => void,
    private readonly onStop: (why: string) => void = () => undefined,
  ) {}

  start(): this {
    this.fill();
    return this;
  }

  stop(): void {
    this.stopped = true;
  }

  get connections(): number {
    return this.active;
  }

  private fill(): void {
    while (!this.stopped && this.pending < SPARE_ACCEPTS && this.active + this.pending < MAX_EGRESS_CONNECTIONS) {
      this.pending++;
      this.agent.acceptEgress().then(
        (conn) => {
          this.pending--;
          if (this.stopped) return void conn.destroy();
          this.active++;
          conn.once('close', () => {
            this.active--;
            this.fill();
          });
          this.onConnection(conn);
          this.fill();
        },
        (err: Error) => {
          this.pending--;
          if (this.stopped) return;
          this.stopped = true;
          this.onStop(err.message);
        },
      );
    }
  }
}
