/** State shared by the agent's handlers. */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { EgressListener } from './services/egress-listener.js';

export interface AgentOptions {
  /**
   * Skip the steps that change the machine (clock, hostname, CRNG ioctl).
   * For running the agent on a developer host or in tests; never in a guest.
   */
  noSystem: boolean;
  log: (msg: string) => void;
}

/** A running command, as far as snapshot preparation and shutdown care. */
export interface RunningExec {
  killGroup(signal: NodeJS.Signals): void;
}

export class AgentContext {
  readonly noSystem: boolean;
  readonly log: (msg: string) => void;
  sandboxId: string | null = null;
  /** Environment from the last init, merged under every command's env. */
  defaultEnv: Record<string, string> = {};
  readonly running = new Set<RunningExec>();
  /** The egress port; listening only in sandboxes with network fetch or full. */
  readonly egress = new EgressListener();
  /**
   * Key for the agent's own unique names. A snapshot clone inherits the
   * template's OpenSSL and V8 generator state, so names drawn from them alone
   * would repeat across clones; init mixes the host's fresh entropy in here.
   */
  private key: Buffer = randomBytes(32);
  private counter = 0;

  constructor(o: AgentOptions) {
    this.noSystem = o.noSystem;
    this.log = o.log;
  }

  mixEntropy(entropy: Buffer): void {
    this.key = createHash('sha256').update(this.key).update(entropy).digest();
  }

  /** 16 hex chars, unique per clone after init. */
  uniqueToken(): string {
    this.counter += 1;
    return createHmac('sha256', this.key)
      .update(`${process.pid}:${this.counter}:${randomBytes(8).toString('hex')}`)
      .digest('hex')
      .slice(0, 16);
  }
}
