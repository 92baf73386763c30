/**
 * Where a sandbox's traffic may go. Every egress connection passes here
 * before the supervisor opens a socket for it: the name against the domain
 * allowlist (fetch), then every address the name resolves to against the
 * address rules. The proxy connects to the exact address judged here, so a
 * DNS answer cannot change between the check and the connect.
 */
import { lookup as dnsLookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import type { NetworkMode } from '../shared/api-types.js';
import { SandforgeError } from '../shared/errors.js';

/** Package registries and git hosts that `fetch` allows unless the operator drops the defaults. */
export const DEFAULT_FETCH_DOMAINS: readonly string[] = [
  // npm, yarn
  'registry.npmjs.org',
  'registry.yarnpkg.com',
  // Python
  'pypi.org',
  'files.pythonhosted.org',
  // Debian
  'deb.debian.org',
  'security.debian.org',
  // Go, Rust, Ruby, Java
  'proxy.golang.org',
  'sum.golang.org',
  'crates.io',
  'index.crates.io',
  'static.crates.io',
  'rubygems.org',
  'repo.maven.apache.org',
  'repo1.maven.org',
  // git hosts
  'github.com',
  'codeload.github.com',
  'objects.githubusercontent.com',
  'raw.githubusercontent.com',
  'gitlab.com',
  'bitbucket.org',
];

export interface NetworkPolicyConfig {
  /** Names `fetch` may reach: `example.com` (exactly) or `*.example.com` (any subdomain, not the apex). */
  allowDomains: string[];
  /** CIDRs allowed although loopback, private, link-local or the host's own (e.g. an internal mirror). */
  allowCidrs: string[];
}

/** Why a destination was refused; `rule` is stable and appears in events and responses. */
export type NetworkRule =
  | 'network_offline'
  | 'domain_not_allowed'
  | 'ip_literal_not_allowed'
  | 'loopback_address'
  | 'host_address'
  | 'private_address'
  | 'link_local_address'
  | 'reserved_address';

export type NetworkDecision = { allowed: true; address: string; family: 4 | 6 } | { allowed: false; rule: NetworkRule; message: string };

export type Lookup = (host: string) => Promise<{ address: string; family: number }[]>;

const defaultLookup: Lookup = (host) => dnsLookup(host, { all: true, verbatim: true });

type Range = [string, number, 'ipv4' | 'ipv6'];

function rangeList(ranges: Range[]): BlockList {
  const b = new BlockList();
  for (const [net, prefix, type] of ranges) b.addSubnet(net, prefix, type);
  return b;
}

const LOOPBACK_RANGES: Range[] = [
  ['127.0.0.0', 8, 'ipv4'],
  ['::1', 128, 'ipv6'],
];
const LINK_LOCAL_RANGES: Range[] = [
  ['169.254.0.0', 16, 'ipv4'],
  ['fe80::', 10, 'ipv6'],
];
const LOOPBACK = rangeList(LOOPBACK_RANGES);
const LINK_LOCAL = rangeList(LINK_LOCAL_RANGES);
const PRIVATE = rangeList([
  ['10.0.0.0', 8, 'ipv4'],
  ['172.16.0.0', 12, 'ipv4'],
  ['192.168.0.0', 16, 'ipv4'],
  ['100.64.0.0', 10, 'ipv4'], // carrier-grade NAT
  ['fc00::', 7, 'ipv6'], // unique local
]);
/** Never a real destination: unspecified, "this network", multicast, broadcast, reserved, documentation, benchmarking, v6 translation prefixes. */
const RESERVED_RANGES: Range[] = [
  ['0.0.0.0', 8, 'ipv4'],
  ['192.0.0.0', 24, 'ipv4'],
  ['192.0.2.0', 24, 'ipv4'],
  ['198.18.0.0', 15, 'ipv4'],
  ['198.51.100.0', 24, 'ipv4'],
  ['203.0.113.0', 24, 'ipv4'],
  ['224.0.0.0', 4, 'ipv4'],
  ['240.0.0.0', 4, 'ipv4'],
  ['::', 128, 'ipv6'],
  ['ff00::', 8, 'ipv6'],
  ['64:ff9b::', 96, 'ipv6'], // NAT64 may map to any v4, loopback included
  ['2002::', 16, 'ipv6'], // 6to4, same
  ['2001:db8::', 32, 'ipv6'],
];
const RESERVED = rangeList(RESERVED_RANGES);

/**
 * What `full` refuses by range (the host's own addresses come on top), for
 * the egress guard in QEMU: the same list the proxy judges with.
 */
export const FULL_MODE_DENIED_RANGES: readonly [NetworkRule, string][] = [
  ...LOOPBACK_RANGES.map(([a, p]): [NetworkRule, string] => ['loopback_address', `${a}/${p}`]),
  ...LINK_LOCAL_RANGES.map(([a, p]): [NetworkRule, string] => ['link_local_address', `${a}/${p}`]),
  ...RESERVED_RANGES.map(([a, p]): [NetworkRule, string] => ['reserved_address', `${a}/${p}`]),
];

/** `::ffff:127.0.0.1` is 127.0.0.1: judge mapped addresses as IPv4. */
export function normalizeAddress(address: string): { address: string; family: 4 | 6 } {
  const a = address.replace(/^\[|\]$/g, '').replace(/%.*$/, '');
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(a);
  if (m) return { address: m[1]!, family: 4 };
  const f = isIP(a);
  if (f === 0) throw new SandforgeError('invalid_argument', `not an IP address: ${address}`);
  return { address: a.toLowerCase(), family: f as 4 | 6 };
}

const DOMAIN_RE = /^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** Lower-cases and checks a `--fetch-allow` entry. */
export function parseDomainPattern(raw: string): string {
  const d = raw.trim().toLowerCase().replace(/\.$/, '');
  if (!d || d.length > 253 || !DOMAIN_RE.test(d) || isIP(d.replace(/^\*\./, '')) !== 0) {
    throw new SandforgeError(
      'invalid_argument',
      `--fetch-allow ${JSON.stringify(raw)}: expected a domain such as example.com or *.example.com`,
    );
  }
  return d;
}

/** Checks a `--fetch-allow-cidr` entry: `10.0.0.0/8`, `fd00::/8` or a bare address. */
export function parseCidr(raw: string): { address: string; prefix: number; family: 4 | 6 } {
  const [addr, len, extra] = raw.trim().split('/');
  let n: { address: string; family: 4 | 6 };
  try {
    if (extra !== undefined || !addr) throw new Error('bad');
    n = normalizeAddress(addr);
  } catch {
    throw new SandforgeError('invalid_argument', `--fetch-allow-cidr ${JSON.stringify(raw)}: expected ADDRESS/PREFIX, e.g. 10.0.0.0/8`);
  }
  const max = n.family === 4 ? 32 : 128;
  const prefix = len === undefined ? max : Number(len);
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max || (len !== undefined && !/^\d+$/.test(len))) {
    throw new SandforgeError('invalid_argument', `--fetch-allow-cidr ${JSON.stringify(raw)}: prefix must be 0..${max}`);
  }
  return { ...n, prefix };
}

