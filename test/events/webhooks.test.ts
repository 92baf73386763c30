import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { imageSkipReason, qemuProcesses, runCli, waitFor } from '../helpers/env.js';
import { freePort, SupervisorProcess } from '../helpers/supervisor.js';
import { Receiver } from './receiver.js';

const skip = imageSkipReason();

async function api(
  sup: SupervisorProcess,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; text: string; json: any }> {
  const r = await fetch(`${sup.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${sup.token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await r.text();
  return { status: r.status, text, json: text ? JSON.parse(text) : null };
}

/** Reads SSE events from /v1/events until `n` arrived. */
async function readSse(sup: SupervisorProcess, lastEventId: string | null, n: number): Promise<{ id: number; event: string; data: any }[]> {
  const ac = new AbortController();
  const r = await fetch(`${sup.url}/v1/events`, {
    headers: { authorization: `Bearer ${sup.token}`, ...(lastEventId !== null ? { 'last-event-id': lastEventId } : {}) },
    signal: ac.signal,
  });
  assert.equal(r.headers.get('content-type'), 'text/event-stream');
  const out: { id: number; event: string; data: any }[] = [];
  let buf = '';
  const dec = new TextDecoder();
  const timer = setTimeout(() => ac.abort(), 10_000);
  try {
    for await (const chunk of r.body as unknown as AsyncIterable<Uint8Array>) {
      buf += dec.decode(chunk, { stream: true });
      let i: number;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const f: Record<string, string> = {};
        for (const line of block.split('\n'))
          if (!line.startsWith(':')) f[line.slice(0, line.indexOf(':'))] = line.slice(line.indexOf(':') + 2);
        if (f.id) out.push({ id: Number(f.id), event: f.event!, data: JSON.parse(f.data!) });
      }
      if (out.length >= n) break;
    }
  } finally {
    clearTimeout(timer);
    ac.abort();
  }
  return out;
}

describe('webhooks: outage, kill -9, audit, secrets, SSE', { skip }, () => {
  const secret = `whsec_${randomBytes(16).toString('hex')}`;
  const receiver = new Receiver(secret);
  const sup = new SupervisorProcess();
  const createSecret = `createsecret-${randomBytes(12).toString('hex')}`;
  const execSecret = `execsecret-${randomBytes(12).toString('hex')}`;
  let port: number;
  let args: string[];
  let supLogs = '';
  const errorBodies: string[] = [];

  before(async () => {
    port = await freePort();
    const secretFile = join(sup.dataDir, 'webhook-secret');
    writeFileSync(secretFile, secret + '\n', { mode: 0o600 });
    args = [
      '--destroy-on-exit',
      '--log-level',
      'debug',
      '--webhook-url',
      `http://127.0.0.1:${port}/hook`,
      '--webhook-secret-file',
      secretFile,
      '--webhook-backoff-ms',
      '250',
      '--webhook-backoff-max-ms',
      '2000',
      '--webhook-max-attempts',
      '1000',
    ];
    await sup.start(args);
  });
  after(async () => {
    await sup.stop();
    await receiver.close();
    sup.removeDataDir();
  });

  test('receiver down 30 s and a kill -9 meanwhile: every event arrives, signed, with original ids and per-sandbox sequences', async () => {
    const outageStart = Date.now();
    const a = await api(sup, 'POST', '/v1/sandboxes', { secret_env: { CREATE_SECRET: createSecret } });
    assert.equal(a.status, 201, a.text);
    const idA = a.json.id as string;
    const echo = await api(sup, 'POST', `/v1/sandboxes/${idA}/execute`, {
      command: 'echo "$CREATE_SECRET $EXEC_SECRET"',
      secret_env: { EXEC_SECRET: execSecret },
      env: { PLAIN: 'visible' },
    });
    assert.equal(echo.json.stdout, `${createSecret} ${execSecret}\n`, 'secrets reach the command');
    const slow = await api(sup, 'POST', `/v1/sandboxes/${idA}/execute`, {
      command: ['sleep', '30'],
      timeout_seconds: 1,
      secret_env: { EXEC_SECRET: execSecret },
    });
    assert.equal(slow.json.timed_out, true);
    const upload = await fetch(`${sup.url}/v1/sandboxes/${idA}/files?path=/tmp/x.txt`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${sup.token}`, 'content-type': 'application/octet-stream' },
      body: 'hello',
    });
    assert.equal(upload.status, 200);
    for (const [body, status] of [
      [{ cpu: 64 }, 400],
      [{ memory_mb: 262144 }, 400],
      [{ mounts: [{ host_path: '/tmp', guest_path: '/mnt' }] }, 403],
    ] as const) {
      const r = await api(sup, 'POST', '/v1/sandboxes', { ...body, secret_env: { S: execSecret } });
      assert.equal(r.status, status, r.text);
      errorBodies.push(r.text);
    }
    const b = await api(sup, 'POST', '/v1/sandboxes', {});
    const idB = b.json.id as string;
    const qemuB = qemuProcesses(join(sup.dataDir, 'vms', idB));
    assert.equal(qemuB.length, 1);
    process.kill(qemuB[0]!, 'SIGKILL');
    await waitFor('sandbox B failed', async () => (await api(sup, 'GET', `/v1/sandboxes/${idB}`)).json.status === 'failed');

    const pending = await api(sup, 'GET', '/v1/webhooks/deliveries?status=pending');
    const ids = new Set<string>(pending.json.deliveries.map((d: { event_id: string }) => d.event_id));
    assert.ok(ids.size >= 9, `pending deliveries: ${pending.text}`);
    const cli = await runCli(['webhooks', 'ls', '--status', 'pending', '--json'], {
      env: { SANDFORGE_URL: sup.url, SANDFORGE_TOKEN: sup.token },
    });
    assert.equal(cli.code, 0, cli.stderr);
    assert.equal((JSON.parse(cli.stdout) as unknown[]).length, ids.size);

    supLogs += sup.log;
    await sup.kill9();
    await sup.start(args);
    const del = await api(sup, 'DELETE', `/v1/sandboxes/${idA}`);
    assert.equal(del.status, 200, `A was adopted after kill -9: ${del.text}`);
    for (const [m, p] of [
      ['POST', `/v1/sandboxes/${idA}/execute`],
      ['POST', '/v1/sandboxes/sb_00000000000000000000/execute'],
    ] as const) {
      const r = await api(sup, m, p, { command: `echo ${execSecret}`, secret_env: { K: execSecret } });
      assert.ok(r.status >= 400);
      errorBodies.push(r.text);
    }

    await new Promise((r) => setTimeout(r, Math.max(0, outageStart + 30_000 - Date.now())));
    assert.equal(receiver.received.length, 0);
    await receiver.listen(port);
    const upAt = Date.now();
    await waitFor(
      'every event delivered',
      async () => (await api(sup, 'GET', '/v1/webhooks/deliveries?status=pending')).json.deliveries.length === 0,
      30_000,
    );
    console.log(`# outage ${((upAt - outageStart) / 1000).toFixed(1)} s; all delivered ${Date.now() - upAt} ms after the receiver came up`);
    assert.equal(receiver.rejected, 0, 'every delivery verifies');
    const got = new Map(receiver.received.map((r) => [r.body.id, r.body]));
    for (const id of ids) assert.ok(got.has(id), `event ${id} from before kill -9 arrived with its original id`);
    for (const r of receiver.received) assert.equal(r.raw, JSON.stringify(r.body), 'compact JSON');
    const types = [...got.values()].map((e) => `${e.data.sandbox_id ?? '-'} ${e.event}`);
    for (const t of [
      `${idA} sandbox.created`,
      `${idA} sandbox.started`,
      `${idA} task.timeout`,
      `${idA} sandbox.destroyed`,
      `${idB} sandbox.failed`,
      '- security.violation',
    ]) {
      assert.ok(types.includes(t), `${t} in ${types.join(', ')}`);
    }
    const bySandbox = new Map<string, number[]>();
    for (const e of got.values()) {
      assert.match(e.id, /^evt_[0-9a-f]{24}$/);
      const k = e.data.sandbox_id ?? '-';
      bySandbox.set(k, [...(bySandbox.get(k) ?? []), e.data.sequence]);
    }
    for (const [k, seqs] of bySandbox)
      assert.deepEqual(
        seqs.sort((x, y) => x - y),
        seqs.map((_, i) => i + 1),
        `sequences of ${k}`,
      );
    const timeout = [...got.values()].find((e) => e.event === 'task.timeout')!;
    assert.deepEqual(timeout.data.command, ['sleep', '30']);
    assert.equal(timeout.data.limit_seconds, 1);
    assert.equal(timeout.data.sandbox_id, idA);

    // SSE: the same events, resumable with Last-Event-ID.
    const all = await readSse(sup, '0', got.size);
    assert.deepEqual(new Set(all.map((e) => e.data.id)), new Set(got.keys()));
    assert.ok(all.every((e, i) => i === 0 || e.id > all[i - 1]!.id));
    const resumed = await readSse(sup, String(all[2]!.id), 1);
    assert.equal(resumed[0]!.id, all[3]!.id);
    assert.equal(resumed[0]!.event, all[3]!.event);

    // Audit: who, what, outcome; filters and cursor pagination.
    const audit = await api(sup, 'GET', `/v1/audit?sandbox_id=${idA}&limit=100`);
    const kinds = audit.json.entries.map((e: { kind: string }) => e.kind);
    for (const k of ['sandbox.create', 'sandbox.execute', 'file.write', 'sandbox.destroy'])
      assert.ok(kinds.includes(k), `${k} audited: ${kinds}`);
    for (const e of audit.json.entries) assert.match(e.actor, /^tok_[0-9a-f]{12}$/);
    const timedOut = audit.json.entries.find((e: any) => e.kind === 'sandbox.execute' && e.detail.argv);
    assert.deepEqual(timedOut.detail.argv, ['sleep', '30']);
    assert.equal(timedOut.detail.secret_env.EXEC_SECRET, '[REDACTED]');
    const echoRow = audit.json.entries.find((e: any) => e.kind === 'sandbox.execute' && e.detail.shell && e.outcome === 'ok');
    assert.ok(audit.json.entries.some((e: any) => e.kind === 'sandbox.execute' && e.error_code === 'sandbox_not_running'));
    assert.equal(echoRow.exit_code, 0);
    assert.equal(echoRow.detail.env.PLAIN, 'visible');
    const p1 = await api(sup, 'GET', `/v1/audit?sandbox_id=${idA}&limit=2`);
    const p2 = await api(sup, 'GET', `/v1/audit?sandbox_id=${idA}&limit=2&cursor=${p1.json.next_cursor}`);
    assert.deepEqual(
      [...p1.json.entries, ...p2.json.entries].map((e: { id: number }) => e.id),
      audit.json.entries.slice(0, 4).map((e: { id: number }) => e.id),
    );
    const refused = await api(sup, 'GET', '/v1/audit?kind=sandbox.create');
    assert.ok(refused.json.entries.some((e: any) => e.error_code === 'limit_exceeded'));
    const cliAudit = await runCli(['audit', '--sandbox', idA, '--json'], { env: { SANDFORGE_URL: sup.url, SANDFORGE_TOKEN: sup.token } });
    assert.equal(cliAudit.code, 0, cliAudit.stderr);
    assert.equal((JSON.parse(cliAudit.stdout) as unknown[]).length, audit.json.entries.length);

    // Secret values: nowhere in logs, the database files, webhook bodies, audit rows or error bodies.
    await sup.stop();
    supLogs += sup.log;
    const places: [string, string][] = [
      ['supervisor output', supLogs],
      ['webhook bodies', receiver.received.map((r) => r.raw).join('\n')],
      ['audit rows', audit.text + refused.text + cliAudit.stdout],
      ['error bodies', errorBodies.join('\n')],
    ];
    for (const f of readdirSync(sup.dataDir).filter((f) => f.startsWith('sandforge.db')))
      places.push([f, readFileSync(join(sup.dataDir, f)).toString('latin1')]);
    assert.ok(places.length >= 5);
    for (const [where, text] of places) {
      assert.ok(text.length > 0, where);
      for (const s of [createSecret, execSecret]) assert.ok(!text.includes(s), `a secret value leaked into ${where}`);
    }
    await sup.start(args); // for after()
  });
});
