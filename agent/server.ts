/** The agent's HTTP/2 server: routing only; handlers validate their own input. */
import { createServer, type Http2Server, type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import { ROUTES } from '../src/shared/protocol.js';
import { AgentContext, type AgentOptions } from './context.js';
import { startSystemHelper } from './services/system-setup.js';
import { handleExec } from './handlers/exec.js';
import { fileRoutes } from './handlers/files.js';
import { mountsRoute } from './handlers/mounts.js';
import { egressAcceptRoute, egressListenRoute } from './handlers/egress.js';
import { healthRoute, initRoute, prepareSnapshotRoute } from './handlers/system.js';
import { AgentFailure, sendFailure } from './http.js';

/** Flow-control windows: large, because the serial port has high latency per round trip. */
const STREAM_WINDOW_BYTES = 4 * 1024 * 1024;
const SESSION_WINDOW_BYTES = 32 * 1024 * 1024;

type Handler = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, ctx: AgentContext) => Promise<void> | void;

const routes: Record<string, { method: string; run: Handler }> = {
  [ROUTES.health]: { method: 'GET', run: (s, _h, ctx) => healthRoute(s, ctx) },
  [ROUTES.init]: { method: 'POST', run: (s, _h, ctx) => initRoute(s, ctx) },
  [ROUTES.prepareSnapshot]: { method: 'POST', run: (s, _h, ctx) => prepareSnapshotRoute(s, ctx) },
  [ROUTES.exec]: { method: 'POST', run: (s, _h, ctx) => handleExec(s, ctx) },
  [ROUTES.mounts]: { method: 'POST', run: (s, _h, ctx) => mountsRoute(s, ctx) },
  [ROUTES.egressListen]: { method: 'POST', run: (s, _h, ctx) => egressListenRoute(s, ctx) },
  [ROUTES.egressAccept]: { method: 'POST', run: (s, _h, ctx) => egressAcceptRoute(s, ctx) },
  ...fileRoutes,
};

export interface AgentServer {
  server: Http2Server;
  ctx: AgentContext;
  /** Kills running commands and closes every session. */
  shutdown(): Promise<void>;
}

export function createAgentServer(options: AgentOptions): AgentServer {
  const ctx = new AgentContext(options);
  // Started now, during the template's cold boot, so every clone has it resident (no per-clone python start).
  startSystemHelper(ctx);
  const server = createServer({ settings: { initialWindowSize: STREAM_WINDOW_BYTES } });
  const sessions = new Set<import('node:http2').ServerHttp2Session>();

  server.on('session', (session) => {
    sessions.add(session);
    session.on('close', () => sessions.delete(session));
    session.on('error', (err) => ctx.log(`session error: ${err.message}`));
    session.once('connect', () => session.setLocalWindowSize(SESSION_WINDOW_BYTES));
    if (!session.connecting) session.setLocalWindowSize(SESSION_WINDOW_BYTES);
  });
  server.on('stream', (stream, headers) => {
    stream.on('error', () => undefined); // resets by the host are normal
    const path = String(headers[':path'] ?? '').split('?')[0]!;
    const route = Object.hasOwn(routes, path) ? routes[path] : undefined;
    if (!route) return sendFailure(stream, new AgentFailure('not_found', `no route ${path}`));
    if (headers[':method'] !== route.method) {
      return sendFailure(stream, new AgentFailure('invalid_argument', `${path} expects ${route.method}`));
    }
    try {
      const r = route.run(stream, headers, ctx);
      if (r) r.catch((err) => sendFailure(stream, err));
    } catch (err) {
      sendFailure(stream, err);
    }
  });

  return {
    server,
    ctx,
    async shutdown() {
      for (const e of ctx.running) e.killGroup('SIGKILL');
      ctx.egress.close();
      for (const s of sessions) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
