import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { FULL_MODE_DENIED_RANGES } from '../../src/policy/network-policy.js';
import { ROOT } from '../helpers/env.js';

const GUARD = join(ROOT, 'dist/native/egress-guard.so');
const run = promisify(execFile);

/** A client process with the guard preloaded, as QEMU runs in network mode full. */
async function probe(port: number, env: Record<string, string>): Promise<string> {
  const script = `require('node:net').connect(${port}, '127.0.0.1').on('connect', () => { console.log('CONNECTED'); process.exit(0); }).on('error', (e) => { console.log(e.code); process.exit(0); });`;
  const r = await run(process.execPath, ['-e', script], { env: { ...process.env, LD_PRELOAD: GUARD, ...env } });
  return r.stdout.trim();
}

describe('egress guard (preloaded into QEMU in network mode full)', { skip: existsSync(GUARD) ? false : `${GUARD} not built` }, () => {
  let server: Server;
  let port: number;
  let dir: string;
  let accepted = 0;
  const deny = FULL_MODE_DENIED_RANGES.map(([rule, cidr]) => `${rule}=${cidr}`).join(',');

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sf-guard-'));
    server = createServer((_q, s) => s.end('ok'));
    server.on('connection', () => accepted++);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as { port: number }).port;
  });
  after(() => {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('a denied destination is refused before the kernel sees it, and logged with its rule', async () => {
    const log = join(dir, 'refusals.log');
    assert.equal(await probe(port, { SANDFORGE_EGRESS_DENY: deny, SANDFORGE_EGRESS_LOG: log }), 'ECONNREFUSED');
    assert.equal(readFileSync(log, 'utf8'), `127.0.0.1 ${port} loopback_address\n`);
    assert.equal(accepted, 0, 'the server never saw a connection');
  });

  test('an allowed CIDR and the resolvers on port 53 pass; other destinations are untouched', async () => {
    assert.equal(await probe(port, { SANDFORGE_EGRESS_DENY: deny, SANDFORGE_EGRESS_ALLOW: '127.0.0.1/32' }), 'CONNECTED');
    assert.equal(await probe(port, { SANDFORGE_EGRESS_DENY: 'host_address=10.9.9.9/32' }), 'CONNECTED');
    // The DNS exception is port 53 only.
    assert.equal(await probe(port, { SANDFORGE_EGRESS_DENY: deny, SANDFORGE_EGRESS_DNS: '127.0.0.1' }), 'ECONNREFUSED');
  });

  test('a configuration it cannot parse refuses every IP destination', async () => {
    const log = join(dir, 'broken.log');
    assert.equal(await probe(port, { SANDFORGE_EGRESS_DENY: 'loopback_address=127.0.0.0/99', SANDFORGE_EGRESS_LOG: log }), 'EACCES');
    assert.match(readFileSync(log, 'utf8'), /guard_misconfigured/);
  });
});
