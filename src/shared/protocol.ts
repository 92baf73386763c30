/**
 * The host ⇄ guest-agent protocol: HTTP/2 over the virtio-serial port
 * "sandforge.agent" (the host is the HTTP/2 client, the agent the server).
 *
 * This module is imported by both sides and is the only place the wire types
 * live. Every value that crosses the channel is checked by the validators
 * below: the host treats the guest as hostile (types, sizes, lengths, enum
 * values and unknown keys are all checked), and the agent checks the host's
 * requests the same way so it never acts on a malformed one.
 *
 * Routes
 *   GET  /v1/health               → HealthResponse
 *   POST /v1/init                 InitRequest → InitResponse
 *   POST /v1/prepare-snapshot     {} → PrepareSnapshotResponse
 *   POST /v1/exec                 body and response body are frame streams (see below)
 *   POST /v1/files/read           FilePathRequest → raw file bytes (200) | AgentErrorBody
 *   PUT  /v1/files/write          header `sandforge-args: <FileWriteArgs JSON>`, raw body → FileWriteResponse
 *   POST /v1/files/list           FilePathRequest → FileListResponse
 *   POST /v1/files/stat           FilePathRequest → FileInfo
 *   POST /v1/files/mkdir          MkdirRequest → EmptyResponse
 *   POST /v1/files/remove         RemoveRequest → EmptyResponse
 *   POST /v1/files/rename         RenameRequest → EmptyResponse
 *   POST /v1/mounts               MountRequest → MountResponse
 *   POST /v1/egress/listen        EgressListenRequest → EgressListenResponse
 *   POST /v1/egress/accept        held open by the host; answered 200 when a guest
 *                                 process connects to the egress port, then the
 *                                 request body carries host→guest bytes and the
 *                                 response body guest→host bytes (a reverse tunnel)
 * Errors: non-2xx status with `AgentErrorBody` `{error: {code, message}}`.
 *
 * Exec frames: 1 byte type, 4 bytes big-endian payload length, payload
 * (≤ MAX_FRAME_PAYLOAD_BYTES). The first client frame must be `spec`.
 */
import type { ErrorCode } from './errors.js';

/** Bumped on any incompatible change of routes, bodies or frames. */
export const PROTOCOL_VERSION = 1;

/** Name of the virtio-serial port the agent serves on. */
export const AGENT_PORT_NAME = 'sandforge.agent';

export const ROUTES = {
  health: '/v1/health',
  init: '/v1/init',
  prepareSnapshot: '/v1/prepare-snapshot',
  exec: '/v1/exec',
  fileRead: '/v1/files/read',
  fileWrite: '/v1/files/write',
  fileList: '/v1/files/list',
  fileStat: '/v1/files/stat',
  fileMkdir: '/v1/files/mkdir',
  fileRemove: '/v1/files/remove',
  fileRename: '/v1/files/rename',
  mounts: '/v1/mounts',
  egressListen: '/v1/egress/listen',
  egressAccept: '/v1/egress/accept',
} as const;

/**
 * Per-connection handshake on the serial port, before HTTP/2. A serial port
 * has no connection boundaries the guest can always see (a quick reconnect
 * may show no EOF) and a guest write blocked while the host was away lands
 * in the next connection. So the host opens each connection with
 * `SANDFORGE-HELLO <nonce>\n`, the guest answers `SANDFORGE-READY <nonce>\n`,
 * and the host ignores every byte before its own nonce's answer.
 */
export const HELLO_PREFIX = 'SANDFORGE-HELLO ';
export const READY_PREFIX = 'SANDFORGE-READY ';
export const HANDSHAKE_NONCE_RE = /^[0-9a-f]{32}$/;
/** Matches a complete hello line anywhere in a buffer (latin1-decoded). */
export const HELLO_LINE_RE = /SANDFORGE-HELLO ([0-9a-f]{32})\n/g;

/** Request header carrying the JSON arguments of a streamed-body request. */
export const ARGS_HEADER = 'sandforge-args';
/** Content type of exec request and response bodies (frame streams). */
export const EXEC_CONTENT_TYPE = 'application/vnd.sandforge.frames';

// ---------------------------------------------------------------------------
// Limits (bytes unless the name says otherwise)

