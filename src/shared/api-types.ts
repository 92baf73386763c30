/**
 * The public HTTP API's bodies, defined once as TypeBox schemas. They serve
 * request validation (Fastify), the handlers' types, `/v1/openapi.json`, and
 * the SDK's types. Field names are snake_case as documented.
 */
import { Type, type Static } from '@sinclair/typebox';
import { ERROR_CODES } from './errors.js';

const Str = (max: number, opts: object = {}) => Type.String({ maxLength: max, ...opts });

export const NetworkMode = Type.Union([Type.Literal('offline'), Type.Literal('fetch'), Type.Literal('full')], {
  description: 'offline: no network device; fetch: egress through the allowlisting proxy; full: NAT egress',
});
export type NetworkMode = Static<typeof NetworkMode>;

export const MountSpec = Type.Object(
  {
    host_path: Str(4096, { minLength: 1 }),
    guest_path: Str(4096, { minLength: 1 }),
    read_only: Type.Optional(Type.Boolean({ default: false })),
  },
  { additionalProperties: false },
);
export type MountSpec = Static<typeof MountSpec>;

export const EnvMap = Type.Record(Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*$', maxLength: 256 }), Str(65536), {
  description: 'environment variables',
});

export const SecretEnvMap = Type.Record(Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*$', maxLength: 256 }), Str(65536), {
  description:
    'environment variables whose values are secrets: merged like env, but never logged, audited, sent in webhooks or written to disk by the supervisor',
});

export const CreateSandboxRequest = Type.Object(
  {
    image: Type.Optional(Str(64, { pattern: '^[a-z0-9][a-z0-9._-]*$', description: 'image name (default "default")' })),
    cpu: Type.Optional(Type.Integer({ minimum: 1, maximum: 64, description: 'vCPUs (default 2)' })),
    memory_mb: Type.Optional(Type.Integer({ minimum: 64, maximum: 262144, description: 'guest RAM in MiB (default 1024)' })),
    disk_mb: Type.Optional(Type.Integer({ minimum: 64, maximum: 1048576, description: 'writable disk in MiB (default 4096)' })),
    timeout_seconds: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 7 * 24 * 3600, description: 'sandbox lifetime; destroyed when it ends' }),
    ),
    env: Type.Optional(EnvMap),
    secret_env: Type.Optional(SecretEnvMap),
    metadata: Type.Optional(Type.Record(Str(64), Str(1024))),
    network: Type.Optional(NetworkMode),
    mounts: Type.Optional(Type.Array(MountSpec, { maxItems: 4 })),
  },
  { additionalProperties: false },
);
export type CreateSandboxRequest = Static<typeof CreateSandboxRequest>;

export const SandboxStatus = Type.Union([
  Type.Literal('creating'),
  Type.Literal('running'),
  Type.Literal('terminated'),
  Type.Literal('failed'),
]);
export type SandboxStatus = Static<typeof SandboxStatus>;

export const Sandbox = Type.Object({
  id: Type.String(),
  status: SandboxStatus,
  image: Type.String(),
  cpu: Type.Integer(),
  memory_mb: Type.Integer(),
  disk_mb: Type.Integer(),
  network: NetworkMode,
  created_at: Type.String({ format: 'date-time' }),
  expires_at: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  metadata: Type.Record(Type.String(), Type.String()),
  /** How the VM started: a clone of a ready template, or after building one first. */
  start: Type.Optional(
    Type.Object({
      mode: Type.Union([Type.Literal('clone'), Type.Literal('template_built')]),
      template: Type.String(),
      create_ms: Type.Number(),
    }),
  ),
  message: Type.Optional(Type.String()),
});
export type Sandbox = Static<typeof Sandbox>;

export const ExecuteRequest = Type.Object(
  {
    command: Type.Union([Str(131072, { minLength: 1 }), Type.Array(Str(131072), { minItems: 1, maxItems: 4096 })], {
      description: 'a string runs under /bin/sh -c; an array runs as argv',
    }),
    timeout_seconds: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 86400, description: 'default 300' })),
    env: Type.Optional(EnvMap),
    secret_env: Type.Optional(SecretEnvMap),
    cwd: Type.Optional(Str(4096)),
    user: Type.Optional(Str(64)),
    stdin: Type.Optional(Str(10 * 1024 * 1024, { description: 'text fed to the command on stdin' })),
  },
  { additionalProperties: false },
);
export type ExecuteRequest = Static<typeof ExecuteRequest>;

