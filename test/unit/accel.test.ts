import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { test } from 'node:test';
import { decideAccel, detectAccel, parseAccelRequest, type AccelProbe } from '../../src/vmm/accel.js';
import { SandforgeError } from '../../src/shared/errors.js';

const base: AccelProbe = { kvmDevice: true, kvmAccessible: true, pvmModule: false, cpuVirtFlag: true };

test('usable KVM is picked when the host has it', () => {
  const r = decideAccel(base);
  assert.equal(r.accel, 'kvm');
  assert.equal(r.kvm, 'kvm');
});

test('PVM, no device, no flag, no access all fall back to TCG with a reason', () => {
  const cases: [Partial<AccelProbe>, string, RegExp][] = [
    [{ pvmModule: true }, 'pvm', /PVM/],
    [{ kvmDevice: false }, 'none', /no \/dev\/kvm/],
    [{ cpuVirtFlag: false }, 'no-cpu-flag', /vmx\/svm/],
    [{ kvmAccessible: false }, 'no-access', /kvm group/],
  ];
  for (const [patch, kvm, reason] of cases) {
    const r = decideAccel({ ...base, ...patch });
    assert.equal(r.accel, 'tcg');
    assert.equal(r.kvm, kvm);
    assert.match(r.reason, reason);
  }
});

test('an override is honoured, but kvm cannot be forced where it cannot work', () => {
  assert.equal(decideAccel(base, 'tcg').accel, 'tcg');
  assert.equal(decideAccel(base, 'tcg').overridden, true);
  assert.throws(() => decideAccel({ ...base, pvmModule: true }, 'kvm'), SandforgeError);
  assert.throws(() => parseAccelRequest('xen'), /unknown accelerator/);
});

const isPvmHost = existsSync('/sys/module/kvm_pvm');

test('on a PVM host (this machine kind) TCG is used', { skip: !isPvmHost && 'not a PVM host' }, () => {
  const r = detectAccel('auto');
  assert.equal(r.kvm, 'pvm');
  assert.equal(r.accel, 'tcg');
});
