import { describe, test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { performance } from 'node:perf_hooks';
import { AgentContext } from '../../agent/context.js';
import { HELPER_PY, HELPER_PYTHONS, HelperUnavailable, SystemHelper, type HelperInitRequest } from '../../agent/services/system-helper.js';
import { applyInit, currentSystemHelper, privilegedInit, type PrivilegedInit } from '../../agent/services/system-setup.js';
import { checkInitResponse } from '../../src/shared/protocol.js';
import { pidGone, waitFor } from './helpers.js';

const python = HELPER_PYTHONS.find((p) => existsSync(p));
const skip = python ? false : 'no python3 on this host';
const dir = mkdtempSync(join(tmpdir(), 'sf-helper-test-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const nowNs = () => BigInt(Date.now()) * 1_000_000n;
const req = (o: Partial<HelperInitRequest> = {}): HelperInitRequest => ({
  timeNs: nowNs(),
  entropy: randomBytes(64),
  hostname: 'sb-test',
  ...o,
});

/** A fake helper in node: prints the ready line, then `behaviour` decides what to do with requests. */
function fakeHelper(name: string, body: string): { file: string; args: string[] } {
  const path = join(dir, `${name}.cjs`);
  writeFileSync(path, body);
  return { file: process.execPath, args: [path] };
}

const dryRun = (o: ConstructorParameters<typeof SystemHelper>[0] = {}) =>
  new SystemHelper({ pythons: [python ?? '/nonexistent'], args: ['--dry-run'], ...o });

const recordingFallback = () => {
  const calls: string[] = [];
  const fallback = async (t: { hostname: string }): Promise<PrivilegedInit> => {
    calls.push(t.hostname);
    return { clockSet: true, crngReseeded: true, hostnameSet: true, warnings: ['from-fallback'] };
  };
  return { calls, fallback };
};

/** Raw line protocol against the real helper script in dry-run mode. */
async function rawSession(lines: string[]): Promise<Record<string, unknown>[]> {
  const child = spawn(python!, ['-I', '-S', '-c', HELPER_PY, '--dry-run'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const rl = createInterface({ input: child.stdout });
  const out: Record<string, unknown>[] = [];
  const done = new Promise<void>((resolve) => rl.on('close', resolve));
  rl.on('line', (l) => out.push(JSON.parse(l) as Record<string, unknown>));
  child.stdin.end(lines.map((l) => `${l}\n`).join(''));
  await done;
  return out;
}

describe('system helper protocol (python, dry-run)', { skip }, () => {
  test('announces itself, then answers one line per request, in order, echoing ids', async () => {
    const b64 = randomBytes(32).toString('base64');
    const t = nowNs();
    const ok = (id: number, h: string) => `{"op":"init","id":${id},"time_ns":${t},"entropy_b64":"${b64}","hostname":"${h}"}`;
    const out = await rawSession([ok(1, 'a'), ok(2, 'b.example.com'), ok(3, 'c-1')]);
    assert.equal(out.length, 4);
    assert.equal(out[0]!.ready, true);
    assert.equal(out[0]!.dry_run, true);
    for (const [i, r] of out.slice(1).entries()) {
      assert.equal(r.id, i + 1);
      assert.equal(r.ok, true);
      assert.deepEqual([r.clock_set, r.crng_reseeded, r.hostname_set, r.errors], [true, true, true, []]);
      assert.equal(typeof r.clock_target_ns, 'number');
    }
  });

  test('rejects anything but a well-formed init, one answer per line, and keeps serving', async () => {
    const t = nowNs();
    const b64 = randomBytes(32).toString('base64');
    const base = { op: 'init', time_ns: 0, entropy_b64: b64, hostname: 'ok' };
    const withT = (o: Record<string, unknown>) => JSON.stringify({ ...base, ...o }).replace('"time_ns":0', `"time_ns":${t}`);
    const bad = [
      'not json',
      '[1,2]',
      '"init"',
      withT({ op: 'exec' }),
      withT({ op: 'init', argv: ['/bin/sh'] }),
      JSON.stringify({ ...base, time_ns: 5 }),
      JSON.stringify({ ...base, time_ns: true }),
      JSON.stringify(base).replace('"time_ns":0', '"time_ns":1.7e18'),
      JSON.stringify(base).replace('"time_ns":0', `"time_ns":${t * 10n}`),
      withT({ mono_ns: -1 }),
      withT({ entropy_b64: randomBytes(4097).toString('base64') }),
      withT({ entropy_b64: 'not base64!' }),
      withT({ entropy_b64: '' }),
      withT({ hostname: '-bad' }),
      withT({ hostname: 'a'.repeat(65) }),
      withT({ hostname: 'bad_name' }),
      withT({ hostname: 'ünïcode' }),
      withT({ hostname: 'a\nb' }),
      withT({ hostname: 7 }),
      'x'.repeat(70_000),
    ];
    const good = withT({ id: 99, entropy_b64: randomBytes(4096).toString('base64'), hostname: `${'a'.repeat(61)}.bc` });
    const out = await rawSession([...bad, good]);
    assert.equal(out.length, 1 + bad.length + 1);
    for (const [i, r] of out.slice(1, -1).entries()) {
      assert.equal(r.ok, false, `line ${i}: ${bad[i]!.slice(0, 80)} → ${JSON.stringify(r)}`);
      assert.equal(typeof r.error, 'string');
    }
    assert.equal(out.at(-1)!.ok, true);
    assert.equal(out.at(-1)!.id, 99);
  });
});

describe('SystemHelper client', () => {
  test('dry-run helper: stays resident across requests, serializes concurrent ones', { skip }, async () => {
    const h = dryRun();
    try {
      assert.equal(await h.whenReady(), true);
      const pid = h.pid;
      assert.ok(pid);
      const results = await Promise.all(Array.from({ length: 5 }, (_, i) => h.init(req({ hostname: `h${i}` }))));
      for (const r of results) assert.deepEqual([r.clock_set, r.crng_reseeded, r.hostname_set, r.errors], [true, true, true, []]);
      assert.equal(h.pid, pid, 'same process answered every request');
      const t0 = performance.now();
      await h.init(req());
      assert.ok(performance.now() - t0 < 500, 'a warm round trip is fast');
    } finally {
      h.stop();
    }
  });

  test('adds the time the request spent in the pipe to the target clock', { skip }, async () => {
    const h = dryRun();
    try {
      await h.whenReady();
      const r = await h.init(req({ timeNs: nowNs() }));
      assert.ok(r.clock_target_ms !== undefined);
      assert.ok(Math.abs(r.clock_target_ms - Date.now()) < 1000, `target ${r.clock_target_ms} vs now ${Date.now()}`);
    } finally {
      h.stop();
    }
  });

  test('rejects oversized entropy before sending', { skip }, async () => {
    const h = dryRun();
    try {
      await assert.rejects(h.init(req({ entropy: randomBytes(4097) })), RangeError);
      assert.equal((await h.init(req())).clock_set, true, 'still usable');
    } finally {
      h.stop();
    }
  });

  test('a request the helper rejects is reported, and the helper keeps running', { skip }, async () => {
    const h = dryRun();
    try {
      await h.whenReady();
      const pid = h.pid;
      await assert.rejects(
        h.init(req({ hostname: 'bad_host' })),
        (e: unknown) => e instanceof HelperUnavailable && /invalid hostname/.test(e.message),
      );
      assert.equal(h.pid, pid);
    } finally {
      h.stop();
    }
  });

  test('absent python3: unavailable, marked absent, nothing spawned', async () => {
    const h = new SystemHelper({ pythons: ['/nonexistent/python3'] });
    assert.equal(h.start(), false);
    await assert.rejects(h.init(req()), (e: unknown) => e instanceof HelperUnavailable && e.absent);
    assert.equal(h.pid, null);
  });

  test('a helper that does not answer times out, is killed, and is restarted on the next request', async () => {
    const hang = fakeHelper(
      'hang',
      `process.stdout.write('{"ready":true}\\n'); process.stdin.on('data', () => {}); setInterval(() => {}, 1e6);`,
    );
    const h = new SystemHelper({ command: hang, requestTimeoutMs: 300 });
    try {
      assert.equal(await h.whenReady(), true);
      const pid = h.pid!;
      const t0 = performance.now();
      await assert.rejects(h.init(req()), (e: unknown) => e instanceof HelperUnavailable && /timed out/.test(e.message));
      assert.ok(performance.now() - t0 < 2000);
      assert.ok(await waitFor(() => pidGone(pid), 2000), 'the stuck helper was killed');
      assert.equal(h.pid, null);
      await assert.rejects(h.init(req()), /timed out/);
      assert.notEqual(h.pid, pid);
    } finally {
      h.stop();
    }
  });

  test('a helper that never gets ready is killed after the ready timeout', async () => {
    const mute = fakeHelper('mute', `setInterval(() => {}, 1e6);`);
    const h = new SystemHelper({ command: mute, readyTimeoutMs: 300 });
    try {
      assert.equal(h.start(), true);
      const pid = h.pid!;
      assert.equal(await h.whenReady(), false);
      assert.ok(await waitFor(() => pidGone(pid), 2000));
    } finally {
      h.stop();
    }
  });

  test('answers that break the framing kill the helper', async () => {
    const liar = fakeHelper(
      'liar',
      `process.stdout.write('{"ready":true}\\n');
       require('readline').createInterface({ input: process.stdin }).on('line', (l) => {
         const { id } = JSON.parse(l);
         process.stdout.write(JSON.stringify({ id: id + 1, ok: true, clock_set: true, crng_reseeded: true, hostname_set: true, errors: [] }) + '\\n');
       });`,
    );
    const h = new SystemHelper({ command: liar });
    try {
      await h.whenReady();
      const pid = h.pid!;
      await assert.rejects(h.init(req()), /out of order/);
      assert.ok(await waitFor(() => pidGone(pid), 2000));
    } finally {
      h.stop();
    }
  });

  test('gives up after repeated start failures', async () => {
    const dies = fakeHelper('dies', `process.exit(3);`);
    const h = new SystemHelper({ command: dies });
    for (let i = 0; i < 3; i++) await assert.rejects(h.init(req()), HelperUnavailable);
    assert.equal(h.start(), false);
    await assert.rejects(h.init(req()), (e: unknown) => e instanceof HelperUnavailable && e.absent);
  });
});

describe('privilegedInit: helper first, spawn fallback otherwise', () => {
  const target = () => ({ timeMs: Date.now(), receivedAt: performance.now(), entropy: randomBytes(64), hostname: 'sb-x' });

  test('uses the helper when it answers; the fallback is not run', { skip }, async () => {
    const h = dryRun();
    const { calls, fallback } = recordingFallback();
    try {
      const r = await privilegedInit(target(), { helper: h, fallback });
      assert.deepEqual(r, { clockSet: true, crngReseeded: true, hostnameSet: true, warnings: [] });
      assert.deepEqual(calls, []);
    } finally {
      h.stop();
    }
  });

  test('no helper (no python3): fallback, without an extra warning', async () => {
    const { calls, fallback } = recordingFallback();
    const h = new SystemHelper({ pythons: ['/nonexistent/python3'] });
    const r = await privilegedInit(target(), { helper: h, fallback });
    assert.deepEqual(calls, ['sb-x']);
    assert.deepEqual(r.warnings, ['from-fallback']);
    assert.equal(r.clockSet, true);
    const r2 = await privilegedInit(target(), { helper: null, fallback });
    assert.deepEqual(r2.warnings, ['from-fallback']);
  });

  test('helper died: fallback with a warning, then the helper is restarted lazily', { skip }, async () => {
    const h = dryRun();
    const { calls, fallback } = recordingFallback();
    try {
      await h.whenReady();
      const pid = h.pid!;
      process.kill(pid, 'SIGKILL');
      await waitFor(() => h.pid === null, 2000);
      // The next init restarts it and uses it.
      const r = await privilegedInit(target(), { helper: h, fallback });
      assert.deepEqual(calls, []);
      assert.equal(r.clockSet, true);
      assert.notEqual(h.pid, pid);
      assert.ok(h.pid);
    } finally {
      h.stop();
    }
  });

  test('helper timed out: fallback with a warning', async () => {
    const hang = fakeHelper(
      'hang2',
      `process.stdout.write('{"ready":true}\\n'); process.stdin.on('data', () => {}); setInterval(() => {}, 1e6);`,
    );
    const h = new SystemHelper({ command: hang, requestTimeoutMs: 200 });
    const { calls, fallback } = recordingFallback();
    try {
      const r = await privilegedInit(target(), { helper: h, fallback });
      assert.deepEqual(calls, ['sb-x']);
      assert.equal(r.warnings.length, 2);
      assert.match(r.warnings[0]!, /^helper: .*timed out.*spawn fallback/);
      assert.equal(r.warnings[1], 'from-fallback');
    } finally {
      h.stop();
    }
  });

  test('a throwing fallback becomes a warning, never an exception', async () => {
    const r = await privilegedInit(target(), {
      helper: null,
      fallback: async () => {
        throw new Error('boom');
      },
    });
    assert.deepEqual(r, { clockSet: false, crngReseeded: false, hostnameSet: false, warnings: ['fallback: boom'] });
  });
});

describe('applyInit in --no-system mode', () => {
  test('starts no helper and keeps the response shape', async () => {
    const ctx = new AgentContext({ noSystem: true, log: () => undefined });
    const res = await applyInit(
      ctx,
      { time_ms: Date.now(), entropy_b64: randomBytes(64).toString('base64'), hostname: 'sb-n', sandbox_id: 'sb-n', env: { A: '1' } },
      performance.now(),
    );
    checkInitResponse(res, 'res');
    assert.equal(res.clock_set, false);
    assert.equal(res.crng_reseeded, false);
    assert.equal(res.hostname_set, false);
    assert.equal(res.entropy_mixed_bytes, 64);
    assert.equal(currentSystemHelper(), null);
    assert.equal(ctx.sandboxId, 'sb-n');
    assert.deepEqual(ctx.defaultEnv, { A: '1' });
  });
});
