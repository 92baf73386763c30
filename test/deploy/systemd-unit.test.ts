import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { CLI } from '../helpers/env.js';
import { DEPLOY, execFileP } from './helpers.js';

const UNIT = join(DEPLOY, 'sandforge.service');
const INSTALLED_BIN = '/usr/local/bin/sandforge';

function directives(text: string): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const t = line.trim();
    if (!t || t.startsWith('#') || t.startsWith('[')) continue;
    const i = t.indexOf('=');
    const k = t.slice(0, i);
    m.set(k, [...(m.get(k) ?? []), t.slice(i + 1)]);
  }
  return m;
}

test(
  'deploy/sandforge.service: systemd-analyze verify passes',
  { skip: existsSync('/usr/bin/systemd-analyze') ? false : 'no systemd-analyze' },
  async () => {
    // verify checks that ExecStart's binary exists. When install.sh has not run here,
    // /usr/local/bin/sandforge does not exist, so a copy whose ExecStart points at this
    // checkout's bin/sandforge is verified instead (the only line that differs).
    const dir = mkdtempSync(join(tmpdir(), 'sf-unit-'));
    try {
      let path = UNIT;
      if (!existsSync(INSTALLED_BIN)) {
        path = join(dir, 'sandforge.service');
        writeFileSync(path, readFileSync(UNIT, 'utf8').replace(`ExecStart=${INSTALLED_BIN} `, `ExecStart=${CLI} `));
      }
      const r = await execFileP('systemd-analyze', ['verify', path]).catch((e: { stderr: string; code: number }) => e);
      assert.equal('code' in r ? r.code : 0, 0, `systemd-analyze verify ${path}: ${'stderr' in r ? r.stderr : ''}`);
      assert.equal(r.stderr.trim(), '', r.stderr);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);

test('deploy/sandforge.service: the settings the deployment relies on', () => {
  const d = directives(readFileSync(UNIT, 'utf8'));
  const one = (k: string) => d.get(k)?.at(-1);
  assert.equal(one('ExecStart'), '/usr/local/bin/sandforge supervisor --port 8585 --host 127.0.0.1 --images /var/lib/sandforge/images');
  assert.equal(one('User'), 'sandforge');
  assert.equal(one('Group'), 'kvm');
  assert.equal(one('Restart'), 'on-failure');
  assert.equal(one('RestartSec'), '5s');
  assert.equal(one('LimitNOFILE'), '65535');
  assert.equal(one('After'), 'network.target');
  assert.equal(one('EnvironmentFile'), '/etc/sandforge/sandforge.env');
  assert.equal(d.get('Environment'), undefined, 'no inline Environment= (the token belongs in the EnvironmentFile)');
  assert.equal(one('KillMode'), 'process', 'VMs must survive a restart to be adopted');
  assert.ok(one('TimeoutStopSec'));
  assert.equal(one('NoNewPrivileges'), 'yes');
  assert.equal(one('ProtectSystem'), 'strict');
  assert.equal(one('ReadWritePaths'), '/var/lib/sandforge');
  assert.equal(one('DeviceAllow'), '/dev/kvm rw');
  assert.equal(d.get('PrivateDevices'), undefined, 'PrivateDevices hides /dev/kvm');
  assert.equal(d.get('MemoryDenyWriteExecute'), undefined, 'MemoryDenyWriteExecute breaks the JIT and TCG');
});
