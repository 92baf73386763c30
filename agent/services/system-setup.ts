/**
 * Clock, kernel RNG and identity — what every snapshot clone must make its
 * own after a restore, since it wakes up with the template's.
 *
 * Fast path: the resident helper (./system-helper.ts), a python3 process the
 * agent starts once at boot, so it is already running in every clone. One
 * JSON line to it sets the clock (clock_settime, ns), credits the host's
 * entropy and reseeds the CRNG (RNDADDENTROPY + RNDRESEEDCRNG) and sets the
 * kernel hostname — no fork or exec in the clone.
 *
 * Fallback, when the helper is missing (no python3), died or timed out (it is
 * restarted on the next init): the spawn-based path below.
 * - Clock: Node has no settimeofday, so the agent runs `date -u -s @<s.ns>`
 *   (coreutils: clock_settime with ns precision; busybox's applet as a
 *   fallback takes whole seconds). The target time is the host's time_ms
 *   plus the time elapsed since the request arrived.
 * - RNG: the host's entropy is written to /dev/urandom, which mixes it into
 *   the input pool but neither credits it nor reseeds the CRNG — and a clone's
 *   CRNG key is the template's until its next scheduled reseed (up to 60 s).
 *   Node cannot ioctl, so when python3 exists the agent uses it for
 *   RNDADDENTROPY + RNDRESEEDCRNG, which makes the next getrandom() output
 *   depend on the fresh entropy. A vmgenid device changed per clone makes the
 *   kernel reseed by itself on restore and is the better fix where available.
 * - Hostname: written to /proc/sys/kernel/hostname.
 * Either way /etc/hostname and a 127.0.1.1 line in /etc/hosts are written
 * from Node (best effort; the root may be read-only), and the entropy is also
 * written to /dev/urandom (unprivileged, so in --no-system mode too).
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import type { InitRequest, InitResponse } from '../../src/shared/protocol.js';
import type { AgentContext } from '../context.js';
import { HelperUnavailable, SystemHelper, type HelperInitRequest, type HelperInitResult } from './system-helper.js';
import { setupWorkloadCgroup } from './workload-cgroup.js';

const HELPER_TIMEOUT_MS = 5000;
const PYTHONS = ['/usr/bin/python3', '/usr/local/bin/python3', '/bin/python3'];
/** How long prepare-snapshot waits for a starting helper, so the template is frozen with it loaded. */
const SNAPSHOT_HELPER_WAIT_MS = 15_000;
/** _IOW('R', 0x03, int[2]) and _IO('R', 0x07) from <linux/random.h>. */
const CRNG_RESEED_PY = [
  'import fcntl,os,struct,sys',
  'd=sys.stdin.buffer.read()[:512]',
  "fd=os.open('/dev/urandom',os.O_WRONLY)",
  "fcntl.ioctl(fd,0x40085203,struct.pack('ii',len(d)*8,len(d))+d)",
  'fcntl.ioctl(fd,0x5207)',
].join('\n');

function run(file: string, args: string[], input?: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = execFile(file, args, { timeout: HELPER_TIMEOUT_MS }, (err, _out, stderr) =>
      err ? reject(new Error(`${file} ${args[0] ?? ''}: ${String(stderr).trim() || err.message}`)) : resolve(),
    );
    if (input) child.stdin?.end(input);
  });
}

async function setClock(timeMs: number, receivedAt: number): Promise<void> {
  const target = timeMs + (performance.now() - receivedAt);
  const sec = Math.floor(target / 1000);
  const ns = String(Math.round((target - sec * 1000) * 1e6))
    .padStart(9, '0')
    .slice(0, 9);
  try {
    await run('date', ['-u', '-s', `@${sec}.${ns}`]);
  } catch (err) {
    try {
      await run('busybox', ['date', '-u', '-s', `@${Math.round((timeMs + (performance.now() - receivedAt)) / 1000)}`]);
    } catch {
      throw err;
    }
  }
}

async function reseedCrng(entropy: Buffer): Promise<void> {
  const py = PYTHONS.find((p) => existsSync(p));
  if (!py) throw new Error('no python3 for the RNDRESEEDCRNG ioctl; entropy was mixed but the CRNG reseeds on its own schedule');
  await run(py, ['-I', '-S', '-c', CRNG_RESEED_PY], entropy);
}

async function setHostname(hostname: string): Promise<void> {
  await writeFile('/proc/sys/kernel/hostname', hostname);
}

/** /etc/hostname and the 127.0.1.1 line of /etc/hosts; best effort (the root may be read-only). */
async function writeHostnameFiles(hostname: string): Promise<void> {
  await Promise.allSettled([
    writeFile('/etc/hostname', `${hostname}\n`),
    readFile('/etc/hosts', 'utf8').then((hosts) => {
      const lines = hosts.split('\n').filter((l) => !/^127\.0\.1\.1\s/.test(l) && l !== '');
      return writeFile('/etc/hosts', [...lines, `127.0.1.1\t${hostname}`, ''].join('\n'));
    }),
  ]);
}

/** The privileged part of init: clock, CRNG credit + reseed, kernel hostname. */
export interface PrivilegedInit {
  clockSet: boolean;
  crngReseeded: boolean;
  hostnameSet: boolean;
  warnings: string[];
}

export interface PrivilegedInitDeps {
  /** The resident helper; null when there is none (then the fallback runs). */
  helper: SystemHelper | null;
  /** The spawn-based path; defaults to `date` + `python3 -c` + /proc writes. */
  fallback?: (target: { timeMs: number; receivedAt: number; entropy: Buffer; hostname: string }) => Promise<PrivilegedInit>;
  log?: (msg: string) => void;
}

function errText(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).slice(0, 1000);
}

