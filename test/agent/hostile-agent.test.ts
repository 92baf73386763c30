/** The host against a fake, hostile agent: nothing it sends may be trusted. */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Http2Server, type ServerHttp2Stream, type IncomingHttpHeaders } from 'node:http2';
import { createServer as createNetServer, connect as netConnect, type Server as NetServer, type Socket } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentClient } from '../../src/agent-client/index.js';
import { SandforgeError } from '../../src/shared/errors.js';
import { EXEC_CONTENT_TYPE, FrameType, encodeAgentFrame, type AgentFrame } from '../../src/shared/protocol.js';
import { listenUnix } from '../../agent/transport/unix-listener.js';
import { spawnAgent } from './helpers.js';

const goodHealth = {
  version: '0.1.0',
  protocol: 1,
  kernel_release: '6.1.0',
  hostname: 'evil',
  uptime_ms: 1,
  boot_id: 'fde519a8-d5a8-4824-b376-ce9c08d47338',
  sandbox_id: null,
};
function rawFrame(type: number, payload: string): Buffer {
  const p = Buffer.from(payload);
  const h = Buffer.alloc(5);
  h.writeUInt8(type, 0);
  h.writeUInt32BE(p.length, 1);
  return Buffer.concat([h, p]);
}
const code = (c: string) => (e: unknown) => e instanceof SandforgeError && e.code === c;

type Behaviour = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => void;

