/**
 * Starts a command on pipes or on a pseudo-terminal behind one interface.
 * Every command leads its own process group (pipes: `detached`; PTY: the
 * child calls setsid), so signals and timeouts reach the whole tree. Both
 * kinds start inside the guest's `workload` cgroup (./workload-cgroup.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import { constants } from 'node:os';
import type { IPty } from '@lydell/node-pty';
import { AgentFailure } from '../http.js';
import { spawnInWorkload, workloadCgroupStatus, type CommandCgroup } from './workload-cgroup.js';

/** How long to wait for stdout/stderr to close after the process exits, ms. */
const PIPE_DRAIN_GRACE_MS = 300;

export interface LaunchSpec {
  file: string;
  args: string[];
  env: Record<string, string>;
  cwd: string;
  uid?: number;
  gid?: number;
  stdin: boolean;
  pty?: { rows: number; cols: number };
}

export interface ProcessEvents {
  onStdout(data: Buffer): void;
  onStderr(data: Buffer): void;
  /** After all output was delivered. Exactly once. */
  onExit(exitCode: number | null, signal: string | null): void;
}

export interface RunningProcess {
  readonly pid: number;
  /** False when the caller should wait for onStdinDrain before writing more. */
  writeStdin(data: Buffer): boolean;
  onStdinDrain(cb: () => void): void;
  endStdin(): void;
  resize(rows: number, cols: number): void;
  /** Stop reading output until resumeOutput (backpressure from the host). */
  pauseOutput(): void;
  resumeOutput(): void;
  /** Signals the process group; falls back to the pid alone. */
  killGroup(signal: NodeJS.Signals): void;
}

/** Signals the process group; SIGKILL also empties the command's cgroup (setsid'd and forking children included). */
function killTree(pid: number, signal: NodeJS.Signals, cg: CommandCgroup | null): void {
  killGroup(pid, signal);
  if (signal === 'SIGKILL') cg?.kill();
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}

const signalNames = new Map<number, string>(Object.entries(constants.signals).map(([k, v]) => [v, k]));

