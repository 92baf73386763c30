import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { Client } from '../../sdk/src/index.js';
import type { SandboxHandle } from '../../sdk/src/index.js';
import { imageSkipReason, qemuProcesses, runCli, vmLeftovers, waitFor } from '../helpers/env.js';
import { SupervisorProcess } from '../helpers/supervisor.js';

const execFileP = promisify(execFile);

/** A JSON body over the 16 MiB API limit, in a file for curl's --data-binary @file. */
function bigBody(): string {
  const path = join(tmpdir(), `sf-big-${process.pid}.json`);
  writeFileSync(path, JSON.stringify({ metadata: { big: 'x'.repeat(17 * 1024 * 1024) } }));
  return path;
}
const skip = imageSkipReason();

/** curl, as operators and the docs use it; returns status and parsed JSON body. */
async function curl(args: string[]): Promise<{ status: number; body: any }> {
  const { stdout } = await execFileP('curl', ['-sS', '-w', '\n%{http_code}', ...args], { maxBuffer: 64 * 1024 * 1024 });
  const nl = stdout.lastIndexOf('\n');
  const text = stdout.slice(0, nl);
  return { status: Number(stdout.slice(nl + 1)), body: text ? JSON.parse(text) : null };
}

describe('supervisor REST API on a real supervisor', { skip }, () => {
  const sup = new SupervisorProcess();
  let client: Client;
  const auth = () => ['-H', `Authorization: Bearer ${sup.token}`];

  before(async () => {
    await sup.start(['--destroy-on-exit', '--max-memory-mb', '4096', '--max-disk-mb', '8192', '--max-timeout-seconds', '3600']);
    client = new Client({ baseUrl: sup.url, token: sup.token });
  });
  after(async () => {
    await sup.stop();
    assert.deepEqual(vmLeftovers(sup.dataDir), [], 'VM dirs left after --destroy-on-exit');
    assert.deepEqual(qemuProcesses(sup.dataDir), []);
    sup.removeDataDir();
  });

  test('documented calls with curl: create → list → execute → delete', async () => {
    const created = await curl([
      ...auth(),
      '-H',
      'content-type: application/json',
      '-d',
      '{"cpu":2,"memory_mb":1024,"network":"offline"}',
      `${sup.url}/v1/sandboxes`,
    ]);
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const sb = created.body;
    assert.match(sb.id, /^sb_[0-9a-f]{20}$/);
    assert.equal(sb.status, 'running');
    assert.equal(sb.cpu, 2);
    assert.equal(sb.memory_mb, 1024);
    assert.equal(sb.network, 'offline');
    assert.ok(!Number.isNaN(Date.parse(sb.created_at)));

    const list = await curl([...auth(), `${sup.url}/v1/sandboxes`]);
    assert.equal(list.status, 200);
    assert.ok(Array.isArray(list.body) && list.body.some((s: { id: string }) => s.id === sb.id));

    const ex = await curl([
      ...auth(),
      '-H',
      'content-type: application/json',
      '-d',
      JSON.stringify({ command: 'echo out; echo err >&2; echo $FOO; exit 3', timeout_seconds: 30, env: { FOO: 'bar' } }),
      `${sup.url}/v1/sandboxes/${sb.id}/execute`,
    ]);
    assert.equal(ex.status, 200, JSON.stringify(ex.body));
    assert.deepEqual(
      { exit_code: ex.body.exit_code, stdout: ex.body.stdout, stderr: ex.body.stderr, timed_out: ex.body.timed_out },
      { exit_code: 3, stdout: 'out\nbar\n', stderr: 'err\n', timed_out: false },
    );

    const del = await curl([...auth(), '-X', 'DELETE', `${sup.url}/v1/sandboxes/${sb.id}`]);
    assert.equal(del.status, 200);
    assert.equal(del.body.id, sb.id);
    assert.equal(del.body.status, 'terminated');
    assert.equal(typeof del.body.message, 'string');
    assert.deepEqual(vmLeftovers(sup.dataDir), []);
  });

  test('CLI client commands: create, ps, exec, rm (with --json)', async () => {
    const env = { SANDFORGE_URL: sup.url, SANDFORGE_TOKEN: sup.token };
    const created = await runCli(['create', '--json'], { env });
    assert.equal(created.code, 0, created.stderr);
    const id = JSON.parse(created.stdout).id as string;
    assert.match(id, /^sb_/);
    const ps = await runCli(['ps', '--json'], { env });
    assert.ok((JSON.parse(ps.stdout) as { id: string }[]).some((s) => s.id === id));
    const ex = await runCli(['exec', id, '--', 'sh', '-c', 'echo hi; exit 3'], { env });
    assert.equal(ex.code, 3);
    assert.equal(ex.stdout, 'hi\n');
    const piped = await runCli(['exec', id, '--', 'wc', '-c'], { env, input: 'abcd' });
    assert.equal(piped.stdout.trim(), '4');
    const rm = await runCli(['rm', '--json', id], { env });
    assert.equal(rm.code, 0, rm.stderr);
    const gone = await runCli(['exec', id, '--', 'true'], { env });
    assert.notEqual(gone.code, 0);
    assert.match(gone.stderr, /terminated|not running/);
    const bad = await runCli(['exec', 'sb_00000000000000000000', '--', 'true'], { env });
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /no sandbox/);
    const noToken = await runCli(['ps'], { env: { SANDFORGE_URL: sup.url, SANDFORGE_TOKEN: 'sf_live_wrongwrongwrongwrong' } });
    assert.equal(noToken.code, 1);
    assert.match(noToken.stderr, /invalid token/);
  });

  test('no token or a wrong token → 401 with a JSON error', async () => {
    const none = await curl([`${sup.url}/v1/sandboxes`]);
    assert.equal(none.status, 401);
    assert.equal(none.body.error.code, 'unauthorized');
    assert.match(none.body.error.message, /Authorization/);
    const wrong = await curl(['-H', 'Authorization: Bearer sf_live_wrongwrongwrongwrong', `${sup.url}/v1/sandboxes`]);
    assert.equal(wrong.status, 401);
    assert.equal(wrong.body.error.code, 'unauthorized');
    const health = await curl([`${sup.url}/healthz`]);
    assert.equal(health.status, 200);
  });

  test('bad input gets 400/404/413 with {error: {code, message}}', async () => {
    const post = (path: string, data: string) =>
      curl([...auth(), '-H', 'content-type: application/json', '--data-binary', data, `${sup.url}${path}`]);
    const cases: [Promise<{ status: number; body: any }>, number, string, RegExp][] = [
      [post('/v1/sandboxes', '{"cpu": 2,'), 400, 'bad_request', /malformed JSON/],
      [post('/v1/sandboxes', '{"cpus": 2}'), 400, 'invalid_argument', /unknown field "cpus"/],
      [post('/v1/sandboxes', '{"cpu": 0}'), 400, 'invalid_argument', /cpu/],
      [post('/v1/sandboxes', '{"cpu": "2"}'), 400, 'invalid_argument', /cpu/],
      [post('/v1/sandboxes', '{"cpu": 64}'), 400, 'limit_exceeded', /--max-cpu/],
      [post('/v1/sandboxes', '{"memory_mb": 8192}'), 400, 'limit_exceeded', /memory_mb 8192 exceeds the server limit of 4096/],
      [post('/v1/sandboxes', '{"memory_mb": 64}'), 400, 'invalid_argument', /below image "default"'s minimum/],
      [post('/v1/sandboxes', '{"image": "nope"}'), 404, 'image_not_found', /sandforge image build/],
      [
        post('/v1/sandboxes', '{"disk_mb": 9000}'),
        400,
        'limit_exceeded',
        /disk_mb 9000 exceeds the server limit of 8192 \(--max-disk-mb\)/,
      ],
      [post('/v1/sandboxes', '{"timeout_seconds": 7200}'), 400, 'limit_exceeded', /--max-timeout-seconds/],
      [post('/v1/sandboxes', '{"network": "internet"}'), 400, 'invalid_argument', /network/],
      [post('/v1/sandboxes/sb_00000000000000000000/execute', '{"command": "true"}'), 404, 'sandbox_not_found', /no sandbox/],
      [post('/v1/sandboxes/../../etc/execute', '{"command": "true"}'), 404, 'not_found', /no route/],
      [curl([...auth(), `${sup.url}/v1/sandboxes/not-an-id`]), 404, 'sandbox_not_found', /no sandbox/],
      [post('/v1/sandboxes', `@${bigBody()}`), 413, 'payload_too_large', /./],
    ];
    for (const [p, status, code, msg] of cases) {
      const r = await p;
      assert.equal(r.status, status, JSON.stringify(r.body).slice(0, 300));
      assert.equal(r.body.error.code, code);
      assert.match(r.body.error.message, msg);
    }
    // The server is still fine after all that, and counted each refusal above the maxima.
    assert.equal((await curl([`${sup.url}/healthz`])).status, 200);
    const info = await curl([...auth(), `${sup.url}/v1/info`]);
    assert.equal(info.body.counters.limit_refusals, 4, JSON.stringify(info.body.counters));
    assert.ok(info.body.counters.security_violations >= 4);
    assert.equal(info.body.capacity.max_disk_mb, 8192);
    assert.equal(info.body.capacity.max_timeout_seconds, 3600);
  });

  describe('with running sandboxes', () => {
    let a: SandboxHandle;
    let b: SandboxHandle;
    before(async () => {
      [a, b] = await Promise.all([client.create(), client.create()]);
    });
    after(async () => {
      await Promise.all([a.kill(), b.kill()]);
    });

    test('two clones of one template have their own randomness and the host clock', async () => {
      const cmd = 'head -c 32 /dev/urandom | od -An -tx1 | tr -d " \\n"; echo; date +%s.%N';
      const [ra, rb] = await Promise.all([a.commands.run(cmd), b.commands.run(cmd)]);
      const hostNow = Date.now() / 1000;
      const [randA, timeA] = ra.stdout.trim().split('\n');
      const [randB, timeB] = rb.stdout.trim().split('\n');
      assert.match(randA!, /^[0-9a-f]{64}$/);
      assert.notEqual(randA, randB);
      for (const t of [timeA, timeB]) assert.ok(Math.abs(Number(t) - hostNow) < 2, `guest clock ${t} vs host ${hostNow}`);
      const [ha, hb] = await Promise.all([a.commands.run('hostname'), b.commands.run('hostname')]);
      assert.notEqual(ha.stdout, hb.stdout);
    });

    test('files: a 50 MB random file round-trips byte-identical; list, stat, mkdir, rename, remove', async () => {
      const data = randomBytes(50 * 1024 * 1024);
      const w = await a.files.write('/root/blob.bin', data);
      assert.equal(w.size, data.length);
      const back = await a.files.read('/root/blob.bin');
      assert.equal(createHash('sha256').update(back).digest('hex'), createHash('sha256').update(data).digest('hex'));
      const inGuest = await a.commands.run('sha256sum /root/blob.bin | cut -d" " -f1');
      assert.equal(inGuest.stdout.trim(), createHash('sha256').update(data).digest('hex'));

      await a.files.mkdir('/root/d/e');
      await a.files.write('/root/d/e/hello.txt', 'hello');
      const entries = await a.files.list('/root/d/e');
      assert.deepEqual(
        entries.map((e) => [e.name, e.type, e.size]),
        [['hello.txt', 'file', 5]],
      );
      await a.files.rename('/root/d/e/hello.txt', '/root/d/hi.txt');
      assert.equal((await a.files.stat('/root/d/hi.txt')).size, 5);
      await a.files.remove('/root/d', { recursive: true });
      await assert.rejects(a.files.stat('/root/d'), (e: any) => e.status === 404);
      await assert.rejects(a.files.read('/nope/missing'), (e: any) => e.status === 404);
      await assert.rejects(a.files.read('relative/path'), (e: any) => e.status === 400);
    });

    test('WebSocket stream: stdout before exit, stdin, exit code; PTY shows a /dev/pts device', async () => {
      const chunks: { at: number; text: string }[] = [];
      const s = await a.commands.stream('echo first; read line; echo "got $line"; sleep 1; exit 5', {
        onStdout: (d) => chunks.push({ at: Date.now(), text: d.toString() }),
      });
      await waitFor('first output before the command ends', () => chunks.some((c) => c.text.includes('first')));
      await s.sendStdin('hello\n');
      const exit = await s.wait();
      assert.equal(exit.exit_code, 5);
      assert.equal(chunks.map((c) => c.text).join(''), 'first\ngot hello\n');

      let out = '';
      const pty = await a.commands.stream('tty', { pty: { rows: 24, cols: 80 }, onStdout: (d) => (out += d.toString()) });
      const pexit = await pty.wait();
      assert.equal(pexit.exit_code, 0);
      assert.match(out, /\/dev\/pts\/\d+/);
    });

    test('NDJSON streaming execute', async () => {
      const r = await fetch(`${sup.url}/v1/sandboxes/${b.id}/execute`, {
        method: 'POST',
        headers: { authorization: `Bearer ${sup.token}`, 'content-type': 'application/json', accept: 'application/x-ndjson' },
        body: JSON.stringify({ command: ['sh', '-c', 'echo one; echo two >&2; exit 4'] }),
      });
      assert.equal(r.status, 200);
      const lines = (await r.text())
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
      const text = (t: string) =>
        lines
          .filter((l) => l.type === t)
          .map((l) => Buffer.from(l.data, 'base64').toString())
          .join('');
      assert.equal(text('stdout'), 'one\n');
      assert.equal(text('stderr'), 'two\n');
      assert.deepEqual({ ...lines.at(-1), duration_ms: 0 }, { type: 'exit', exit_code: 4, signal: null, timed_out: false, duration_ms: 0 });
    });

    test('a command past timeout_seconds is killed and reported', async () => {
      const r = await b.commands.run('sleep 100 & sleep 100', { timeoutSeconds: 1 });
      assert.equal(r.timed_out, true);
      const ps = await b.commands.run('pgrep -x sleep || true');
      assert.equal(ps.stdout.trim(), '');
    });
  });

  test('a sandbox whose timeout_seconds passes is destroyed by itself', async () => {
    const sb = await client.create({ timeout_seconds: 3 });
    await waitFor('expiry', async () => (await sb.refresh()).status === 'terminated', 30_000);
    assert.ok(!vmLeftovers(sup.dataDir).includes(sb.id));
  });

  test('20 sandboxes created and destroyed leave no QEMU, socket or disk', async () => {
    const created: SandboxHandle[] = [];
    for (let i = 0; i < 4; i++) created.push(...(await Promise.all(Array.from({ length: 5 }, () => client.create()))));
    assert.equal(created.length, 20);
    assert.equal(qemuProcesses(sup.dataDir).length, 20);
    const results = await Promise.all(created.map((s) => s.kill()));
    assert.ok(results.every((r) => r.status === 'terminated'));
    await waitFor('all QEMU gone', () => qemuProcesses(sup.dataDir).length === 0, 10_000);
    assert.deepEqual(vmLeftovers(sup.dataDir), []);
  });

  test('info and OpenAPI describe the server', async () => {
    const info = await client.info();
    assert.ok(['kvm', 'tcg'].includes(info.acceleration.accel));
    assert.ok(info.images.some((i) => i.name === 'default'));
    const spec = await curl([...auth(), `${sup.url}/v1/openapi.json`]);
    assert.equal(spec.status, 200);
    assert.equal(spec.body.openapi, '3.1.0');
    assert.ok(spec.body.paths['/v1/sandboxes'].post.requestBody);
    assert.ok(spec.body.paths['/v1/sandboxes/{id}/execute'].post);
  });
});