export const ExecuteResult = Type.Object({
  exit_code: Type.Union([Type.Integer(), Type.Null()]),
  stdout: Type.String(),
  stderr: Type.String(),
  timed_out: Type.Boolean(),
  signal: Type.Optional(Type.Union([Type.String(), Type.Null()])),
  duration_ms: Type.Optional(Type.Number()),
  truncated: Type.Optional(Type.Boolean()),
});
export type ExecuteResult = Static<typeof ExecuteResult>;

export const DeleteResult = Type.Object({
  id: Type.String(),
  status: Type.Literal('terminated'),
  message: Type.String(),
});
export type DeleteResult = Static<typeof DeleteResult>;

export const FileEntry = Type.Object({
  name: Type.String(),
  path: Type.String(),
  type: Type.Union([Type.Literal('file'), Type.Literal('dir'), Type.Literal('symlink'), Type.Literal('other')]),
  size: Type.Integer(),
  mode: Type.Integer(),
  mtime: Type.String({ format: 'date-time' }),
});
export type FileEntry = Static<typeof FileEntry>;

export const PathQuery = Type.Object(
  {
    path: Str(4096, { minLength: 1, description: 'absolute path inside the sandbox' }),
    recursive: Type.Optional(Type.Union([Type.Literal('true'), Type.Literal('false')])),
  },
  { additionalProperties: false },
);
export type PathQuery = Static<typeof PathQuery>;

export const MkdirRequest = Type.Object({ path: Str(4096, { minLength: 1 }) }, { additionalProperties: false });
export const RenameRequest = Type.Object(
  { from: Str(4096, { minLength: 1 }), to: Str(4096, { minLength: 1 }) },
  { additionalProperties: false },
);

/** Messages of a command stream (WebSocket text frames, or NDJSON lines). Byte payloads are base64. */
export type StreamClientMessage =
  | {
      type: 'start';
      command: string | string[];
      env?: Record<string, string>;
      secret_env?: Record<string, string>;
      cwd?: string;
      user?: string;
      timeout_seconds?: number;
      pty?: { rows: number; cols: number };
    }
  | { type: 'stdin'; data: string }
  | { type: 'stdin_close' }
  | { type: 'signal'; signal: string }
  | { type: 'resize'; rows: number; cols: number };

export type StreamServerMessage =
  | { type: 'started'; pid: number }
  | { type: 'stdout'; data: string }
  | { type: 'stderr'; data: string }
  | { type: 'exit'; exit_code: number | null; signal: string | null; timed_out: boolean; duration_ms: number }
  | { type: 'error'; code: string; message: string };

export const StreamStart = Type.Object(
  {
    type: Type.Literal('start'),
    command: ExecuteRequest.properties.command,
    env: Type.Optional(EnvMap),
    secret_env: Type.Optional(SecretEnvMap),
    cwd: Type.Optional(Str(4096)),
    user: Type.Optional(Str(64)),
    timeout_seconds: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 86400 })),
    pty: Type.Optional(
      Type.Object({ rows: Type.Integer({ minimum: 1, maximum: 1000 }), cols: Type.Integer({ minimum: 1, maximum: 1000 }) }),
    ),
  },
  { additionalProperties: false },
);

export const ErrorEnvelope = Type.Object({
  error: Type.Object({
    code: Type.Union(ERROR_CODES.map((c) => Type.Literal(c))),
    message: Type.String(),
    details: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
    request_id: Type.Optional(Type.String()),
  }),
});

export const InfoResponse = Type.Object({
  version: Type.String(),
  acceleration: Type.Object({ accel: Type.String(), kvm: Type.String(), reason: Type.String() }),
  images: Type.Array(Type.Object({ name: Type.String(), id: Type.String(), kernel_release: Type.String() })),
  templates: Type.Array(
    Type.Object({
      key: Type.String(),
      image: Type.String(),
      cpu: Type.Integer(),
      memory_mb: Type.Integer(),
      state: Type.String(),
      message: Type.Optional(Type.String()),
    }),
  ),
  capacity: Type.Object({
    sandboxes: Type.Integer(),
    max_sandboxes: Type.Integer(),
    max_cpu: Type.Integer(),
    max_memory_mb: Type.Integer(),
    max_disk_mb: Type.Integer(),
    max_timeout_seconds: Type.Integer(),
  }),
  policy: Type.Object({
    mounts: Type.Object({ allow_prefixes: Type.Array(Type.String()), blocked_names: Type.Array(Type.String()) }),
    network: Type.Object({
      modes: Type.Array(Type.String()),
      fetch_allow: Type.Array(Type.String()),
      fetch_allow_cidr: Type.Array(Type.String()),
      egress_connections: Type.Integer(),
    }),
    commands: Type.Object({ allow: Type.Array(Type.String()), deny: Type.Array(Type.String()) }),
  }),
  /** Whether each QEMU runs in its own host cgroup, and why (not). */
  host_cgroup: Type.Object({ enabled: Type.Boolean(), version: Type.Union([Type.String(), Type.Null()]), reason: Type.String() }),
  counters: Type.Record(Type.String(), Type.Integer()),
});
export type InfoResponse = Static<typeof InfoResponse>;

