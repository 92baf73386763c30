/**
 * The resident privileged helper: one `python3 -I -S` process, started when
 * the agent starts (so during the template's cold boot), that every snapshot
 * clone inherits already running with its code loaded. A clone's init then
 * costs one pipe round trip instead of spawning `date` and `python3` under
 * full emulation.
 *
 * Protocol: newline-delimited JSON. The helper first writes
 * `{"ready":true,...}` once its imports are done, then answers each request
 * line with exactly one line:
 *
 *   → {"op":"init","id":7,"time_ns":<int>,"mono_ns":<int>,"entropy_b64":"…","hostname":"…"}
 *   ← {"id":7,"ok":true,"clock_set":true,"crng_reseeded":true,"hostname_set":true,"errors":[],"clock_target_ns":<int>}
 *   ← {"id":7,"ok":false,"error":"…"}          (request rejected, nothing done)
 *
 * `time_ns` is the target wall clock computed when the agent sent the line;
 * `mono_ns` is CLOCK_MONOTONIC at that moment, so the helper adds the time
 * the line spent in the pipe. The helper accepts only `init`, checks every
 * field's type and bounds (entropy at most 4096 bytes, hostname by the same
 * rules as the protocol's `hostnameCheck`) and never executes anything it
 * receives. `--dry-run` validates and answers but skips the syscalls (tests).
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync } from 'node:fs';
import type { Writable } from 'node:stream';

export const HELPER_PYTHONS = ['/usr/bin/python3', '/usr/local/bin/python3', '/bin/python3'];
export const HELPER_REQUEST_TIMEOUT_MS = 3000;
/** How long a freshly started helper may take to import its modules (python startup under TCG). */
export const HELPER_READY_TIMEOUT_MS = 10_000;
export const HELPER_MAX_ENTROPY_BYTES = 4096;
/** Consecutive start failures (exit before ready) after which the helper is not started again. */
const MAX_START_FAILURES = 3;
const MAX_LINE_BYTES = 64 * 1024;

/**
 * The helper program. Keep the ioctl numbers in step with <linux/random.h>:
 * RNDADDENTROPY = _IOW('R', 0x03, int[2]), RNDRESEEDCRNG = _IO('R', 0x07).
 */
/**
 * What the helper's command line holds: reads {@link HELPER_PY} from fd 3
 * (written by the agent, which spawned it) and runs it, so `ps` in the
 * sandbox shows a short line rather than the whole program.
 */
export const HELPER_BOOTSTRAP_PY = "import os;f=os.fdopen(3,'rb');s=f.read();f.close();exec(compile(s,'sandforge-system-helper','exec'))";