export const MAX_FRAME_PAYLOAD_BYTES = 1024 * 1024;
export const FRAME_HEADER_BYTES = 5;
/** Largest JSON body either side accepts. */
export const MAX_JSON_BODY_BYTES = 16 * 1024 * 1024;
export const MAX_PATH_BYTES = 4096;
export const MAX_NAME_BYTES = 255;
export const MAX_DIR_ENTRIES = 50_000;
export const MAX_ENV_ENTRIES = 4096;
export const MAX_ENV_KEY_BYTES = 1024;
export const MAX_ENV_VALUE_BYTES = 128 * 1024;
export const MAX_ARGV_ITEMS = 4096;
export const MAX_ARG_BYTES = 128 * 1024;
export const MAX_MESSAGE_BYTES = 4096;
export const MAX_TIMEOUT_MS = 7 * 24 * 3600 * 1000;
export const MAX_TERMINAL_DIM = 1000;
export const MIN_INIT_ENTROPY_BYTES = 32;
export const MAX_INIT_ENTROPY_BYTES = 4096;

// ---------------------------------------------------------------------------
// Validation primitives

/** A value from the other side broke the protocol. Carries the JSON path. */
export class ProtocolViolation extends Error {
  readonly path: string;
  constructor(path: string, message: string) {
    super(`${path}: ${message}`);
    this.name = 'ProtocolViolation';
    this.path = path;
  }
}

/** Checks an unknown value and returns it typed, or throws ProtocolViolation. */
export type Check<T> = (x: unknown, path: string) => T;

const fail = (path: string, message: string): never => {
  throw new ProtocolViolation(path, message);
};

interface StrOpts {
  min?: number;
  /** Maximum length in UTF-8 bytes. */
  maxBytes: number;
  pattern?: RegExp;
  /** Reject NUL characters (default true). */
  noNul?: boolean;
}

export const str =
  (o: StrOpts): Check<string> =>
  (x, path) => {
    if (typeof x !== 'string') return fail(path, 'expected a string');
    // Length in UTF-16 units bounds the byte length cheaply before encoding.
    if (x.length > o.maxBytes || Buffer.byteLength(x) > o.maxBytes) return fail(path, `longer than ${o.maxBytes} bytes`);
    if (x.length < (o.min ?? 0)) return fail(path, `shorter than ${o.min} characters`);
    if ((o.noNul ?? true) && x.includes('\0')) return fail(path, 'contains NUL');
    if (o.pattern && !o.pattern.test(x)) return fail(path, 'has an invalid format');
    return x;
  };

export const int =
  (min: number, max: number): Check<number> =>
  (x, path) => {
    if (typeof x !== 'number' || !Number.isSafeInteger(x)) return fail(path, 'expected an integer');
    if (x < min || x > max) return fail(path, `out of range [${min}, ${max}]`);
    return x;
  };

export const bool: Check<boolean> = (x, path) => (typeof x === 'boolean' ? x : fail(path, 'expected a boolean'));

export const oneOf =
  <T extends string>(values: readonly T[]): Check<T> =>
  (x, path) =>
    typeof x === 'string' && (values as readonly string[]).includes(x) ? (x as T) : fail(path, `expected one of ${values.join(', ')}`);

export const nullable =
  <T>(c: Check<T>): Check<T | null> =>
  (x, path) =>
    x === null ? null : c(x, path);

export const arr =
  <T>(item: Check<T>, maxItems: number): Check<T[]> =>
  (x, path) => {
    if (!Array.isArray(x)) return fail(path, 'expected an array');
    if (x.length > maxItems) return fail(path, `more than ${maxItems} items`);
    return x.map((v, i) => item(v, `${path}[${i}]`));
  };

export const record =
  <T>(key: Check<string>, value: Check<T>, maxKeys: number): Check<Record<string, T>> =>
  (x, path) => {
    if (!isPlainObject(x)) return fail(path, 'expected an object');
    const keys = Object.keys(x);
    if (keys.length > maxKeys) return fail(path, `more than ${maxKeys} keys`);
    const out: Record<string, T> = Object.create(null);
    for (const k of keys) out[key(k, `${path} key`)] = value(x[k], `${path}.${k}`);
    return out;
  };

type Shape = Record<string, Check<unknown>>;
type Out<S extends Shape> = { [K in keyof S]: S[K] extends Check<infer T> ? T : never };

