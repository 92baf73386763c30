/** /v1/health, /v1/init, /v1/prepare-snapshot. */
import type { ServerHttp2Stream } from 'node:http2';
import { readFileSync } from 'node:fs';
import { hostname, release, uptime } from 'node:os';
import { performance } from 'node:perf_hooks';
import { VERSION } from '../../src/shared/version.js';
import {
  PROTOCOL_VERSION,
  checkEmptyResponse,
  checkInitRequest,
  type HealthResponse,
  type PrepareSnapshotResponse,
} from '../../src/shared/protocol.js';
import type { AgentContext } from '../context.js';
import { readJson, sendJson } from '../http.js';
import { applyInit, syncFilesystems } from '../services/system-setup.js';

function readTrimmed(path: string): string | null {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return null;
  }
}

export function health(ctx: AgentContext): HealthResponse {
  const up = readTrimmed('/proc/uptime')?.split(' ')[0];
  return {
    version: VERSION,
    protocol: PROTOCOL_VERSION,
    kernel_release: release(),
    hostname: hostname(),
    uptime_ms: Math.round((up ? Number(up) : uptime()) * 1000),
    boot_id: readTrimmed('/proc/sys/kernel/random/boot_id') ?? '00000000-0000-0000-0000-000000000000',
    sandbox_id: ctx.sandboxId,
  };
}

export async function healthRoute(stream: ServerHttp2Stream, ctx: AgentContext): Promise<void> {
  sendJson(stream, 200, health(ctx));
}

export async function initRoute(stream: ServerHttp2Stream, ctx: AgentContext): Promise<void> {
  const receivedAt = performance.now();
  const req = await readJson(stream, checkInitRequest);
  sendJson(stream, 200, await applyInit(ctx, req, receivedAt));
}

export async function prepareSnapshotRoute(stream: ServerHttp2Stream, ctx: AgentContext): Promise<void> {
  await readJson(stream, checkEmptyResponse);
  const started = performance.now();
  const synced = await syncFilesystems();
  const body: PrepareSnapshotResponse = { synced, running_execs: ctx.running.size, duration_ms: Math.round(performance.now() - started) };
  sendJson(stream, 200, body);
}
