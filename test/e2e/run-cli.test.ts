import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { release } from 'node:os';
import { after, before, describe, test } from 'node:test';
import { imageManifest, imageSkipReason, qemuProcesses, runCli, SHARED_DATA_DIR, vmLeftovers, waitFor } from '../helpers/env.js';

const skip = imageSkipReason();

/** `sandforge run` boots real microVMs (TCG here): the proof of issue "microVM base". */
describe('sandforge run', { skip }, () => {
  const assertClean = async () => {
    // A VM's files and process go away with the run; allow a moment for the kernel to reap.
    await waitFor(
      'no VM leftovers',
      () => vmLeftovers(SHARED_DATA_DIR, 'runs').length === 0 && qemuProcesses(`${SHARED_DATA_DIR}/runs/`).length === 0,
      10_000,
    );
  };

  before(async () => {
    // Builds the template on a fresh machine (a cold boot); later runs clone it.
    const r = await runCli(['run', '--', 'true'], { timeoutMs: 600_000 });
    assert.equal(r.code, 0, r.stderr);
  });
  after(assertClean);

  test('uname -r prints the guest kernel, not the host one', async () => {
    const r = await runCli(['run', '--', 'uname', '-r']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), imageManifest().kernel_release);
    assert.notEqual(r.stdout.trim(), release());
    await assertClean();
  });

  test('the exit code is passed through', async () => {
    const r = await runCli(['run', '--', 'sh', '-c', 'exit 7']);
    assert.equal(r.code, 7, r.stderr);
  });

  test('output streams while the command runs', async () => {
    const r = await runCli(['run', '--', 'sh', '-c', 'for i in 1 2 3; do echo $i; sleep 1; done']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, '1\n2\n3\n');
    const first = r.chunks.find((c) => c.text.includes('1'))!;
    const last = r.chunks.find((c) => c.text.includes('3'))!;
    assert.ok(r.chunks.length >= 2, `expected several chunks, got ${JSON.stringify(r.chunks)}`);
    assert.ok(last.atMs - first.atMs >= 1500, `"1" arrived ${first.atMs} ms, "3" ${last.atMs} ms: not streamed`);
  });

  test('env, a shell string and stdin reach the command', async () => {
    const r = await runCli(['run', '-e', 'GREETING=hello', 'echo "$GREETING $(cat)" | tr a-z A-Z'], { input: 'from stdin' });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'HELLO FROM STDIN\n');
  });

  test('a 50 MB random file goes in and comes back byte-identical', async () => {
    const data = randomBytes(50 * 1024 * 1024);
    const sha = createHash('sha256').update(data).digest('hex');
    const r = await runCli(
      ['run', '--timeout', '600', '--', 'sh', '-c', 'cat > /tmp/blob && sha256sum /tmp/blob | cut -d" " -f1 && stat -c %s /tmp/blob'],
      {
        input: data,
        timeoutMs: 600_000,
      },
    );
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n'), [sha, String(data.length)]);
  });

  test('a command past --timeout is killed with its children and reported', async () => {
    const r = await runCli(['run', '--timeout', '2', '--', 'sh', '-c', 'sleep 100 & sleep 100; echo never']);
    assert.equal(r.code, 124);
    assert.match(r.stderr, /timed out after 2s/);
    assert.ok(!r.stdout.includes('never'));
    await assertClean();
  });

  test('SIGINT destroys the sandbox and exits 130', async () => {
    let child: ChildProcess | undefined;
    const p = runCli(['run', '--', 'sh', '-c', 'echo ready; sleep 100'], {
      onSpawn: (c) => {
        child = c;
        c.stdout!.on('data', (b: Buffer) => {
          if (b.toString().includes('ready')) c.kill('SIGINT');
        });
      },
    });
    const r = await p;
    assert.ok(child);
    assert.equal(r.code, 130, r.stderr);
    await assertClean();
  });

  test('kill -9 of sandforge run takes QEMU with it; the next run sweeps the files', async () => {
    const p = runCli(['run', '--', 'sh', '-c', 'echo ready; sleep 100'], {
      onSpawn: (c) => c.stdout!.on('data', (b: Buffer) => b.toString().includes('ready') && c.kill('SIGKILL')),
    });
    const r = await p;
    assert.equal(r.signal, 'SIGKILL');
    await waitFor('QEMU to die with its parent', () => qemuProcesses(`${SHARED_DATA_DIR}/runs/`).length === 0, 10_000);
    assert.equal(vmLeftovers(SHARED_DATA_DIR, 'runs').length, 1, 'the killed run could not clean up its own files');
    const next = await runCli(['run', '--', 'true']);
    assert.equal(next.code, 0, next.stderr);
    await assertClean();
  });

  test('a guest kernel crash ends the run with an error and leaves nothing behind', async () => {
    const r = await runCli(['run', '--', 'sh', '-c', 'echo c > /proc/sysrq-trigger; sleep 30']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /VM stopped unexpectedly|VM exited|connection/i);
    await assertClean();
  });

  test('--network fetch: commands get the proxy; a refused destination is a 403 in the guest and a line on stderr', async () => {
    const r = await runCli([
      'run',
      '--no-dir',
      '--network',
      'fetch',
      '--no-default-fetch-allow',
      '--',
      'sh',
      '-c',
      'echo "$HTTPS_PROXY"; curl -sS -o /dev/null -w "%{http_code}\n" http://example.com/',
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'http://127.0.0.1:3128\n403\n');
    assert.match(r.stderr, /egress refused: example\.com:80 \(domain_not_allowed\)/);
    await assertClean();
  });

  test('--network full: a NIC with NAT; the host loopback behind 10.0.2.2 is refused and reported', async () => {
    const r = await runCli([
      'run',
      '--no-dir',
      '--network',
      'full',
      '--',
      'sh',
      '-c',
      'ls /sys/class/net; curl -s -m 10 http://10.0.2.2:9/; echo "curl exit $?"',
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'eth0\nlo\ncurl exit 7\n', 'curl: could not connect');
    assert.match(r.stderr, /egress refused: 127\.0\.0\.1:9 \(loopback_address\)/);
    await assertClean();
  });

  test('bad input: clear message and non-zero exit', async () => {
    const cases: [string[], RegExp][] = [
      [['run', '--image', 'nope', '--', 'true'], /image "nope" not found.*sandforge image build/],
      [['run', '--cpu', '0', '--', 'true'], /--cpu must be between 1 and/],
      [['run', '--mem', '64', '--', 'true'], /below image "default"'s minimum/],
      [['run'], /missing command/],
      [['run', '--network', 'internet', '--', 'true'], /--network must be one of offline, fetch, full/],
      [['run', '--network', 'fetch', '--fetch-allow', 'http://x', '--', 'true'], /--fetch-allow "http:\/\/x": expected a domain/],
      [['run', '--network', 'fetch', '--fetch-allow-cidr', '10.0.0.0/99', '--', 'true'], /--fetch-allow-cidr "10\.0\.0\.0\/99": prefix/],
    ];
    for (const [args, msg] of cases) {
      const r = await runCli(args);
      assert.notEqual(r.code, 0, args.join(' '));
      assert.match(r.stderr, msg, args.join(' '));
    }
  });
});
