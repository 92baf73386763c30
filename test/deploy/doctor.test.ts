import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { deploymentChecks, detectCloud, type HostPaths } from '../../src/doctor/checks.js';
import { runCli } from '../helpers/env.js';

const dir = mkdtempSync(join(tmpdir(), 'sf-doctor-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function host(o: {
  vendor?: string;
  product?: string;
  kvm?: boolean;
  groups?: string;
  unit?: boolean;
  site?: boolean;
  env?: number;
}): HostPaths {
  const d = mkdtempSync(join(dir, 'h-'));
  mkdirSync(join(d, 'dmi'));
  if (o.vendor) writeFileSync(join(d, 'dmi/sys_vendor'), o.vendor + '\n');
  if (o.product) writeFileSync(join(d, 'dmi/product_name'), o.product + '\n');
  if (o.kvm) writeFileSync(join(d, 'kvm'), '');
  writeFileSync(join(d, 'group'), o.groups ?? '');
  if (o.unit) writeFileSync(join(d, 'unit'), '');
  if (o.site) writeFileSync(join(d, 'site'), '');
  if (o.env !== undefined) {
    writeFileSync(join(d, 'env'), 'SANDFORGE_TOKEN=x\n');
    chmodSync(join(d, 'env'), o.env);
  }
  return {
    kvm: join(d, 'kvm'),
    dmiDir: join(d, 'dmi'),
    groupFile: join(d, 'group'),
    unit: join(d, 'unit'),
    nginxSite: join(d, 'site'),
    envFile: join(d, 'env'),
  };
}
const byName = (r: ReturnType<typeof deploymentChecks>) => Object.fromEntries(r.map((c) => [c.name, c]));
const alice = { name: 'alice', uid: 1000, gids: [1000] };

test('detectCloud reads DMI', () => {
  assert.deepEqual(detectCloud(host({ vendor: 'Google', product: 'Google Compute Engine' }).dmiDir), {
    provider: 'gcp',
    instance: 'Google Compute Engine',
  });
  assert.deepEqual(detectCloud(host({ vendor: 'Amazon EC2', product: 'c6i.xlarge' }).dmiDir), { provider: 'aws', instance: 'c6i.xlarge' });
  assert.equal(detectCloud(host({ vendor: 'QEMU', product: 'Standard PC' }).dmiDir), null);
});

test('no /dev/kvm on GCP / AWS: warn with the nested-virtualization hint, never fail', () => {
  const gcp = byName(deploymentChecks(host({ vendor: 'Google', product: 'Google Compute Engine', groups: 'kvm:x:995:\n' }), alice));
  assert.equal(gcp['kvm device']!.status, 'warn');
  assert.equal(gcp.cloud!.status, 'warn');
  assert.match(gcp.cloud!.fix!, /--enable-nested-virtualization/);
  assert.match(gcp.cloud!.fix!, /N2, N1 or C2/);
  const aws = byName(deploymentChecks(host({ vendor: 'Amazon EC2', product: 'm5.large', groups: 'kvm:x:995:\n' }), alice));
  assert.match(aws.cloud!.fix!, /\.metal/);
  assert.match(aws.cloud!.fix!, /Nitro/);
  for (const r of [gcp, aws]) assert.ok(Object.values(r).every((c) => c.status !== 'fail'));
});

test('kvm group, unit, nginx site, token file', () => {
  const bare = byName(deploymentChecks(host({ kvm: true, groups: 'kvm:x:995:bob\n' }), alice));
  assert.equal(bare['kvm group']!.status, 'warn');
  assert.match(bare['kvm group']!.fix!, /usermod -aG kvm alice/);
  assert.equal(bare['systemd unit']!.status, 'info');
  assert.equal(bare['nginx site']!.status, 'info');
  assert.equal(bare['token file'], undefined);
  const noGroup = byName(deploymentChecks(host({ groups: 'users:x:100:\n' }), alice));
  assert.equal(noGroup['kvm group']!.status, 'warn');
  assert.match(noGroup['kvm group']!.detail, /no kvm group/);

  const full = byName(
    deploymentChecks(host({ kvm: true, groups: 'kvm:x:995:alice,sandforge\n', unit: true, site: true, env: 0o640 }), alice),
  );
  assert.equal(full['kvm group']!.status, 'ok');
  assert.equal(full['systemd unit']!.status, 'ok');
  assert.equal(full['nginx site']!.status, 'ok');
  assert.equal(full['service user']!.status, 'ok');
  assert.equal(full['token file']!.status, 'ok');
  const leaky = byName(deploymentChecks(host({ groups: 'kvm:x:995:\n', env: 0o644 }), alice));
  assert.equal(leaky['token file']!.status, 'warn');
});

test('sandforge doctor --json lists the deployment checks', async () => {
  const r = await runCli(['doctor', '--json']);
  const j = JSON.parse(r.stdout) as { ok: boolean; checks: { name: string; status: string }[] };
  const names = j.checks.map((c) => c.name);
  for (const n of ['acceleration', 'kvm group', 'systemd unit', 'nginx site'])
    assert.ok(names.includes(n), `${n} missing from ${names.join(', ')}`);
  assert.ok(j.checks.every((c) => ['ok', 'info', 'warn', 'fail'].includes(c.status)));
  assert.equal(r.code, j.ok ? 0 : 1);
});
