import type { Command } from 'commander';
import { CreateSandboxRequest, NetworkMode } from '../../shared/api-types.js';
import { SandforgeError } from '../../shared/errors.js';
import { envOption, intOption } from '../parse.js';
import { clientFromFlags, printJson, withClientOptions, type ClientFlags } from './client-options.js';

interface CreateFlags extends ClientFlags {
  image?: string;
  cpu?: number;
  mem?: number;
  disk?: number;
  timeout?: number;
  env?: Record<string, string>;
  network?: NetworkMode;
}

export const NETWORK_MODES = NetworkMode.anyOf.map((l) => l.const);
const limits = CreateSandboxRequest.properties;

/** Bounds come from the request schema, so the CLI and the API cannot disagree. */
const bounded = (name: string, s: { minimum?: number; maximum?: number }) =>
  intOption(name, s.minimum ?? 1, s.maximum ?? Number.MAX_SAFE_INTEGER);

export function networkOption(raw: string): NetworkMode {
  const mode = NETWORK_MODES.find((m) => m === raw);
  if (!mode) throw new SandforgeError('invalid_argument', `--network must be one of ${NETWORK_MODES.join(', ')}, got "${raw}"`);
  return mode;
}

/** Shown while waiting, since the first sandbox of an image builds its template. */
const SLOW_START_NOTICE_MS = 3000;

export function registerCreateCommand(program: Command): void {
  withClientOptions(
    program
      .command('create')
      .description('create a sandbox and print its id')
      .option('--image <name>', 'image name (default "default")')
      .option('--cpu <n>', 'vCPUs (default 2)', bounded('--cpu', limits.cpu))
      .option('--mem <mb>', 'guest RAM in MiB (default 1024)', bounded('--mem', limits.memory_mb))
      .option('--disk <mb>', 'writable disk in MiB (default 4096)', bounded('--disk', limits.disk_mb))
      .option('--timeout <seconds>', 'sandbox lifetime in seconds; destroyed when it ends', bounded('--timeout', limits.timeout_seconds))
      .option('-e, --env <KEY=VALUE>', 'environment variable for every command (repeatable)', envOption)
      .option('--network <mode>', `network mode: ${NETWORK_MODES.join(' | ')}`, networkOption),
  ).action(async (o: CreateFlags) => {
    const req: CreateSandboxRequest = {};
    if (o.image !== undefined) req.image = o.image;
    if (o.cpu !== undefined) req.cpu = o.cpu;
    if (o.mem !== undefined) req.memory_mb = o.mem;
    if (o.disk !== undefined) req.disk_mb = o.disk;
    if (o.timeout !== undefined) req.timeout_seconds = o.timeout;
    if (o.env) req.env = o.env;
    if (o.network !== undefined) req.network = o.network;

    const client = clientFromFlags(o);
    const notice = setTimeout(() => {
      if (process.stderr.isTTY) {
        process.stderr.write(
          'sandforge: waiting for the sandbox to start (the first one of an image builds its template; this can take minutes)\n',
        );
      }
    }, SLOW_START_NOTICE_MS);
    try {
      const sandbox = await client.create(req);
      if (o.json) printJson(sandbox.info);
      else process.stdout.write(`${sandbox.id}\n`);
    } finally {
      clearTimeout(notice);
    }
  });
}
