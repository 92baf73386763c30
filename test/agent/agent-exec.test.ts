import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { SandforgeError } from '../../src/shared/errors.js';
import { pidGone, startAgent, waitFor, type TestAgent } from './helpers.js';

describe('agent exec (real agent over a unix socket)', () => {
  let a: TestAgent;
  before(async () => {
    a = await startAgent();
  });
  after(async () => {
    await a.stop();
  });

  test('health', async () => {
    const h = await a.client.health();
    assert.equal(h.protocol, 1);
    assert.match(h.boot_id, /^[0-9a-f-]{36}$/);
    assert.ok(h.uptime_ms > 0);
    assert.equal(h.sandbox_id, null);
  });

  test('argv and shell, exit codes', async () => {
    const r1 = await a.client.run({ argv: ['echo', 'hello', 'world'] });
    assert.equal(r1.stdout, 'hello world\n');
    assert.equal(r1.exit_code, 0);
    assert.equal(r1.signal, null);
    const r2 = await a.client.run({ shell: 'echo out; echo err >&2; exit 7' });
    assert.deepEqual([r2.exit_code, r2.stdout, r2.stderr, r2.timed_out], [7, 'out\n', 'err\n', false]);
  });

  test('env, init env and cwd', async () => {
    await a.client.init({
      time_ms: Date.now(),
      entropy_b64: Buffer.alloc(48, 7).toString('base64'),
      hostname: 'sb-test',
      sandbox_id: 'sb_test1',
      env: { FROM_INIT: 'init', OVERRIDE: 'init' },
    });
    assert.equal((await a.client.health()).sandbox_id, 'sb_test1');
    const r = await a.client.run({ shell: 'echo "$FROM_INIT $OVERRIDE $MINE"; pwd', env: { OVERRIDE: 'spec', MINE: 'x y' }, cwd: a.dir });
    assert.equal(r.stdout, `init spec x y\n${a.dir}\n`);
  });

  test('missing program and missing cwd are not_found', async () => {
    await assert.rejects(a.client.run({ argv: ['/no/such/program'] }), (e: SandforgeError) => e.code === 'not_found');
    await assert.rejects(a.client.run({ argv: ['true'], cwd: '/no/such/dir' }), (e: SandforgeError) => e.code === 'not_found');
    assert.throws(
      () => a.client.exec({ argv: ['true'], shell: 'true' }),
      (e: SandforgeError) => e.code === 'invalid_argument',
    );
  });

  test('runs as another user', async () => {
    const r = await a.client.run({ argv: ['id', '-u'], user: 'nobody' });
    assert.equal(r.stdout.trim(), '65534');
    const r2 = await a.client.run({ shell: 'id -u; echo $HOME', user: 4321 });
    assert.equal(r2.stdout, '4321\n/\n');
  });

  test('output streams before exit', async () => {
    const t0 = Date.now();
    let first = 0;
    const chunks: string[] = [];
    const h = a.client.exec(
      { shell: 'for i in 1 2 3; do echo $i; sleep 0.3; done' },
      {
        onStdout: (c) => {
          first ||= Date.now() - t0;
          chunks.push(c.toString());
        },
      },
    );
    const exit = await h.wait();
    const total = Date.now() - t0;
    assert.equal(chunks.join(''), '1\n2\n3\n');
    assert.equal(exit.exit_code, 0);
    assert.ok(first < total - 500, `first chunk at ${first} ms, exit at ${total} ms`);
  });

  test('exit comes after all output is drained', async () => {
    let bytes = 0;
    const h = a.client.exec(
      { shell: 'head -c 3000000 /dev/zero; head -c 1000000 /dev/zero >&2' },
      {
        onStdout: (c) => (bytes += c.length),
        onStderr: (c) => (bytes += c.length),
      },
    );
    await h.wait();
    assert.equal(bytes, 4_000_000);
  });

  test('stdin round trip, streamed', async () => {
    let out = '';
    const h = a.client.exec({ argv: ['cat'], stdin: true }, { onStdout: (c) => (out += c.toString()) });
    await h.started;
    await h.writeStdin('first\n');
    await h.writeStdin(Buffer.from('second\n'));
    await h.closeStdin();
    const exit = await h.wait();
    assert.equal(exit.exit_code, 0);
    assert.equal(out, 'first\nsecond\n');
    const big = Buffer.alloc(3 * 1024 * 1024, 'a');
    const r = await a.client.run({ argv: ['wc', '-c'] }, { stdin: big });
    assert.equal(r.stdout.trim(), String(big.length));
  });

  test('signal', async () => {
    const h = a.client.exec({ argv: ['sleep', '30'] });
    await h.started;
    h.signal('SIGTERM');
    const exit = await h.wait();
    assert.deepEqual([exit.exit_code, exit.signal, exit.timed_out], [null, 'SIGTERM', false]);
    let out = '';
    const h2 = a.client.exec(
      { shell: "trap 'echo got-usr1; exit 3' USR1; echo ready; while :; do sleep 0.05; done" },
      {
        onStdout: (c) => (out += c.toString()),
      },
    );
    await waitFor(() => out.includes('ready'), 5000);
    h2.signal('SIGUSR1');
    const e2 = await h2.wait();
    assert.equal(e2.exit_code, 3);
    assert.match(out, /got-usr1/);
  });

  test('timeout kills the whole process tree', async () => {
    let out = '';
    const t0 = Date.now();
    const h = a.client.exec({ shell: 'sleep 100 & echo $!; wait', timeout_ms: 600 }, { onStdout: (c) => (out += c.toString()) });
    const exit = await h.wait();
    assert.equal(exit.timed_out, true);
    assert.equal(exit.signal, 'SIGTERM');
    assert.ok(Date.now() - t0 < 5000);
    const child = Number(out.trim());
    assert.ok(child > 0, `background pid from ${JSON.stringify(out)}`);
    assert.ok(await waitFor(() => pidGone(child), 3000), `background sleep ${child} survived the timeout`);
  });

  test('timeout escalates to SIGKILL for a process ignoring SIGTERM', async () => {
    const t0 = Date.now();
    const r = await a.client.run({ shell: "trap '' TERM; sleep 30", timeout_ms: 300 });
    assert.equal(r.timed_out, true);
    // sh ignores TERM and its sleep child inherits that: only the KILL after the grace ends them.
    assert.equal(r.signal, 'SIGKILL');
    assert.ok(Date.now() - t0 >= 1500 && Date.now() - t0 < 6000);
  });

  test('a background child holding stdout does not hold the exit', async () => {
    const t0 = Date.now();
    const r = await a.client.run({ shell: 'sleep 2 & echo started' });
    assert.equal(r.stdout, 'started\n');
    assert.ok(Date.now() - t0 < 1500);
  });

  test('PTY: tty, size and resize', async () => {
    const r = await a.client.run({ argv: ['tty'], pty: { rows: 24, cols: 80 } });
    assert.equal(r.exit_code, 0);
    assert.match(r.stdout.trim(), /^\/dev\/pts\/\d+$/);
    let out = '';
    const h = a.client.exec({ argv: ['/bin/sh'], pty: { rows: 30, cols: 100 } }, { onStdout: (c) => (out += c.toString()) });
    await h.started;
    await h.writeStdin('stty size\n');
    await waitFor(() => out.includes('30 100'), 5000);
    h.resize(40, 120);
    await h.writeStdin('stty size; echo $TERM; exit 5\n');
    const exit = await h.wait();
    assert.equal(exit.exit_code, 5);
    assert.match(out, /30 100/);
    assert.match(out, /40 120/);
    assert.match(out, /xterm-256color/);
  });

  test('closing the client kills running commands', async () => {
    const { AgentClient } = await import('../../src/agent-client/index.js');
    const c2 = await AgentClient.connect(a.socketPath, { timeoutMs: 5000 });
    let out = '';
    const h = c2.exec({ shell: 'echo $$; exec sleep 60' }, { onStdout: (c) => (out += c.toString()) });
    await waitFor(() => out.includes('\n'), 5000);
    const pid = Number(out.trim());
    c2.destroy();
    await assert.rejects(h.wait(), (e: SandforgeError) => e.code === 'agent_unavailable');
    assert.ok(await waitFor(() => pidGone(pid), 3000), 'command survived its client');
  });

  test('run caps output and flags truncation', async () => {
    const r = await a.client.run({ shell: 'head -c 5000 /dev/zero' }, { maxOutputBytes: 1000 });
    assert.equal(r.stdout.length, 1000);
    assert.equal(r.stdout_truncated, true);
    assert.equal(r.stderr_truncated, false);
  });

  test('prepare-snapshot syncs', async () => {
    const r = await a.client.prepareSnapshot();
    assert.equal(r.synced, true);
    assert.equal(r.running_execs, 0);
  });
});
