import assert from 'node:assert/strict';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { imageSkipReason, qemuProcesses, vmLeftovers, waitFor } from '../helpers/env.js';
import { SupervisorProcess } from '../helpers/supervisor.js';

const skip =
  imageSkipReason() ||
  (process.getuid?.() !== 0 ? 'needs root: the test creates a network namespace' : false) ||
  (() => {
    try {
      execFileSync('ip', ['-V'], { stdio: 'ignore' });
      execFileSync('unshare', ['--version'], { stdio: 'ignore' });
      return false;
    } catch {
      return 'needs ip (iproute2) and unshare (util-linux)';
    }
  })();

/** The two test servers live in a network namespace the test creates; only loopback and this namespace are touched. */
const N = process.pid % 10000;
const NS = `sfnet${N}`;
const VETH_HOST = `sfh${N}`;
const VETH_NS = `sfg${N}`;
const NET = `10.231.${N % 250}`;
const HOST_SIDE = `${NET}.1`;
const ALLOWED_IP = `${NET}.2`;
const DENIED_IP = `${NET}.3`;
const ALLOWED_NAME = 'allowed.sandforge.test';
const DENIED_NAME = 'denied.sandforge.test';

const ip = (...args: string[]) => execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });

const SERVER_JS = `
const http = require('node:http');
const [host, name] = process.argv.slice(2);
http.createServer((req, res) => res.end(name + ' says hello via ' + req.method + ' ' + req.url + '\\n')).listen(8080, host);
`;

