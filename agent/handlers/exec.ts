/**
 * POST /v1/exec: one HTTP/2 stream per command. The agent answers 200 at
 * once; everything after that — including a bad spec or a command that
 * cannot start — travels as frames (see src/shared/protocol.ts).
 */
import type { ServerHttp2Stream } from 'node:http2';
import { stat } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import {
  EXEC_CONTENT_TYPE,
  FrameDecoder,
  MAX_FRAME_PAYLOAD_BYTES,
  decodeClientFrame,
  encodeAgentFrame,
  type AgentFrame,
  type ClientFrame,
  type ExecSpec,
} from '../../src/shared/protocol.js';
import type { AgentContext, RunningExec } from '../context.js';
import { AgentFailure, toFailure } from '../http.js';
import { launch, type LaunchSpec, type RunningProcess } from '../services/process-runner.js';
import { resolveUser } from '../services/users.js';
import { programNames } from '../services/program-names.js';
import { firstShellWord, judgeProgram } from '../../src/policy/command-policy.js';

/** Time between SIGTERM and SIGKILL when a command times out, ms. */
const KILL_GRACE_MS = 1500;
const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

async function buildLaunch(spec: ExecSpec, ctx: AgentContext): Promise<LaunchSpec> {
  const user = resolveUser(spec.user);
  let cwd = spec.cwd;
  if (cwd === undefined) {
    cwd = (await stat(user.home).then(
      (s) => s.isDirectory(),
      () => false,
    ))
      ? user.home
      : '/';
  } else {
    const st = await stat(cwd).catch(() => null);
    if (!st) throw new AgentFailure('not_found', `working directory ${cwd} does not exist`);
    if (!st.isDirectory()) throw new AgentFailure('invalid_argument', `working directory ${cwd} is not a directory`);
  }
  const env: Record<string, string> = {
    PATH: DEFAULT_PATH,
    HOME: user.home,
    USER: user.name,
    LOGNAME: user.name,
    SHELL: user.shell,
    LANG: 'C.UTF-8',
    ...(spec.pty ? { TERM: 'xterm-256color' } : {}),
    ...ctx.defaultEnv,
    ...(spec.env ?? {}),
    PWD: cwd,
  };
  const [file, ...args] = spec.shell !== undefined ? ['/bin/sh', '-c', spec.shell] : spec.argv!;
  if (spec.program_policy) {
    const path = env.PATH ?? DEFAULT_PATH;
    const first = spec.shell !== undefined ? firstShellWord(spec.shell) : null;
    for (const prog of [file!, ...(first ? [first] : [])]) {
      const refusal = judgeProgram(programNames(prog, path, cwd), spec.program_policy);
      if (refusal) throw new AgentFailure('policy_denied', refusal);
    }
  }
  // Setting uid/gid makes libuv drop supplementary groups, which only root may do.
  const self = process.getuid?.() ?? 0;
  const ids = self === 0 || user.uid !== self ? { uid: user.uid, gid: user.gid } : {};
  return { file: file!, args, env, cwd, stdin: spec.stdin === true, ...ids, ...(spec.pty ? { pty: spec.pty } : {}) };
}

