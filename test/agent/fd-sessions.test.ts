/**
 * The virtio-serial transport, exercised with FIFOs, which share its
 * semantics: with no writer connected a read returns 0 at once (EOF), with a
 * writer connected it blocks until data, and a writer may come back later.
 * Every host connection opens with the hello/ready handshake.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, constants, mkdirSync, mkdtempSync, open as openCb, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { connect as h2connect, type ClientHttp2Session } from 'node:http2';
import { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex, PassThrough } from 'node:stream';
import { createAgentServer } from '../../agent/server.js';
import { FdSessionLoop } from '../../agent/transport/fd-sessions.js';
import { findVirtioPort } from '../../agent/transport/virtio-port.js';
import { HELLO_PREFIX, READY_PREFIX } from '../../src/shared/protocol.js';
import { waitFor } from './helpers.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Raw fds, not FileHandles: a FileHandle closes its fd when garbage-collected. */
const openFd = (path: string, flags: string) =>
  new Promise<number>((resolve, reject) => openCb(path, flags, (err, fd) => (err ? reject(err) : resolve(fd))));
const hello = () => {
  const nonce = randomBytes(16).toString('hex');
  return { nonce, line: `${HELLO_PREFIX}${nonce}\n`, ready: `${READY_PREFIX}${nonce}\n` };
};

