import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { imageSkipReason } from '../helpers/env.js';
import { DEPLOY, execFileP } from './helpers.js';

// Installs for real on this machine (user sandforge, /opt/sandforge, /etc/sandforge,
// /usr/local/bin/sandforge, the unit). CI machines are throwaway; elsewhere set
// SANDFORGE_TEST_INSTALL=0 to skip. The first run does npm ci + build (~1–2 min).
const skip =
  process.getuid?.() !== 0 ? 'needs root' : process.env.SANDFORGE_TEST_INSTALL === '0' ? 'SANDFORGE_TEST_INSTALL=0' : imageSkipReason();

const PATHS = [
  '/var/lib/sandforge',
  '/var/lib/sandforge/images',
  '/var/lib/sandforge/state',
  '/etc/sandforge',
  '/etc/sandforge/sandforge.env',
  '/etc/systemd/system/sandforge.service',
  '/opt/sandforge',
  '/usr/local/bin/sandforge',
];

async function snapshot(): Promise<string> {
  const { stdout } = await execFileP('stat', ['-c', '%n %U:%G %a %F', ...PATHS]);
  const user = (await execFileP('id', ['sandforge'])).stdout;
  const passwd = (await execFileP('getent', ['passwd', 'sandforge'])).stdout;
  const groups = (await execFileP('getent', ['group', 'sandforge', 'kvm'])).stdout;
  const count = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('sandforge:')).length;
  return [stdout, user, passwd, groups, `passwd entries: ${count}`, readFileSync('/etc/sandforge/sandforge.env', 'utf8')].join('\n');
}

test('deploy/install.sh twice: same state, then doctor passes', { skip, timeout: 600_000 }, async () => {
  const t0 = Date.now();
  const first = await execFileP('bash', [join(DEPLOY, 'install.sh')], { maxBuffer: 16 << 20 });
  const t1 = Date.now();
  const before = await snapshot();
  const second = await execFileP('bash', [join(DEPLOY, 'install.sh')], { maxBuffer: 16 << 20 });
  const t2 = Date.now();
  assert.equal(await snapshot(), before, second.stdout);
  console.log(`install.sh: first run ${((t1 - t0) / 1000).toFixed(0)} s, second ${((t2 - t1) / 1000).toFixed(0)} s`);
  assert.match(first.stdout + second.stdout, /keeping the token/);

  assert.match(before, /^\/etc\/sandforge\/sandforge\.env root:sandforge 640 /m);
  assert.match(before, /^\/etc\/sandforge root:sandforge 750 /m);
  assert.match(before, /^\/var\/lib\/sandforge\/images sandforge:sandforge 750 /m);
  assert.match(before, /^\/var\/lib\/sandforge\/state sandforge:sandforge 750 /m);
  assert.match(readFileSync('/etc/sandforge/sandforge.env', 'utf8'), /^SANDFORGE_TOKEN=sf_live_[0-9a-f]{32}$/m);
  assert.match((await execFileP('id', ['-nG', 'sandforge'])).stdout, /\bkvm\b/);
  await assert.rejects(execFileP('runuser', ['-u', 'nobody', '--', 'cat', '/etc/sandforge/sandforge.env']));
  assert.ok(existsSync('/opt/sandforge/dist/src/cli/main.js'));

  const v = await execFileP('/usr/local/bin/sandforge', ['--version']);
  assert.match(v.stdout, /\d+\.\d+\.\d+/);
  const doc = await execFileP('/usr/local/bin/sandforge', ['doctor', '--json']);
  const j = JSON.parse(doc.stdout) as { ok: boolean; checks: { name: string; status: string; detail: string }[] };
  assert.equal(j.ok, true, doc.stdout);
  const by = Object.fromEntries(j.checks.map((c) => [c.name, c]));
  for (const n of ['acceleration', 'qemu', 'images', 'permissions', 'disk', 'kvm group', 'systemd unit', 'nginx site', 'token file'])
    assert.ok(by[n], `doctor lacks ${n}`);
  assert.equal(by['systemd unit']!.status, 'ok');
  assert.equal(by['token file']!.status, 'ok');
  assert.equal(by['images']!.status, 'ok');
});