/**
 * A strict object: required keys must be present, optional keys may be
 * absent or undefined, any other key is rejected.
 */
export function obj<R extends Shape, O extends Shape = {}>(required: R, optional?: O): Check<Out<R> & Partial<Out<O>>> {
  return (x, path) => {
    if (!isPlainObject(x)) return fail(path, 'expected an object');
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(x)) {
      if (!Object.hasOwn(required, k) && !(optional && Object.hasOwn(optional, k))) fail(`${path}.${k}`, 'unknown field');
    }
    for (const [k, c] of Object.entries(required)) {
      if (!Object.hasOwn(x, k)) fail(`${path}.${k}`, 'missing');
      out[k] = c(x[k], `${path}.${k}`);
    }
    for (const [k, c] of Object.entries(optional ?? {})) {
      if (Object.hasOwn(x, k) && x[k] !== undefined) out[k] = c(x[k], `${path}.${k}`);
    }
    return out as Out<R> & Partial<Out<O>>;
  };
}

function isPlainObject(x: unknown): x is Record<string, unknown> {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) return false;
  const proto = Object.getPrototypeOf(x);
  return proto === Object.prototype || proto === null;
}

/** Parses JSON text/bytes and validates it; every failure is a ProtocolViolation. */
export function parseJson<T>(data: Buffer | string, check: Check<T>, what: string): T {
  if ((typeof data === 'string' ? Buffer.byteLength(data) : data.length) > MAX_JSON_BODY_BYTES) {
    return fail(what, `JSON body larger than ${MAX_JSON_BODY_BYTES} bytes`);
  }
  let value: unknown;
  try {
    value = JSON.parse(typeof data === 'string' ? data : data.toString('utf8'));
  } catch {
    return fail(what, 'not valid JSON');
  }
  return check(value, what);
}

// ---------------------------------------------------------------------------
// Shared field checks

/** Absolute path, no NUL, bounded. Normalisation is the agent's business. */
export const absPath: Check<string> = (x, path) => {
  const p = str({ min: 1, maxBytes: MAX_PATH_BYTES })(x, path);
  if (!p.startsWith('/')) fail(path, 'must be an absolute path');
  return p;
};

const message = str({ maxBytes: MAX_MESSAGE_BYTES, noNul: false });
const envKey = str({ min: 1, maxBytes: MAX_ENV_KEY_BYTES, pattern: /^[^=]+$/ });
const envValue = str({ maxBytes: MAX_ENV_VALUE_BYTES });
const envMap = record(envKey, envValue, MAX_ENV_ENTRIES);
const fileMode = int(0, 0o7777);
/** Milliseconds since the epoch, between 2000 and 2200. */
const epochMs = int(946_684_800_000, 7_258_118_400_000);
const nonNegMs = int(0, Number.MAX_SAFE_INTEGER);
const uuid = str({ maxBytes: 36, pattern: /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/ });
/** RFC 1123 host name, at most 64 bytes (the kernel's limit). */
export const hostnameCheck = str({
  min: 1,
  maxBytes: 64,
  pattern: /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/,
});
const sandboxId = str({ min: 1, maxBytes: 128, pattern: /^[A-Za-z0-9_.-]+$/ });
const base64 = str({ min: 1, maxBytes: Math.ceil(MAX_INIT_ENTROPY_BYTES / 3) * 4, pattern: /^[A-Za-z0-9+/]+={0,2}$/ });

/** Signals the host may send to a command. */
export const SIGNALS = [
  'SIGHUP',
  'SIGINT',
  'SIGQUIT',
  'SIGKILL',
  'SIGTERM',
  'SIGUSR1',
  'SIGUSR2',
  'SIGSTOP',
  'SIGCONT',
  'SIGTSTP',
  'SIGWINCH',
  'SIGALRM',
  'SIGPIPE',
] as const;
export type SignalName = (typeof SIGNALS)[number];
export const signalName = oneOf(SIGNALS);
/** A signal reported in an exit; any well-formed name (the kernel may report ones the host cannot send). */
const exitSignal = str({ min: 4, maxBytes: 16, pattern: /^SIG[A-Z0-9+]{1,13}$/ });

