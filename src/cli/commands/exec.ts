import { constants as osConstants } from 'node:os';
import type { Command } from 'commander';
import type { CommandExit, CommandStream } from '../../../sdk/src/index.js';
import { ExecuteRequest } from '../../shared/api-types.js';
import { SandforgeError } from '../../shared/errors.js';
import { commandSpec, envOption, intOption } from '../parse.js';
import { clientFromFlags, printJson, withClientOptions, type ClientFlags } from './client-options.js';

interface ExecFlags extends ClientFlags {
  timeout?: number;
  env?: Record<string, string>;
  cwd?: string;
  user?: string;
  tty?: boolean;
}

/** Exit status for a command killed by its timeout, as timeout(1) uses. */
const EXIT_TIMED_OUT = 124;
const EXIT_INTERRUPTED = 130;
const maxTimeoutSeconds = ExecuteRequest.properties.timeout_seconds.maximum ?? 86400;

export function registerExecCommand(program: Command): void {
  withClientOptions(
    program
      .command('exec')
      .description("run a command in a sandbox, streaming its output; exits with the command's exit code")
      .argument('<id>', 'sandbox id')
      .argument('<command...>', 'one argument with shell syntax runs under sh -c; several run as argv')
      .passThroughOptions()
      .option('--timeout <seconds>', 'kill the command after this many seconds (default 300)', intOption('--timeout', 1, maxTimeoutSeconds))
      .option('-e, --env <KEY=VALUE>', 'environment variable (repeatable)', envOption)
      .option('--cwd <dir>', 'working directory in the sandbox')
      .option('-u, --user <name>', 'guest user to run as')
      .option('-t, --tty', 'run under a pseudo-terminal (needs a terminal on stdin)')
      .addHelpText(
        'after',
        '\nExamples:\n  sandforge exec sb_123 -- ls -la /\n  sandforge exec sb_123 -- "make test 2>&1 | tail -n 20"\n  sandforge exec -t sb_123 -- bash',
      ),
  ).action((id: string, words: string[], o: ExecFlags) => runExec(id, words, o));
}

async function runExec(id: string, words: string[], o: ExecFlags): Promise<void> {
  const spec = commandSpec(words);
  const command = 'shell' in spec ? spec.shell : spec.argv;
  const tty = Boolean(o.tty);
  if (tty && o.json) throw new SandforgeError('invalid_argument', '--tty and --json cannot be combined: terminal output is not JSON');
  if (tty && !process.stdin.isTTY) throw new SandforgeError('invalid_argument', '-t needs a terminal on stdin; drop -t to pipe input');

  const sandbox = await clientFromFlags(o).get(id);
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const stream = await sandbox.commands.stream(command, {
    env: o.env,
    cwd: o.cwd,
    user: o.user,
    timeoutSeconds: o.timeout,
    pty: tty ? { rows: process.stdout.rows || 24, cols: process.stdout.columns || 80 } : undefined,
    onStdout: (d) => (o.json ? out.push(d) : process.stdout.write(d)),
    onStderr: (d) => (o.json ? err.push(d) : process.stderr.write(d)),
  });

  const session = attachTerminal(stream, tty);
  let exit: CommandExit;
  try {
    exit = await stream.wait();
  } catch (e) {
    if (!session.interrupted) throw e;
    process.stderr.write('\nsandforge: interrupted; disconnected from the command\n');
    process.exitCode = EXIT_INTERRUPTED;
    return;
  } finally {
    session.detach();
  }

  if (o.json) printJson({ ...exit, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') });
  if (exit.timed_out) {
    process.stderr.write(`sandforge: command timed out after ${Math.round(exit.duration_ms / 1000)} s; raise --timeout\n`);
  }
  process.exitCode = exitStatus(exit);
}

/** The shell convention: the exit code, or 128 + signal number, or 124 after a timeout. */
function exitStatus(exit: CommandExit): number {
  if (exit.timed_out) return EXIT_TIMED_OUT;
  if (exit.exit_code !== null) return exit.exit_code;
  const signo = exit.signal ? osConstants.signals[exit.signal as NodeJS.Signals] : undefined;
  return signo ? 128 + signo : 1;
}

/**
 * Wires the local terminal to the stream: stdin is forwarded when piped (or with a PTY, in raw
 * mode); a terminal stdin without -t is closed at once, as the command cannot read it.
 * Ctrl-C is forwarded as SIGINT; a second one disconnects.
 */
function attachTerminal(stream: CommandStream, tty: boolean): { detach(): void; readonly interrupted: boolean } {
  const stdin = process.stdin;
  const cleanups: (() => void)[] = [];
  let interrupted = false;

  let interrupts = 0;
  const onInt = () => {
    if (++interrupts === 1) return void stream.signal('SIGINT');
    interrupted = true;
    stream.close();
  };
  const onTerm = () => void stream.signal('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  cleanups.push(
    () => process.off('SIGINT', onInt),
    () => process.off('SIGTERM', onTerm),
  );

  if (tty) {
    stdin.setRawMode(true);
    cleanups.push(() => stdin.setRawMode(false));
    const onResize = () => void stream.resize(process.stdout.rows, process.stdout.columns);
    if (process.stdout.isTTY) {
      process.stdout.on('resize', onResize);
      cleanups.push(() => process.stdout.off('resize', onResize));
    }
  }

  if (tty || !stdin.isTTY) {
    let stopped = false;
    const onData = (chunk: Buffer) => {
      stdin.pause();
      void stream.sendStdin(chunk).finally(() => {
        if (!stopped) stdin.resume();
      });
    };
    const onEnd = () => void stream.closeStdin();
    stdin.on('data', onData);
    stdin.once('end', onEnd);
    stdin.once('error', onEnd);
    cleanups.push(() => {
      stopped = true;
      stdin.off('data', onData);
      stdin.off('end', onEnd);
      stdin.pause();
      stdin.destroy();
    });
  } else {
    void stream.closeStdin();
  }

  return {
    detach: () => {
      for (const c of cleanups.reverse()) c();
    },
    get interrupted() {
      return interrupted;
    },
  };
}
