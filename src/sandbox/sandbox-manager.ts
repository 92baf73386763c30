import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { DEFAULT_CPUS, DEFAULT_DISK_MB, DEFAULT_IMAGE, DEFAULT_MEMORY_MB } from '../config/defaults.js';
import type { CreateSandboxRequest, DeleteResult, ExecuteRequest, ExecuteResult, InfoResponse, Sandbox } from '../shared/api-types.js';
import { SandforgeError, toSandforgeError } from '../shared/errors.js';
import { noopHub, type EventHub } from '../events/event-hub.js';
import { redactEnv, redactText } from '../events/redact.js';
import { isSandboxId, newSandboxId } from '../shared/ids.js';
import type { ExecSpec } from '../shared/protocol.js';
import type { AgentClient, ExecHandle } from '../agent-client/index.js';
import type { SandboxRow, SandboxStore } from '../store/sandbox-store.js';
import { MicroVm, vmFiles } from '../vmm/microvm.js';
import { killStaleQemu } from '../vmm/qemu-process.js';
import { checkCreateLimits, type Limits } from './limits.js';
import type { Runtime } from './local-runtime.js';
import { judgeProgram, requestedProgramNames, type CommandPolicy } from '../policy/command-policy.js';
import { decideMounts, DEFAULT_BLOCKED_MOUNT_NAMES, type AcceptedMount, type MountPolicyConfig } from '../policy/mount-policy.js';

/** security.violation events one sandbox may cause per minute; the rest are counted. */
const VIOLATION_EVENTS_PER_MINUTE = 20;

/** The /v1/info counter each refusing policy adds to (all of them also count in security_violations). */
const REFUSAL_COUNTER: Record<string, string> = {
  limits: 'limit_refusals',
  capacity: 'limit_refusals',
  mounts: 'mount_refusals',
  network: 'network_refusals',
  commands: 'command_refusals',
};

/** Default per-command timeout when a request gives none. */
export const DEFAULT_EXEC_TIMEOUT_SECONDS = 300;
/** Buffered execute keeps at most this much of each stream. */
const MAX_BUFFERED_OUTPUT = 10 * 1024 * 1024;

export interface ManagerOptions {
  runtime: Runtime;
  store: SandboxStore;
  limits: Limits;
  log: Logger;
  /** Outbox and audit log; events commit in the same transaction as the state change. */
  events?: EventHub;
  /** Host mount rules; absent: no allowed prefix, so every mount is refused. */
  mountPolicy?: MountPolicyConfig;
  /** Program allow/deny lists; absent or empty: every program may run. */
  commandPolicy?: CommandPolicy;
}

/** What the audit log and task.timeout need about a command, kept beside its spec. */
interface CommandInfo {
  command: string | string[];
  env: Record<string, string> | undefined;
  secretKeys: Record<string, string> | undefined;
  secrets: string[];
  limitSeconds: number;
}

export type ExecHandlers = {
  onStarted?: (pid: number) => void;
  onStdout?: (b: Buffer) => void;
  onStderr?: (b: Buffer) => void;
};

/**
 * Lifecycle of sandboxes: create (clone a template), adopt after restart,
 * execute, expire, destroy. Knows nothing of HTTP; the API layer calls it
 * with validated, typed requests.
 */
export class SandboxManager {
  private readonly live = new Map<string, MicroVm>();
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly destroying = new Set<string>();
  /** Create-time secret env, in memory only: lost on a supervisor restart (documented). */
  private readonly secretEnv = new Map<string, Record<string, string>>();
  private readonly commandInfo = new WeakMap<ExecSpec, CommandInfo>();
  private readonly ev: Pick<EventHub, 'tx' | 'emit' | 'audit'>;
  readonly counters: Record<string, number> = {
    sandboxes_created: 0,
    sandboxes_destroyed: 0,
    sandboxes_expired: 0,
    sandboxes_failed: 0,
    sandboxes_adopted: 0,
    commands_executed: 0,
    limit_refusals: 0,
    mount_refusals: 0,
    network_refusals: 0,
    command_refusals: 0,
    security_violations: 0,
    security_violation_events_suppressed: 0,
  };
  /** Per-sandbox budget of security.violation events, so a guest looping on refused connects cannot flood the outbox. */
  private readonly violationBudget = new Map<string, { windowStart: number; sent: number; suppressed: number }>();