export const HELPER_PY = String.raw`
import base64, binascii, fcntl, json, os, re, socket, struct, sys, time
DRY = '--dry-run' in sys.argv[1:]
RNDADDENTROPY = 0x40085203
RNDRESEEDCRNG = 0x5207
MAX_ENTROPY = 4096
MIN_NS = 946684800 * 10**9
MAX_NS = 7258118400 * 10**9
MAX_LINE = 65536
LABEL = '[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?'
HOST = re.compile('^' + LABEL + '(\\.' + LABEL + ')*$')
KEYS = {'op', 'id', 'time_ns', 'mono_ns', 'entropy_b64', 'hostname'}
out = sys.stdout.buffer
inp = sys.stdin.buffer

def send(obj):
    out.write(json.dumps(obj, separators=(',', ':')).encode() + b'\n')
    out.flush()

def isint(v):
    return type(v) is int

class Bad(Exception):
    pass

def check(req):
    if type(req) is not dict:
        raise Bad('request must be an object')
    extra = set(req) - KEYS
    if extra:
        raise Bad('unknown field ' + sorted(extra)[0][:40])
    if req.get('op') != 'init':
        raise Bad('unknown op')
    t = req.get('time_ns')
    if not isint(t) or not MIN_NS <= t <= MAX_NS:
        raise Bad('time_ns out of range')
    m = req.get('mono_ns')
    if m is not None and (not isint(m) or m < 0):
        raise Bad('mono_ns must be a non-negative integer')
    e = req.get('entropy_b64')
    if type(e) is not str or len(e) > (MAX_ENTROPY + 2) // 3 * 4:
        raise Bad('entropy_b64 must be a string of at most %d bytes' % MAX_ENTROPY)
    try:
        d = base64.b64decode(e, validate=True)
    except (binascii.Error, ValueError):
        raise Bad('entropy_b64 is not base64')
    if not 1 <= len(d) <= MAX_ENTROPY:
        raise Bad('entropy must be 1..%d bytes' % MAX_ENTROPY)
    h = req.get('hostname')
    if type(h) is not str or not h.isascii() or len(h) > 64 or not HOST.match(h):
        raise Bad('invalid hostname')
    return t, m, d, h

def err(what, e):
    return ('%s: %s' % (what, e))[:500]

def init(t, m, d, h):
    errors = []
    clock = crng = host = False
    try:
        if m is not None:
            late = time.monotonic_ns() - m
            if 0 <= late < 10 * 10**9:
                t += late
        if not DRY:
            time.clock_settime_ns(time.CLOCK_REALTIME, t)
        clock = True
    except Exception as e:
        errors.append(err('clock', e))
    try:
        if not DRY:
            fd = os.open('/dev/urandom', os.O_WRONLY)
            try:
                fcntl.ioctl(fd, RNDADDENTROPY, struct.pack('ii', len(d) * 8, len(d)) + d)
                fcntl.ioctl(fd, RNDRESEEDCRNG)
            finally:
                os.close(fd)
        crng = True
    except Exception as e:
        errors.append(err('crng', e))
    try:
        if not DRY:
            socket.sethostname(h)
        host = True
    except Exception as e:
        errors.append(err('hostname', e))
    return {'ok': True, 'clock_set': clock, 'crng_reseeded': crng, 'hostname_set': host, 'errors': errors,
            'clock_target_ns': t}

def main():
    send({'ready': True, 'pid': os.getpid(), 'dry_run': DRY})
    while True:
        line = inp.readline(MAX_LINE + 1)
        if not line:
            return
        if len(line) > MAX_LINE and not line.endswith(b'\n'):
            while line and not line.endswith(b'\n'):
                line = inp.readline(MAX_LINE + 1)
            send({'ok': False, 'error': 'request line too long'})
            continue
        rid = None
        try:
            req = json.loads(line)
            if type(req) is dict and isint(req.get('id')):
                rid = req['id']
            res = init(*check(req))
        except Bad as e:
            res = {'ok': False, 'error': str(e)}
        except Exception as e:
            res = {'ok': False, 'error': err('bad request', type(e).__name__)}
        if rid is not None:
            res['id'] = rid
        send(res)

try:
    main()
except (BrokenPipeError, KeyboardInterrupt):
    pass
`;

export interface HelperInitRequest {
  /** Target wall clock in ns since the epoch, computed just before sending. */
  timeNs: bigint;
  entropy: Buffer;
  hostname: string;
}

export interface HelperInitResult {
  clock_set: boolean;
  crng_reseeded: boolean;
  hostname_set: boolean;
  errors: string[];
  /** The wall clock the helper set (or, with --dry-run, would have set), ms since the epoch. */
  clock_target_ms?: number;
}

/** The helper could not answer (absent, died, timed out, broke the protocol); use the fallback. */
export class HelperUnavailable extends Error {
  constructor(
    message: string,
    /** True when no python3 exists or starting was given up: nothing went wrong at run time. */
    readonly absent = false,
  ) {
    super(message);
  }
}

export interface SystemHelperOptions {
  /** Interpreters tried in order; default {@link HELPER_PYTHONS}. */
  pythons?: string[];
  /** Extra arguments after the script (e.g. `--dry-run`). */
  args?: string[];
  /** Replaces `<python> -I -S -c HELPER_PY`: for tests with a fake helper. */
  command?: { file: string; args: string[] };
  requestTimeoutMs?: number;
  readyTimeoutMs?: number;
  log?: (msg: string) => void;
}

interface Pending {
  id: number;
  resolve: (line: string) => void;
  reject: (err: Error) => void;
}

/** One helper process and its startup state. */
interface Proc {
  child: ChildProcessWithoutNullStreams;
  ready: Promise<void>;
  isReady: boolean;
  markReady: () => void;
  failReady: (err: Error) => void;
  buf: string;
  stderr: string;
}

