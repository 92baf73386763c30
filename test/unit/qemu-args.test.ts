import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildQemuArgs, type QemuSpec } from '../../src/vmm/qemu-args.js';

const spec: QemuSpec = {
  accel: 'tcg',
  cpus: 2,
  memoryMb: 512,
  kernel: '/i/vmlinuz',
  initrd: '/i/initramfs.img',
  cmdline: 'console=ttyS0',
  disks: [
    { path: '/i/rootfs.erofs', format: 'raw', readOnly: true, serial: 'sf-root' },
    { path: '/v/a,b.qcow2', format: 'qcow2', readOnly: false, serial: 'sf-scratch' },
  ],
  shares: [{ tag: 'sf0', path: '/t/empty', readOnly: true }],
  agentSocket: '/v/agent.sock',
  qmpSocket: '/v/qmp.sock',
  consoleLog: '/v/console.log',
};

const after = (args: string[], flag: string) => args.filter((_, i) => args[i - 1] === flag);

test('microvm under TCG with the measured machine options', () => {
  const a = buildQemuArgs(spec);
  assert.deepEqual(after(a, '-M'), ['microvm,x-option-roms=off,isa-serial=on,rtc=off']);
  assert.deepEqual(after(a, '-accel'), ['tcg,thread=multi']);
  assert.ok(a.includes('-nodefaults') && a.includes('-no-user-config') && a.includes('-no-reboot'));
  assert.ok(!a.includes('-incoming'));
});

test('kvm uses the host CPU', () => {
  const a = buildQemuArgs({ ...spec, accel: 'kvm' });
  assert.deepEqual(after(a, '-accel'), ['kvm']);
  assert.deepEqual(after(a, '-cpu'), ['host']);
});

test('disks carry serials, read-only flags, and commas in paths are escaped', () => {
  const drives = after(buildQemuArgs(spec), '-drive');
  assert.match(drives[0]!, /file=\/i\/rootfs\.erofs,format=raw,if=none,readonly=on/);
  assert.match(drives[1]!, /file=\/v\/a,,b\.qcow2,format=qcow2,if=none,readonly=off/);
  const devs = after(buildQemuArgs(spec), '-device');
  assert.ok(devs.includes('virtio-blk-device,drive=d0,serial=sf-root'));
  assert.ok(devs.includes('virtserialport,chardev=agent0,name=sandforge.agent'));
});

test('template uses a shared RAM file, clone a private one and waits for incoming state', () => {
  const t = buildQemuArgs({ ...spec, ramFile: { path: '/t/ram', share: true } });
  assert.match(after(t, '-M')[0]!, /memory-backend=mem/);
  assert.ok(after(t, '-object')[0]!.endsWith('mem-path=/t/ram,share=on'));
  const c = buildQemuArgs({ ...spec, ramFile: { path: '/t/ram', share: false }, incoming: true });
  assert.ok(after(c, '-object')[0]!.endsWith('share=off'));
  assert.deepEqual(after(c, '-incoming'), ['defer']);
  assert.ok(c.includes('-S'));
});

test('template and clone have the same device list', () => {
  const strip = (a: string[]) => after(a, '-device');
  const t = buildQemuArgs({ ...spec, ramFile: { path: '/t/ram', share: true } });
  const c = buildQemuArgs({
    ...spec,
    ramFile: { path: '/t/ram', share: false },
    incoming: true,
    shares: [{ tag: 'sf0', path: '/host/dir', readOnly: false }],
  });
  assert.deepEqual(strip(t), strip(c));
});
