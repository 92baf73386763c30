import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  HostCgroup,
  cgroupNameForVmDir,
  detectHostCgroup,
  hostCgroupStatus,
  limitsFromQemuArgs,
  parseMountinfo,
  parseProcCgroup,
  qemuCgroupLimits,
} from '../../src/vmm/host-cgroup.js';

const MiB = 1024 * 1024;

test('limits: guest RAM + TCG translation cache + overhead; KVM has no translation cache', () => {
  assert.equal(qemuCgroupLimits({ memoryMb: 1024, tcg: true }).memoryBytes, (1024 + 1024 + 256) * MiB);
  assert.equal(qemuCgroupLimits({ memoryMb: 1024, tcg: false }).memoryBytes, (1024 + 256) * MiB);
  assert.equal(limitsFromQemuArgs(['-accel', 'tcg,thread=multi', '-m', '512M'])!.memoryBytes, (512 + 1024 + 256) * MiB);
  assert.equal(limitsFromQemuArgs(['-accel', 'tcg,thread=multi,tb-size=128', '-m', '512M'])!.memoryBytes, (512 + 128 + 256) * MiB);
  assert.equal(limitsFromQemuArgs(['-accel', 'kvm', '-m', '2048M'])!.memoryBytes, (2048 + 256) * MiB);
  assert.equal(limitsFromQemuArgs(['-accel', 'kvm']), null);
});

test('cgroup names: the sandbox id when the VM dir is named after one, else name + path hash', () => {
  assert.equal(cgroupNameForVmDir('/var/lib/sandforge/state/vms/sb_0123456789abcdef0123'), 'sb_0123456789abcdef0123');
  const a = cgroupNameForVmDir('/x/.build-aa-1-ff/vm');
  const b = cgroupNameForVmDir('/x/.build-bb-2-ee/vm');
  assert.match(a, /^vm-[0-9a-f]{10}$/);
  assert.notEqual(a, b);
  assert.match(cgroupNameForVmDir('/runs/12 3,x'), /^12_3_x-[0-9a-f]{10}$/);
});

test('mountinfo and /proc/self/cgroup parsing (v1 hybrid, as on the CI machine)', () => {
  const mi = [
    '30 25 0:26 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory',
    '31 25 0:27 / /sys/fs/cgroup/pids rw,relatime shared:10 - cgroup cgroup rw,pids',
    '32 25 0:28 / /sys/fs/cgroup/unified rw,relatime shared:11 - cgroup2 cgroup2 rw',
  ].join('\n');
  const m = parseMountinfo(mi);
  assert.equal(m.length, 3);
  assert.deepEqual(m[0], { root: '/', point: '/sys/fs/cgroup/memory', fstype: 'cgroup', superOpts: ['rw', 'memory'] });
  const cg = parseProcCgroup('8:pids:/\n4:memory:/process_api/abc\n2:cpu,cpuacct:/x\n0::/\n');
  assert.equal(cg.get('memory'), '/process_api/abc');
  assert.equal(cg.get('cpuacct'), '/x');
  assert.equal(cg.get(''), '/');
});

test('detection says why when it cannot work', () => {
  assert.match(detectHostCgroup({}, { SANDFORGE_HOST_CGROUP: 'off' }).reason, /SANDFORGE_HOST_CGROUP/);
  assert.match(detectHostCgroup({ mountinfo: '', cgroup: '' }, {}).reason, /no cgroup filesystem/);
  // Pure v2 whose cgroup does not exist here (so offers no controllers): names Delegate=yes.
  const v2 = detectHostCgroup({ mountinfo: '30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw', cgroup: '0::/no/such/cgroup.scope' }, {});
  assert.equal(v2.layout, null);
  assert.match(v2.reason, /Delegate=yes/);
  // v1 memory hierarchy whose cgroup dir is missing: not writable.
  const v1 = detectHostCgroup({ mountinfo: '30 25 0:26 / /nonexistent/memory rw - cgroup cgroup rw,memory', cgroup: '4:memory:/a' }, {});
  assert.match(v1.reason, /not writable/);
});

const status = hostCgroupStatus();
test(
  `a real process gets its cgroup, limits and a clean removal (${status.enabled ? status.version : `skipped: ${status.reason}`})`,
  { skip: !status.enabled },
  async () => {
    const child = spawn('sleep', ['30'], { stdio: 'ignore' });
    const exited = new Promise((r) => child.once('exit', r));
    try {
      const cg = HostCgroup.attach(`unit-${process.pid}`, child.pid!, { memoryBytes: 300 * MiB, pidsMax: 7 });
      assert.ok(cg, 'attach returned null');
      assert.ok(cg.dirs.length >= 1);
      for (const d of cg.dirs) assert.ok(readFileSync(join(d, 'cgroup.procs'), 'utf8').includes(String(child.pid)));
      const memFile = cg.dirs
        .map((d) => [join(d, 'memory.max'), join(d, 'memory.limit_in_bytes')])
        .flat()
        .find(existsSync);
      assert.equal(Number(readFileSync(memFile!, 'utf8')), 300 * MiB);
      const pidsFile = cg.dirs.map((d) => join(d, 'pids.max')).find(existsSync);
      if (pidsFile) assert.equal(readFileSync(pidsFile, 'utf8').trim(), '7');
      assert.equal(HostCgroup.find(`unit-${process.pid}`)?.dirs.length, cg.dirs.length);
      child.kill('SIGKILL');
      await exited;
      await cg.remove();
      for (const d of cg.dirs) assert.equal(existsSync(d), false, `${d} left behind`);
    } finally {
      child.kill('SIGKILL');
    }
  },
);
