import { accessSync, constants, existsSync, readFileSync } from 'node:fs';
import { SandforgeError } from '../shared/errors.js';

export type Accel = 'kvm' | 'tcg';
export type AccelRequest = Accel | 'auto';

/** What the host offers for virtualization, and why Sandforge picks what it picks. */
export interface AccelReport {
  /** The accelerator VMs will use. */
  accel: Accel;
  /** `kvm`: usable for a stock kernel; `pvm`: KVM module is PVM; `none`: no /dev/kvm; `no-access`; `no-cpu-flag`. */
  kvm: 'kvm' | 'pvm' | 'none' | 'no-access' | 'no-cpu-flag';
  /** Plain-words explanation, shown by doctor, logs and /v1/info. */
  reason: string;
  /** True when the choice came from an explicit override. */
  overridden: boolean;
}

export interface AccelProbe {
  kvmDevice: boolean;
  kvmAccessible: boolean;
  pvmModule: boolean;
  cpuVirtFlag: boolean;
}

export function probeHost(): AccelProbe {
  const kvmDevice = existsSync('/dev/kvm');
  let kvmAccessible = false;
  if (kvmDevice) {
    try {
      accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
      kvmAccessible = true;
    } catch {
      kvmAccessible = false;
    }
  }
  let cpuVirtFlag = false;
  try {
    cpuVirtFlag = /^flags\s*:.*\b(vmx|svm)\b/m.test(readFileSync('/proc/cpuinfo', 'utf8'));
  } catch {
    cpuVirtFlag = false;
  }
  return { kvmDevice, kvmAccessible, pvmModule: existsSync('/sys/module/kvm_pvm'), cpuVirtFlag };
}

/** Pure decision from a probe, so it can be tested without the host. */
export function decideAccel(probe: AccelProbe, request: AccelRequest = 'auto'): AccelReport {
  let kvm: AccelReport['kvm'];
  let reason: string;
  if (!probe.kvmDevice) {
    kvm = 'none';
    reason = 'no /dev/kvm on this host: VMs run under TCG (full emulation, slower CPU, same isolation)';
  } else if (probe.pvmModule) {
    kvm = 'pvm';
    reason =
      'KVM here is PVM (kvm_pvm module): it only runs guest kernels built with CONFIG_PVM_GUEST, ' +
      'and the stock Debian kernel hangs under it, so VMs run under TCG (full emulation)';
  } else if (!probe.cpuVirtFlag) {
    kvm = 'no-cpu-flag';
    reason = '/dev/kvm exists but the CPU shows no vmx/svm flag: VMs run under TCG';
  } else if (!probe.kvmAccessible) {
    kvm = 'no-access';
    reason = '/dev/kvm is not readable and writable by this user (add it to the kvm group): VMs run under TCG';
  } else {
    kvm = 'kvm';
    reason = 'KVM is usable: VMs run with hardware virtualization';
  }
  const auto: Accel = kvm === 'kvm' ? 'kvm' : 'tcg';
  if (request === 'auto') return { accel: auto, kvm, reason, overridden: false };
  if (request === 'kvm' && kvm !== 'kvm') {
    throw new SandforgeError('invalid_argument', `--accel kvm was requested but ${reason}`);
  }
  return { accel: request, kvm, reason: `${request} forced by override; host: ${reason}`, overridden: true };
}

export function parseAccelRequest(x: string | undefined): AccelRequest {
  const v = (x ?? 'auto').toLowerCase();
  if (v === 'auto' || v === 'kvm' || v === 'tcg') return v;
  throw new SandforgeError('invalid_argument', `unknown accelerator "${x}": use auto, kvm or tcg`);
}

/** Detects the accelerator, honouring `SANDFORGE_ACCEL` and an explicit request. */
export function detectAccel(request?: string): AccelReport {
  return decideAccel(probeHost(), parseAccelRequest(request ?? process.env.SANDFORGE_ACCEL));
}
