import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import WebSocket from 'ws';
import { imageSkipReason, qemuProcesses, vmLeftovers } from '../helpers/env.js';
import { SupervisorProcess } from '../helpers/supervisor.js';
import { curl, NginxProcess } from './helpers.js';

const skip = imageSkipReason();

describe('the shipped nginx site in front of a real supervisor', { skip }, () => {
  const sup = new SupervisorProcess();
  const nginx = new NginxProcess();
  const auth = () => ['-H', `Authorization: Bearer ${sup.token}`];
  const tls = () => ['--cacert', nginx.cert];

  before(async () => {
    await sup.start(['--destroy-on-exit', '--max-memory-mb', '4096', '--trust-proxy', '127.0.0.1']);
    await nginx.start(sup.port);
  });
  after(async () => {
    await nginx.stop();
    await sup.stop();
    assert.deepEqual(vmLeftovers(sup.dataDir), []);
    assert.deepEqual(qemuProcesses(sup.dataDir), []);
    sup.removeDataDir();
  });

  test('over HTTPS: create, execute, stream NDJSON, upload 3 MiB, WebSocket exec, delete', async () => {
    const health = await curl([...tls(), `${nginx.url}/healthz`]);
    assert.equal(health.status, 200);
    const noAuth = await curl([...tls(), `${nginx.url}/v1/sandboxes`]);
    assert.equal(noAuth.status, 401, 'the supervisor, not nginx, answers auth');

    const created = await curl([...tls(), ...auth(), '-H', 'content-type: application/json', '-d', '{}', `${nginx.url}/v1/sandboxes`]);
    assert.equal(created.status, 201, created.text);
    const id = created.body.id as string;

    const ex = await curl([
      ...tls(),
      ...auth(),
      '-H',
      'content-type: application/json',
      '-d',
      JSON.stringify({ command: 'echo via-proxy; exit 4' }),
      `${nginx.url}/v1/sandboxes/${id}/execute`,
    ]);
    assert.equal(ex.status, 200, ex.text);
    assert.equal(ex.body.exit_code, 4);
    assert.equal(ex.body.stdout, 'via-proxy\n');

    // NDJSON: the first line must reach the client before the command ends (proxy_buffering off).
    const t0 = Date.now();
    const firstAt = await new Promise<{ first: number; lines: any[] }>((resolve, reject) => {
      const req = httpsRequest(
        `${nginx.url}/v1/sandboxes/${id}/execute`,
        {
          method: 'POST',
          ca: readFileSync(nginx.cert),
          headers: { authorization: `Bearer ${sup.token}`, 'content-type': 'application/json', accept: 'application/x-ndjson' },
        },
        (res) => {
          let first = 0;
          let buf = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => {
            if (!first && c.includes('"stdout"')) first = Date.now() - t0;
            buf += c;
          });
          res.on('end', () =>
            resolve({
              first,
              lines: buf
                .trim()
                .split('\n')
                .map((l) => JSON.parse(l)),
            }),
          );
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(JSON.stringify({ command: 'echo early; sleep 4; echo late' }));
    });
    const total = Date.now() - t0;
    assert.equal(firstAt.lines.at(-1).type, 'exit');
    assert.ok(
      firstAt.first > 0 && firstAt.first < total - 2500,
      `first stdout at ${firstAt.first} ms of ${total} ms: output is being buffered`,
    );

    // Uploads above nginx's default 1 MiB client_max_body_size go through.
    const blob = randomBytes(3 * 1024 * 1024);
    const file = join(nginx.dir, 'upload.bin');
    writeFileSync(file, blob);
    const put = await curl([
      ...tls(),
      ...auth(),
      '-X',
      'PUT',
      '-H',
      'content-type: application/octet-stream',
      '--data-binary',
      `@${file}`,
      `${nginx.url}/v1/sandboxes/${id}/files?path=/tmp/up.bin`,
    ]);
    assert.equal(put.status, 200, put.text);
    assert.equal(put.body.size, blob.length);

    // The interactive WebSocket stream through the proxy.
    const ws = new WebSocket(`wss://127.0.0.1:${nginx.port}/v1/sandboxes/${id}/exec`, {
      ca: readFileSync(nginx.cert),
      headers: { authorization: `Bearer ${sup.token}` },
    });
    const msgs: any[] = [];
    const closed = new Promise<number>((resolve, reject) => {
      ws.on('message', (d) => msgs.push(JSON.parse(d.toString())));
      ws.on('close', (code) => resolve(code));
      ws.on('error', reject);
      ws.on('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
    });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    ws.send(JSON.stringify({ type: 'start', command: 'sha256sum /tmp/up.bin | cut -c1-16; cat' }));
    ws.send(JSON.stringify({ type: 'stdin', data: Buffer.from('from-ws\n').toString('base64') }));
    ws.send(JSON.stringify({ type: 'stdin_close' }));
    assert.equal(await closed, 1000);
    const out = msgs
      .filter((m) => m.type === 'stdout')
      .map((m) => Buffer.from(m.data, 'base64').toString())
      .join('');
    const { createHash } = await import('node:crypto');
    assert.equal(out, `${createHash('sha256').update(blob).digest('hex').slice(0, 16)}\nfrom-ws\n`);
    assert.deepEqual({ type: msgs.at(-1).type, exit_code: msgs.at(-1).exit_code }, { type: 'exit', exit_code: 0 });

    const del = await curl([...tls(), ...auth(), '-X', 'DELETE', `${nginx.url}/v1/sandboxes/${id}`]);
    assert.equal(del.status, 200);
    assert.equal(del.body.status, 'terminated');
  });

  test('a burst of 20 from one address: at most 1 + burst 10 served, the rest 429; --trust-proxy sees the client', async () => {
    // From 127.0.0.7 so that the other test's requests (from 127.0.0.1) do not share the bucket.
    const one = () => curl([...tls(), ...auth(), '--interface', '127.0.0.7', '-o', '/dev/null', `${nginx.url}/v1/sandboxes`]);
    const t0 = Date.now();
    const results = await Promise.all(Array.from({ length: 20 }, one));
    const statuses = results.map((r) => r.status);
    const served = statuses.filter((s) => s === 200).length;
    const limited = statuses.filter((s) => s === 429).length;
    assert.equal(served + limited, 20, `unexpected statuses: ${statuses.join(',')}`);
    assert.ok(served <= 11 && served >= 6, `served ${served}: ${statuses.join(',')}`);
    // Requests 7..11 are delayed to the 30 r/m rate (2 s apart) instead of refused.
    if (served > 6) assert.ok(Date.now() - t0 > 1500, 'delayed requests were not delayed');
    // The supervisor trusts nginx's X-Forwarded-For (--trust-proxy 127.0.0.1): it logs the real client.
    assert.match(sup.log, /"remoteAddress":"127\.0\.0\.7"/);
  });
});

describe('the shipped nginx site: Connection header sent upstream', () => {
  const nginx = new NginxProcess();
  let upstream: Server;
  const seen: { kind: 'request' | 'upgrade'; url: string; headers: IncomingHttpHeaders }[] = [];

  before(async () => {
    // A real loopback HTTP server as the upstream that records what nginx sends it.
    upstream = createServer((req, res) => {
      seen.push({ kind: 'request', url: req.url ?? '', headers: req.headers });
      res.setHeader('content-type', 'application/json');
      res.end('{}');
    });
    upstream.on('upgrade', (req, socket) => {
      seen.push({ kind: 'upgrade', url: req.url ?? '', headers: req.headers });
      socket.end('HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n');
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
    await nginx.start((upstream.address() as { port: number }).port);
  });
  after(async () => {
    await nginx.stop();
    await new Promise((r) => upstream.close(r));
  });

  test('plain requests are not sent Connection: upgrade; upgrade requests are', async () => {
    const plain = await curl(['--cacert', nginx.cert, '--interface', '127.0.0.9', '--http1.1', `${nginx.url}/v1/plain`]);
    assert.equal(plain.status, 200);
    const plain2 = await curl(['--cacert', nginx.cert, '--interface', '127.0.0.9', `${nginx.url}/v1/plain-h2`]);
    assert.equal(plain2.status, 200);
    await curl([
      '--cacert',
      nginx.cert,
      '--interface',
      '127.0.0.9',
      '--http1.1',
      '-H',
      'Upgrade: websocket',
      '-H',
      'Connection: Upgrade',
      `${nginx.url}/v1/up`,
    ]);
    const byUrl = Object.fromEntries(seen.map((s) => [s.url, s]));
    for (const u of ['/v1/plain', '/v1/plain-h2']) {
      const h = byUrl[u]!.headers;
      assert.equal(byUrl[u]!.kind, 'request');
      assert.notEqual(String(h.connection).toLowerCase(), 'upgrade', `${u}: connection=${h.connection}`);
      assert.equal(h.upgrade, undefined);
      assert.equal(h['x-forwarded-proto'], 'https');
      assert.equal(h['x-real-ip'], '127.0.0.9');
      assert.equal(h['x-forwarded-for'], '127.0.0.9');
    }
    assert.equal(byUrl['/v1/up']?.kind, 'upgrade');
    assert.equal(String(byUrl['/v1/up']!.headers.connection).toLowerCase(), 'upgrade');
    assert.equal(byUrl['/v1/up']!.headers.upgrade, 'websocket');
  });
});