// ---------------------------------------------------------------------------
// Errors

/** Error codes the agent may report. Anything else from the guest becomes 'agent_error' on the host. */
export const AGENT_ERROR_CODES = [
  'invalid_argument',
  'not_found',
  'forbidden',
  'conflict',
  'limit_exceeded',
  'policy_denied',
  'payload_too_large',
  'not_implemented',
  'timeout',
  'internal',
] as const satisfies readonly ErrorCode[];
export type AgentErrorCode = (typeof AGENT_ERROR_CODES)[number];

export interface AgentError {
  /** Kept as a string: an unknown code from the guest is mapped, not rejected. */
  code: string;
  message: string;
}
export interface AgentErrorBody {
  error: AgentError;
}
const agentErrorCode = str({ min: 1, maxBytes: 64, pattern: /^[a-z_]+$/ });
export const checkAgentError: Check<AgentError> = obj({ code: agentErrorCode, message });
export const checkAgentErrorBody: Check<AgentErrorBody> = obj({ error: checkAgentError });

export function isAgentErrorCode(x: string): x is AgentErrorCode {
  return (AGENT_ERROR_CODES as readonly string[]).includes(x);
}

// ---------------------------------------------------------------------------
// Health, init, snapshot

export interface HealthResponse {
  /** Sandforge version of the agent build. */
  version: string;
  protocol: number;
  kernel_release: string;
  hostname: string;
  uptime_ms: number;
  /** /proc/sys/kernel/random/boot_id; snapshot clones share the template's. */
  boot_id: string;
  /** The sandbox_id of the last successful init, null before the first. */
  sandbox_id: string | null;
}
export const checkHealthResponse: Check<HealthResponse> = obj({
  version: str({ min: 1, maxBytes: 64, pattern: /^[0-9A-Za-z.+-]+$/ }),
  protocol: int(1, 65535),
  kernel_release: str({ min: 1, maxBytes: 256, pattern: /^[\x21-\x7e]+$/ }),
  hostname: str({ maxBytes: 64, pattern: /^[\x21-\x7e]*$/ }),
  uptime_ms: nonNegMs,
  boot_id: uuid,
  sandbox_id: nullable(sandboxId),
});

export interface InitRequest {
  /** Host wall clock, milliseconds since the epoch, taken just before sending. */
  time_ms: number;
  /** Fresh host entropy, base64, at least MIN_INIT_ENTROPY_BYTES decoded bytes. */
  entropy_b64: string;
  hostname: string;
  sandbox_id: string;
  /** Default environment merged under every command's own env. */
  env?: Record<string, string>;
}
export const checkInitRequest: Check<InitRequest> = (x, path) => {
  const r = obj({ time_ms: epochMs, entropy_b64: base64, hostname: hostnameCheck, sandbox_id: sandboxId }, { env: envMap })(x, path);
  const n = Buffer.from(r.entropy_b64, 'base64').length;
  if (n < MIN_INIT_ENTROPY_BYTES) fail(`${path}.entropy_b64`, `needs at least ${MIN_INIT_ENTROPY_BYTES} bytes`);
  return r;
};

export interface InitResponse {
  /** Whether the guest clock was set (false in --no-system mode or on failure). */
  clock_set: boolean;
  /** Guest clock minus host clock before setting, in ms (positive: guest ahead). */
  clock_skew_ms: number;
  hostname_set: boolean;
  /** Entropy bytes written into the kernel pool via /dev/urandom. */
  entropy_mixed_bytes: number;
  /** Whether the kernel CRNG was credited and forced to reseed (RNDADDENTROPY + RNDRESEEDCRNG). */
  crng_reseeded: boolean;
  duration_ms: number;
  /** Human-readable notes about steps that failed or were skipped. */
  warnings: string[];
}
export const checkInitResponse: Check<InitResponse> = obj({
  clock_set: bool,
  clock_skew_ms: int(-Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER),
  hostname_set: bool,
  entropy_mixed_bytes: int(0, MAX_INIT_ENTROPY_BYTES),
  crng_reseeded: bool,
  duration_ms: nonNegMs,
  warnings: arr(message, 16),
});