/** Client side of the helper: one process, one request in flight, restarted lazily. */
export class SystemHelper {
  private proc: Proc | null = null;
  private pending: Pending | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  private nextId = 1;
  private startFailures = 0;
  private stopped = false;
  private readonly o: Required<Omit<SystemHelperOptions, 'command'>> & Pick<SystemHelperOptions, 'command'>;

  constructor(o: SystemHelperOptions = {}) {
    this.o = {
      pythons: o.pythons ?? HELPER_PYTHONS,
      args: o.args ?? [],
      command: o.command,
      requestTimeoutMs: o.requestTimeoutMs ?? HELPER_REQUEST_TIMEOUT_MS,
      readyTimeoutMs: o.readyTimeoutMs ?? HELPER_READY_TIMEOUT_MS,
      log: o.log ?? (() => undefined),
    };
  }

  /** Pid of the running helper, or null. */
  get pid(): number | null {
    return this.proc?.child.pid ?? null;
  }

  /**
   * Starts the helper unless it runs already. Returns false when it cannot
   * run here (no python3, stopped, or it kept dying on start). Never throws.
   */
  start(): boolean {
    if (this.proc) return true;
    if (this.stopped || this.startFailures >= MAX_START_FAILURES) return false;
    let file: string;
    let args: string[];
    let script: string | undefined;
    if (this.o.command) {
      ({ file, args } = this.o.command);
    } else {
      const py = this.o.pythons.find((p) => existsSync(p));
      if (!py) return false;
      file = py;
      args = ['-I', '-S', '-c', HELPER_BOOTSTRAP_PY, ...this.o.args];
      script = HELPER_PY;
    }
    let child: ChildProcessWithoutNullStreams;
    try {
      child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe', script ? 'pipe' : 'ignore'], env: {} }) as ChildProcessWithoutNullStreams;
      if (script) (child.stdio[3] as Writable).on('error', () => undefined).end(script);
    } catch (err) {
      this.startFailures += 1;
      this.o.log(`system helper: cannot start ${file}: ${(err as Error).message}`);
      return false;
    }
    let markReady!: () => void;
    let failReady!: (e: Error) => void;
    const ready = new Promise<void>((res, rej) => {
      markReady = res;
      failReady = rej;
    });
    ready.catch(() => undefined);
    const proc: Proc = { child, ready, isReady: false, markReady, failReady, buf: '', stderr: '' };
    this.proc = proc;

    child.on('error', (err) => this.drop(proc, `failed: ${err.message}`));
    child.on('exit', (code, signal) => this.drop(proc, `exited (${code ?? signal})`));
    child.stdin.on('error', () => undefined);
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (d: string) => (proc.stderr = (proc.stderr + d).slice(-2000)));
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d: string) => this.onData(proc, d));
    // The helper must not keep the agent (or a test) alive by itself.
    child.unref();
    for (const s of child.stdio) (s as unknown as { unref?: () => void } | null)?.unref?.();
    return true;
  }

  /** Resolves true once the helper has loaded its code, false if it cannot (never rejects). */
  async whenReady(timeoutMs = this.o.readyTimeoutMs): Promise<boolean> {
    if (!this.start()) return false;
    const proc = this.proc!;
    if (proc.isReady) return true;
    let timer: NodeJS.Timeout | undefined;
    const ok = await Promise.race([
      proc.ready.then(
        () => true,
        () => false,
      ),
      new Promise<false>((r) => (timer = setTimeout(() => r(false), timeoutMs))),
    ]);
    clearTimeout(timer);
    if (!ok) this.drop(proc, `not ready after ${timeoutMs} ms`);
    return ok;
  }

  /**
   * Runs one init request (one at a time, in order). Rejects with
   * {@link HelperUnavailable} when the helper cannot answer; a helper that
   * timed out or broke the protocol is killed and restarted on the next call.
   */
  init(req: HelperInitRequest): Promise<HelperInitResult> {
    const run = this.queue.then(() => this.initNow(req));
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Stops the helper for good (tests, shutdown). */
  stop(): void {
    this.stopped = true;
    if (this.proc) this.drop(this.proc, 'stopped');
  }

  private async initNow(req: HelperInitRequest): Promise<HelperInitResult> {
    if (req.entropy.length < 1 || req.entropy.length > HELPER_MAX_ENTROPY_BYTES) {
      throw new RangeError(`entropy must be 1..${HELPER_MAX_ENTROPY_BYTES} bytes`);
    }
    if (!this.start()) {
      throw new HelperUnavailable(this.stopped ? 'system helper stopped' : 'system helper not available', true);
    }
    if (!(await this.whenReady())) throw new HelperUnavailable('system helper did not start');
    const proc = this.proc!;
    const id = this.nextId++;
    const line = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => this.drop(proc, `timed out after ${this.o.requestTimeoutMs} ms`), this.o.requestTimeoutMs);
      this.pending = {
        id,
        resolve: (l) => (clearTimeout(timer), resolve(l)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      };
      // time_ns and mono_ns exceed 2^53: written as integer literals, not through JSON.stringify.
      const mono = process.hrtime.bigint(); // CLOCK_MONOTONIC, like Python's time.monotonic_ns()
      proc.child.stdin.write(
        `{"op":"init","id":${id},"time_ns":${req.timeNs},"mono_ns":${mono},` +
          `"entropy_b64":${JSON.stringify(req.entropy.toString('base64'))},"hostname":${JSON.stringify(req.hostname)}}\n`,
      );
    });
    let r: Record<string, unknown> | null = null;
    try {
      const v: unknown = JSON.parse(line);
      if (typeof v === 'object' && v !== null && !Array.isArray(v)) r = v as Record<string, unknown>;
    } catch {
      // handled below
    }
    const broken = (why: string) => {
      this.drop(proc, why);
      return new HelperUnavailable(`system helper ${why}`);
    };
    if (!r) throw broken('sent invalid JSON');
    if (r.id !== id) throw broken('answered out of order');
    if (r.ok !== true) throw new HelperUnavailable(`system helper rejected the request: ${String(r.error).slice(0, 300)}`);
    if (typeof r.clock_set !== 'boolean' || typeof r.crng_reseeded !== 'boolean' || typeof r.hostname_set !== 'boolean') {
      throw broken('sent a malformed answer');
    }
    const errors = Array.isArray(r.errors) ? r.errors.filter((e): e is string => typeof e === 'string').slice(0, 8) : [];
    const out: HelperInitResult = { clock_set: r.clock_set, crng_reseeded: r.crng_reseeded, hostname_set: r.hostname_set, errors };
    if (typeof r.clock_target_ns === 'number') out.clock_target_ms = r.clock_target_ns / 1e6;
    return out;
  }

  private onData(proc: Proc, d: string): void {
    if (this.proc !== proc) return;
    proc.buf += d;
    let nl: number;
    while ((nl = proc.buf.indexOf('\n')) >= 0) {
      const line = proc.buf.slice(0, nl);
      proc.buf = proc.buf.slice(nl + 1);
      if (!proc.isReady) {
        if (!/^\{"ready":true[,}]/.test(line)) return this.drop(proc, `sent ${JSON.stringify(line.slice(0, 100))} before ready`);
        proc.isReady = true;
        this.startFailures = 0;
        proc.markReady();
        continue;
      }
      const p = this.pending;
      if (!p) return this.drop(proc, 'answered without a request');
      this.pending = null;
      p.resolve(line);
    }
    if (proc.buf.length > MAX_LINE_BYTES) this.drop(proc, 'sent an overlong line');
  }

  /** Forgets `proc` (if current), fails whoever waits on it and kills it. Idempotent. */
  private drop(proc: Proc, why: string): void {
    if (this.proc === proc) {
      this.proc = null;
      if (!proc.isReady) this.startFailures += 1;
      const tail = proc.stderr.trim().slice(-300);
      const err = new HelperUnavailable(`system helper ${why}${tail ? `: ${tail}` : ''}`);
      proc.failReady(err);
      const p = this.pending;
      this.pending = null;
      p?.reject(err);
      if (!this.stopped) this.o.log(err.message);
    }
    if (proc.child.exitCode === null && proc.child.signalCode === null) proc.child.kill('SIGKILL');
  }
}
