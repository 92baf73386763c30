import { Option, type Command } from 'commander';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { buildApp } from '../../api/app.js';
import { HOST_CPUS } from '../../config/defaults.js';
import { Runtime } from '../../sandbox/local-runtime.js';
import { defaultLimits, type Limits } from '../../sandbox/limits.js';
import { SandboxManager } from '../../sandbox/sandbox-manager.js';
import { SandforgeError } from '../../shared/errors.js';
import { SandboxStore } from '../../store/sandbox-store.js';
import { EventStore } from '../../store/event-store.js';
import { EventHub } from '../../events/event-hub.js';
import { DEFAULT_WEBHOOK_TUNING, loadWebhookEndpoints, type WebhookTuning } from '../../events/webhook-config.js';
import { WebhookWorker } from '../../events/webhook-worker.js';
import { tokenId } from '../../api/auth.js';
import { collect, intOption } from '../parse.js';
import { DEFAULT_BLOCKED_MOUNT_NAMES, type MountPolicyConfig } from '../../policy/mount-policy.js';
import { isAbsolute } from 'node:path';
import { DEFAULT_FETCH_DOMAINS, NetworkPolicy } from '../../policy/network-policy.js';
import { PROGRAM_NAME_RE, type CommandPolicy } from '../../policy/command-policy.js';
import { hostCgroupStatus } from '../../vmm/host-cgroup.js';

interface SupervisorOptions {
  port: number;
  host: string;
  images?: string;
  data?: string;
  tokenFile?: string;
  insecureNoAuth?: boolean;
  destroyOnExit?: boolean;
  accel?: string;
  maxCpu?: number;
  maxMemoryMb?: number;
  maxDiskMb?: number;
  maxSandboxes?: number;
  maxTimeoutSeconds?: number;
  trustProxy: string[];
  logLevel: string;
  webhookUrl: string[];
  webhookSecret?: string;
  webhookSecretFile?: string;
  webhooksConfig?: string;
  webhookMaxAttempts: number;
  webhookBackoffMs: number;
  webhookBackoffMaxMs: number;
  webhookTimeoutMs: number;
  webhookConcurrency: number;
  auditRetentionDays: number;
  eventRetentionDays: number;
  allowMount: string[];
  blockMountName: string[];
  defaultBlockedNames: boolean;
  fetchAllow: string[];
  fetchAllowCidr: string[];
  defaultFetchAllow: boolean;
  allowCommand: string[];
  denyCommand: string[];
}

/** How often audit rows and settled events past their retention are pruned. */
const PRUNE_INTERVAL_MS = 3600_000;

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

/** Reads the token from SANDFORGE_TOKEN or a token file; never logs it. */
export function loadToken(o: { tokenFile?: string; insecureNoAuth?: boolean; host: string }): string | null {
  if (o.insecureNoAuth) {
    if (!LOOPBACK.has(o.host))
      throw new SandforgeError('invalid_argument', '--insecure-no-auth is only allowed with --host 127.0.0.1 or ::1');
    return null;
  }
  let token = process.env.SANDFORGE_TOKEN?.trim();
  const file = o.tokenFile ?? process.env.SANDFORGE_TOKEN_FILE;
  if (!token && file) {
    try {
      token = readFileSync(file, 'utf8').trim();
    } catch (err) {
      throw new SandforgeError('invalid_argument', `cannot read token file ${file}: ${(err as Error).message}`);
    }
  }
  if (!token) {
    throw new SandforgeError(
      'invalid_argument',
      'no API token: set SANDFORGE_TOKEN (e.g. sf_live_…) or pass --token-file; --insecure-no-auth is for loopback development only',
    );
  }
  if (token.length < 16) throw new SandforgeError('invalid_argument', 'the API token is too short: use at least 16 characters');
  return token;
}