/** The spawn-based path: one `date` and one `python3` per init. */
export async function spawnFallback(t: { timeMs: number; receivedAt: number; entropy: Buffer; hostname: string }): Promise<PrivilegedInit> {
  const warnings: string[] = [];
  const note = (what: string) => (err: unknown) => {
    warnings.push(`${what}: ${errText(err)}`.slice(0, 1000));
    return false;
  };
  const ok = () => true;
  const [clockSet, crngReseeded, hostnameSet] = await Promise.all([
    setClock(t.timeMs, t.receivedAt).then(ok, note('clock')),
    reseedCrng(t.entropy).then(ok, note('crng')),
    setHostname(t.hostname).then(ok, note('hostname')),
  ]);
  return { clockSet, crngReseeded, hostnameSet, warnings };
}

/**
 * Clock, CRNG and kernel hostname through the resident helper, or through
 * {@link spawnFallback} when the helper cannot answer. Never throws.
 */
export async function privilegedInit(
  t: { timeMs: number; receivedAt: number; entropy: Buffer; hostname: string },
  deps: PrivilegedInitDeps,
): Promise<PrivilegedInit> {
  const fallback = deps.fallback ?? spawnFallback;
  const warnings: string[] = [];
  if (deps.helper) {
    try {
      // Target computed at send time; the helper adds the time the line spent in the pipe.
      const targetMs = t.timeMs + (performance.now() - t.receivedAt);
      const req: HelperInitRequest = { timeNs: BigInt(Math.round(targetMs * 1000)) * 1000n, entropy: t.entropy, hostname: t.hostname };
      const r: HelperInitResult = await deps.helper.init(req);
      return {
        clockSet: r.clock_set,
        crngReseeded: r.crng_reseeded,
        hostnameSet: r.hostname_set,
        warnings: r.errors.map((e) => e.slice(0, 1000)),
      };
    } catch (err) {
      deps.log?.(`init: ${errText(err)}; using the spawn fallback`);
      // A missing python3 needs no warning of its own: the fallback's crng step reports it.
      if (!(err instanceof HelperUnavailable && err.absent)) warnings.push(`helper: ${errText(err)}; used the spawn fallback`);
    }
  }
  try {
    const r = await fallback(t);
    return { ...r, warnings: [...warnings, ...r.warnings] };
  } catch (err) {
    return { clockSet: false, crngReseeded: false, hostnameSet: false, warnings: [...warnings, `fallback: ${errText(err)}`] };
  }
}

let systemHelper: SystemHelper | null = null;

let limitsSetUp = false;

/**
 * Starts the agent's system side (no-op in --no-system mode): first the
 * guest's resource limits (cgroups, the agent's oom_score_adj; once), so the
 * helper starts inside the agent's cgroup, then the resident helper unless
 * it runs. Called when the agent starts, so the template is snapshotted with
 * both in place and every clone inherits them; applyInit also starts the
 * helper lazily.
 */
export function startSystemHelper(ctx: AgentContext): SystemHelper | null {
  if (ctx.noSystem) return null;
  if (!limitsSetUp) {
    limitsSetUp = true;
    setupWorkloadCgroup(ctx.log);
  }
  systemHelper ??= new SystemHelper({ log: ctx.log });
  systemHelper.start();
  return systemHelper;
}

/** The helper started by {@link startSystemHelper}, if any (tests, diagnostics). */
export function currentSystemHelper(): SystemHelper | null {
  return systemHelper;
}

/** Applies an init request. Never throws: failures become warnings. */
export async function applyInit(ctx: AgentContext, req: InitRequest, receivedAt: number): Promise<InitResponse> {
  const started = performance.now();
  const warnings: string[] = [];
  const clockSkewMs = Math.round(Date.now() - (req.time_ms + (performance.now() - receivedAt)));
  const entropy = Buffer.from(req.entropy_b64, 'base64');
  ctx.mixEntropy(entropy);

  // Writing to /dev/urandom is unprivileged and harmless on any machine, so it runs in --no-system mode too.
  const mixed = writeFile('/dev/urandom', entropy).then(
    () => entropy.length,
    (err) => (warnings.push(`urandom: ${errText(err)}`), 0),
  );
  let priv: PrivilegedInit = { clockSet: false, crngReseeded: false, hostnameSet: false, warnings: [] };
  if (!ctx.noSystem) {
    const helper = startSystemHelper(ctx);
    const [p] = await Promise.all([
      privilegedInit({ timeMs: req.time_ms, receivedAt, entropy, hostname: req.hostname }, { helper, log: ctx.log }),
      writeHostnameFiles(req.hostname),
    ]);
    priv = p;
  }
  const mixedBytes = await mixed;
  warnings.push(...priv.warnings);
  if (ctx.noSystem) warnings.push('no-system mode: clock, hostname and CRNG reseed skipped');

  ctx.sandboxId = req.sandbox_id;
  ctx.defaultEnv = { ...(req.env ?? {}) };
  return {
    clock_set: priv.clockSet,
    clock_skew_ms: clockSkewMs,
    hostname_set: priv.hostnameSet,
    entropy_mixed_bytes: mixedBytes,
    crng_reseeded: priv.crngReseeded,
    duration_ms: Math.round(performance.now() - started),
    warnings: warnings.slice(0, 16),
  };
}

/** Flushes filesystems before the host freezes the VM. */
export async function syncFilesystems(): Promise<boolean> {
  // A template frozen mid-way through the helper's python startup would make every clone finish it.
  if (systemHelper) await systemHelper.whenReady(SNAPSHOT_HELPER_WAIT_MS);
  try {
    await run('sync', []);
    return true;
  } catch {
    return false;
  }
}