export class NetworkPolicy {
  readonly domains: readonly string[];
  readonly cidrs: readonly string[];
  private readonly exact = new Set<string>();
  private readonly suffixes: string[] = [];
  private readonly allowed = new BlockList();

  constructor(
    cfg: NetworkPolicyConfig,
    private readonly lookup: Lookup = defaultLookup,
    /** The host's own addresses; read per decision since interfaces change. */
    private readonly hostAddresses: () => string[] = ownAddresses,
  ) {
    this.domains = [...new Set(cfg.allowDomains.map(parseDomainPattern))];
    for (const d of this.domains) {
      if (d.startsWith('*.')) this.suffixes.push(d.slice(1));
      else this.exact.add(d);
    }
    this.cidrs = cfg.allowCidrs.map((c) => {
      const p = parseCidr(c);
      this.allowed.addSubnet(p.address, p.prefix, p.family === 4 ? 'ipv4' : 'ipv6');
      return `${p.address}/${p.prefix}`;
    });
  }

  /** The host's own addresses now, for the guard's deny list. */
  hostAddressList(): string[] {
    return [...new Set(this.hostAddresses())];
  }

  domainAllowed(host: string): boolean {
    const h = host.toLowerCase().replace(/\.$/, '');
    return this.exact.has(h) || this.suffixes.some((s) => h.endsWith(s) && h.length > s.length);
  }