export function registerSupervisorCommand(program: Command): void {
  program
    .command('supervisor')
    .description('run the sandbox supervisor daemon (HTTP API, WebSocket command streams)')
    .option('--port <port>', 'TCP port', intOption('--port', 0, 65535), 8585)
    .option('--host <addr>', 'address to bind', '127.0.0.1')
    .option('--images <dir>', 'images directory (default $SANDFORGE_IMAGES or /var/lib/sandforge/images)')
    .option('--data <dir>', 'state directory: database, templates, VMs (default: <images>/../state)')
    .option('--token-file <path>', 'read the API token from this file (else $SANDFORGE_TOKEN)')
    .option('--insecure-no-auth', 'serve without a token (only on loopback)')
    .option('--destroy-on-exit', 'destroy all sandboxes on SIGTERM instead of leaving them for the next start')
    .option('--accel <mode>', 'auto, kvm or tcg')
    .option('--max-cpu <n>', 'largest cpu per sandbox', intOption('--max-cpu', 1, 1024))
    .option('--max-memory-mb <mb>', 'largest memory_mb per sandbox', intOption('--max-memory-mb', 64, 4 * 1024 * 1024))
    .option('--max-disk-mb <mb>', 'largest disk_mb per sandbox', intOption('--max-disk-mb', 64, 64 * 1024 * 1024))
    .option('--max-sandboxes <n>', 'most sandboxes at once', intOption('--max-sandboxes', 1, 100000))
    .option('--max-timeout-seconds <s>', 'longest sandbox lifetime', intOption('--max-timeout-seconds', 1, 7 * 86400))
    .option('--trust-proxy <addr>', 'believe X-Forwarded-For from this proxy address (repeatable)', collect, [])
    .option('--webhook-url <url>', 'POST signed events to this URL (repeatable; else $SANDFORGE_WEBHOOK_URL, comma-separated)', collect, [])
    .option(
      '--webhook-secret <secret>',
      'signing secret for --webhook-url (prefer $SANDFORGE_WEBHOOK_SECRET or --webhook-secret-file: argv is visible to other users)',
    )
    .option('--webhook-secret-file <path>', 'read the signing secret for --webhook-url from this file')
    .option('--webhooks-config <file>', 'JSON {"endpoints":[{"name","url","secret"|"secret_file","events":["sandbox.*"],"max_attempts"}]}')
    .option(
      '--webhook-max-attempts <n>',
      'attempts before a delivery is dead-lettered',
      intOption('--webhook-max-attempts', 1, 1000),
      DEFAULT_WEBHOOK_TUNING.maxAttempts,
    )
    .option(
      '--webhook-backoff-ms <ms>',
      'first retry delay; doubles per attempt, with jitter',
      intOption('--webhook-backoff-ms', 1, 3600_000),
      DEFAULT_WEBHOOK_TUNING.backoffMs,
    )
    .option(
      '--webhook-backoff-max-ms <ms>',
      'largest retry delay',
      intOption('--webhook-backoff-max-ms', 1, 24 * 3600_000),
      DEFAULT_WEBHOOK_TUNING.backoffMaxMs,
    )
    .option(
      '--webhook-timeout-ms <ms>',
      'per-delivery request timeout',
      intOption('--webhook-timeout-ms', 100, 600_000),
      DEFAULT_WEBHOOK_TUNING.timeoutMs,
    )
    .option(
      '--webhook-concurrency <n>',
      'deliveries in flight at once',
      intOption('--webhook-concurrency', 1, 256),
      DEFAULT_WEBHOOK_TUNING.concurrency,
    )
    .option('--audit-retention-days <days>', 'keep audit rows this long (pruned hourly)', intOption('--audit-retention-days', 1, 36500), 30)
    .option(
      '--event-retention-days <days>',
      'keep settled outbox events this long (pending ones are always kept)',
      intOption('--event-retention-days', 1, 36500),
      7,
    )
    .option(
      '--allow-mount <prefix>',
      'allow host mounts under this absolute host folder (repeatable; none: every mount is refused)',
      collect,
      [],
    )
    .option(
      '--block-mount-name <name>',
      `refuse mounts with a path segment of this name, case-insensitive (repeatable; adds to the defaults: ${DEFAULT_BLOCKED_MOUNT_NAMES.join(' ')})`,
      collect,
      [],
    )
    .option('--no-default-blocked-names', 'drop the default blocked names (only --block-mount-name ones apply)')
    .addOption(fetchAllowOption())
    .addOption(fetchAllowCidrOption())
    .addOption(noDefaultFetchAllowOption())
    .option(
      '--allow-command <name>',
      'only programs of these names may run (repeatable; checked on argv[0] after PATH and symlinks; a guard rail, not a boundary)',
      collect,
      [],
    )
    .option('--deny-command <name>', 'refuse programs of these names (repeatable; same matching)', collect, [])
    .option('--log-level <level>', 'pino log level', process.env.SANDFORGE_LOG_LEVEL ?? 'info')
    .action(async (o: SupervisorOptions) => {
      await runSupervisor(o);
    });
}