async function launchPipes(spec: LaunchSpec, ev: ProcessEvents): Promise<RunningProcess> {
  let cg: CommandCgroup | null = null;
  const child: ChildProcess = spawnInWorkload(
    () =>
      spawn(spec.file, spec.args, {
        cwd: spec.cwd,
        env: spec.env,
        uid: spec.uid,
        gid: spec.gid,
        detached: true,
        stdio: [spec.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
      }),
    (c) => c.pid,
    (g) => (cg = g),
  );
  if (child.pid === undefined) {
    // spawn failed (ENOENT, EACCES, EAGAIN…); the reason arrives as the error event.
    return new Promise((_resolve, reject) => {
      child.once('error', (err: NodeJS.ErrnoException) => reject(startFailure(spec.file, err)));
    });
  }
  const pid = child.pid;
  let exited: { code: number | null; signal: string | null } | null = null;
  let done = false;
  const finish = () => {
    if (done || !exited) return;
    done = true;
    cg?.release();
    ev.onExit(exited.code, exited.signal);
  };
  child.stdout!.on('data', (d: Buffer) => ev.onStdout(d));
  child.stderr!.on('data', (d: Buffer) => ev.onStderr(d));
  child.stdin?.on('error', () => undefined); // EPIPE after the child closed stdin
  child.on('exit', (code, signal) => {
    exited = { code, signal };
    // A background child may keep the pipes open forever; give the output a
    // moment, then stop reading and report the exit anyway.
    setTimeout(() => {
      if (done) return;
      child.stdout!.destroy();
      child.stderr!.destroy();
      finish();
    }, PIPE_DRAIN_GRACE_MS).unref();
  });
  child.on('close', finish);
  return {
    pid,
    writeStdin: (data) => (child.stdin && !child.stdin.destroyed ? child.stdin.write(data) : true),
    onStdinDrain: (cb) => (child.stdin ? child.stdin.once('drain', cb) : cb()),
    endStdin: () => child.stdin?.end(),
    resize: () => undefined,
    pauseOutput: () => {
      child.stdout!.pause();
      child.stderr!.pause();
    },
    resumeOutput: () => {
      child.stdout!.resume();
      child.stderr!.resume();
    },
    killGroup: (signal) => killTree(pid, signal, cg),
  };
}

type PtyModule = typeof import('@lydell/node-pty');
let ptyModule: PtyModule | null = null;
let ptyLoadError: string | null = null;

/**
 * Loads node-pty from the node_modules next to the agent (the agent disk
 * ships it unbundled), or from SANDFORGE_NODE_PTY if set.
 */
function loadPty(): PtyModule {
  if (ptyModule) return ptyModule;
  if (ptyLoadError === null) {
    try {
      const req = createRequire(import.meta.url);
      ptyModule = req(process.env.SANDFORGE_NODE_PTY || '@lydell/node-pty') as PtyModule;
      return ptyModule;
    } catch (err) {
      ptyLoadError = err instanceof Error ? err.message : String(err);
    }
  }
  throw new AgentFailure('not_implemented', `PTY support unavailable: node-pty failed to load: ${ptyLoadError}`);
}

/** Why a command could not start, with the process limit named when fork hit it. */
function startFailure(file: string, err: NodeJS.ErrnoException): AgentFailure {
  if (err.code === 'EAGAIN') {
    const pids = workloadCgroupStatus().limits?.pidsMax;
    const why = pids ? `the sandbox's process limit (${pids} processes and threads) is reached` : 'the process limit is reached';
    return new AgentFailure('limit_exceeded', `cannot start ${file}: ${why} (${err.message})`);
  }
  const code = err.code === 'ENOENT' ? 'not_found' : err.code === 'EACCES' || err.code === 'EPERM' ? 'forbidden' : 'internal';
  return new AgentFailure(code, `cannot start ${file}: ${err.message}`);
}

function launchPty(spec: LaunchSpec, size: { rows: number; cols: number }, ev: ProcessEvents): RunningProcess {
  const pty = loadPty();
  let term: IPty;
  let ptyCg: CommandCgroup | null = null;
  try {
    // node-pty forks synchronously inside spawn, so the child starts in the workload cgroup.
    term = spawnInWorkload(
      () =>
        pty.spawn(spec.file, spec.args, {
          name: spec.env.TERM ?? 'xterm-256color',
          cols: size.cols,
          rows: size.rows,
          cwd: spec.cwd,
          env: spec.env,
          uid: spec.uid,
          gid: spec.gid,
          encoding: null,
        }),
      (t) => t.pid,
      (g) => (ptyCg = g),
    );
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    if (/EAGAIN|Resource temporarily unavailable/.test(msg))
      throw startFailure(spec.file, Object.assign(new Error(msg), { code: 'EAGAIN' }));
    throw new AgentFailure('internal', `cannot start ${spec.file} on a PTY: ${msg}`);
  }
  const pid = term.pid;
  // encoding: null makes node-pty hand out Buffers; its typings say string.
  term.onData((d) => ev.onStdout(typeof d === 'string' ? Buffer.from(d) : (d as Buffer)));
  // node-pty emits exit only after the terminal's output was read to the end.
  term.onExit(({ exitCode, signal }) => {
    ptyCg?.release();
    if (signal) ev.onExit(null, signalNames.get(signal) ?? `SIG${signal}`);
    else ev.onExit(exitCode & 0xff, null);
  });
  return {
    pid,
    writeStdin: (data) => {
      term.write(data as unknown as string); // node-pty writes Buffers as-is
      return true;
    },
    onStdinDrain: (cb) => cb(),
    endStdin: () => term.write('\x04'), // a terminal's EOF is ^D
    resize: (rows, cols) => term.resize(cols, rows),
    pauseOutput: () => term.pause(),
    resumeOutput: () => term.resume(),
    killGroup: (signal) => killTree(pid, signal, ptyCg),
  };
}

/** Starts the command; rejects with an AgentFailure when it cannot start. */
export async function launch(spec: LaunchSpec, ev: ProcessEvents): Promise<RunningProcess> {
  return spec.pty ? launchPty(spec, spec.pty, ev) : launchPipes(spec, ev);
}