export interface PrepareSnapshotResponse {
  synced: boolean;
  /** Commands still running; a snapshot freezes them mid-flight. */
  running_execs: number;
  duration_ms: number;
}
export const checkPrepareSnapshotResponse: Check<PrepareSnapshotResponse> = obj({
  synced: bool,
  running_execs: int(0, 1_000_000),
  duration_ms: nonNegMs,
});

export type EmptyResponse = Record<string, never>;
export const checkEmptyResponse: Check<EmptyResponse> = obj({}) as Check<EmptyResponse>;

// ---------------------------------------------------------------------------
// Exec

export interface ExecSpec {
  /** Program and arguments, run without a shell. Exactly one of argv / shell. */
  argv?: string[];
  /** Script run as `/bin/sh -c <shell>`. */
  shell?: string;
  /** Merged over the agent's default env (PATH, HOME, … and init's env). */
  env?: Record<string, string>;
  /** Absolute working directory; default the user's home, else "/". */
  cwd?: string;
  /** User name or numeric uid, resolved through /etc/passwd; default root. */
  user?: string | number;
  /** Kill the whole process group after this many ms (SIGTERM, SIGKILL after a grace). */
  timeout_ms?: number;
  /** Run on a pseudo-terminal of this size; stdout frames then carry the terminal output. */
  pty?: { rows: number; cols: number };
  /** Whether the command gets a stdin pipe fed by stdin frames (default: /dev/null). */
  stdin?: boolean;
  /** Command policy the agent applies after resolving the program (PATH, symlinks). */
  program_policy?: { allow: string[]; deny: string[] };
}
const dim = int(1, MAX_TERMINAL_DIM);
const programName = str({ min: 1, maxBytes: 128, pattern: /^[A-Za-z0-9._+-]+$/ });
const userCheck: Check<string | number> = (x, path) =>
  typeof x === 'number'
    ? int(0, 0xfffffffe)(x, path)
    : str({ min: 1, maxBytes: 256, pattern: /^([a-z_][a-z0-9_.-]*\$?|[0-9]+)$/i })(x, path);
export const checkExecSpec: Check<ExecSpec> = (x, path) => {
  const s = obj(
    {},
    {
      argv: arr(str({ maxBytes: MAX_ARG_BYTES }), MAX_ARGV_ITEMS),
      shell: str({ min: 1, maxBytes: MAX_FRAME_PAYLOAD_BYTES / 2 }),
      env: envMap,
      cwd: absPath,
      user: userCheck,
      timeout_ms: int(1, MAX_TIMEOUT_MS),
      pty: obj({ rows: dim, cols: dim }),
      stdin: bool,
      program_policy: obj({ allow: arr(programName, 256), deny: arr(programName, 256) }),
    },
  )(x, path);
  if ((s.argv === undefined) === (s.shell === undefined)) fail(path, 'exactly one of argv and shell is required');
  if (s.argv && s.argv.length === 0) fail(`${path}.argv`, 'must not be empty');
  if (s.argv && s.argv[0] === '') fail(`${path}.argv[0]`, 'must not be empty');
  return s;
};

export interface ExecStarted {
  pid: number;
}
export const checkExecStarted: Check<ExecStarted> = obj({ pid: int(1, 0x3fffffff) });

export interface ExecExit {
  /** 0–255, or null when killed by a signal. */
  exit_code: number | null;
  /** Signal name when killed by one, else null. */
  signal: string | null;
  timed_out: boolean;
  duration_ms: number;
}
export const checkExecExit: Check<ExecExit> = (x, path) => {
  const e = obj({ exit_code: nullable(int(0, 255)), signal: nullable(exitSignal), timed_out: bool, duration_ms: nonNegMs })(x, path);
  if ((e.exit_code === null) === (e.signal === null)) fail(path, 'exactly one of exit_code and signal must be set');
  return e;
};

/** Frame type bytes. Client→agent are 0x01–0x7f, agent→client 0x81–0xff. */
export const FrameType = {
  spec: 0x01,
  stdin: 0x02,
  stdinEof: 0x03,
  signal: 0x04,
  resize: 0x05,
  started: 0x81,
  stdout: 0x82,
  stderr: 0x83,
  exit: 0x84,
  error: 0x85,
} as const;

export type ClientFrame =
  | { type: 'spec'; spec: ExecSpec }
  | { type: 'stdin'; data: Buffer }
  | { type: 'stdin_eof' }
  | { type: 'signal'; signal: SignalName }
  | { type: 'resize'; rows: number; cols: number };

