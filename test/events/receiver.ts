import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';

/** The documented receiver check (docs/events.md), verbatim in substance. */
export function verifySandforgeSignature(
  secret: string,
  header: string | undefined,
  body: unknown,
  nowSeconds = Math.floor(Date.now() / 1000),
): boolean {
  const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(header ?? '');
  if (!m) return false;
  const t = Number(m[1]);
  if (Math.abs(nowSeconds - t) > 300) return false; // replay window
  const expected = createHmac('sha256', secret)
    .update(`${t}.${JSON.stringify(body)}`)
    .digest();
  const given = Buffer.from(m[2]!, 'hex');
  return given.length === expected.length && timingSafeEqual(given, expected);
}

export interface Received {
  raw: string;
  body: { event: string; id: string; timestamp: string; data: { sandbox_id: string | null; sequence: number } & Record<string, unknown> };
}

/** A loopback webhook receiver: `ok` answers 200 after verifying, `fail` 500, `hang` never answers. */
export class Receiver {
  received: Received[] = [];
  rejected = 0;
  mode: 'ok' | 'fail' | 'hang' = 'ok';
  private server: Server | null = null;
  private readonly hanging = new Set<ServerResponse>();

  constructor(private readonly secret: string) {}

  async listen(port = 0): Promise<number> {
    this.server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((r) => this.server!.listen(port, '127.0.0.1', r));
    return (this.server.address() as { port: number }).port;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks).toString('utf8');
    if (this.mode === 'hang') {
      this.hanging.add(res);
      return;
    }
    if (this.mode === 'fail') {
      res.writeHead(500).end();
      return;
    }
    let body: Received['body'];
    try {
      body = JSON.parse(raw) as Received['body'];
    } catch {
      this.rejected++;
      res.writeHead(400).end();
      return;
    }
    if (!verifySandforgeSignature(this.secret, req.headers['x-sandforge-signature'] as string | undefined, body)) {
      this.rejected++;
      res.writeHead(401).end();
      return;
    }
    this.received.push({ raw, body });
    res.writeHead(204).end();
  }

  async close(): Promise<void> {
    for (const r of this.hanging) r.destroy();
    if (!this.server) return;
    this.server.closeAllConnections();
    await new Promise((r) => this.server!.close(r));
    this.server = null;
  }
}