async function runSupervisor(o: SupervisorOptions): Promise<void> {
  const token = loadToken(o);
  const log = pino({ level: o.logLevel, base: { svc: 'sandforge' }, redact: ['req.headers.authorization'] });
  const runtime = Runtime.create({ images: o.images, data: o.data, accel: o.accel, dieWithParent: false, onProgress: (m) => log.info(m) });
  log.info({ accel: runtime.accel.accel, kvm: runtime.accel.kvm }, runtime.accel.reason);
  const cg = hostCgroupStatus();
  log.info({ host_cgroup: cg.enabled, version: cg.version }, `host cgroups: ${cg.reason}`);
  if (!token) log.warn('authentication is OFF (--insecure-no-auth); listening on loopback only');

  const d = defaultLimits();
  const limits: Limits = {
    maxCpu: o.maxCpu ?? Math.min(d.maxCpu, HOST_CPUS),
    maxMemoryMb: o.maxMemoryMb ?? d.maxMemoryMb,
    maxDiskMb: o.maxDiskMb ?? d.maxDiskMb,
    maxSandboxes: o.maxSandboxes ?? d.maxSandboxes,
    maxTimeoutSeconds: o.maxTimeoutSeconds ?? d.maxTimeoutSeconds,
  };
  const tuning: WebhookTuning = {
    maxAttempts: o.webhookMaxAttempts,
    backoffMs: o.webhookBackoffMs,
    backoffMaxMs: Math.max(o.webhookBackoffMaxMs, o.webhookBackoffMs),
    timeoutMs: o.webhookTimeoutMs,
    concurrency: o.webhookConcurrency,
  };
  const endpoints = loadWebhookEndpoints(o, tuning);
  const store = new SandboxStore(join(runtime.dirs.dataDir, 'sandforge.db'));
  const eventStore = new EventStore(store.db);
  const events = new EventHub(eventStore, store.db, endpoints, token ? tokenId(token) : 'anonymous');
  const worker = new WebhookWorker(eventStore, events, endpoints, tuning, log.child({ component: 'webhooks' }));
  const mountPolicy = mountPolicyFrom(o);
  if (mountPolicy.allowPrefixes.length)
    log.info({ allow: mountPolicy.allowPrefixes, blocked: mountPolicy.blockedNames }, 'host mounts enabled');
  const networkPolicy = networkPolicyFrom(o);
  const commandPolicy = commandPolicyFrom(o);
  const manager = new SandboxManager({ runtime, store, limits, log, events, mountPolicy, commandPolicy });
  runtime.enableEgress(networkPolicy, {
    onRefusal: (r) =>
      manager.reportViolation(r.sandboxId, {
        action: 'network.connect',
        policy: 'network',
        rule: r.rule,
        message: r.message,
        mode: r.mode,
        host: r.host,
        port: r.port,
      }),
    onError: (id, message) => log.info({ sandbox_id: id }, `egress connect failed: ${message}`),
    onTunnelStop: (id, why) => log.debug({ sandbox_id: id }, `egress tunnel stopped: ${why}`),
  });
  log.info(
    { fetch_allow: networkPolicy.domains.length, fetch_allow_cidr: networkPolicy.cidrs },
    'egress proxy ready (network fetch, full)',
  );
  await manager.start();
  worker.start(); // resumes every delivery left pending by the previous run (a crash included)
  if (endpoints.length) log.info({ endpoints: endpoints.map((e) => e.url) }, 'webhooks enabled');
  const prune = () => {
    const day = 86400_000;
    const r = eventStore.prune(
      new Date(Date.now() - o.auditRetentionDays * day).toISOString(),
      new Date(Date.now() - o.eventRetentionDays * day).toISOString(),
    );
    if (r.audit || r.events) log.info(r, 'pruned audit rows and settled events past retention');
  };
  prune();
  const pruneTimer = setInterval(prune, PRUNE_INTERVAL_MS);
  pruneTimer.unref();
  const app = await buildApp({ manager, runtime, token, logger: log, trustProxy: o.trustProxy, events, webhookWorker: worker });
  await app.listen({ port: o.port, host: o.host });

  let stopping = false;
  const stop = async (sig: string) => {
    if (stopping) return;
    stopping = true;
    // QEMU children are unref'd (they outlive us by design): hold the loop open until shutdown ends, or Node
    // would exit mid-destroy once the HTTP server is closed, leaving VM dirs behind.
    setInterval(() => undefined, 1000);
    log.info({ signal: sig, destroy: !!o.destroyOnExit }, 'shutting down: finishing in-flight requests');
    await app.close();
    await manager.shutdown({ destroy: !!o.destroyOnExit });
    // Let events of the shutdown itself go out briefly; whatever is left stays pending for the next start.
    await new Promise((r) => setTimeout(r, 200));
    worker.stop();
    clearInterval(pruneTimer);
    store.close();
    log.info('stopped');
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}

export const fetchAllowOption = () =>
  new Option(
    '--fetch-allow <domain>',
    'network "fetch" may reach this domain (example.com, or *.example.com for its subdomains; repeatable; adds to the package-registry and git-host defaults)',
  )
    .argParser(collect)
    .default([]);
export const fetchAllowCidrOption = () =>
  new Option(
    '--fetch-allow-cidr <cidr>',
    "allow egress to these addresses although loopback, private, link-local or the host's own (e.g. an internal mirror; repeatable)",
  )
    .argParser(collect)
    .default([]);
export const noDefaultFetchAllowOption = () =>
  new Option('--no-default-fetch-allow', 'drop the default fetch allowlist (only --fetch-allow domains apply)');

/** --fetch-allow / --fetch-allow-cidr → the egress proxy's policy (throws invalid_argument on a bad entry). */
export function networkPolicyFrom(o: { fetchAllow?: string[]; fetchAllowCidr?: string[]; defaultFetchAllow?: boolean }): NetworkPolicy {
  const defaults = o.defaultFetchAllow === false ? [] : [...DEFAULT_FETCH_DOMAINS];
  return new NetworkPolicy({ allowDomains: [...defaults, ...(o.fetchAllow ?? [])], allowCidrs: [...(o.fetchAllowCidr ?? [])] });
}

/** --allow-command / --deny-command → the command policy. */
export function commandPolicyFrom(o: { allowCommand?: string[]; denyCommand?: string[] }): CommandPolicy {
  for (const n of [...(o.allowCommand ?? []), ...(o.denyCommand ?? [])]) {
    if (!PROGRAM_NAME_RE.test(n))
      throw new SandforgeError(
        'invalid_argument',
        `--allow-command/--deny-command ${JSON.stringify(n)}: expected a program name such as python3 (no slashes)`,
      );
  }
  return { allow: [...new Set(o.allowCommand ?? [])], deny: [...new Set(o.denyCommand ?? [])] };
}

/** --allow-mount / --block-mount-name → the manager's mount policy. */
export function mountPolicyFrom(o: { allowMount?: string[]; blockMountName?: string[]; defaultBlockedNames?: boolean }): MountPolicyConfig {
  for (const p of o.allowMount ?? []) {
    if (!isAbsolute(p)) throw new SandforgeError('invalid_argument', `--allow-mount ${p}: must be an absolute path`);
  }
  for (const n of o.blockMountName ?? []) {
    if (!n || n.includes('/'))
      throw new SandforgeError('invalid_argument', `--block-mount-name ${JSON.stringify(n)}: must be one path segment`);
  }
  const defaults = o.defaultBlockedNames === false ? [] : [...DEFAULT_BLOCKED_MOUNT_NAMES];
  return { allowPrefixes: [...(o.allowMount ?? [])], blockedNames: [...new Set([...defaults, ...(o.blockMountName ?? [])])] };
}