  /** The command policy, or null when it has no entries (no program is judged then). */
  private readonly commandPolicy: CommandPolicy | null;

  constructor(private readonly o: ManagerOptions) {
    this.ev = o.events ?? noopHub();
    const cp = o.commandPolicy;
    this.commandPolicy = cp && (cp.allow.length > 0 || cp.deny.length > 0) ? cp : null;
  }

  /** What the policies allow, for /v1/info (no secrets in here). */
  policySummary(runtime: Runtime): InfoResponse['policy'] {
    const m = this.o.mountPolicy;
    const net = runtime.networkPolicy;
    return {
      mounts: { allow_prefixes: [...(m?.allowPrefixes ?? [])], blocked_names: [...(m?.blockedNames ?? DEFAULT_BLOCKED_MOUNT_NAMES)] },
      network: {
        modes: net ? ['offline', 'fetch', 'full'] : ['offline'],
        fetch_allow: [...(net?.domains ?? [])],
        fetch_allow_cidr: [...(net?.cidrs ?? [])],
        egress_connections: runtime.egressConnections(),
      },
      commands: { allow: [...(this.o.commandPolicy?.allow ?? [])], deny: [...(this.o.commandPolicy?.deny ?? [])] },
    };
  }

  get limits(): Limits {
    return this.o.limits;
  }

  /** Re-adopts VMs that survived a restart; marks and cleans up the ones that did not. */
  async start(): Promise<void> {
    await this.o.runtime.templates.sweep();
    for (const row of this.o.store.active()) {
      const log = this.o.log.child({ sandbox_id: row.id });
      const vm = row.status === 'running' && row.vm_dir && row.qemu_pid ? await MicroVm.adopt(vmFiles(row.vm_dir), row.qemu_pid) : null;
      if (vm) {
        this.track(row.id, vm);
        this.o.runtime.attachEgress(vm, row.id, row.network);
        this.schedule(row);
        this.counters.sandboxes_adopted!++;
        log.info({ pid: row.qemu_pid }, 'adopted running sandbox');
      } else {
        if (row.qemu_pid && row.vm_dir) killStaleQemu(row.qemu_pid, row.vm_dir);
        if (row.vm_dir) await rm(row.vm_dir, { recursive: true, force: true });
        const message =
          row.status === 'creating' ? 'supervisor stopped while the sandbox was being created' : 'VM died while the supervisor was down';
        this.ev.tx(() => {
          this.o.store.update(row.id, { status: 'failed', message, ended_at: new Date().toISOString(), qemu_pid: null });
          this.ev.emit('sandbox.failed', row.id, { message });
        });
        this.counters.sandboxes_failed!++;
        log.warn(message);
      }
    }
  }