describe('fd session transport (FIFO stand-in for the virtio-serial port)', () => {
  let dir: string;
  let c2a: string; // host → agent
  let a2c: string; // agent → host
  let cleanups: (() => Promise<void> | void)[] = [];
  /** Runs after each test, even a failed one, so the next test gets the FIFOs to itself. */
  async function cleanup(): Promise<void> {
    const list = cleanups.reverse();
    cleanups = [];
    for (const c of list) await c();
  }
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'sf-fifo-'));
    c2a = join(dir, 'c2a');
    a2c = join(dir, 'a2c');
    execFileSync('mkfifo', [c2a, a2c]);
  });
  afterEach(cleanup);
  after(async () => {
    await cleanup();
    rmSync(dir, { recursive: true, force: true });
  });

  /**
   * Starts a loop on fresh agent fds and registers a cleanup that always
   * lets its blocked read return (all writers closed → EOF) so the test
   * process can exit even when an assertion failed midway.
   */
  async function startLoop(onSession: (d: Duplex) => void) {
    const [agentRead, hostWrite] = await Promise.all([openFd(c2a, 'r'), openFd(c2a, 'w')]);
    const agentWrite = openSync(a2c, constants.O_RDWR);
    const loop = new FdSessionLoop({ readFd: agentRead, writeFd: agentWrite, maxBackoffMs: 20, onSession }).start();
    const hostWriters = new Set<number>([hostWrite]);
    cleanups.push(async () => {
      for (const fd of hostWriters) closeSync(fd);
      hostWriters.clear();
      await loop.stop();
      closeSync(agentRead);
      closeSync(agentWrite);
    });
    return {
      hostWrite,
      /** Opens another host writer (a reconnect). */
      async reconnect() {
        const fd = await openFd(c2a, 'w');
        hostWriters.add(fd);
        return fd;
      },
      disconnect(fd: number) {
        closeSync(fd);
        hostWriters.delete(fd);
      },
      /** The fd now belongs to a net.Socket, which closes it. */
      release(fd: number) {
        hostWriters.delete(fd);
      },
    };
  }

  test('EOF ends the session; the next hello starts a new one; stale bytes and late writes are dropped', async () => {
    const sessions: { duplex: Duplex; data: string; ended: boolean }[] = [];
    const port = await startLoop((duplex) => {
      const s = { duplex, data: '', ended: false };
      sessions.push(s);
      duplex.on('data', (d: Buffer) => (s.data += d.toString()));
      duplex.on('end', () => (s.ended = true));
      duplex.on('error', () => undefined);
    });
    const hostIn = new Socket({ fd: openSync(a2c, constants.O_RDONLY | constants.O_NONBLOCK), readable: true, writable: false });
    cleanups.push(() => void hostIn.destroy());
    let fromAgent = '';
    hostIn.on('data', (d: Buffer) => (fromAgent += d.toString()));

    const h1 = hello();
    writeSync(port.hostWrite, `stale junk from an old connection${h1.line}hello`);
    assert.ok(await waitFor(() => sessions[0]?.data === 'hello', 2000), `session 1 got ${JSON.stringify(sessions[0]?.data)}`);
    assert.ok(await waitFor(() => fromAgent === h1.ready, 2000), 'the agent answers the hello with its nonce');
    sessions[0]!.duplex.write('reply-1');
    assert.ok(await waitFor(() => fromAgent === `${h1.ready}reply-1`, 2000), 'agent writes reach the host');

    port.disconnect(port.hostWrite); // the host goes away
    assert.ok(await waitFor(() => sessions[0]!.ended, 2000), 'EOF must end the session');
    sessions[0]!.duplex.write('late'); // must not reach the next connection
    await sleep(50);

    const w2 = await port.reconnect();
    writeSync(w2, 'bytes before the hello are not a session');
    await sleep(100);
    assert.equal(sessions.length, 1, 'no session without a hello');
    const h2 = hello();
    writeSync(w2, `${h2.line}world`);
    assert.ok(await waitFor(() => sessions[1]?.data === 'world', 2000), 'a hello after EOF starts a new session');
    await sleep(50);
    assert.equal(fromAgent, `${h1.ready}reply-1${h2.ready}`, 'writes of the ended session were dropped');
  });

  test('HTTP/2 over the fd transport (JSStreamSocket): reconnect after EOF, and after a hello without EOF', async () => {
    const agent = createAgentServer({ noSystem: true, log: () => undefined });
    cleanups.push(() => agent.shutdown());
    const agentSessions: Duplex[] = [];
    const port = await startLoop((d) => {
      agentSessions.push(d);
      agent.server.emit('connection', d);
    });

    // One reader for the agent→host FIFO for the whole test: a second reader
    // fd would race the first for bytes (a unix socket has no such problem).
    const hostIn = new Socket({ fd: openSync(a2c, constants.O_RDONLY | constants.O_NONBLOCK), readable: true, writable: false });
    cleanups.push(() => void hostIn.destroy());
    let sink: (d: Buffer) => void = () => undefined;
    hostIn.on('data', (d: Buffer) => sink(d));

    /** The host side of one connection: hello, wait for our ready line, then HTTP/2. */
    const hostConnect = async (writeFd: number): Promise<ClientHttp2Session> => {
      const h = hello();
      const readable = new PassThrough();
      const writable = new Socket({ fd: writeFd, readable: false, writable: true });
      let seen = '';
      await new Promise<void>((resolve) => {
        sink = (d) => {
          seen += d.toString('latin1');
          const at = seen.indexOf(h.ready);
          if (at < 0) return; // stale bytes of an earlier connection
          sink = (more) => readable.write(more);
          readable.write(Buffer.from(seen.slice(at + h.ready.length), 'latin1'));
          resolve();
        };
        writable.write(h.line);
      });
      const duplex = Duplex.from({ readable, writable });
      const session = h2connect('http://agent', { createConnection: () => duplex as never });
      session.on('error', () => undefined);
      cleanups.push(() => void session.destroy());
      return session;
    };
    const get = (session: ClientHttp2Session, path: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = session.request({ ':path': path });
        let body = '';
        let status = 0;
        req.on('response', (h) => (status = Number(h[':status'])));
        req.on('data', (d: Buffer) => (body += d.toString()));
        req.on('end', () => resolve({ status, body }));
        req.on('error', reject);
        req.end();
      });

    port.release(port.hostWrite);
    const s1 = await hostConnect(port.hostWrite);
    const r1 = await get(s1, '/v1/health');
    assert.equal(r1.status, 200);
    assert.equal(JSON.parse(r1.body).protocol, 1);
    assert.equal(agentSessions.length, 1);

    // The host goes away (supervisor restart, snapshot): the agent must drop the session…
    const gone = new Promise((r) => agentSessions[0]!.once('close', r));
    s1.destroy();
    await gone;
    // …and the next connection must be a fresh HTTP/2 session on the same port.
    const w2 = await port.reconnect();
    port.release(w2);
    const s2 = await hostConnect(w2);
    assert.equal((await get(s2, '/v1/health')).status, 200);
    assert.equal(agentSessions.length, 2);
    const r3 = await get(s2, '/v1/nope');
    assert.equal(r3.status, 404);
    assert.equal(JSON.parse(r3.body).error.code, 'not_found');

    // A reconnect the guest never sees as EOF: the new hello arrives inside the
    // old HTTP/2 session's byte stream, breaks it, and starts a fresh one.
    const w3 = await port.reconnect(); // opened while w2 is still open: the reader never sees EOF
    port.release(w3);
    s2.destroy();
    const s3 = await hostConnect(w3);
    assert.equal((await get(s3, '/v1/health')).status, 200);
    assert.equal(agentSessions.length, 3);
  });

  test('finds the port by name under /sys/class/virtio-ports', () => {
    const ports = join(dir, 'ports');
    for (const [d, name] of [
      ['vport0p1', 'org.qemu.guest_agent.0'],
      ['vport0p2', 'sandforge.agent'],
    ] as const) {
      mkdirSync(join(ports, d), { recursive: true });
      writeFileSync(join(ports, d, 'name'), `${name}\n`);
    }
    assert.equal(findVirtioPort('sandforge.agent', ports), '/dev/vport0p2');
    assert.equal(findVirtioPort('other', ports), null);
    assert.equal(findVirtioPort('sandforge.agent', join(dir, 'missing')), null);
  });
});
