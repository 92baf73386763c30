import type { Command } from 'commander';
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
import { intOption } from '../parse.js';

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
}

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

/** Reads the token from SANDFORGE_TOKEN or a token file; never logs it. */
export function loadToken(o: { tokenFile?: string; insecureNoAuth?: boolean; host: string }): string | null {
  if (o.insecureNoAuth) {
    if (!LOOPBACK.has(o.host)) throw new SandforgeError('invalid_argument', '--insecure-no-auth is only allowed with --host 127.0.0.1 or ::1');
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
    .option('--trust-proxy <addr>', 'believe X-Forwarded-For from this proxy address (repeatable)', (v: string, p: string[]) => [...p, v], [])
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
  if (!token) log.warn('authentication is OFF (--insecure-no-auth); listening on loopback only');

  const d = defaultLimits();
  const limits: Limits = {
    maxCpu: o.maxCpu ?? Math.min(d.maxCpu, HOST_CPUS),
    maxMemoryMb: o.maxMemoryMb ?? d.maxMemoryMb,
    maxDiskMb: o.maxDiskMb ?? d.maxDiskMb,
    maxSandboxes: o.maxSandboxes ?? d.maxSandboxes,
    maxTimeoutSeconds: o.maxTimeoutSeconds ?? d.maxTimeoutSeconds,
  };
  const store = new SandboxStore(join(runtime.dirs.dataDir, 'sandforge.db'));
  const manager = new SandboxManager({ runtime, store, limits, log });
  await manager.start();
  const app = await buildApp({ manager, runtime, token, logger: log, trustProxy: o.trustProxy });
  await app.listen({ port: o.port, host: o.host });

  let stopping = false;
  const stop = async (sig: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal: sig, destroy: !!o.destroyOnExit }, 'shutting down: finishing in-flight requests');
    await app.close();
    await manager.shutdown({ destroy: !!o.destroyOnExit });
    store.close();
    log.info('stopped');
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}