describe('host client against a hostile agent', () => {
  let dir: string;
  let server: Http2Server;
  let listener: NetServer;
  let sock: string;
  let behave: Record<string, Behaviour> = {};

  const json = (status: number, body: unknown) => (s: ServerHttp2Stream) => {
    s.respond({ ':status': status, 'content-type': 'application/json' });
    s.end(typeof body === 'string' ? body : JSON.stringify(body));
  };
  const frames =
    (...fs: (AgentFrame | Buffer)[]) =>
    (s: ServerHttp2Stream) => {
      s.respond({ ':status': 200, 'content-type': EXEC_CONTENT_TYPE });
      s.end(Buffer.concat(fs.map((f) => (Buffer.isBuffer(f) ? f : encodeAgentFrame(f)))));
    };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sf-hostile-'));
    sock = join(dir, 'evil.sock');
    server = createServer();
    server.on('stream', (stream, headers) => {
      stream.on('error', () => undefined);
      const b = behave[String(headers[':path'])];
      if (b) b(stream, headers);
      else json(200, goodHealth)(stream);
    });
    // The real agent's handshake in front of a fake HTTP/2 server.
    listener = await listenUnix(sock, (s) => server.emit('connection', s));
  });
  after(async () => {
    await new Promise((r) => listener.close(r));
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const connect = () => AgentClient.connect(sock, { timeoutMs: 3000, requestTimeoutMs: 1500 });

  test('bad health bodies are agent_error, not retried', async () => {
    for (const body of [
      { ...goodHealth, protocol: '1' },
      { ...goodHealth, hostname: 'x'.repeat(10_000) },
      { ...goodHealth, extra: 1 },
      { ...goodHealth, protocol: 99 },
      'not json',
      [goodHealth],
    ]) {
      behave = { '/v1/health': json(200, body) };
      await assert.rejects(connect(), code('agent_error'), JSON.stringify(body).slice(0, 80));
    }
  });

  test('health that never answers: agent_unavailable at the deadline', async () => {
    behave = { '/v1/health': () => undefined };
    const t0 = Date.now();
    await assert.rejects(AgentClient.connect(sock, { timeoutMs: 1200 }), code('agent_unavailable'));
    const spent = Date.now() - t0;
    assert.ok(spent >= 1100 && spent < 3000, `gave up after ${spent} ms`);
  });

  test('exec frame streams that break the protocol', async () => {
    behave = {};
    const c = await connect();
    const started: AgentFrame = { type: 'started', pid: 5 };
    const cases: [string, Behaviour, string][] = [
      ['unknown frame type', frames(started, Buffer.from([0x99, 0, 0, 0, 0])), 'agent_error'],
      ['oversized frame header', frames(started, Buffer.from([FrameType.stdout, 0x7f, 0xff, 0xff, 0xff])), 'agent_error'],
      ['stdout before started', frames({ type: 'stdout', data: Buffer.from('x') }), 'agent_error'],
      [
        'exit before started',
        frames({ type: 'exit', exit: { exit_code: 0, signal: null, timed_out: false, duration_ms: 1 } }),
        'agent_error',
      ],
      ['two started', frames(started, started), 'agent_error'],
      [
        'exit code 300',
        frames(started, rawFrame(FrameType.exit, '{"exit_code":300,"signal":null,"timed_out":false,"duration_ms":1}')),
        'agent_error',
      ],
      [
        'exit with extra field',
        frames(started, rawFrame(FrameType.exit, '{"exit_code":0,"signal":null,"timed_out":false,"duration_ms":1,"x":1}')),
        'agent_error',
      ],
      [
        'frames after exit',
        frames(started, { type: 'exit', exit: { exit_code: 0, signal: null, timed_out: false, duration_ms: 1 } }, started),
        'ok',
      ],
      ['ends without exit', frames(started, { type: 'stdout', data: Buffer.from('x') }), 'agent_error'],
      ['ends inside a frame', frames(started, Buffer.from([FrameType.stdout, 0, 0, 0, 9, 1, 2])), 'agent_error'],
      ['wrong content type', json(200, {}), 'agent_error'],
      ['privileged code is not trusted', frames({ type: 'error', error: { code: 'unauthorized', message: 'x' } }), 'agent_error'],
      ['internal becomes agent_error', frames({ type: 'error', error: { code: 'internal', message: 'x' } }), 'agent_error'],
      ['known code kept', frames({ type: 'error', error: { code: 'not_found', message: 'x' } }), 'not_found'],
      ['error status with junk body', json(500, { oops: true }), 'agent_error'],
      ['stream reset', (s) => s.close(2), 'agent_unavailable'],
    ];
    for (const [name, b, want] of cases) {
      behave = { '/v1/exec': b };
      let out = 0;
      const h = c.exec({ argv: ['x'] }, { onStdout: (d) => (out += d.length) });
      // Anything after the exit frame is ignored: the result is already settled.
      if (want === 'ok') assert.equal((await h.wait()).exit_code, 0, name);
      else await assert.rejects(h.wait(), code(want), name);
    }
    c.destroy();
  });

  test('file responses: oversized JSON, bad entries, control characters in messages', async () => {
    const c = await connect();
    behave = { '/v1/files/list': json(200, { entries: [], truncated: false, pad: 'x'.repeat(17 * 1024 * 1024) }) };
    await assert.rejects(c.listDir('/'), code('agent_error'));
    behave = { '/v1/files/stat': json(200, { name: '../../etc', type: 'file', size: 1, mode: 0o644, mtime_ms: 1 }) };
    await assert.rejects(c.stat('/x'), code('agent_error'));
    behave = { '/v1/files/stat': json(404, { error: { code: 'not_found', message: 'gone\u001b[31mred\r\n' } }) };
    await assert.rejects(
      c.stat('/x'),
      (e: unknown) => e instanceof SandforgeError && e.code === 'not_found' && !/[\u0000-\u001f]/.test(e.message),
    );
    behave = { '/v1/files/write': json(200, { bytes_written: 1 }) };
    await assert.rejects(c.writeFile('/x', Buffer.from('hello')), code('agent_error'));
    behave = { '/v1/files/read': (s) => s.respond({ ':status': 200 }) }; // never ends the body: idle timeout
    const r = await c.readFile('/x');
    c.destroy();
    await assert.rejects(new Promise((resolve, reject) => r.on('error', reject).on('end', resolve).resume()), code('agent_unavailable'));
  });

  test('connect retries while the VM boots: silent socket, then the real agent', async () => {
    // Like QEMU's chardev before the guest agent reads the port: accepts, never answers.
    const realSock = join(dir, 'real.sock');
    const front = join(dir, 'front.sock');
    let connections = 0;
    const held: Socket[] = [];
    const proxy = createNetServer((s) => {
      connections += 1;
      if (connections <= 2) return void held.push(s);
      const up = netConnect(realSock);
      s.pipe(up).pipe(s);
      s.on('error', () => up.destroy());
      up.on('error', () => s.destroy());
    });
    await new Promise<void>((r) => proxy.listen(front, r));
    const agentProc = spawnAgent(realSock);
    try {
      const c = await AgentClient.connect(front, { timeoutMs: 10_000 });
      assert.equal((await c.health()).protocol, 1);
      assert.ok(connections >= 3);
      const closed = c.closed;
      agentProc.child.kill('SIGTERM');
      await closed; // the owner learns the agent went away
    } finally {
      agentProc.child.kill('SIGKILL');
      for (const s of held) s.destroy();
      await new Promise((r) => proxy.close(r));
    }
  });
});
