import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { imageSkipReason, qemuProcesses, vmLeftovers } from '../helpers/env.js';
import { SupervisorProcess } from '../helpers/supervisor.js';

const skip = imageSkipReason();

/** Host mounts through the API on a real supervisor: policy refusals, read-write, read-only, export confinement. */
describe('host mounts via the API', { skip }, () => {
  const sup = new SupervisorProcess();
  let root: string;
  let allowed: string;
  const secret = `outside-${randomBytes(8).toString('hex')}`;

  const api = (method: string, path: string, body?: unknown) => sup.api(method, path, body);
  const exec = async (id: string, command: string) => {
    const r = await api('POST', `/v1/sandboxes/${id}/execute`, { command, timeout_seconds: 60 });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body as { exit_code: number; stdout: string; stderr: string };
  };

  before(async () => {
    root = realpathSync(mkdtempSync(join(tmpdir(), 'sf-mounts-')));
    allowed = join(root, 'allowed');
    mkdirSync(join(allowed, 'rw'), { recursive: true });
    mkdirSync(join(allowed, 'ro'), { recursive: true });
    mkdirSync(join(root, 'home', '.ssh'), { recursive: true });
    mkdirSync(join(root, 'outside'), { recursive: true });
    writeFileSync(join(allowed, 'rw', 'hello.txt'), 'from the host\n');
    writeFileSync(join(allowed, 'ro', 'data.txt'), 'read me\n');
    // Next to the exports, never meant for the guest.
    writeFileSync(join(allowed, 'outside-secret.txt'), `${secret}\n`);
    writeFileSync(join(root, 'outside-secret.txt'), `${secret}\n`);
    symlinkSync(join(root, 'home', '.ssh'), join(allowed, 'ssh-link'));
    symlinkSync(join(root, 'outside'), join(allowed, 'out-link'));
    // A host-made symlink inside the export pointing out of it.
    symlinkSync(root, join(allowed, 'rw', 'host-link'));
    await sup.start(['--destroy-on-exit', '--allow-mount', allowed]);
  });
  after(async () => {
    await sup.stop();
    assert.deepEqual(vmLeftovers(sup.dataDir), []);
    assert.deepEqual(qemuProcesses(sup.dataDir), []);
    sup.removeDataDir();
    rmSync(root, { recursive: true, force: true });
  });

  test('refusals answer 403 policy_denied naming the rule, and boot nothing', async () => {
    const cases: [unknown, RegExp][] = [
      [{ host_path: 'allowed/rw', guest_path: '/w' }, /not absolute/],
      [{ host_path: `${allowed}/rw/../../outside`, guest_path: '/w' }, /'\.\.' segment/],
      [{ host_path: join(allowed, 'ssh-link'), guest_path: '/w' }, /blocked name "\.ssh" \(--block-mount-name\)/],
      [{ host_path: join(root, 'outside'), guest_path: '/w' }, /outside every allowed prefix \(--allow-mount/],
      [{ host_path: '/etc', guest_path: '/w' }, /outside every allowed prefix/],
      [{ host_path: join(allowed, 'rw', 'credentials'), guest_path: '/w' }, /blocked name "credentials"/],
      [
        { host_path: join(allowed, 'out-link', 'not-yet'), guest_path: '/w' },
        /resolves to .*outside\/not-yet.*outside every allowed prefix/,
      ],
      [{ host_path: join(allowed, 'rw'), guest_path: '/etc' }, /guest_path "\/etc": \/etc is a system path/],
      [{ host_path: join(allowed, 'rw'), guest_path: 'w' }, /must be an absolute path/],
    ];
    for (const [mount, re] of cases) {
      const r = await api('POST', '/v1/sandboxes', { mounts: [mount] });
      assert.equal(r.status, 403, JSON.stringify({ mount, body: r.body }));
      assert.equal(r.body.error.code, 'policy_denied');
      assert.match(r.body.error.message, /^mount refused: /);
      assert.match(r.body.error.message, re);
    }
    const missing = await api('POST', '/v1/sandboxes', { mounts: [{ host_path: join(allowed, 'no-such-dir'), guest_path: '/w' }] });
    assert.equal(missing.status, 400, JSON.stringify(missing.body));
    assert.match(missing.body.error.message, /does not exist/);
    const list = await api('GET', '/v1/sandboxes');
    assert.equal(list.body.filter((s: { status: string }) => s.status === 'running').length, 0);
  });

  test('read-write and read-only mounts; the guest cannot leave an export', async () => {
    const created = await api('POST', '/v1/sandboxes', {
      mounts: [
        { host_path: join(allowed, 'rw'), guest_path: '/mnt/rw', read_only: false },
        { host_path: join(allowed, 'ro'), guest_path: '/data/ro', read_only: true },
      ],
    });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    const id = created.body.id as string;
    try {
      // Read-write: host files visible, guest writes land on the host.
      const rw = await exec(
        id,
        'cat /mnt/rw/hello.txt && echo "from the guest" > /mnt/rw/from-guest.txt && mkdir -p /mnt/rw/d/e && echo x > /mnt/rw/d/e/f',
      );
      assert.equal(rw.exit_code, 0, rw.stderr);
      assert.equal(rw.stdout, 'from the host\n');
      assert.equal(readFileSync(join(allowed, 'rw', 'from-guest.txt'), 'utf8'), 'from the guest\n');
      assert.equal(readFileSync(join(allowed, 'rw', 'd', 'e', 'f'), 'utf8'), 'x\n');

      // Read-only: readable, writes fail, also after the guest remounts it read-write (QEMU enforces readonly=on).
      const ro = await exec(
        id,
        'cat /data/ro/data.txt; echo nope > /data/ro/new.txt; echo "w1=$?"; mount -o remount,rw /data/ro; echo "remount=$?"; echo nope > /data/ro/new2.txt; echo "w2=$?"; rm /data/ro/data.txt; echo "rm=$?"; touch /data/ro/data.txt; echo "touch=$?"',
      );
      assert.match(ro.stdout, /^read me\n/);
      assert.match(ro.stdout, /w1=[1-9]/);
      assert.match(ro.stdout, /w2=[1-9]/);
      assert.match(ro.stdout, /rm=[1-9]/);
      assert.match(ro.stdout, /touch=[1-9]/);
      assert.match(ro.stderr, /Read-only file system|Permission denied|Operation not permitted/);
      assert.equal(existsSync(join(allowed, 'ro', 'new.txt')), false);
      assert.equal(existsSync(join(allowed, 'ro', 'new2.txt')), false);
      assert.equal(readFileSync(join(allowed, 'ro', 'data.txt'), 'utf8'), 'read me\n');

      // A symlink the guest creates resolves inside the guest: /etc is the guest's.
      const guestHost = (await exec(id, 'hostname')).stdout.trim();
      assert.notEqual(guestHost, hostname());
      const link = await exec(id, 'ln -s /etc /mnt/rw/etc-link && cat /mnt/rw/etc-link/hostname');
      assert.equal(link.exit_code, 0, link.stderr);
      assert.equal(link.stdout.trim(), guestHost);

      // Neither '..' nor a host-made symlink reaches the host folders around the export.
      const escape = await exec(
        id,
        'cat /mnt/rw/../outside-secret.txt /mnt/rw/../../outside-secret.txt /mnt/rw/host-link/outside-secret.txt /mnt/rw/host-link/allowed/outside-secret.txt 2>&1; ls -a /mnt/rw/.. /mnt/rw/../.. 2>&1; grep -r "' +
          secret +
          '" /mnt /data 2>/dev/null; echo done',
      );
      assert.doesNotMatch(escape.stdout, new RegExp(secret), escape.stdout);
      assert.doesNotMatch(escape.stdout, /outside-secret\.txt\n/);
      assert.match(escape.stdout, /done\n$/);
      // Spare slots: the guest may mount an unused tag, but it is the template's empty read-only folder.
      const spare = await exec(
        id,
        'mkdir -p /tmp/s && mount -t 9p -o trans=virtio,version=9p2000.L sf2 /tmp/s && ls -A /tmp/s | wc -l && touch /tmp/s/x; echo "t=$?"',
      );
      assert.match(spare.stdout, /^0\n/);
      assert.match(spare.stdout, /t=[1-9]/);
    } finally {
      const del = await api('DELETE', `/v1/sandboxes/${id}`);
      assert.equal(del.status, 200);
    }
  });
});