  async create(req: CreateSandboxRequest): Promise<Sandbox> {
    const startedAt = Date.now();
    const what = createDetail(req);
    /** A refusal by policy or limits: audited, and announced as security.violation. */
    const refuse = (e: SandforgeError, policy: string): SandforgeError => {
      this.countRefusal(policy);
      this.ev.tx(() => {
        this.ev.emit('security.violation', null, {
          action: 'sandbox.create',
          policy,
          code: e.code,
          message: e.message,
          ...(e.details ? { details: e.details } : {}),
        });
        this.ev.audit({ kind: 'sandbox.create', sandbox_id: null, startedAt, detail: what, error_code: e.code });
      });
      return e;
    };
    try {
      checkCreateLimits(req, this.o.limits);
    } catch (err) {
      throw refuse(toSandforgeError(err), 'limits');
    }
    let mounts: AcceptedMount[] = [];
    if (req.mounts && req.mounts.length > 0) {
      try {
        mounts = await decideMounts(req.mounts, this.o.mountPolicy ?? { allowPrefixes: [], blockedNames: DEFAULT_BLOCKED_MOUNT_NAMES });
      } catch (err) {
        throw refuse(toSandforgeError(err), 'mounts');
      }
    }
    if (this.live.size >= this.o.limits.maxSandboxes) {
      throw refuse(
        new SandforgeError(
          'capacity_exhausted',
          `the server runs its maximum of ${this.o.limits.maxSandboxes} sandboxes (--max-sandboxes)`,
        ),
        'capacity',
      );
    }
    const id = newSandboxId();
    const now = new Date();
    const row: SandboxRow = {
      id,
      status: 'creating',
      image: req.image ?? DEFAULT_IMAGE,
      cpu: req.cpu ?? Math.min(DEFAULT_CPUS, this.o.limits.maxCpu),
      memory_mb: req.memory_mb ?? DEFAULT_MEMORY_MB,
      disk_mb: req.disk_mb ?? DEFAULT_DISK_MB,
      network: req.network ?? 'offline',
      created_at: now.toISOString(),
      expires_at: req.timeout_seconds ? new Date(now.getTime() + req.timeout_seconds * 1000).toISOString() : null,
      metadata: req.metadata ?? {},
      env: req.env ?? {},
      template_key: null,
      vm_dir: join(this.o.runtime.dirs.vmsDir, id),
      qemu_pid: null,
      start: null,
      message: null,
      ended_at: null,
    };
    this.ev.tx(() => {
      this.o.store.insert(row);
      this.ev.emit('sandbox.created', id, {
        image: row.image,
        cpu: row.cpu,
        memory_mb: row.memory_mb,
        disk_mb: row.disk_mb,
        network: row.network,
      });
    });
    if (req.secret_env && Object.keys(req.secret_env).length) this.secretEnv.set(id, { ...req.secret_env });
    const log = this.o.log.child({ sandbox_id: id });
    try {
      const s = await this.o.runtime.startSandbox(
        { image: row.image, cpus: row.cpu, memoryMb: row.memory_mb, diskMb: row.disk_mb },
        id,
        row.vm_dir!,
        mounts,
        row.network,
      );
      const start = {
        mode: s.built ? ('template_built' as const) : ('clone' as const),
        template: s.template.meta.key,
        create_ms: Math.round(s.createMs * 10) / 10,
      };
      this.ev.tx(() => {
        this.o.store.update(id, { status: 'running', qemu_pid: s.vm.pid, template_key: s.template.meta.key, start });
        this.ev.emit('sandbox.started', id, { mode: start.mode, create_ms: start.create_ms });
        this.ev.audit({ kind: 'sandbox.create', sandbox_id: id, startedAt, detail: what });
      });
      this.track(id, s.vm);
      this.schedule({ ...row, status: 'running' });
      s.vm.ready.catch((err: Error) => {
        log.error({ err: err.message }, 'sandbox agent did not come up');
        void this.fail(id, s.vm, `agent did not come up: ${err.message}`);
      });
      this.counters.sandboxes_created!++;
      log.info({ create_ms: start.create_ms, mode: start.mode }, 'sandbox running');
      return this.get(id);
    } catch (err) {
      const e = err instanceof SandforgeError ? err : new SandforgeError('vm_failed', (err as Error).message);
      this.secretEnv.delete(id);
      this.ev.tx(() => {
        this.o.store.update(id, { status: 'failed', message: e.message, ended_at: new Date().toISOString() });
        this.ev.emit('sandbox.failed', id, { message: e.message, code: e.code });
        this.ev.audit({ kind: 'sandbox.create', sandbox_id: id, startedAt, detail: what, error_code: e.code });
      });
      this.counters.sandboxes_failed!++;
      log.error({ err: e.message }, 'sandbox create failed');
      throw e;
    }
  }

  /**
   * A refusal that happened after create (egress, commands): counted always,
   * announced as security.violation up to VIOLATION_EVENTS_PER_MINUTE per
   * sandbox; the next announced one carries how many were held back.
   */
  reportViolation(
    sandboxId: string,
    data: { action: string; policy: string; rule: string; message: string } & Record<string, unknown>,
  ): void {
    this.countRefusal(data.policy);
    const now = Date.now();
    let b = this.violationBudget.get(sandboxId);
    if (!b || now - b.windowStart >= 60_000) {
      b = { windowStart: now, sent: 0, suppressed: b?.suppressed ?? 0 };
      this.violationBudget.set(sandboxId, b);
    }
    if (b.sent >= VIOLATION_EVENTS_PER_MINUTE) {
      b.suppressed++;
      this.counters.security_violation_events_suppressed!++;
      return;
    }
    b.sent++;
    const suppressed = b.suppressed;
    b.suppressed = 0;
    const known = isSandboxId(sandboxId) && this.o.store.get(sandboxId) !== undefined;
    this.ev.tx(() =>
      this.ev.emit('security.violation', known ? sandboxId : null, { ...data, ...(suppressed ? { suppressed_before: suppressed } : {}) }),
    );
    this.o.log.warn({ sandbox_id: sandboxId, policy: data.policy, rule: data.rule }, data.message);
  }

