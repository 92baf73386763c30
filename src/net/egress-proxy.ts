/**
 * The supervisor's egress proxy. Each connection a guest process opens to its
 * egress port arrives here as a duplex stream; the first request on it must
 * be `CONNECT host:port` (any TCP, TLS included) or an absolute-form plain
 * HTTP request. The destination is judged by the network policy, then the
 * proxy connects to the exact address it judged. Refusals answer 403 and are
 * reported; nothing else leaves the guest.
 */
import { connect as netConnect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { NetworkMode } from '../shared/api-types.js';
import type { NetworkPolicy, NetworkRule } from '../policy/network-policy.js';

/** Largest request head the proxy reads before deciding, bytes. */
const MAX_HEAD_BYTES = 16 * 1024;
/** The guest must send its request head within this, ms. */
const HEAD_TIMEOUT_MS = 15_000;
const CONNECT_TIMEOUT_MS = 10_000;
/** How long an upstream may keep a connection whose guest side is gone, ms. */
const UPSTREAM_LINGER_MS = 10_000;

export interface EgressRefusal {
  sandboxId: string;
  mode: NetworkMode;
  host: string;
  port: number;
  rule: NetworkRule;
  message: string;
}

export interface EgressProxyOptions {
  policy: NetworkPolicy;
  onRefusal: (r: EgressRefusal) => void;
  onError?: (sandboxId: string, message: string) => void;
}

interface Target {
  host: string;
  port: number;
}

/** Parses `host:port`, `[v6]:port`; null if malformed. */
export function parseAuthority(s: string, defaultPort?: number): Target | null {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]/@\s]+)(?::(\d{1,5}))?$/.exec(s);
  if (!m) return null;
  const port = m[2] !== undefined ? Number(m[2]) : defaultPort;
  if (port === undefined || !Number.isInteger(port) || port < 1 || port > 65535) return null;
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
}

export interface ParsedHead {
  method: string;
  target: Target;
  /** For plain HTTP: the head rewritten for the origin server. */
  forward?: Buffer;
}

/** Parses a proxy request head (without the final CRLFCRLF); throws a message for a 400. */
export function parseProxyHead(head: string): ParsedHead {
  const lines = head.split('\r\n');
  const m = /^([A-Z]{1,16}) (\S+) HTTP\/1\.[01]$/.exec(lines[0] ?? '');
  if (!m) throw new Error('malformed request line');
  const [, method, uri] = m as unknown as [string, string, string];
  if (method === 'CONNECT') {
    const target = parseAuthority(uri);
    if (!target) throw new Error(`CONNECT needs host:port, got ${JSON.stringify(uri.slice(0, 200))}`);
    return { method, target };
  }
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    throw new Error('plain HTTP through the proxy needs an absolute URL (http://host/path); use CONNECT for anything else');
  }
  if (url.protocol !== 'http:') throw new Error(`only http:// URLs or CONNECT, got ${url.protocol}`);
  if (url.username || url.password) throw new Error('credentials in the proxy URL are not forwarded');
  const target = parseAuthority(url.host, 80);
  if (!target) throw new Error('bad host in URL');
  const headers = lines
    .slice(1)
    .filter((l) => l.length > 0 && !/^(host|proxy-connection|proxy-authorization|connection|keep-alive)\s*:/i.test(l));
  // Host is the judged authority (no fronting another site on a shared address); one request per
  // upstream connection, since a second request could name another host.
  const forward = Buffer.from(
    [`${method} ${url.pathname}${url.search} HTTP/1.1`, `Host: ${url.host}`, ...headers, 'Connection: close', '', ''].join('\r\n'),
  );
  return { method, target, forward };
}

function reply(conn: Duplex, status: number, reason: string, body: string, extra: Record<string, string> = {}): void {
  const text = body.endsWith('\n') ? body : `${body}\n`;
  const head = [
    `HTTP/1.1 ${status} ${reason}`,
    'Content-Type: text/plain; charset=utf-8',
    `Content-Length: ${Buffer.byteLength(text)}`,
    'Connection: close',
    ...Object.entries(extra).map(([k, v]) => `${k}: ${v}`),
    '',
    '',
  ].join('\r\n');
  conn.end(head + text);
}

export class EgressProxy {
  constructor(private readonly o: EgressProxyOptions) {}

  /** Serves one guest connection until either side closes. */
  handle(conn: Duplex, ctx: { sandboxId: string; mode: NetworkMode }): void {
    conn.on('error', () => undefined);
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => conn.destroy(), HEAD_TIMEOUT_MS);
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) {
        if (buf.length > MAX_HEAD_BYTES) {
          cleanup();
          reply(conn, 431, 'Request Header Fields Too Large', `request head over ${MAX_HEAD_BYTES} bytes`);
        }
        return;
      }
      cleanup();
      conn.pause();
      const head = buf.subarray(0, end).toString('latin1');
      const rest = buf.subarray(end + 4);
      void this.route(conn, head, rest, ctx);
    };
    const cleanup = () => {
      clearTimeout(timer);
      conn.off('data', onData);
    };
    conn.on('data', onData);
    conn.once('close', () => clearTimeout(timer));
  }

  private async route(conn: Duplex, head: string, rest: Buffer, ctx: { sandboxId: string; mode: NetworkMode }): Promise<void> {
    let req: ParsedHead;
    try {
      req = parseProxyHead(head);
    } catch (err) {
      return reply(conn, 400, 'Bad Request', `sandforge egress proxy: ${(err as Error).message}`);
    }
    const { host, port } = req.target;
    let decision;
    try {
      decision = await this.o.policy.decide(host, ctx.mode);
    } catch (err) {
      return reply(conn, 502, 'Bad Gateway', `sandforge egress proxy: ${(err as Error).message}`);
    }
    if (!decision.allowed) {
      this.o.onRefusal({ sandboxId: ctx.sandboxId, mode: ctx.mode, host, port, rule: decision.rule, message: decision.message });
      return reply(conn, 403, 'Forbidden', `sandforge egress policy (${decision.rule}): ${decision.message}`, {
        'X-Sandforge-Policy': decision.rule,
      });
    }
    const upstream: Socket = netConnect({ host: decision.address, port, family: decision.family });
    upstream.setTimeout(CONNECT_TIMEOUT_MS, () => upstream.destroy(new Error(`connect to ${host}:${port} timed out`)));
    let connected = false;
    upstream.once('error', (err) => {
      if (!connected) {
        this.o.onError?.(ctx.sandboxId, `${host}:${port}: ${err.message}`);
        reply(conn, 502, 'Bad Gateway', `sandforge egress proxy: cannot reach ${host}:${port}: ${err.message}`);
      } else conn.destroy();
    });
    upstream.once('connect', () => {
      connected = true;
      upstream.setTimeout(0);
      if (req.method === 'CONNECT') conn.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      else upstream.write(req.forward!);
      if (rest.length) upstream.write(rest);
      conn.pipe(upstream);
      upstream.pipe(conn);
      conn.resume();
      // Ends propagate through pipe (half-close works). When the guest side is gone, the upstream
      // gets what was already relayed and a FIN, then is dropped if it lingers.
      conn.once('close', () => {
        if (upstream.destroyed) return;
        upstream.end();
        setTimeout(() => upstream.destroy(), UPSTREAM_LINGER_MS).unref();
      });
    });
  }
}