/** Webhook / SSE event types. */
export const EVENT_TYPES = [
  'sandbox.created',
  'sandbox.started',
  'sandbox.destroyed',
  'sandbox.failed',
  'task.timeout',
  'security.violation',
] as const;
export const EventType = Type.Union(EVENT_TYPES.map((t) => Type.Literal(t)));
export type EventType = (typeof EVENT_TYPES)[number];

/** The body of a webhook delivery and the `data:` of an SSE event (compact JSON on the wire). */
export interface EventBody {
  event: EventType;
  /** `evt_…`; the same on every retry of this event. */
  id: string;
  timestamp: string;
  data: { sandbox_id: string | null; sequence: number } & Record<string, unknown>;
}

export const WebhookDeliveryStatus = Type.Union([Type.Literal('pending'), Type.Literal('delivered'), Type.Literal('dead')]);
export type WebhookDeliveryStatus = Static<typeof WebhookDeliveryStatus>;

export const WebhookDelivery = Type.Object({
  id: Type.String(),
  event_id: Type.String(),
  event: EventType,
  endpoint: Type.String(),
  url: Type.String(),
  status: WebhookDeliveryStatus,
  attempts: Type.Integer(),
  max_attempts: Type.Integer(),
  next_attempt_at: Type.Union([Type.String(), Type.Null()]),
  last_status: Type.Union([Type.Integer(), Type.Null()]),
  last_error: Type.Union([Type.String(), Type.Null()]),
  created_at: Type.String(),
  delivered_at: Type.Union([Type.String(), Type.Null()]),
});
export type WebhookDelivery = Static<typeof WebhookDelivery>;

export const DeliveryListQuery = Type.Object(
  {
    status: Type.Optional(WebhookDeliveryStatus),
    cursor: Type.Optional(Str(20, { pattern: '^[0-9]+$' })),
    limit: Type.Optional(Str(4, { pattern: '^[0-9]+$', description: '1..500, default 100' })),
  },
  { additionalProperties: false },
);
export type DeliveryListQuery = Static<typeof DeliveryListQuery>;

export const DeliveryList = Type.Object({ deliveries: Type.Array(WebhookDelivery), next_cursor: Type.Union([Type.String(), Type.Null()]) });

export const AuditKind = Type.Union([
  Type.Literal('sandbox.create'),
  Type.Literal('sandbox.execute'),
  Type.Literal('sandbox.destroy'),
  Type.Literal('file.write'),
]);
export type AuditKind = Static<typeof AuditKind>;

export const AuditEntry = Type.Object({
  id: Type.Integer(),
  at: Type.String({ description: 'when the action started' }),
  actor: Type.String({ description: 'tok_… id of the API token (never the token), or "system"' }),
  kind: AuditKind,
  sandbox_id: Type.Union([Type.String(), Type.Null()]),
  request_id: Type.Union([Type.String(), Type.Null()]),
  detail: Type.Record(Type.String(), Type.Unknown(), { description: 'what: command, env (secret values redacted), path…' }),
  outcome: Type.Union([Type.Literal('ok'), Type.Literal('error')]),
  error_code: Type.Union([Type.String(), Type.Null()]),
  exit_code: Type.Union([Type.Integer(), Type.Null()]),
  duration_ms: Type.Union([Type.Number(), Type.Null()]),
});
export type AuditEntry = Static<typeof AuditEntry>;

export const AuditQuery = Type.Object(
  {
    sandbox_id: Type.Optional(Str(64)),
    kind: Type.Optional(AuditKind),
    since: Type.Optional(Str(40, { description: 'ISO time, inclusive' })),
    until: Type.Optional(Str(40, { description: 'ISO time, exclusive' })),
    cursor: Type.Optional(Str(20, { pattern: '^[0-9]+$' })),
    limit: Type.Optional(Str(4, { pattern: '^[0-9]+$', description: '1..500, default 100' })),
  },
  { additionalProperties: false },
);
export type AuditQuery = Static<typeof AuditQuery>;

export const AuditList = Type.Object({ entries: Type.Array(AuditEntry), next_cursor: Type.Union([Type.String(), Type.Null()]) });