  private countRefusal(policy: string): void {
    this.counters.security_violations!++;
    const c = REFUSAL_COUNTER[policy];
    if (c) this.counters[c]!++;
  }

  list(): Sandbox[] {
    return this.o.store.list().map(toPublic);
  }

  get(id: string): Sandbox {
    return toPublic(this.row(id));
  }

  private row(id: string): SandboxRow {
    const row = isSandboxId(id) ? this.o.store.get(id) : undefined;
    if (!row) throw new SandforgeError('sandbox_not_found', `no sandbox with id "${id}"`);
    return row;
  }

  /** The running VM of a sandbox, or a 404/409 that says why there is none. */
  vm(id: string): MicroVm {
    const row = this.row(id);
    const vm = this.live.get(id);
    if (!vm || row.status !== 'running') {
      throw new SandforgeError('sandbox_not_running', `sandbox ${id} is ${row.status}${row.message ? `: ${row.message}` : ''}`);
    }
    return vm;
  }

  /** Builds the agent's exec spec from an API request, merging the sandbox's env. */
  execSpec(id: string, req: Omit<ExecuteRequest, 'stdin'> & { stdin?: boolean; pty?: { rows: number; cols: number } }): ExecSpec {
    const timeoutS = req.timeout_seconds ?? DEFAULT_EXEC_TIMEOUT_SECONDS;
    const createSecrets = this.secretEnv.get(id);
    const secrets = [...Object.values(createSecrets ?? {}), ...Object.values(req.secret_env ?? {})];
    const info: CommandInfo = {
      command: typeof req.command === 'string' ? redactText(req.command, secrets) : req.command.map((a) => redactText(a, secrets)),
      env: req.env ? Object.fromEntries(Object.entries(req.env).map(([k, v]) => [k, redactText(v, secrets)])) : undefined,
      secretKeys: redactEnv(req.secret_env),
      secrets,
      limitSeconds: timeoutS,
    };
    let row: SandboxRow;
    try {
      row = this.row(id);
      this.vm(id);
    } catch (err) {
      const e = toSandforgeError(err);
      this.ev.tx(() =>
        this.ev.audit({
          kind: 'sandbox.execute',
          sandbox_id: isSandboxId(id) ? id : null,
          startedAt: Date.now(),
          detail: commandDetail(info),
          error_code: e.code,
        }),
      );
      throw e;
    }
    const policed = this.commandPolicy;
    if (policed) {
      const refusal = judgeProgram(
        requestedProgramNames(typeof req.command === 'string' ? { shell: req.command } : { argv: req.command }),
        policed,
      );
      if (refusal) {
        const e = new SandforgeError('policy_denied', refusal);
        this.refuseCommand(id, info, e);
        throw e;
      }
    }
    const spec: ExecSpec = {
      ...(typeof req.command === 'string' ? { shell: req.command } : { argv: req.command }),
      env: { ...row.env, ...(createSecrets ?? {}), ...(req.env ?? {}), ...(req.secret_env ?? {}) },
      timeout_ms: Math.max(1, Math.round(timeoutS * 1000)),
      stdin: req.stdin ?? false,
    };
    if (req.cwd) spec.cwd = req.cwd;
    if (req.user) spec.user = req.user;
    if (req.pty) spec.pty = req.pty;
    if (policed) spec.program_policy = { allow: [...policed.allow], deny: [...policed.deny] };
    this.commandInfo.set(spec, info);
    return spec;
  }

  /** A command refused by the command policy (by the host, or by the agent after resolving the program). */
  private refuseCommand(id: string, info: CommandInfo, e: SandforgeError): void {
    this.ev.tx(() =>
      this.ev.audit({ kind: 'sandbox.execute', sandbox_id: id, startedAt: Date.now(), detail: commandDetail(info), error_code: e.code }),
    );
    this.commandViolation(id, info, e.message);
  }

  private commandViolation(id: string, info: CommandInfo, message: string): void {
    this.reportViolation(id, { action: 'sandbox.execute', policy: 'commands', rule: 'command_policy', message, command: info.command });
  }

  /** The sandbox's agent, once ready (a fresh clone finishes its set-up behind this). */
  async agent(id: string): Promise<AgentClient> {
    return this.whileAlive(id, this.vm(id).ready);
  }

