/**
 * Clock, kernel RNG and identity — what every snapshot clone must make its
 * own after a restore, since it wakes up with the template's.
 *
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
 * - Hostname: written to /proc/sys/kernel/hostname, plus /etc/hostname and a
 *   127.0.1.1 line in /etc/hosts (best effort; the root may be read-only).
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import type { InitRequest, InitResponse } from '../../src/shared/protocol.js';
import type { AgentContext } from '../context.js';

const HELPER_TIMEOUT_MS = 5000;
const PYTHONS = ['/usr/bin/python3', '/usr/local/bin/python3', '/bin/python3'];
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
  const ns = String(Math.round((target - sec * 1000) * 1e6)).padStart(9, '0').slice(0, 9);
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
  await Promise.allSettled([
    writeFile('/etc/hostname', `${hostname}\n`),
    readFile('/etc/hosts', 'utf8').then((hosts) => {
      const lines = hosts.split('\n').filter((l) => !/^127\.0\.1\.1\s/.test(l) && l !== '');
      return writeFile('/etc/hosts', [...lines, `127.0.1.1\t${hostname}`, ''].join('\n'));
    }),
  ]);
}

/** Applies an init request. Never throws: failures become warnings. */
export async function applyInit(ctx: AgentContext, req: InitRequest, receivedAt: number): Promise<InitResponse> {
  const started = performance.now();
  const warnings: string[] = [];
  const clockSkewMs = Math.round(Date.now() - (req.time_ms + (performance.now() - receivedAt)));
  const entropy = Buffer.from(req.entropy_b64, 'base64');
  ctx.mixEntropy(entropy);

  const note = (what: string) => (err: unknown) => {
    warnings.push(`${what}: ${err instanceof Error ? err.message : String(err)}`.slice(0, 1000));
    return false;
  };
  const ok = () => true;
  // Writing to /dev/urandom is unprivileged and harmless on any machine, so it runs in --no-system mode too.
  const mixed = writeFile('/dev/urandom', entropy).then(() => entropy.length, (e) => (note('urandom')(e), 0));
  const [clockSet, crngReseeded, hostnameSet, mixedBytes] = await Promise.all([
    ctx.noSystem ? false : setClock(req.time_ms, receivedAt).then(ok, note('clock')),
    ctx.noSystem ? false : mixed.then(() => reseedCrng(entropy)).then(ok, note('crng')),
    ctx.noSystem ? false : setHostname(req.hostname).then(ok, note('hostname')),
    mixed,
  ]);
  if (ctx.noSystem) warnings.push('no-system mode: clock, hostname and CRNG reseed skipped');

  ctx.sandboxId = req.sandbox_id;
  ctx.defaultEnv = { ...(req.env ?? {}) };
  return {
    clock_set: clockSet,
    clock_skew_ms: clockSkewMs,
    hostname_set: hostnameSet,
    entropy_mixed_bytes: mixedBytes,
    crng_reseeded: crngReseeded,
    duration_ms: Math.round(performance.now() - started),
    warnings,
  };
}

/** Flushes filesystems before the host freezes the VM. */
export async function syncFilesystems(): Promise<boolean> {
  try {
    await run('sync', []);
    return true;
  } catch {
    return false;
  }
}
