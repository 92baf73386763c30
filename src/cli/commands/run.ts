import type { Command } from 'commander';
import { readdir, realpath } from 'node:fs/promises';
import { constants, homedir } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { DEFAULT_CPUS, DEFAULT_DISK_MB, DEFAULT_IMAGE, DEFAULT_MEMORY_MB, HOST_CPUS } from '../../config/defaults.js';
import { SandforgeError } from '../../shared/errors.js';
import { Runtime, sweepRuns } from '../../sandbox/local-runtime.js';
import { newSandboxId } from '../../shared/ids.js';
import type { MicroVm } from '../../vmm/microvm.js';
import { commandSpec, envOption, intOption } from '../parse.js';
import { join, resolve } from 'node:path';
import type { NetworkMode } from '../../shared/api-types.js';
import { NETWORK_MODES, networkOption } from './create.js';
import { fetchAllowCidrOption, fetchAllowOption, networkPolicyFrom, noDefaultFetchAllowOption } from './supervisor.js';
import { decideMounts, DEFAULT_BLOCKED_MOUNT_NAMES, type AcceptedMount } from '../../policy/mount-policy.js';

interface RunOptions {
  cpu: number;
  mem: number;
  disk: number;
  timeout: number;
  env: Record<string, string>;
  image: string;
  images?: string;
  accel?: string;
  cwd?: string;
  json?: boolean;
  /** --dir PATH; false with --no-dir; undefined: the current directory. */
  dir?: string | false;
  network: NetworkMode;
  fetchAllow: string[];
  fetchAllowCidr: string[];
  defaultFetchAllow: boolean;
}

/** Where `--dir` appears in the guest. */
export const WORKSPACE = '/workspace';

/** Exit code for a command killed by its timeout (as timeout(1) uses). */
const EXIT_TIMEOUT = 124;

export function registerRunCommand(program: Command): void {
  program
    .command('run')
    .description("start a sandbox, run one command in it with live output, destroy it; exits with the command's code")
    .option('--cpu <n>', 'vCPUs', intOption('--cpu', 1, HOST_CPUS), DEFAULT_CPUS > HOST_CPUS ? HOST_CPUS : DEFAULT_CPUS)
    .option('--mem <mb>', 'guest memory in MiB', intOption('--mem', 1, 262144), DEFAULT_MEMORY_MB)
    .option('--disk <mb>', 'writable disk in MiB', intOption('--disk', 64, 1048576), DEFAULT_DISK_MB)
    .option('--timeout <seconds>', 'kill the command (and its children) after this long', intOption('--timeout', 1, 7 * 86400), 300)
    .option('-e, --env <KEY=VALUE>', 'environment variable (repeatable)', envOption, {})
    .option('--dir <path>', `host folder to mount read-write at ${WORKSPACE} and run in (default: the current directory)`)
    .option('--no-dir', 'mount no host folder')
    .option('--cwd <dir>', `working directory inside the sandbox (default ${WORKSPACE} when a folder is mounted)`)
    .option('--network <mode>', `network mode: ${NETWORK_MODES.join(' | ')}`, networkOption, 'offline' as NetworkMode)
    .addOption(fetchAllowOption())
    .addOption(fetchAllowCidrOption())
    .addOption(noDefaultFetchAllowOption())
    .option('--image <name>', 'image to boot', DEFAULT_IMAGE)
    .option('--images <dir>', 'images directory')
    .option('--accel <mode>', 'auto, kvm or tcg (default auto; env SANDFORGE_ACCEL)')
    .option('--json', 'print one JSON object with exit_code, stdout, stderr, timed_out instead of streaming')
    .argument('[command...]', 'command to run; one argument with shell syntax runs under sh -c')
    .passThroughOptions()
    .action(async (words: string[], o: RunOptions) => {
      process.exitCode = await runOnce(words, o);
    });
}