export type AgentFrame =
  | { type: 'started'; pid: number }
  | { type: 'stdout'; data: Buffer }
  | { type: 'stderr'; data: Buffer }
  | { type: 'exit'; exit: ExecExit }
  | { type: 'error'; error: AgentError };

function frame(type: number, payload: Buffer): Buffer {
  if (payload.length > MAX_FRAME_PAYLOAD_BYTES) throw new RangeError(`frame payload ${payload.length} > ${MAX_FRAME_PAYLOAD_BYTES} bytes`);
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payload.length);
  out.writeUInt8(type, 0);
  out.writeUInt32BE(payload.length, 1);
  payload.copy(out, FRAME_HEADER_BYTES);
  return out;
}
const json = (v: unknown) => Buffer.from(JSON.stringify(v));

export function encodeClientFrame(f: ClientFrame): Buffer {
  switch (f.type) {
    case 'spec':
      return frame(FrameType.spec, json(f.spec));
    case 'stdin':
      return frame(FrameType.stdin, f.data);
    case 'stdin_eof':
      return frame(FrameType.stdinEof, Buffer.alloc(0));
    case 'signal':
      return frame(FrameType.signal, Buffer.from(f.signal));
    case 'resize': {
      const p = Buffer.allocUnsafe(4);
      p.writeUInt16BE(f.rows, 0);
      p.writeUInt16BE(f.cols, 2);
      return frame(FrameType.resize, p);
    }
  }
}

export function encodeAgentFrame(f: AgentFrame): Buffer {
  switch (f.type) {
    case 'started':
      return frame(FrameType.started, json({ pid: f.pid }));
    case 'stdout':
      return frame(FrameType.stdout, f.data);
    case 'stderr':
      return frame(FrameType.stderr, f.data);
    case 'exit':
      return frame(FrameType.exit, json(f.exit));
    case 'error':
      return frame(FrameType.error, json(f.error));
  }
}

/** A frame split off the byte stream, payload not yet interpreted. */
export interface RawFrame {
  type: number;
  payload: Buffer;
}

/**
 * Splits a byte stream into frames. Rejects unknown types and oversized
 * lengths as soon as the 5-byte header arrives, before buffering the payload.
 */
export class FrameDecoder {
  private buf: Buffer = Buffer.alloc(0);
  private readonly allowed: ReadonlySet<number>;

  constructor(direction: 'to_agent' | 'to_client') {
    const types = Object.values(FrameType).filter((t) => (direction === 'to_agent' ? t < 0x80 : t >= 0x80));
    this.allowed = new Set(types);
  }

  /** Feeds bytes; returns the complete frames they finish. Throws ProtocolViolation. */
  push(chunk: Buffer): RawFrame[] {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const out: RawFrame[] = [];
    while (this.buf.length >= FRAME_HEADER_BYTES) {
      const type = this.buf.readUInt8(0);
      const len = this.buf.readUInt32BE(1);
      if (!this.allowed.has(type)) fail('frame', `unknown frame type 0x${type.toString(16)}`);
      if (len > MAX_FRAME_PAYLOAD_BYTES) fail('frame', `payload length ${len} exceeds ${MAX_FRAME_PAYLOAD_BYTES}`);
      if (this.buf.length < FRAME_HEADER_BYTES + len) break;
      out.push({ type, payload: Buffer.from(this.buf.subarray(FRAME_HEADER_BYTES, FRAME_HEADER_BYTES + len)) });
      this.buf = this.buf.subarray(FRAME_HEADER_BYTES + len);
    }
    return out;
  }

  /** Bytes of an incomplete frame still held; non-zero at stream end is a violation. */
  get pending(): number {
    return this.buf.length;
  }
}

const emptyPayload = (p: Buffer, what: string) => {
  if (p.length !== 0) fail(what, 'payload must be empty');
};

