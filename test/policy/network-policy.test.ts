import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { NetworkPolicy, normalizeAddress, parseCidr, parseDomainPattern, type Lookup } from '../../src/policy/network-policy.js';
import { parseAuthority, parseProxyHead } from '../../src/net/egress-proxy.js';

/** A resolver with fixed answers, so rules are checked without DNS. */
const answers: Record<string, string[]> = {
  'registry.npmjs.org': ['104.16.1.1'],
  'evil-rebind.example.com': ['127.0.0.1'],
  'mirror.internal': ['10.1.2.3'],
  'metadata.example.com': ['169.254.169.254'],
  'mixed.example.com': ['127.0.0.1', '93.184.216.34'],
  'mapped.example.com': ['::ffff:127.0.0.1'],
  'lan.example.com': ['192.168.1.10'],
};
const lookup: Lookup = async (host) => {
  const a = answers[host];
  if (!a) throw Object.assign(new Error('not found'), { code: 'ENOTFOUND' });
  return a.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
};
const host = () => ['203.0.113.77', '10.9.9.9'];

const policy = (domains: string[], cidrs: string[] = []) =>
  new NetworkPolicy({ allowDomains: domains, allowCidrs: cidrs }, lookup, () => host().filter((a) => a !== '203.0.113.77'));

describe('network policy', () => {
  test('domain patterns: exact names and *.suffix (subdomains only); bad entries are refused', () => {
    const p = policy(['Registry.npmjs.org.', '*.github.com']);
    assert.ok(p.domainAllowed('registry.npmjs.org'));
    assert.ok(p.domainAllowed('REGISTRY.NPMJS.ORG.'));
    assert.ok(p.domainAllowed('api.github.com'));
    assert.ok(!p.domainAllowed('github.com'));
    assert.ok(!p.domainAllowed('evilgithub.com'));
    assert.ok(!p.domainAllowed('npmjs.org'));
    for (const bad of ['', 'http://x.com', 'a..b', '10.0.0.1', '*.', 'x y.com', '*.*.com'])
      assert.throws(() => parseDomainPattern(bad), /--fetch-allow/, bad);
  });

  test('CIDRs: address/prefix or a bare address; anything else is refused', () => {
    assert.deepEqual(parseCidr('10.0.0.0/8'), { address: '10.0.0.0', prefix: 8, family: 4 });
    assert.deepEqual(parseCidr('fd00::1'), { address: 'fd00::1', prefix: 128, family: 6 });
    for (const bad of ['10.0.0.0/33', 'x/8', '10.0.0.0/8/1', '10.0.0.0/', '::/129', '10.0.0.0/-1'])
      assert.throws(() => parseCidr(bad), /--fetch-allow-cidr/, bad);
    assert.deepEqual(normalizeAddress('::FFFF:127.0.0.1'), { address: '127.0.0.1', family: 4 });
  });

  test('fetch: allowlisted names with public addresses pass; everything else names its rule', async () => {
    const p = policy([
      'registry.npmjs.org',
      'evil-rebind.example.com',
      'mirror.internal',
      'metadata.example.com',
      'mixed.example.com',
      'mapped.example.com',
    ]);
    assert.deepEqual(await p.decide('registry.npmjs.org', 'fetch'), { allowed: true, address: '104.16.1.1', family: 4 });
    const rule = async (h: string) => {
      const d = await p.decide(h, 'fetch');
      return d.allowed ? 'allowed' : d.rule;
    };
    assert.equal(await rule('example.org'), 'domain_not_allowed');
    assert.equal(await rule('evil-rebind.example.com'), 'loopback_address');
    assert.equal(await rule('mapped.example.com'), 'loopback_address');
    assert.equal(await rule('mirror.internal'), 'private_address');
    assert.equal(await rule('metadata.example.com'), 'link_local_address');
    assert.equal(await rule('104.16.1.1'), 'ip_literal_not_allowed');
    assert.equal(await rule('[::1]'), 'ip_literal_not_allowed');
    // A name with one bad and one good answer: the proxy connects to the good one only.
    assert.deepEqual(await p.decide('mixed.example.com', 'fetch'), { allowed: true, address: '93.184.216.34', family: 4 });
    assert.equal((await p.decide('registry.npmjs.org', 'offline')).allowed, false);
    await assert.rejects(policy(['nowhere.example']).decide('nowhere.example', 'fetch'), /cannot resolve nowhere\.example: ENOTFOUND/);
  });

  test('--fetch-allow-cidr opens exactly the named range, for names and literals', async () => {
    const p = policy(['mirror.internal', 'evil-rebind.example.com'], ['10.1.2.0/24', '127.0.0.1/32']);
    assert.equal((await p.decide('mirror.internal', 'fetch')).allowed, true);
    assert.equal((await p.decide('10.1.2.200', 'fetch')).allowed, true);
    assert.equal((await p.decide('evil-rebind.example.com', 'fetch')).allowed, true);
    const other = await p.decide('10.1.3.1', 'fetch');
    assert.equal(other.allowed ? 'allowed' : other.rule, 'ip_literal_not_allowed');
  });

  test('full: any name and the LAN; never loopback, the host, link-local or reserved ranges', async () => {
    const p = policy([]);
    const rule = async (h: string) => {
      const d = await p.decide(h, 'full');
      return d.allowed ? 'allowed' : d.rule;
    };
    assert.equal(await rule('registry.npmjs.org'), 'allowed');
    assert.equal(await rule('lan.example.com'), 'allowed');
    assert.equal(await rule('10.1.2.3'), 'allowed');
    assert.equal(await rule('127.0.0.2'), 'loopback_address');
    assert.equal(await rule('evil-rebind.example.com'), 'loopback_address');
    assert.equal(await rule('10.9.9.9'), 'host_address');
    assert.equal(await rule('169.254.169.254'), 'link_local_address');
    assert.equal(await rule('fe80::1'), 'link_local_address');
    assert.equal(await rule('0.0.0.0'), 'reserved_address');
    assert.equal(await rule('224.0.0.1'), 'reserved_address');
    assert.equal(await rule('64:ff9b::7f00:1'), 'reserved_address');
  });
});

