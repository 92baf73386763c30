/**
 * Sandforge guest agent entry point.
 *
 *   agent.mjs                       serve on the virtio-serial port "sandforge.agent" (in the guest)
 *   agent.mjs --listen-unix PATH    serve on a unix socket (host tests; env SANDFORGE_AGENT_LISTEN_UNIX)
 *   --no-system                     leave clock, hostname and CRNG alone (env SANDFORGE_AGENT_NO_SYSTEM=1)
 *   --port-wait-ms N                how long to wait for the port to appear (default 30000)
 */
// The port's blocking read holds one threadpool thread for good; make room
// before anything touches the pool (init sets this too).
process.env.UV_THREADPOOL_SIZE ??= '16';

import { rmSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { createAgentServer } from './server.js';
import { FdSessionLoop } from './transport/fd-sessions.js';
import { listenUnix as listenUnixSocket } from './transport/unix-listener.js';
import { openVirtioPort } from './transport/virtio-port.js';

const log = (msg: string) => process.stderr.write(`sandforge-agent: ${msg}\n`);

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      'listen-unix': { type: 'string' },
      'no-system': { type: 'boolean', default: false },
      'port-wait-ms': { type: 'string', default: '30000' },
    },
    strict: true,
  });
  const listenUnix = values['listen-unix'] ?? process.env.SANDFORGE_AGENT_LISTEN_UNIX;
  const noSystem = values['no-system'] === true || process.env.SANDFORGE_AGENT_NO_SYSTEM === '1';
  const portWaitMs = Number(values['port-wait-ms']);
  if (!Number.isFinite(portWaitMs) || portWaitMs < 0) throw new Error('--port-wait-ms must be a non-negative number');

  const agent = createAgentServer({ noSystem, log });
  let stopTransport: () => Promise<void>;
  if (listenUnix) {
    rmSync(listenUnix, { force: true });
    const server = await listenUnixSocket(listenUnix, (sock) => agent.server.emit('connection', sock));
    stopTransport = async () => {
      server.close();
      rmSync(listenUnix, { force: true });
    };
    log(`listening on unix:${listenUnix}${noSystem ? ' (no-system)' : ''}`);
  } else {
    const port = await openVirtioPort(portWaitMs);
    const loop = new FdSessionLoop({
      readFd: port.fd,
      writeFd: port.fd,
      onSession: (duplex) => agent.server.emit('connection', duplex),
      log,
    }).start();
    // A blocked read cannot be cancelled, so stopping the loop would hang: exit instead.
    stopTransport = async () => void loop;
    log(`serving on ${port.path}${noSystem ? ' (no-system)' : ''}`);
  }

  const stop = (signal: string) => {
    log(`${signal}: shutting down`);
    void Promise.race([agent.shutdown(), new Promise((r) => setTimeout(r, 2000))])
      .then(() => stopTransport())
      .finally(() => process.exit(0));
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
}

// The agent is the VM's only way in: a bug in one request must not take it down.
process.on('uncaughtException', (err) => log(`uncaught exception: ${err.stack ?? String(err)}`));
process.on('unhandledRejection', (err) => log(`unhandled rejection: ${err instanceof Error ? err.stack : String(err)}`));

main().catch((err) => {
  log(`fatal: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