  /** Address rules; the operator's CIDRs override all of them. Null: allowed. */
  judgeAddress(raw: string, mode: NetworkMode): { rule: NetworkRule; message: string } | null {
    const { address, family } = normalizeAddress(raw);
    const type = family === 4 ? 'ipv4' : 'ipv6';
    if (this.allowed.check(address, type)) return null;
    const why = (rule: NetworkRule, what: string) => ({
      rule,
      message: `${address} is ${what} (allow it explicitly with --fetch-allow-cidr)`,
    });
    if (LOOPBACK.check(address, type)) return why('loopback_address', 'a loopback address');
    if (this.hostAddresses().some((h) => h === address)) return why('host_address', "one of the host's own addresses");
    if (LINK_LOCAL.check(address, type)) return why('link_local_address', 'link-local (cloud metadata lives here)');
    if (RESERVED.check(address, type)) return why('reserved_address', 'unspecified, multicast or reserved');
    // `full` is NAT-like egress: the LAN is reachable, the host and its loopback are not.
    if (mode === 'fetch' && PRIVATE.check(address, type)) return why('private_address', 'a private address');
    return null;
  }

  /** Decides a destination for a sandbox in `mode`; resolves names itself. */
  async decide(host: string, mode: NetworkMode): Promise<NetworkDecision> {
    if (mode === 'offline') return { allowed: false, rule: 'network_offline', message: 'the sandbox is offline' };
    const bare = host.replace(/^\[|\]$/g, '');
    if (isIP(bare) !== 0) {
      const n = normalizeAddress(bare);
      if (mode === 'fetch' && !this.allowed.check(n.address, n.family === 4 ? 'ipv4' : 'ipv6')) {
        return {
          allowed: false,
          rule: 'ip_literal_not_allowed',
          message: `${n.address}: fetch mode reaches allowed domains by name; allow an address with --fetch-allow-cidr`,
        };
      }
      const bad = this.judgeAddress(n.address, mode);
      return bad ? { allowed: false, ...bad } : { allowed: true, ...n };
    }
    if (mode === 'fetch' && !this.domainAllowed(bare)) {
      return { allowed: false, rule: 'domain_not_allowed', message: `${bare} is not on the fetch allowlist (--fetch-allow)` };
    }
    let answers: { address: string; family: number }[];
    try {
      answers = await this.lookup(bare);
    } catch (err) {
      throw new SandforgeError('bad_request', `cannot resolve ${bare}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    let firstRefusal: { rule: NetworkRule; message: string } | null = null;
    for (const a of answers) {
      const bad = this.judgeAddress(a.address, mode);
      if (!bad) return { allowed: true, ...normalizeAddress(a.address) };
      firstRefusal ??= { rule: bad.rule, message: `${bare} resolves to ${bad.message.replace(' is ', ', ')}` };
    }
    return firstRefusal
      ? { allowed: false, ...firstRefusal }
      : { allowed: false, rule: 'reserved_address', message: `${bare} has no address` };
  }
}

function ownAddresses(): string[] {
  const out: string[] = [];
  for (const list of Object.values(networkInterfaces())) {
    for (const i of list ?? []) out.push(normalizeAddress(i.address).address);
  }
  return out;
}
