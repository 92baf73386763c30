import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CLI, IMAGES_DIR, imageSkipReason, qemuProcesses } from '../helpers/env.js';
import { freePort } from '../helpers/supervisor.js';
import { curl, execFileP } from './helpers.js';

const skip = process.getuid?.() !== 0 ? 'needs root (creates the sandforge user, uses runuser)' : imageSkipReason();

/** The same user/groups deploy/install.sh creates, if it has not run on this machine. */
async function ensureServiceUser(): Promise<void> {
  const has = (db: string, k: string) =>
    execFileP('getent', [db, k]).then(
      () => true,
      () => false,
    );
  if (!(await has('group', 'kvm'))) await execFileP('groupadd', ['--system', 'kvm']);
  if (!(await has('group', 'sandforge'))) await execFileP('groupadd', ['--system', 'sandforge']);
  if (!(await has('passwd', 'sandforge'))) {
    await execFileP('useradd', [
      '--system',
      '--gid',
      'sandforge',
      '--groups',
      'kvm',
      '--home-dir',
      '/var/lib/sandforge',
      '--no-create-home',
      '--shell',
      '/usr/sbin/nologin',
      'sandforge',
    ]);
  }
}

describe('the supervisor as the unprivileged sandforge user', { skip }, () => {
  let dir: string;
  let child: ChildProcess;
  let port: number;
  let log = '';
  const token = `sf_live_${randomBytes(16).toString('hex')}`;
  const auth = () => ['-H', `Authorization: Bearer ${token}`];

  before(async () => {
    await ensureServiceUser();
    const { stdout } = await execFileP('id', ['-u', 'sandforge']);
    const uid = Number(stdout);
    const gid = Number((await execFileP('id', ['-g', 'sandforge'])).stdout);
    // The layout install.sh makes, in a temp dir: images and state owned by sandforge,
    // 0750; the token file root:sandforge 0640 in a root:sandforge 0750 directory.
    dir = mkdtempSync('/tmp/sf-svcuser-');
    chmodSync(dir, 0o755);
    const images = join(dir, 'images');
    mkdirSync(join(images, 'default'), { recursive: true });
    for (const f of readdirSync(join(IMAGES_DIR, 'default'))) copyFileSync(join(IMAGES_DIR, 'default', f), join(images, 'default', f));
    mkdirSync(join(dir, 'state'));
    await execFileP('chown', ['-R', `${uid}:${gid}`, images, join(dir, 'state')]);
    chmodSync(images, 0o750);
    chmodSync(join(dir, 'state'), 0o750);
    const etc = join(dir, 'etc');
    mkdirSync(etc);
    chownSync(etc, 0, gid);
    chmodSync(etc, 0o750);
    writeFileSync(join(etc, 'token'), token + '\n');
    chownSync(join(etc, 'token'), 0, gid);
    chmodSync(join(etc, 'token'), 0o640);

    port = await freePort();
    // As the unit runs it: user sandforge, group kvm, supplementary group sandforge.
    // The agent disk is built on first use by the service user itself (images/.agents).
    child = spawn(
      'runuser',
      [
        '-u',
        'sandforge',
        '-g',
        'kvm',
        '-G',
        'sandforge',
        '--',
        process.execPath,
        CLI,
        'supervisor',
        '--port',
        String(port),
        '--host',
        '127.0.0.1',
        '--images',
        images,
        '--data',
        join(dir, 'state'),
        '--token-file',
        join(etc, 'token'),
        '--destroy-on-exit',
      ],
      { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/var/lib/sandforge' }, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    child.stdout!.on('data', (b: Buffer) => (log += b.toString()));
    child.stderr!.on('data', (b: Buffer) => (log += b.toString()));
    const deadline = Date.now() + 120_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`supervisor exited: ${log}`);
      if ((await curl([`http://127.0.0.1:${port}/healthz`]).catch(() => ({ status: 0 }))).status === 200) break;
      if (Date.now() > deadline) throw new Error(`supervisor did not start: ${log}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  });

  after(async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM'); // runuser passes it on to the supervisor
      await exited;
    }
    if (dir) {
      assert.deepEqual(qemuProcesses(dir), []);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('create, execute, destroy; the VM runs as sandforge; state is sandforge-owned', async () => {
    const created = await curl([...auth(), '-H', 'content-type: application/json', '-d', '{}', `http://127.0.0.1:${port}/v1/sandboxes`]);
    assert.equal(created.status, 201, `${created.text}\n${log.slice(-3000)}`);
    const id = created.body.id as string;
    const ex = await curl([
      ...auth(),
      '-H',
      'content-type: application/json',
      '-d',
      '{"command":"echo inside; uname -r"}',
      `http://127.0.0.1:${port}/v1/sandboxes/${id}/execute`,
    ]);
    assert.equal(ex.status, 200, ex.text);
    assert.match(ex.body.stdout, /^inside\n/);

    const pids = qemuProcesses(dir);
    assert.equal(pids.length, 1);
    const uid = Number((await execFileP('id', ['-u', 'sandforge'])).stdout);
    assert.equal(statSync(`/proc/${pids[0]}`).uid, uid, 'QEMU runs as sandforge');
    for (const p of ['state/sandforge.db', 'state/templates', 'images/.agents']) assert.equal(statSync(join(dir, p)).uid, uid, p);

    const del = await curl([...auth(), '-X', 'DELETE', `http://127.0.0.1:${port}/v1/sandboxes/${id}`]);
    assert.equal(del.status, 200);
    assert.deepEqual(qemuProcesses(dir), []);
  });

  test('the token file is readable by the service, not by other users', async () => {
    const file = join(dir, 'etc/token');
    const st = statSync(file);
    assert.equal(st.mode & 0o777, 0o640);
    assert.equal(st.uid, 0);
    await assert.rejects(execFileP('runuser', ['-u', 'nobody', '--', 'cat', file]));
    await execFileP('runuser', ['-u', 'sandforge', '--', 'cat', file]);
  });
});
