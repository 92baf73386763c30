import assert from 'node:assert/strict';
import { test } from 'node:test';
import { hostTscKhz, KERNEL_CMDLINE, kernelCmdline } from '../../src/vmm/microvm.js';

test('the host TSC rate is read from cpuinfo in kHz', () => {
  assert.equal(hostTscKhz('processor\t: 0\ncpu MHz\t\t: 2596.138\nflags\t: fpu\n'), 2596138);
  assert.equal(hostTscKhz('processor\t: 0\n'), null);
  assert.equal(hostTscKhz('cpu MHz\t\t: 0.5\n'), null);
});

test('TCG boots get tsc_early_khz (no PIT calibration under emulation); KVM does not', () => {
  assert.equal(kernelCmdline('kvm'), KERNEL_CMDLINE);
  const tcg = kernelCmdline('tcg');
  assert.ok(tcg.startsWith(KERNEL_CMDLINE));
  if (hostTscKhz() !== null) assert.match(tcg, / tsc_early_khz=\d+$/);
});
