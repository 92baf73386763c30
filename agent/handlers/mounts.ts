/**
 * /v1/mounts: mounts the clone's 9p slots (which the host pointed at
 * accepted host folders) at their guest paths. Runs once after a restore,
 * before the sandbox is reported ready. Input is validated again here: the
 * tag must name one of the template's slots and the guest path must pass
 * the same system-path rule the host's policy applied.
 */
import { execFile } from 'node:child_process';
import type { ServerHttp2Stream } from 'node:http2';
import { mkdir, realpath } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { checkMountRequest, guestMountPathProblem, type MountResponse } from '../../src/shared/protocol.js';
import type { AgentContext } from '../context.js';
import { AgentFailure, readJson, sendJson } from '../http.js';

const MOUNT_TIMEOUT_MS = 20_000;
/** 256 KiB messages: fewer round trips per read/write than the 8 KiB default. */
const MSIZE = 262144;

function mount9p(tag: string, target: string, readOnly: boolean): Promise<void> {
  const opts = `trans=virtio,version=9p2000.L,msize=${MSIZE}${readOnly ? ',ro' : ''}`;
  return new Promise((resolve, reject) => {
    execFile('mount', ['-t', '9p', '-o', opts, tag, target], { timeout: MOUNT_TIMEOUT_MS }, (err, _out, stderr) =>
      err ? reject(new AgentFailure('internal', `mount ${tag} on ${target}: ${String(stderr).trim() || err.message}`)) : resolve(),
    );
  });
}

export async function mountsRoute(stream: ServerHttp2Stream, ctx: AgentContext): Promise<void> {
  const req = await readJson(stream, checkMountRequest);
  if (ctx.noSystem) throw new AgentFailure('not_implemented', 'mounts need the agent to run as the guest system agent (not --no-system)');
  const started = performance.now();
  const mounted: MountResponse['mounted'] = [];
  // Shorter paths first, so a mount below another one stays visible.
  const order = [...req.mounts].sort((a, b) => a.guest_path.length - b.guest_path.length);
  for (const m of order) {
    await mkdir(m.guest_path, { recursive: true, mode: 0o755 });
    // A symlink on the way (e.g. /work -> /etc) must not smuggle the mount onto a system path.
    const real = await realpath(m.guest_path);
    const problem = guestMountPathProblem(real);
    if (problem) throw new AgentFailure('forbidden', `guest path ${m.guest_path} resolves to ${real}: ${problem}`);
    await mount9p(m.tag, real, m.read_only);
    mounted.push({ tag: m.tag, guest_path: real, read_only: m.read_only });
  }
  sendJson(stream, 200, { mounted, duration_ms: Math.round(performance.now() - started) } satisfies MountResponse);
}