describe('network modes against a real supervisor, a namespace the test creates and host loopback', { skip }, () => {
  const sup = new SupervisorProcess();
  let dir: string;
  const servers: ChildProcess[] = [];
  let loopback: Server;
  let loopbackPort: number;
  let hooks: Server;
  const events: { event: string; data: Record<string, unknown> }[] = [];
  const ids: Record<string, string> = {};
  let supArgs: string[];
  let supWrap: string[];

  const api = (method: string, path: string, body?: unknown) => sup.api(method, path, body);
  const sh = async (id: string, command: string) => {
    const r = await api('POST', `/v1/sandboxes/${id}/execute`, { command, timeout_seconds: 90 });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body as { exit_code: number; stdout: string; stderr: string };
  };
  /** Tries a raw TCP connect from inside the guest, bypassing any proxy. */
  const tcpProbe = (targets: [string, number][]) =>
    `python3 -c 'import socket
for h, p in ${JSON.stringify(targets)}:
    try:
        socket.create_connection((h, p), timeout=3).close(); print(h, p, "CONNECTED")
    except OSError as e:
        print(h, p, "failed", e.errno)'`;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sf-net-'));
    try {
      ip('netns', 'del', NS);
    } catch {
      // not left over
    }
    ip('netns', 'add', NS);
    ip('link', 'add', VETH_HOST, 'type', 'veth', 'peer', 'name', VETH_NS);
    ip('link', 'set', VETH_NS, 'netns', NS);
    ip('addr', 'add', `${HOST_SIDE}/24`, 'dev', VETH_HOST);
    ip('link', 'set', VETH_HOST, 'up');
    ip('-n', NS, 'addr', 'add', `${ALLOWED_IP}/24`, 'dev', VETH_NS);
    ip('-n', NS, 'addr', 'add', `${DENIED_IP}/24`, 'dev', VETH_NS);
    ip('-n', NS, 'link', 'set', VETH_NS, 'up');
    ip('-n', NS, 'link', 'set', 'lo', 'up');
    writeFileSync(join(dir, 'server.js'), SERVER_JS);
    for (const [addr, name] of [
      [ALLOWED_IP, 'allowed-server'],
      [DENIED_IP, 'denied-server'],
    ] as const) {
      servers.push(spawn('ip', ['netns', 'exec', NS, process.execPath, join(dir, 'server.js'), addr, name], { stdio: 'ignore' }));
    }
    await waitFor('servers in the namespace', async () => {
      try {
        const a = await fetch(`http://${ALLOWED_IP}:8080/`);
        const b = await fetch(`http://${DENIED_IP}:8080/`);
        return a.ok && b.ok;
      } catch {
        return false;
      }
    });

    // A server on the host's loopback that no sandbox may reach.
    loopback = createServer((_req, res) => res.end('host-loopback-secret\n'));
    await new Promise<void>((r) => loopback.listen(0, '127.0.0.1', r));
    loopbackPort = (loopback.address() as { port: number }).port;

    hooks = createServer((req, res) => {
      let b = '';
      req.on('data', (c) => (b += c));
      req.on('end', () => {
        events.push(JSON.parse(b));
        res.end('ok');
      });
    });
    await new Promise<void>((r) => hooks.listen(0, '127.0.0.1', r));
    const hookPort = (hooks.address() as { port: number }).port;

    // The supervisor resolves the test names through its own /etc/hosts (private mount namespace).
    const hostsFile = join(dir, 'hosts');
    writeFileSync(
      hostsFile,
      `${readFileSync('/etc/hosts', 'utf8')}\n${ALLOWED_IP} ${ALLOWED_NAME}\n${DENIED_IP} ${DENIED_NAME}\n127.0.0.1 loopback.sandforge.test\n`,
    );
    supArgs = [
      '--destroy-on-exit',
      '--no-default-fetch-allow',
      '--fetch-allow',
      ALLOWED_NAME,
      '--fetch-allow',
      'loopback.sandforge.test',
      '--fetch-allow-cidr',
      `${ALLOWED_IP}/32`,
      '--webhook-url',
      `http://127.0.0.1:${hookPort}/hook`,
      '--webhook-secret',
      'network-test-secret',
    ];
    supWrap = ['unshare', '-m', '--', 'sh', '-c', 'mount --bind "$0" /etc/hosts && exec "$@"', hostsFile];
    await sup.start(supArgs, undefined, supWrap);
    for (const mode of ['offline', 'fetch', 'full']) {
      const r = await api('POST', '/v1/sandboxes', { network: mode });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      assert.equal(r.body.network, mode);
      ids[mode] = r.body.id;
    }
  });

  after(async () => {
    for (const s of servers) s.kill('SIGKILL');
    try {
      ip('netns', 'del', NS);
    } catch {
      // already gone
    }
    try {
      ip('link', 'del', VETH_HOST);
    } catch {
      // went with the namespace
    }
    loopback?.close();
    hooks?.close();
    await sup.stop();
    assert.deepEqual(vmLeftovers(sup.dataDir), []);
    assert.deepEqual(qemuProcesses(sup.dataDir), []);
    sup.removeDataDir();
    rmSync(dir, { recursive: true, force: true });
  });

  test('offline: no network device, no TCP connection to any address succeeds', async () => {
    const r = await sh(
      ids.offline!,
      `ls /sys/class/net; env | grep -ci proxy; ${tcpProbe([
        [ALLOWED_IP, 8080],
        [HOST_SIDE, sup.port],
        ['10.0.2.2', loopbackPort],
        ['127.0.0.1', 3128],
        ['1.1.1.1', 443],
      ])}`,
    );
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines[0], 'lo', r.stdout);
    assert.equal(lines[1], '0', 'offline commands get no proxy variables');
    assert.doesNotMatch(r.stdout, /CONNECTED/);
    assert.equal(r.stdout.match(/failed/g)?.length, 5, r.stdout);
  });

  test('fetch: the allowlisted server is reachable through the proxy by name (plain HTTP and CONNECT)', async () => {
    const r = await sh(
      ids.fetch!,
      `ls /sys/class/net; curl -sS -m 20 http://${ALLOWED_NAME}:8080/plain && curl -sS -m 20 -p http://${ALLOWED_NAME}:8080/tunnel`,
    );
    assert.equal(r.exit_code, 0, r.stderr);
    assert.match(r.stdout, /^lo\n/);
    assert.match(r.stdout, /allowed-server says hello via GET \/plain/);
    assert.match(r.stdout, /allowed-server says hello via GET \/tunnel/);
  });

  test('fetch: a server not on the allowlist, direct connections and the host loopback are refused', async () => {
    const r = await sh(
      ids.fetch!,
      [
        `curl -sS -m 20 -i http://${DENIED_NAME}:8080/ | head -1; curl -sS -m 20 -D- -o /dev/null http://${DENIED_NAME}:8080/ | grep -i x-sandforge-policy`,
        `curl -sS -m 20 -i http://${DENIED_IP}:8080/ | grep -i x-sandforge-policy`,
        `curl -sS -m 20 -i http://loopback.sandforge.test:${loopbackPort}/ | grep -i x-sandforge-policy`,
        `curl -sS -m 20 -p -i http://127.0.0.1:${sup.port}/healthz --noproxy '' 2>&1 | grep -i -e x-sandforge-policy -e 'response 403'`,
        `curl -sS -m 20 -i http://${HOST_SIDE}:${sup.port}/healthz | grep -i x-sandforge-policy`,
        tcpProbe([
          [ALLOWED_IP, 8080],
          [DENIED_IP, 8080],
        ]),
      ].join('; '),
    );
    const out = r.stdout;
    assert.match(out, /HTTP\/1\.1 403 Forbidden/);
    assert.match(out, /x-sandforge-policy: domain_not_allowed/i);
    assert.match(out, /x-sandforge-policy: ip_literal_not_allowed/i);
    assert.match(out, /x-sandforge-policy: loopback_address/i);
    assert.match(out, /response 403/, 'CONNECT to the supervisor on host loopback is refused');
    assert.doesNotMatch(out, /denied-server|host-loopback-secret|"ok":true/);
    assert.doesNotMatch(out, /CONNECTED/, 'no path out besides the proxy');
  });

  test('full: NAT egress to any address (no proxy needed); host loopback, host addresses, link-local and the supervisor refused', async () => {
    const r = await sh(
      ids.full!,
      [
        'ls /sys/class/net',
        'env | grep -ci proxy',
        `curl -sS -m 20 http://${DENIED_IP}:8080/nat`,
        tcpProbe([
          [DENIED_IP, 8080],
          [ALLOWED_IP, 8080],
          ['10.0.2.2', loopbackPort],
          ['10.0.2.2', sup.port],
          [HOST_SIDE, sup.port],
          ['169.254.169.254', 80],
        ]),
      ].join('; '),
    );
    const out = r.stdout;
    assert.match(out, /^eth0\nlo\n0\n/, 'a NIC, no proxy variables');
    assert.match(out, /denied-server says hello via GET \/nat/, 'plain TCP through NAT, any destination the LAN has');
    assert.match(out, new RegExp(`${DENIED_IP.replaceAll('.', '\\.')} 8080 CONNECTED`));
    assert.match(out, new RegExp(`${ALLOWED_IP.replaceAll('.', '\\.')} 8080 CONNECTED`));
    for (const [h, p] of [
      ['10.0.2.2', loopbackPort],
      ['10.0.2.2', sup.port],
      [HOST_SIDE, sup.port],
      ['169.254.169.254', 80],
    ] as const)
      assert.match(out, new RegExp(`${h.replaceAll('.', '\\.')} ${p} failed`), `${h}:${p} must be refused:\n${out}`);
    assert.doesNotMatch(out, /host-loopback-secret|"ok":true/);
  });

  test('every egress refusal is a security.violation event and is counted in /v1/info', async () => {
    // fetch: denied name ×2, denied IP literal, loopback name, supervisor CONNECT, host address literal; full (guard): 4,
    // read from the guard's log within a second.
    const info = await waitFor('refusals counted', async () => {
      const i = await api('GET', '/v1/info');
      return i.body.counters.network_refusals >= 10 ? i : null;
    });
    assert.ok(info.body.counters.security_violations >= info.body.counters.network_refusals);
    const got = await waitFor('violation webhooks', () => {
      const v = events.filter((e) => e.event === 'security.violation' && e.data.policy === 'network');
      return v.length >= 10 ? v : null;
    });
    const rules = new Set(got.map((e) => e.data.rule));
    for (const rule of ['domain_not_allowed', 'ip_literal_not_allowed', 'loopback_address', 'host_address', 'link_local_address'])
      assert.ok(rules.has(rule), `no event for ${rule}: ${[...rules].join(', ')}`);
    // The guard in the full sandbox's QEMU reports too.
    const fromGuard = got.filter((e) => e.data.mode === 'full').map((e) => `${e.data.rule} ${e.data.host}:${e.data.port}`);
    assert.ok(fromGuard.includes(`loopback_address 127.0.0.1:${loopbackPort}`), fromGuard.join(', '));
    assert.ok(fromGuard.includes(`host_address ${HOST_SIDE}:${sup.port}`), fromGuard.join(', '));
    assert.ok(fromGuard.includes('link_local_address 169.254.169.254:80'), fromGuard.join(', '));
    const one = got.find((e) => e.data.rule === 'domain_not_allowed')!;
    assert.equal(one.data.sandbox_id, ids.fetch);
    assert.equal(one.data.host, DENIED_NAME);
    assert.equal(one.data.port, 8080);
    assert.equal(one.data.mode, 'fetch');
  });

  test('egress keeps working in a sandbox adopted by a supervisor restarted after kill -9', async () => {
    await sup.kill9();
    await sup.start(supArgs, sup.port, supWrap);
    const r = await sh(ids.fetch!, `curl -sS -m 20 http://${ALLOWED_NAME}:8080/after-restart`);
    assert.equal(r.exit_code, 0, r.stderr);
    assert.match(r.stdout, /allowed-server says hello via GET \/after-restart/);
    // A connection held open by the guest goes away with its sandbox.
    const hold = await sh(
      ids.fetch!,
      `python3 -c 'import socket, time; s = socket.create_connection(("127.0.0.1", 3128)); time.sleep(30)' >/dev/null 2>&1 & echo held`,
    );
    assert.equal(hold.stdout, 'held\n');
    await waitFor('an open egress connection', async () => (await api('GET', '/v1/info')).body.policy.network.egress_connections > 0);
    for (const id of Object.values(ids)) assert.equal((await api('DELETE', `/v1/sandboxes/${id}`)).status, 200);
    const info = await api('GET', '/v1/info');
    assert.equal(info.body.policy.network.egress_connections, 0);
  });
});