  /** Starts a streaming command; the caller drives stdin/signals on the handle. */
  async stream(id: string, spec: ExecSpec, handlers: ExecHandlers): Promise<ExecHandle> {
    const startedAt = Date.now();
    const info = this.commandInfo.get(spec);
    const audit = (r: { error_code?: string; exit_code?: number | null; timed_out?: boolean }) => {
      if (!info) return;
      const detail = { ...commandDetail(info), ...(r.timed_out ? { timed_out: true } : {}) };
      this.ev.tx(() => {
        this.ev.audit({
          kind: 'sandbox.execute',
          sandbox_id: id,
          startedAt,
          detail,
          error_code: r.error_code ?? null,
          exit_code: r.exit_code ?? null,
        });
        if (r.timed_out) {
          this.ev.emit('task.timeout', id, {
            command: info.command,
            limit_seconds: info.limitSeconds,
            duration_ms: Date.now() - startedAt,
          });
        }
      });
    };
    let agent: AgentClient;
    try {
      agent = await this.agent(id);
    } catch (err) {
      audit({ error_code: toSandforgeError(err).code });
      throw err;
    }
    this.counters.commands_executed!++;
    const { onStarted, ...output } = handlers;
    const h = agent.exec(spec, output);
    if (onStarted) h.started.then(onStarted, () => undefined);
    this.whileAlive(id, h.wait()).then(
      (x) => audit({ exit_code: x.exit_code, timed_out: x.timed_out }),
      (err) => {
        const e = toSandforgeError(err);
        if (e.code === 'policy_denied' && info) this.commandViolation(id, info, e.message);
        audit({ error_code: e.code });
      },
    );
    return h;
  }

  /** Runs a command to completion with buffered output (the documented `/execute`). */
  async execute(id: string, req: ExecuteRequest): Promise<ExecuteResult> {
    const spec = this.execSpec(id, { ...req, stdin: req.stdin !== undefined });
    const out = new OutputBuffer();
    const err = new OutputBuffer();
    const h = await this.stream(id, spec, { onStdout: (b) => out.push(b), onStderr: (b) => err.push(b) });
    if (req.stdin !== undefined) {
      h.writeStdin(Buffer.from(req.stdin));
      h.closeStdin();
    }
    const exit = await this.whileAlive(id, h.wait());
    return {
      exit_code: exit.exit_code,
      stdout: out.text(),
      stderr: err.text(),
      timed_out: exit.timed_out,
      signal: exit.signal,
      duration_ms: exit.duration_ms,
      ...(out.truncated || err.truncated ? { truncated: true } : {}),
    };
  }

  /** Rejects with a clear error if the VM dies before `p` settles. */
  async whileAlive<T>(id: string, p: Promise<T>): Promise<T> {
    const vm = this.vm(id);
    const died = vm.qemu.exited.then(() => {
      throw new SandforgeError('vm_failed', `sandbox ${id}'s VM stopped while the command ran (guest crash?)`);
    });
    died.catch(() => undefined);
    return Promise.race([p, died]);
  }

  async destroy(id: string, reason = 'destroyed on request', actor?: string): Promise<DeleteResult> {
    const startedAt = Date.now();
    const audit = (detail: Record<string, unknown>, error_code?: string) =>
      this.ev.tx(() =>
        this.ev.audit({
          kind: 'sandbox.destroy',
          sandbox_id: isSandboxId(id) ? id : null,
          startedAt,
          detail: { reason, ...detail },
          error_code: error_code ?? null,
          ...(actor ? { actor } : {}),
        }),
      );
    let row: SandboxRow;
    try {
      row = this.row(id);
    } catch (err) {
      audit({}, toSandforgeError(err).code);
      throw err;
    }
    if (row.status === 'terminated' || row.status === 'failed') {
      audit({ already: row.status });
      return { id, status: 'terminated', message: `sandbox was already ${row.status}` };
    }
    this.destroying.add(id);
    try {
      const vm = this.live.get(id);
      this.live.delete(id);
      clearTimeout(this.timers.get(id));
      this.timers.delete(id);
      if (vm) await vm.destroy();
      else if (row.vm_dir) await rm(row.vm_dir, { recursive: true, force: true });
      this.secretEnv.delete(id);
      this.violationBudget.delete(id);
      this.ev.tx(() => {
        this.o.store.update(id, { status: 'terminated', message: reason, ended_at: new Date().toISOString(), qemu_pid: null });
        this.ev.emit('sandbox.destroyed', id, { reason });
        this.ev.audit({ kind: 'sandbox.destroy', sandbox_id: id, startedAt, detail: { reason }, ...(actor ? { actor } : {}) });
      });
      this.counters.sandboxes_destroyed!++;
      this.o.log.info({ sandbox_id: id, reason }, 'sandbox destroyed');
      return { id, status: 'terminated', message: `sandbox ${reason}` };
    } finally {
      this.destroying.delete(id);
    }
  }