describe('supervisor restart after kill -9', { skip }, () => {
  test('running sandboxes are adopted with their files; dead ones are reported and cleaned', async () => {
    const first = new SupervisorProcess();
    await first.start();
    const c1 = new Client({ baseUrl: first.url, token: first.token });
    const keep = await c1.create();
    const dies = await c1.create();
    await keep.files.write('/root/note.txt', 'still here');
    await first.kill9();

    // While no supervisor runs, one VM dies.
    const [deadPid] = qemuProcesses(`${first.dataDir}/vms/${dies.id}`);
    assert.ok(deadPid);
    process.kill(deadPid, 'SIGKILL');

    const second = new SupervisorProcess(first.dataDir, first.token);
    await second.start(['--destroy-on-exit']);
    try {
      const c2 = new Client({ baseUrl: second.url, token: first.token });
      const k = await c2.get(keep.id);
      assert.equal(k.info.status, 'running');
      assert.equal((await k.commands.run('cat /root/note.txt')).stdout, 'still here');
      assert.equal((await k.files.read('/root/note.txt')).toString(), 'still here');
      const d = await c2.get(dies.id);
      assert.equal(d.info.status, 'failed');
      assert.match(d.info.message ?? '', /died/);
      assert.ok(!vmLeftovers(first.dataDir).includes(dies.id));
    } finally {
      await second.stop();
      assert.deepEqual(qemuProcesses(first.dataDir), []);
      assert.deepEqual(vmLeftovers(first.dataDir), []);
      first.removeDataDir();
    }
  });
});