describe('egress proxy request heads', () => {
  test('CONNECT host:port and [v6]:port', () => {
    assert.deepEqual(parseProxyHead('CONNECT github.com:443 HTTP/1.1\r\nHost: github.com:443').target, { host: 'github.com', port: 443 });
    assert.deepEqual(parseProxyHead('CONNECT [::1]:22 HTTP/1.1').target, { host: '::1', port: 22 });
    assert.throws(() => parseProxyHead('CONNECT github.com HTTP/1.1'), /host:port/);
    assert.throws(() => parseProxyHead('CONNECT a.com:99999 HTTP/1.1'), /host:port/);
  });

  test('plain HTTP is rewritten to origin form, one request per connection, proxy headers dropped', () => {
    const r = parseProxyHead(
      'GET http://mirror.example:8080/pkg/a?x=1 HTTP/1.1\r\nHost: mirror.example:8080\r\nProxy-Authorization: Basic eA==\r\nProxy-Connection: keep-alive\r\nConnection: keep-alive\r\nAccept: */*',
    );
    assert.deepEqual(r.target, { host: 'mirror.example', port: 8080 });
    assert.equal(r.forward!.toString(), 'GET /pkg/a?x=1 HTTP/1.1\r\nHost: mirror.example:8080\r\nAccept: */*\r\nConnection: close\r\n\r\n');
    assert.deepEqual(parseProxyHead('GET http://a.example/ HTTP/1.0').target, { host: 'a.example', port: 80 });
    // A Host header naming another site on the same address is replaced by the judged one.
    assert.equal(
      parseProxyHead('GET http://a.example/ HTTP/1.1\r\nHost: other.example').forward!.toString(),
      'GET / HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n',
    );
  });

  test('origin-form, other schemes, credentials and garbage are 400s', () => {
    assert.throws(() => parseProxyHead('GET / HTTP/1.1\r\nHost: x'), /absolute URL/);
    assert.throws(() => parseProxyHead('GET https://x.example/ HTTP/1.1'), /only http/);
    assert.throws(() => parseProxyHead('GET http://u:p@x.example/ HTTP/1.1'), /credentials/);
    assert.throws(() => parseProxyHead('\u0000\u0001garbage'), /malformed/);
    assert.equal(parseAuthority('x.example'), null);
    assert.deepEqual(parseAuthority('x.example', 80), { host: 'x.example', port: 80 });
  });
});