/** Interprets a raw frame sent by the host. Throws ProtocolViolation. */
export function decodeClientFrame(f: RawFrame): ClientFrame {
  switch (f.type) {
    case FrameType.spec:
      return { type: 'spec', spec: parseJson(f.payload, checkExecSpec, 'spec') };
    case FrameType.stdin:
      return { type: 'stdin', data: f.payload };
    case FrameType.stdinEof:
      emptyPayload(f.payload, 'stdin_eof');
      return { type: 'stdin_eof' };
    case FrameType.signal:
      return { type: 'signal', signal: signalName(f.payload.toString('latin1'), 'signal') };
    case FrameType.resize:
      if (f.payload.length !== 4) fail('resize', 'payload must be 4 bytes');
      return { type: 'resize', rows: dim(f.payload.readUInt16BE(0), 'resize.rows'), cols: dim(f.payload.readUInt16BE(2), 'resize.cols') };
    default:
      return fail('frame', `unexpected frame type 0x${f.type.toString(16)}`);
  }
}

/** Interprets a raw frame sent by the agent. Throws ProtocolViolation. */
export function decodeAgentFrame(f: RawFrame): AgentFrame {
  switch (f.type) {
    case FrameType.started:
      return { type: 'started', pid: parseJson(f.payload, checkExecStarted, 'started').pid };
    case FrameType.stdout:
      return { type: 'stdout', data: f.payload };
    case FrameType.stderr:
      return { type: 'stderr', data: f.payload };
    case FrameType.exit:
      return { type: 'exit', exit: parseJson(f.payload, checkExecExit, 'exit') };
    case FrameType.error:
      return { type: 'error', error: parseJson(f.payload, checkAgentError, 'error') };
    default:
      return fail('frame', `unexpected frame type 0x${f.type.toString(16)}`);
  }
}

// ---------------------------------------------------------------------------
// Files

export type FileType = 'file' | 'dir' | 'symlink' | 'other';
const fileType = oneOf<FileType>(['file', 'dir', 'symlink', 'other']);

export interface FileInfo {
  name: string;
  type: FileType;
  size: number;
  /** Permission bits (mode & 0o7777). */
  mode: number;
  mtime_ms: number;
}
export const checkFileInfo: Check<FileInfo> = obj({
  name: str({ maxBytes: MAX_NAME_BYTES * 3, pattern: /^[^/]*$/ }),
  type: fileType,
  size: nonNegMs,
  mode: fileMode,
  mtime_ms: int(-Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER),
});

export interface FileListResponse {
  entries: FileInfo[];
  /** True when the directory held more than MAX_DIR_ENTRIES entries. */
  truncated: boolean;
}
export const checkFileListResponse: Check<FileListResponse> = obj({
  entries: arr(checkFileInfo, MAX_DIR_ENTRIES),
  truncated: bool,
});

export interface FilePathRequest {
  path: string;
}
export const checkFilePathRequest: Check<FilePathRequest> = obj({ path: absPath });

export interface FileWriteArgs {
  path: string;
  /** Permission bits; default: the replaced file's, else 0o644. */
  mode?: number;
  /** Create missing parent directories. */
  mkdirs?: boolean;
}
export const checkFileWriteArgs: Check<FileWriteArgs> = obj({ path: absPath }, { mode: fileMode, mkdirs: bool });

export interface FileWriteResponse {
  bytes_written: number;
}
export const checkFileWriteResponse: Check<FileWriteResponse> = obj({ bytes_written: nonNegMs });

export interface MkdirRequest {
  path: string;
  /** Create parents and accept an existing directory (default true). */
  recursive?: boolean;
  mode?: number;
}
export const checkMkdirRequest: Check<MkdirRequest> = obj({ path: absPath }, { recursive: bool, mode: fileMode });

export interface RemoveRequest {
  path: string;
  /** Remove directories with their contents (default false). */
  recursive?: boolean;
}
export const checkRemoveRequest: Check<RemoveRequest> = obj({ path: absPath }, { recursive: bool });

export interface RenameRequest {
  from: string;
  to: string;
}
export const checkRenameRequest: Check<RenameRequest> = obj({ from: absPath, to: absPath });

// ---------------------------------------------------------------------------
// Host mounts (9p exports the clone's QEMU points at host folders)