export function handleExec(stream: ServerHttp2Stream, ctx: AgentContext): void {
  stream.respond({ ':status': 200, 'content-type': EXEC_CONTENT_TYPE });
  const decoder = new FrameDecoder('to_agent');
  let phase: 'await_spec' | 'starting' | 'running' | 'done' = 'await_spec';
  const queued: ClientFrame[] = [];
  let proc: RunningProcess | null = null;
  let stdinEnabled = false;
  let timedOut = false;
  let timeoutTimer: NodeJS.Timeout | undefined;
  let outputPaused = false;
  let startedAt = 0;
  const entry: RunningExec = { killGroup: (sig) => proc?.killGroup(sig) };

  const send = (f: AgentFrame): void => {
    if (stream.destroyed || stream.writableEnded) return;
    if (!stream.write(encodeAgentFrame(f)) && proc && !outputPaused) {
      outputPaused = true;
      proc.pauseOutput();
      stream.once('drain', () => {
        outputPaused = false;
        proc?.resumeOutput();
      });
    }
  };
  const sendData = (type: 'stdout' | 'stderr', data: Buffer): void => {
    for (let off = 0; off < data.length; off += MAX_FRAME_PAYLOAD_BYTES) {
      send({ type, data: data.subarray(off, off + MAX_FRAME_PAYLOAD_BYTES) });
    }
  };
  const finish = (last: AgentFrame): void => {
    if (phase === 'done') return;
    phase = 'done';
    clearTimeout(timeoutTimer);
    ctx.running.delete(entry);
    send(last);
    if (!stream.destroyed) stream.end();
  };
  const fail = (err: unknown): void => {
    const f = toFailure(err);
    proc?.killGroup('SIGKILL');
    finish({ type: 'error', error: { code: f.code, message: f.message.slice(0, 2000) } });
  };

  const handle = (f: ClientFrame): void => {
    if (phase === 'done') return;
    if (phase === 'await_spec') {
      if (f.type !== 'spec') return fail(new AgentFailure('invalid_argument', `first frame must be spec, got ${f.type}`));
      phase = 'starting';
      void start(f.spec);
      return;
    }
    if (f.type === 'spec') return fail(new AgentFailure('invalid_argument', 'duplicate spec frame'));
    if (phase === 'starting' || !proc) {
      queued.push(f);
      return;
    }
    switch (f.type) {
      case 'stdin':
        if (!stdinEnabled) return fail(new AgentFailure('invalid_argument', 'stdin frame but the spec did not ask for stdin'));
        if (!proc.writeStdin(f.data)) {
          stream.pause();
          proc.onStdinDrain(() => stream.resume());
        }
        return;
      case 'stdin_eof':
        if (stdinEnabled) proc.endStdin();
        return;
      case 'signal':
        proc.killGroup(f.signal);
        return;
      case 'resize':
        proc.resize(f.rows, f.cols);
        return;
    }
  };

  const start = async (spec: ExecSpec): Promise<void> => {
    try {
      const ls = await buildLaunch(spec, ctx);
      if (phase !== 'starting') return; // the stream went away meanwhile
      stdinEnabled = ls.stdin || ls.pty !== undefined;
      startedAt = performance.now();
      proc = await launch(ls, {
        onStdout: (d) => sendData('stdout', d),
        onStderr: (d) => sendData('stderr', d),
        onExit: (exitCode, signal) => {
          // A timed-out command's leader is gone: end everything it left (its cgroup) before saying so.
          if (timedOut) proc?.killGroup('SIGKILL');
          finish({
            type: 'exit',
            exit: { exit_code: exitCode, signal, timed_out: timedOut, duration_ms: Math.round(performance.now() - startedAt) },
          });
        },
      });
    } catch (err) {
      return fail(err);
    }
    if (phase !== 'starting') {
      proc.killGroup('SIGKILL');
      return;
    }
    phase = 'running';
    ctx.running.add(entry);
    send({ type: 'started', pid: proc.pid });
    if (spec.timeout_ms !== undefined) {
      timeoutTimer = setTimeout(() => {
        timedOut = true;
        proc?.killGroup('SIGTERM');
        // Runs even after the leader exits: group members may ignore SIGTERM.
        setTimeout(() => proc?.killGroup('SIGKILL'), KILL_GRACE_MS).unref();
      }, spec.timeout_ms);
    }
    for (const f of queued.splice(0)) handle(f);
  };

  stream.on('data', (chunk: Buffer) => {
    let frames: ClientFrame[];
    try {
      frames = decoder.push(chunk).map(decodeClientFrame);
    } catch (err) {
      return fail(err);
    }
    for (const f of frames) handle(f);
  });
  stream.on('end', () => {
    if (decoder.pending > 0) fail(new AgentFailure('invalid_argument', 'request ended inside a frame'));
    else if (phase === 'await_spec') fail(new AgentFailure('invalid_argument', 'request ended before the spec frame'));
  });
  stream.on('error', () => undefined);
  stream.on('close', () => {
    // The host went away before the exit: nobody can read the output any more.
    if (phase !== 'done') {
      phase = 'done';
      clearTimeout(timeoutTimer);
      ctx.running.delete(entry);
      proc?.killGroup('SIGKILL');
    }
  });
}