  /** Stops tracking; VMs keep running for the next start unless `destroy` is set. */
  async shutdown(opts: { destroy: boolean }): Promise<void> {
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
    if (opts.destroy) {
      await Promise.all(
        [...this.live.keys()].map((id) => this.destroy(id, 'destroyed at supervisor exit', 'system').catch(() => undefined)),
      );
    } else {
      for (const vm of this.live.values()) vm.detach();
      this.live.clear();
    }
  }

  get runningCount(): number {
    return this.live.size;
  }

  private track(id: string, vm: MicroVm): void {
    this.live.set(id, vm);
    void vm.qemu.exited.then(() => this.fail(id, vm, 'VM exited unexpectedly'));
  }

  /** Marks a sandbox failed and removes its VM, unless it is already being destroyed. */
  private async fail(id: string, vm: MicroVm, message: string): Promise<void> {
    if (this.destroying.has(id) || this.live.get(id) !== vm) return;
    this.live.delete(id);
    clearTimeout(this.timers.get(id));
    await vm.destroy();
    this.secretEnv.delete(id);
    this.violationBudget.delete(id);
    this.ev.tx(() => {
      this.o.store.update(id, { status: 'failed', message, ended_at: new Date().toISOString(), qemu_pid: null });
      this.ev.emit('sandbox.failed', id, { message });
    });
    this.counters.sandboxes_failed!++;
    this.o.log.warn({ sandbox_id: id }, message);
  }

  private schedule(row: SandboxRow): void {
    if (!row.expires_at) return;
    const ms = Math.max(0, Date.parse(row.expires_at) - Date.now());
    const t = setTimeout(() => {
      this.counters.sandboxes_expired!++;
      void this.destroy(row.id, 'expired (timeout_seconds reached)', 'system').catch((err: Error) =>
        this.o.log.error({ sandbox_id: row.id, err: err.message }, 'expiry destroy failed'),
      );
    }, ms);
    t.unref();
    this.timers.set(row.id, t);
  }
}

/** The audited "what" of a create: shape and env keys; secret values never. */
function createDetail(req: CreateSandboxRequest): Record<string, unknown> {
  const d: Record<string, unknown> = {};
  for (const k of ['image', 'cpu', 'memory_mb', 'disk_mb', 'timeout_seconds', 'network', 'env', 'metadata'] as const)
    if (req[k] !== undefined) d[k] = req[k];
  if (req.mounts?.length) d.mounts = req.mounts;
  if (req.secret_env) d.secret_env = redactEnv(req.secret_env);
  return d;
}

function commandDetail(i: CommandInfo): Record<string, unknown> {
  const d: Record<string, unknown> = typeof i.command === 'string' ? { shell: i.command } : { argv: i.command };
  if (i.env) d.env = i.env;
  if (i.secretKeys) d.secret_env = i.secretKeys;
  d.timeout_seconds = i.limitSeconds;
  return d;
}

function toPublic(r: SandboxRow): Sandbox {
  const s: Sandbox = {
    id: r.id,
    status: r.status,
    image: r.image,
    cpu: r.cpu,
    memory_mb: r.memory_mb,
    disk_mb: r.disk_mb,
    network: r.network,
    created_at: r.created_at,
    expires_at: r.expires_at,
    metadata: r.metadata,
  };
  if (r.start) s.start = r.start;
  if (r.message) s.message = r.message;
  return s;
}

/** Bounded output accumulator for buffered execute. */
class OutputBuffer {
  private chunks: Buffer[] = [];
  private size = 0;
  truncated = false;

  push(b: Buffer): void {
    if (this.size >= MAX_BUFFERED_OUTPUT) {
      this.truncated = true;
      return;
    }
    const take = b.subarray(0, MAX_BUFFERED_OUTPUT - this.size);
    if (take.length < b.length) this.truncated = true;
    this.chunks.push(take);
    this.size += take.length;
  }

  text(): string {
    return Buffer.concat(this.chunks).toString('utf8');
  }
}
