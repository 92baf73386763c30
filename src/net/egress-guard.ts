/**
 * Network mode `full`: the guest gets a NIC on QEMU's user-mode network, and
 * native/egress-guard.so, preloaded into that QEMU, refuses every socket
 * destination the network policy refuses in `full` (loopback, the host's own
 * addresses, link-local, reserved ranges) before the kernel sees it. This
 * module builds the guard's environment and turns its refusal log into
 * refusal reports.
 */
import { existsSync, openSync, readSync, closeSync, statSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PACKAGE_ROOT } from '../config/paths.js';
import { SandforgeError } from '../shared/errors.js';
import type { NetworkPolicy, NetworkRule } from '../policy/network-policy.js';
import { FULL_MODE_DENIED_RANGES } from '../policy/network-policy.js';

export const EGRESS_GUARD_LOG = 'egress-refusals.log';

/** The preload library, or a clear error if this install could not build it. */
export function egressGuardLibrary(): string {
  const lib = process.env.SANDFORGE_EGRESS_GUARD ?? join(PACKAGE_ROOT, 'dist/native/egress-guard.so');
  if (!existsSync(lib)) {
    throw new SandforgeError(
      'not_implemented',
      `network mode "full" needs ${lib}, built by \`npm run build\` with a C compiler (apt-get install gcc libc6-dev)`,
    );
  }
  return lib;
}

/** The host's DNS resolvers (slirp forwards the guest's queries to them), reachable on port 53 only. */
function resolvers(): string[] {
  try {
    return readFileSync('/etc/resolv.conf', 'utf8')
      .split('\n')
      .map((l) => /^\s*nameserver\s+([0-9a-fA-F:.]+)/.exec(l)?.[1])
      .filter((x): x is string => !!x);
  } catch {
    return [];
  }
}

/** QEMU's environment for a `full` sandbox: what to refuse, what the operator allowed, where to log. */
export function egressGuardEnv(policy: NetworkPolicy, vmDir: string, library = egressGuardLibrary()): Record<string, string> {
  const deny = [
    ...FULL_MODE_DENIED_RANGES.map(([rule, cidr]) => `${rule}=${cidr}`),
    ...policy.hostAddressList().map((a) => `host_address=${a}`),
  ];
  return {
    LD_PRELOAD: library,
    SANDFORGE_EGRESS_DENY: deny.join(','),
    SANDFORGE_EGRESS_ALLOW: policy.cidrs.join(','),
    SANDFORGE_EGRESS_DNS: resolvers().join(','),
    SANDFORGE_EGRESS_LOG: join(vmDir, EGRESS_GUARD_LOG),
  };
}

/** A template needs no network at all while it boots: refuse everything. */
export function templateGuardEnv(): Record<string, string> {
  return { LD_PRELOAD: egressGuardLibrary(), SANDFORGE_EGRESS_DENY: 'template_build=0.0.0.0/0,template_build=::/0' };
}

export interface GuardRefusal {
  address: string;
  port: number;
  rule: NetworkRule;
}

/**
 * Follows a VM's guard log from its current end and reports each new line.
 * Returns a stop function. Lines come from QEMU (a process the guest may
 * have compromised): parsed strictly, the rest ignored.
 */
export function followGuardLog(vmDir: string, onRefusal: (r: GuardRefusal) => void, intervalMs = 500): () => void {
  const path = join(vmDir, EGRESS_GUARD_LOG);
  let offset = (() => {
    try {
      return statSync(path).size;
    } catch {
      return 0;
    }
  })();
  let partial = '';
  const tick = () => {
    let size: number;
    try {
      size = statSync(path).size;
    } catch {
      return;
    }
    if (size <= offset) return;
    const fd = openSync(path, 'r');
    try {
      const buf = Buffer.alloc(Math.min(size - offset, 1 << 20));
      const n = readSync(fd, buf, 0, buf.length, offset);
      offset += n;
      const text = partial + buf.subarray(0, n).toString('latin1');
      const lines = text.split('\n');
      partial = (lines.pop() ?? '').slice(0, 200);
      for (const line of lines) {
        const m = /^([0-9a-fA-F:.]{2,45}) (\d{1,5}) ([a-z_]{1,40})$/.exec(line);
        if (m) onRefusal({ address: m[1]!, port: Number(m[2]), rule: m[3] as NetworkRule });
      }
    } finally {
      closeSync(fd);
    }
  };
  const timer = setInterval(tick, intervalMs);
  timer.unref();
  return () => {
    clearInterval(timer);
    tick();
  };
}
