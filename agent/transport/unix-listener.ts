/**
 * Host-test transport: the agent on a unix socket, with the same hello/ready
 * handshake as the serial port, so the host client has one code path.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { READY_PREFIX } from '../../src/shared/protocol.js';
import { findHello } from './fd-sessions.js';

const MAX_HELLO_WAIT_BYTES = 4096;

export function listenUnix(path: string, onSession: (sock: Socket) => void): Promise<Server> {
  const server = createServer((sock) => {
    let seen = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      seen = Buffer.concat([seen, chunk]);
      const hello = findHello(seen);
      if (!hello) {
        if (seen.length > MAX_HELLO_WAIT_BYTES) sock.destroy();
        return;
      }
      sock.off('data', onData);
      sock.pause();
      sock.write(`${READY_PREFIX}${hello.nonce}\n`, 'latin1');
      if (hello.rest.length > 0) sock.unshift(hello.rest);
      onSession(sock);
    };
    sock.on('data', onData);
    sock.on('error', () => undefined);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve(server));
  });
}
