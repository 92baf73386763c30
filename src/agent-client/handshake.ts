import { randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { HELLO_PREFIX, READY_PREFIX } from '../shared/protocol.js';

/** Stale bytes we are willing to skip before the ready line. */
const MAX_SKIP_BYTES = 8 * 1024 * 1024;

/**
 * Opens the agent socket and runs the hello/ready handshake (see
 * HELLO_PREFIX). Resolves with a socket positioned right after our ready
 * line, ready for HTTP/2; everything the guest wrote before it is dropped.
 */
export function connectWithHandshake(socketPath: string, timeoutMs: number): Promise<Socket> {
  const nonce = randomBytes(16).toString('hex');
  const want = Buffer.from(`${READY_PREFIX}${nonce}\n`, 'latin1');
  return new Promise((resolve, reject) => {
    const sock = connect(socketPath);
    let seen = Buffer.alloc(0);
    let skipped = 0;
    const fail = (err: Error) => {
      cleanup();
      sock.destroy();
      reject(err);
    };
    const timer = setTimeout(() => fail(new Error(`no handshake answer within ${timeoutMs} ms`)), timeoutMs);
    const onData = (chunk: Buffer) => {
      seen = Buffer.concat([seen, chunk]);
      const at = seen.indexOf(want);
      if (at < 0) {
        // Keep only a tail that could still hold the start of our line.
        const keep = Math.min(seen.length, want.length - 1);
        skipped += seen.length - keep;
        seen = seen.subarray(seen.length - keep);
        if (skipped > MAX_SKIP_BYTES) fail(new Error('too many stray bytes before the handshake answer'));
        return;
      }
      cleanup();
      sock.pause();
      const rest = seen.subarray(at + want.length);
      if (rest.length > 0) sock.unshift(rest);
      resolve(sock);
    };
    const onError = (err: Error) => fail(err);
    const onClose = () => fail(new Error('agent socket closed during the handshake'));
    function cleanup() {
      clearTimeout(timer);
      sock.off('data', onData);
      sock.off('error', onError);
      sock.off('close', onClose);
    }
    sock.on('data', onData);
    sock.on('error', onError);
    sock.on('close', onClose);
    sock.once('connect', () => sock.write(`${HELLO_PREFIX}${nonce}\n`, 'latin1'));
  });
}
