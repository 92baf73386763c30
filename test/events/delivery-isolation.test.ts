import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { imageSkipReason, runCli, waitFor } from '../helpers/env.js';
import { SupervisorProcess } from '../helpers/supervisor.js';
import { Receiver } from './receiver.js';

const skip = imageSkipReason();

async function call(sup: SupervisorProcess, method: string, path: string, body?: unknown): Promise<any> {
  const r = await fetch(`${sup.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${sup.token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  return r.json();
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

describe('a hanging or failing receiver never slows the API; dead letters and redelivery', { skip }, () => {
  const secret = `whsec_${randomBytes(16).toString('hex')}`;
  const hang = new Receiver(secret);
  const failing = new Receiver(secret);
  const withHooks = new SupervisorProcess();
  const plain = new SupervisorProcess();

  before(async () => {
    hang.mode = 'hang';
    failing.mode = 'fail';
    const hangPort = await hang.listen();
    const failPort = await failing.listen();
    const config = join(withHooks.dataDir, 'webhooks.json');
    writeFileSync(
      config,
      JSON.stringify({
        endpoints: [
          { name: 'hang', url: `http://127.0.0.1:${hangPort}/`, secret },
          { name: 'fail', url: `http://127.0.0.1:${failPort}/`, secret, events: ['security.*'], max_attempts: 2 },
        ],
      }),
    );
    await withHooks.start(['--destroy-on-exit', '--webhooks-config', config, '--webhook-backoff-ms', '100']);
    await plain.start(['--destroy-on-exit']);
  });
  after(async () => {
    await Promise.all([withHooks.stop(), plain.stop()]);
    await Promise.all([hang.close(), failing.close()]);
    withHooks.removeDataDir();
    plain.removeDataDir();
  });

  test('execute p50 with the receiver hanging is within 20 % of p50 with no webhook', async () => {
    const a = await call(withHooks, 'POST', '/v1/sandboxes', {});
    const b = await call(plain, 'POST', '/v1/sandboxes', {});
    // Many events stuck against the hanging receiver: every delivery slot is busy.
    for (let i = 0; i < 40; i++) await call(withHooks, 'POST', '/v1/sandboxes', { cpu: 64 });
    const pending = await call(withHooks, 'GET', '/v1/webhooks/deliveries?status=pending&limit=500');
    assert.ok(pending.deliveries.length >= 40);
    const run = async (sup: SupervisorProcess, id: string) => {
      const t0 = performance.now();
      const r = await call(sup, 'POST', `/v1/sandboxes/${id}/execute`, { command: ['true'] });
      assert.equal(r.exit_code, 0);
      return performance.now() - t0;
    };
    for (let i = 0; i < 3; i++) await Promise.all([run(withHooks, a.id), run(plain, b.id)]); // warm-up
    const hooked: number[] = [];
    const bare: number[] = [];
    for (let i = 0; i < 30; i++) {
      // Interleaved, alternating order, so drift on the host hits both alike.
      if (i % 2) {
        hooked.push(await run(withHooks, a.id));
        bare.push(await run(plain, b.id));
      } else {
        bare.push(await run(plain, b.id));
        hooked.push(await run(withHooks, a.id));
      }
    }
    const ph = median(hooked);
    const pb = median(bare);
    console.log(`# execute p50: receiver hanging ${ph.toFixed(1)} ms, no webhook ${pb.toFixed(1)} ms (ratio ${(ph / pb).toFixed(3)})`);
    assert.ok(ph <= pb * 1.2, `p50 ${ph.toFixed(1)} ms vs ${pb.toFixed(1)} ms`);
  });

  test('failing deliveries are dead-lettered, listed, and redelivered with the same event id', async () => {
    const env = { SANDFORGE_URL: withHooks.url, SANDFORGE_TOKEN: withHooks.token };
    const dead = await waitFor(
      'dead letters',
      async () => {
        const r = await call(withHooks, 'GET', '/v1/webhooks/deliveries?status=dead&limit=500');
        return r.deliveries.length >= 40 ? r.deliveries : null;
      },
      30_000,
    );
    assert.ok(dead.every((d: any) => d.endpoint === 'fail' && d.attempts === 2 && /HTTP 500/.test(d.last_error)));
    const ls = await runCli(['webhooks', 'ls', '--status', 'dead'], { env });
    assert.equal(ls.code, 0, ls.stderr);
    assert.match(ls.stdout, /dead/);
    failing.mode = 'ok';
    const r = await runCli(['webhooks', 'redeliver', dead[0].id], { env });
    assert.equal(r.code, 0, r.stderr);
    await waitFor('redelivered', () => failing.received.some((x) => x.body.id === dead[0].event_id), 10_000);
    const again = await runCli(['webhooks', 'redeliver', '999999'], { env });
    assert.equal(again.code, 1);
    assert.match(again.stderr, /no webhook delivery/);
  });
});
