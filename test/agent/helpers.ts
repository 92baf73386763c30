/** Starts the real agent on a unix socket for host-side tests. */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AgentClient } from '../../src/agent-client/index.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

/** The shipped bundle when built, else tsc's output. */
export function agentEntry(): string {
  const bundle = join(root, 'dist/agent-bundle/agent.mjs');
  return process.env.SANDFORGE_TEST_AGENT ?? (existsSync(bundle) ? bundle : join(root, 'dist/agent/main.js'));
}

export interface TestAgent {
  client: AgentClient;
  socketPath: string;
  dir: string;
  child: ChildProcess;
  stderr: () => string;
  stop(): Promise<void>;
}

export function spawnAgent(socketPath: string): { child: ChildProcess; stderr: () => string } {
  const child = spawn(process.execPath, [agentEntry(), '--listen-unix', socketPath, '--no-system'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  return { child, stderr: () => err };
}

export async function startAgent(): Promise<TestAgent> {
  const dir = mkdtempSync(join(tmpdir(), 'sf-agent-test-'));
  const socketPath = join(dir, 'agent.sock');
  const { child, stderr } = spawnAgent(socketPath);
  const client = await AgentClient.connect(socketPath, { timeoutMs: 10_000 });
  return {
    client,
    socketPath,
    dir,
    child,
    stderr,
    async stop() {
      client.destroy();
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await new Promise((r) => child.once('exit', r));
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** True when the pid is gone or a zombie (reaped by whoever adopted it). */
export function pidGone(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

export async function waitFor(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 25));
  }
  return cond();
}
