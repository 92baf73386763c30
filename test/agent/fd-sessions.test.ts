/**
 * The virtio-serial transport, exercised with FIFOs, which share its
 * semantics: with no writer connected a read returns 0 at once (EOF), with a
 * writer connected it blocks until data, and a writer may come back later.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { closeSync, constants, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { open as openCb } from 'node:fs';
import { waitFor } from './helpers.js';
import { connect as h2connect } from 'node:http2';
import { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import { FdSessionLoop } from '../../agent/transport/fd-sessions.js';
import { createAgentServer } from '../../agent/server.js';
import { findVirtioPort } from '../../agent/transport/virtio-port.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const openFd = (path: string, flags: string) =>
  new Promise<number>((resolve, reject) => openCb(path, flags, (err, fd) => (err ? reject(err) : resolve(fd))));

describe('fd session transport (FIFO stand-in for the virtio-serial port)', () => {
  let dir: string;
  let c2a: string; // host → agent
  let a2c: string; // agent → host
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'sf-fifo-'));
    c2a = join(dir, 'c2a');
    a2c = join(dir, 'a2c');
    execFileSync('mkfifo', [c2a, a2c]);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** Opens the agent's read end and the host's write end together (a FIFO open blocks until both exist). */
  async function openPair(): Promise<{ agentRead: number; hostWrite: number }> {
    // Raw fds, not FileHandles: a FileHandle closes its fd when garbage-collected.
    const [agentRead, hostWrite] = await Promise.all([openFd(c2a, 'r'), openFd(c2a, 'w')]);
    return { agentRead, hostWrite };
  }

  test('EOF ends the session; the next data starts a new one; late writes are dropped', async () => {
    const { agentRead, hostWrite } = await openPair();
    const agentWrite = openSync(a2c, constants.O_RDWR);
    const hostRead = openSync(a2c, constants.O_RDONLY | constants.O_NONBLOCK);
    const sessions: { duplex: Duplex; data: string; ended: boolean }[] = [];
    const loop = new FdSessionLoop({
      readFd: agentRead,
      writeFd: agentWrite,
      maxBackoffMs: 20,
      onSession: (duplex) => {
        const s = { duplex, data: '', ended: false };
        sessions.push(s);
        duplex.on('data', (d: Buffer) => (s.data += d.toString()));
        duplex.on('end', () => (s.ended = true));
        duplex.on('error', () => undefined);
      },
    }).start();
    const hostIn = new Socket({ fd: hostRead, readable: true, writable: false });
    let fromAgent = '';
    hostIn.on('data', (d: Buffer) => (fromAgent += d.toString()));

    writeSync(hostWrite, 'hello');
    assert.ok(await waitFor(() => sessions[0]?.data === 'hello', 2000), 'first data starts a session');
    assert.equal(sessions.length, 1);
    sessions[0]!.duplex.write('reply-1');
    assert.ok(await waitFor(() => fromAgent === 'reply-1', 2000), 'agent writes reach the host');

    closeSync(hostWrite); // the host disconnects
    assert.ok(await waitFor(() => sessions[0]!.ended, 2000), 'EOF must end the session');
    sessions[0]!.duplex.write?.('late'); // after the session ended: must not reach the next connection
    await sleep(50);

    const w2 = await openFd(c2a, 'w'); // the host reconnects
    writeSync(w2, 'world');
    assert.ok(await waitFor(() => sessions[1]?.data === 'world', 2000), 'new data after EOF starts a new session');
    assert.equal(sessions.length, 2);
    await sleep(50);
    assert.equal(fromAgent, 'reply-1', 'writes of the ended session were dropped');
    closeSync(w2);

    await loop.stop();
    hostIn.destroy();
    closeSync(agentRead);
    closeSync(agentWrite);
  });

  test('HTTP/2 over the fd transport (JSStreamSocket), with disconnect and reconnect', async () => {
    const agent = createAgentServer({ noSystem: true, log: () => undefined });
    const { agentRead, hostWrite } = await openPair();
    const agentWrite = openSync(a2c, constants.O_RDWR);
    const agentSessions: Duplex[] = [];
    const loop = new FdSessionLoop({
      readFd: agentRead,
      writeFd: agentWrite,
      maxBackoffMs: 20,
      onSession: (d) => {
        agentSessions.push(d);
        agent.server.emit('connection', d);
      },
    }).start();

    const hostConnect = (writeFd: number) => {
      const readFd = openSync(a2c, constants.O_RDONLY | constants.O_NONBLOCK);
      const duplex = Duplex.from({
        readable: new Socket({ fd: readFd, readable: true, writable: false }),
        writable: new Socket({ fd: writeFd, readable: false, writable: true }),
      });
      const session = h2connect('http://agent', { createConnection: () => duplex as never });
      session.on('error', () => undefined);
      return session;
    };
    const get = (session: ReturnType<typeof h2connect>, path: string) =>
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

    const s1 = hostConnect(hostWrite);
    const r1 = await get(s1, '/v1/health');
    assert.equal(r1.status, 200);
    assert.equal(JSON.parse(r1.body).protocol, 1);
    assert.equal(agentSessions.length, 1);

    // The host goes away (supervisor restart, snapshot): the agent must drop the session…
    const gone = new Promise((r) => agentSessions[0]!.once('close', r));
    s1.destroy();
    await gone;
    // …and the next connection must be a fresh HTTP/2 session on the same port.
    const s2 = hostConnect(await openFd(c2a, 'w'));
    const r2 = await get(s2, '/v1/health');
    assert.equal(r2.status, 200);
    assert.equal(agentSessions.length, 2);
    const r3 = await get(s2, '/v1/nope');
    assert.equal(r3.status, 404);
    assert.equal(JSON.parse(r3.body).error.code, 'not_found');

    s2.destroy();
    await sleep(100);
    await loop.stop();
    await agent.shutdown();
    closeSync(agentRead);
    closeSync(agentWrite);
  });

  test('finds the port by name under /sys/class/virtio-ports', () => {
    const ports = join(dir, 'ports');
    for (const [d, name] of [['vport0p1', 'org.qemu.guest_agent.0'], ['vport0p2', 'sandforge.agent']] as const) {
      mkdirSync(join(ports, d), { recursive: true });
      writeFileSync(join(ports, d, 'name'), `${name}\n`);
    }
    assert.equal(findVirtioPort('sandforge.agent', ports), '/dev/vport0p2');
    assert.equal(findVirtioPort('other', ports), null);
    assert.equal(findVirtioPort('sandforge.agent', join(dir, 'missing')), null);
  });
});