/** Tags of the template's 9p slots; a mount names one of them. */
export const MOUNT_TAG_RE = /^sf[0-3]$/;
/** Guest paths a mount may never be, nor sit under (kernel and system trees, the agent's own disk). */
export const GUEST_MOUNT_FORBIDDEN_UNDER = [
  '/proc',
  '/sys',
  '/dev',
  '/etc',
  '/usr',
  '/bin',
  '/sbin',
  '/lib',
  '/lib32',
  '/lib64',
  '/libx32',
  '/boot',
  '/run',
  '/.sandforge',
] as const;
/** Guest paths a mount may not replace (below them is fine: /var/data, /root/project). */
export const GUEST_MOUNT_FORBIDDEN_EXACT = ['/', '/var', '/root', '/home', '/tmp'] as const;

/**
 * Why `p` is not an acceptable mount point in the guest, or null if it is.
 * Shared by the host's mount policy and the agent, so both apply the same rule.
 */
export function guestMountPathProblem(p: string): string | null {
  if (typeof p !== 'string' || !p.startsWith('/')) return 'must be an absolute path';
  if (p.includes('\0')) return 'contains NUL';
  if (Buffer.byteLength(p) > MAX_PATH_BYTES) return `longer than ${MAX_PATH_BYTES} bytes`;
  const segs = p.split('/').filter((x) => x !== '');
  if (segs.some((x) => x === '..')) return "must not contain '..' segments";
  const norm = normalizeGuestPath(p);
  if ((GUEST_MOUNT_FORBIDDEN_EXACT as readonly string[]).includes(norm)) return `${norm} is a system path`;
  for (const root of GUEST_MOUNT_FORBIDDEN_UNDER) {
    if (norm === root || norm.startsWith(`${root}/`)) return `${root} is a system path`;
  }
  return null;
}

/** `/a//b/./c/` → `/a/b/c` (no `..` handling: callers reject `..`). */
export function normalizeGuestPath(p: string): string {
  const segs = p.split('/').filter((x) => x !== '' && x !== '.');
  return `/${segs.join('/')}`;
}

const mountGuestPath: Check<string> = (x, path) => {
  const p = absPath(x, path);
  const problem = guestMountPathProblem(p);
  if (problem) fail(path, problem);
  return normalizeGuestPath(p);
};

export interface GuestMount {
  /** 9p mount tag of the slot (sf0..sf3). */
  tag: string;
  guest_path: string;
  read_only: boolean;
}
export interface MountRequest {
  mounts: GuestMount[];
}
export const checkGuestMount: Check<GuestMount> = obj({
  tag: str({ min: 3, maxBytes: 3, pattern: MOUNT_TAG_RE }),
  guest_path: mountGuestPath,
  read_only: bool,
});
export const checkMountRequest: Check<MountRequest> = (x, path) => {
  const r = obj({ mounts: arr(checkGuestMount, 4) })(x, path);
  const tags = new Set<string>();
  const paths = new Set<string>();
  r.mounts.forEach((m, i) => {
    if (tags.has(m.tag)) fail(`${path}.mounts[${i}].tag`, 'duplicate tag');
    if (paths.has(m.guest_path)) fail(`${path}.mounts[${i}].guest_path`, 'duplicate guest path');
    tags.add(m.tag);
    paths.add(m.guest_path);
  });
  return r;
};

export interface MountResponse {
  mounted: { tag: string; guest_path: string; read_only: boolean }[];
  duration_ms: number;
}
export const checkMountResponse: Check<MountResponse> = obj({
  mounted: arr(obj({ tag: str({ min: 3, maxBytes: 3, pattern: MOUNT_TAG_RE }), guest_path: absPath, read_only: bool }), 4),
  duration_ms: nonNegMs,
});

// ---------------------------------------------------------------------------
// Egress (network modes fetch and full)

/**
 * The guest has no network device in any mode. In `fetch` and `full` the
 * agent listens on this loopback port inside the guest and hands each
 * connection to the host through /v1/egress/accept, where the supervisor's
 * proxy judges it. Commands get HTTP(S)_PROXY pointing here.
 */
export const EGRESS_PROXY_PORT = 3128;

export interface EgressListenRequest {
  port: number;
}
export const checkEgressListenRequest: Check<EgressListenRequest> = obj({ port: int(1, 65535) });

export interface EgressListenResponse {
  address: string;
  port: number;
}
export const checkEgressListenResponse: Check<EgressListenResponse> = obj({
  address: str({ min: 1, maxBytes: 64 }),
  port: int(1, 65535),
});
