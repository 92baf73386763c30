import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeCpio } from '../../src/image/cpio.js';
import { parseLdd } from '../../src/image/ldd.js';
import { hashInputs } from '../../src/image/hash.js';
import { modName } from '../../src/image/modules.js';

test('writeCpio emits aligned newc records and a trailer', () => {
  const buf = writeCpio([
    { type: 'dir', path: 'bin' },
    { type: 'file', path: 'bin/x', data: Buffer.from('hello'), mode: 0o755 },
    { type: 'symlink', path: 'bin/sh', target: 'x' },
    { type: 'chardev', path: 'dev/console', major: 5, minor: 1 },
  ]);
  assert.equal(buf.length % 4, 0);
  const text = buf.toString('latin1');
  assert.equal(text.slice(0, 6), '070701');
  assert.ok(text.includes('bin/x\0'));
  assert.ok(text.includes('TRAILER!!!\0'));
  // mode of bin/x: regular file 0755 → 000081ED
  const i = text.indexOf('bin/x\0');
  assert.ok(text.slice(0, i).lastIndexOf('000081ED') > 0);
});

test('parseLdd keeps sonames, the loader, and drops the vDSO', () => {
  const out = [
    '\tlinux-vdso.so.1 (0x00007ffd)',
    '\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f00)',
    '\t/lib64/ld-linux-x86-64.so.2 (0x00007f11)',
  ].join('\n');
  assert.deepEqual(parseLdd(out), [
    { name: 'libc.so.6', path: '/lib/x86_64-linux-gnu/libc.so.6' },
    { name: 'ld-linux-x86-64.so.2', path: '/lib64/ld-linux-x86-64.so.2' },
  ]);
});

test('hashInputs is key-order independent and 16 hex chars', () => {
  const a = hashInputs({ x: 1, y: [1, 2], z: { b: 1, a: 2 } });
  const b = hashInputs({ z: { a: 2, b: 1 }, y: [1, 2], x: 1 });
  assert.equal(a, b);
  assert.match(a, /^[0-9a-f]{16}$/);
  assert.notEqual(a, hashInputs({ x: 1, y: [2, 1], z: { b: 1, a: 2 } }));
});

test('modName canonicalises dashes and extensions', () => {
  assert.equal(modName('virtio-rng.ko'), 'virtio_rng');
  assert.equal(modName('crc32c-intel.ko.xz'), 'crc32c_intel');
});