async function runOnce(words: string[], o: RunOptions): Promise<number> {
  const cmd = commandSpec(words);
  const mounts = await workspaceMount(o.dir);
  if (mounts.length && !o.cwd) o.cwd = WORKSPACE;
  const say = (m: string) => {
    if (!o.json) process.stderr.write(`sandforge: ${m}\n`);
  };
  const runtime = Runtime.create({ images: o.images, accel: o.accel, dieWithParent: true, onProgress: say });
  if (o.network !== 'offline') {
    runtime.enableEgress(networkPolicyFrom(o), {
      onRefusal: (r) => say(`egress refused: ${r.host}:${r.port} (${r.rule}): ${r.message}`),
    });
  }
  if (runtime.accel.accel === 'tcg' && process.env.SANDFORGE_QUIET_ACCEL !== '1') {
    say(`using TCG (software emulation): ${runtime.accel.kvm === 'pvm' ? 'KVM here is PVM' : runtime.accel.kvm}`);
  }
  await runtime.templates.sweep();
  await sweepRuns(runtime.dirs.runsDir);

  let vm: MicroVm | undefined;
  let interrupted: Promise<number> | null = null;
  const onSignal = (sig: NodeJS.Signals) => {
    if (interrupted) return;
    say(`${sig}: destroying the sandbox`);
    const code = sig === 'SIGINT' ? 130 : 143;
    interrupted = (vm ? vm.destroy() : Promise.resolve()).then(() => code);
    // Before the VM exists there is nothing to wait for: leave now.
    if (!vm) void interrupted.then((c) => process.exit(c));
  };
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const sig of signals) process.on(sig, onSignal);

  try {
    const id = newSandboxId();
    const started = await runtime.startSandbox(
      { image: o.image, cpus: o.cpu, memoryMb: o.mem, diskMb: o.disk },
      id,
      join(runtime.dirs.runsDir, `${process.pid}-${id}`),
      mounts,
      o.network,
    );
    vm = started.vm;
    if (interrupted) return await interrupted;
    const result = await execute(vm, cmd, o).catch(async (err: unknown) => {
      if (interrupted) return interrupted;
      // The agent connection often drops a moment before QEMU's exit is seen: say what really happened.
      const exited = await Promise.race([vm!.qemu.exited.then(() => true), sleep(1000, false, { ref: false })]);
      if (exited)
        throw new SandforgeError(
          'vm_failed',
          'the sandbox VM stopped unexpectedly (guest kernel crash or killed QEMU); its files are removed',
        );
      throw err;
    });
    if (typeof result === 'number') return result;
    if (o.json) {
      process.stdout.write(
        JSON.stringify({
          sandbox_id: started.id,
          exit_code: result.exit_code,
          signal: result.signal,
          timed_out: result.timed_out,
          duration_ms: result.duration_ms,
          stdout: result.stdout,
          stderr: result.stderr,
        }) + '\n',
      );
    }
    if (result.timed_out) {
      say(`command timed out after ${o.timeout}s and was killed with its children; sandbox destroyed`);
      return EXIT_TIMEOUT;
    }
    if (result.exit_code === null) return 128 + signalNumber(result.signal);
    return result.exit_code;
  } finally {
    if (interrupted) await interrupted;
    await vm?.destroy();
    for (const sig of signals) process.off(sig, onSignal);
  }
}

/** Runs the command with live output (or collected output for --json). */
async function execute(vm: MicroVm, cmd: ReturnType<typeof commandSpec>, o: RunOptions) {
  const stdout: Buffer[] = [];
  const stderr: Buffer[] = [];
  const feedStdin = !process.stdin.isTTY;
  const agent = await vm.ready;
  const handle = agent.exec(
    { ...cmd, env: o.env, timeout_ms: o.timeout * 1000, stdin: feedStdin, ...(o.cwd ? { cwd: o.cwd } : {}) },
    {
      onStdout: (b: Buffer) => (o.json ? stdout.push(b) : process.stdout.write(b)),
      onStderr: (b: Buffer) => (o.json ? stderr.push(b) : process.stderr.write(b)),
    },
  );
  const onData = (b: Buffer) => void handle.writeStdin(b).catch(() => undefined);
  const onEnd = () => void handle.closeStdin().catch(() => undefined);
  if (feedStdin) {
    process.stdin.on('data', onData);
    process.stdin.on('end', onEnd);
  }
  try {
    const exit = await handle.wait();
    return { ...exit, stdout: Buffer.concat(stdout).toString('utf8'), stderr: Buffer.concat(stderr).toString('utf8') };
  } finally {
    process.stdin.off('data', onData);
    process.stdin.off('end', onEnd);
    process.stdin.pause();
  }
}

function signalNumber(sig: string | null): number {
  const n = sig ? constants.signals[sig as NodeJS.Signals] : undefined;
  return typeof n === 'number' ? n : 1;
}

/**
 * The folder `--dir` names (default: the current directory), mounted
 * read-write at /workspace. The user chose it, so it is its own allowed
 * prefix; the blocked-names rule still applies (no `run --dir ~/.ssh`).
 */
async function workspaceMount(dir: string | false | undefined): Promise<AcceptedMount[]> {
  if (dir === false) return [];
  const abs = resolve(dir ?? process.cwd());
  await refuseBroadFolder(abs);
  return decideMounts([{ host_path: abs, guest_path: WORKSPACE, read_only: false }], {
    allowPrefixes: [abs],
    blockedNames: DEFAULT_BLOCKED_MOUNT_NAMES,
    allowFlag: '--dir',
    blockFlag: 'blocked for --dir; use --no-dir or another folder',
  });
}

/**
 * The blocked-names rule judges the mounted path, not what is inside it: so
 * `/`, a home folder, or any folder that directly holds a blocked name
 * (`.ssh`, `.aws`, …) is refused rather than handed read-write to the guest.
 */
async function refuseBroadFolder(abs: string): Promise<void> {
  const real = await realpath(abs).catch(() => abs);
  const why =
    real === '/'
      ? 'it is the root folder'
      : real === (await realpath(homedir()).catch(() => homedir()))
        ? 'it is your home folder'
        : await readdir(real)
            .then((names) => names.find((n) => (DEFAULT_BLOCKED_MOUNT_NAMES as readonly string[]).includes(n.toLowerCase())))
            .then(
              (n) => (n ? `it contains "${n}"` : null),
              () => null,
            );
  if (why) {
    throw new SandforgeError(
      'policy_denied',
      `mount refused: ${real} would be shared read-write with the sandbox and ${why}; run from a project folder, or pass --dir PATH or --no-dir`,
    );
  }
}
