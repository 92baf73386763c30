import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  decideMounts,
  DEFAULT_BLOCKED_MOUNT_NAMES,
  resolveHostPath,
  type MountInput,
  type MountPolicyConfig,
} from '../../src/policy/mount-policy.js';
import { SandforgeError } from '../../src/shared/errors.js';
import { checkMountRequest, guestMountPathProblem, ProtocolViolation } from '../../src/shared/protocol.js';
import { sharesFor } from '../../src/sandbox/local-runtime.js';
import { spareShares } from '../../src/vmm/template.js';
import { mountPolicyFrom } from '../../src/cli/commands/supervisor.js';

/** Layout: <root>/allowed/{project, link-ssh -> ../home/.ssh, link-out -> ../outside}, <root>/home/.ssh/keys, <root>/outside. */
let root: string;
let allowed: string;
let cfg: MountPolicyConfig;

async function refused(mounts: MountInput[], re: RegExp, rule?: string, c: MountPolicyConfig = cfg): Promise<SandforgeError> {
  const err = await decideMounts(mounts, c).then(
    () => assert.fail(`expected a refusal for ${JSON.stringify(mounts)}`),
    (e: unknown) => e,
  );
  assert.ok(err instanceof SandforgeError, String(err));
  assert.equal(err.code, 'policy_denied');
  assert.equal(err.status, 403);
  assert.match(err.message, re);
  if (rule) assert.equal(err.details?.rule, rule);
  return err;
}

const m = (host_path: string, guest_path = '/work', read_only = false): MountInput => ({ host_path, guest_path, read_only });

describe('mount policy', () => {
  before(() => {
    root = realpathSync(mkdtempSync(join(tmpdir(), 'sf-policy-')));
    allowed = join(root, 'allowed');
    mkdirSync(join(allowed, 'project', 'sub'), { recursive: true });
    mkdirSync(join(root, 'home', '.ssh', 'keys'), { recursive: true });
    mkdirSync(join(root, 'outside'), { recursive: true });
    symlinkSync(join(root, 'home', '.ssh'), join(allowed, 'link-ssh'));
    symlinkSync(join(root, 'outside'), join(allowed, 'link-out'));
    symlinkSync(join(allowed, 'project'), join(allowed, 'link-in'));
    cfg = { allowPrefixes: [allowed], blockedNames: [...DEFAULT_BLOCKED_MOUNT_NAMES] };
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  test('an allowed folder is accepted, resolved, in slot order with read_only kept', async () => {
    const r = await decideMounts([m(join(allowed, 'project'), '/work/'), m(join(allowed, 'link-in', 'sub'), '/data', true)], cfg);
    assert.deepEqual(r, [
      { tag: 'sf0', requested: join(allowed, 'project'), hostPath: join(allowed, 'project'), guestPath: '/work', readOnly: false },
      {
        tag: 'sf1',
        requested: join(allowed, 'link-in', 'sub'),
        hostPath: join(allowed, 'project', 'sub'),
        guestPath: '/data',
        readOnly: true,
      },
    ]);
    assert.deepEqual(await decideMounts([], cfg), []);
  });

  test('no allowed prefix refuses every mount and names the flag', async () => {
    await refused([m(join(allowed, 'project'))], /no allowed prefix.*--allow-mount PREFIX/, 'allow_prefix', {
      allowPrefixes: [],
      blockedNames: [],
    });
  });

  test('a relative host path is refused', async () => {
    await refused([m('allowed/project')], /not absolute/, 'absolute');
    await refused([m('./project')], /not absolute/, 'absolute');
  });

  test("a '..' host path is refused, even one that would land inside the prefix", async () => {
    await refused([m(`${allowed}/project/../../outside`)], /'\.\.' segment/, 'dotdot');
    await refused([m(`${allowed}/project/../project`)], /'\.\.' segment/, 'dotdot');
  });

  test('a path outside every allowed prefix is refused', async () => {
    await refused([m(join(root, 'outside'))], /outside every allowed prefix \(--allow-mount/, 'allow_prefix');
    await refused([m('/etc')], /outside every allowed prefix/, 'allow_prefix');
    // A sibling sharing the prefix as a string is not under it.
    mkdirSync(`${allowed}-evil`, { recursive: true });
    await refused([m(`${allowed}-evil`)], /outside every allowed prefix/, 'allow_prefix');
  });

  test('a symlink inside the prefix that points outside is refused', async () => {
    await refused([m(join(allowed, 'link-out'))], /resolves to .*outside.* outside every allowed prefix/, 'allow_prefix');
  });

  test('a symlink into a .ssh folder is refused by the blocked name of the resolved path', async () => {
    const err = await refused(
      [m(join(allowed, 'link-ssh', 'keys'))],
      /resolves to .*\.ssh.*blocked name "\.ssh" \(--block-mount-name\)/,
      'blocked_name',
    );
    assert.equal(err.details?.name, '.ssh');
  });

  test('a blocked segment in the given path is refused, case-insensitively', async () => {
    mkdirSync(join(allowed, 'Secrets', 'x'), { recursive: true });
    mkdirSync(join(allowed, '.AWS'), { recursive: true });
    await refused([m(join(allowed, 'Secrets', 'x'))], /blocked name "Secrets"/, 'blocked_name');
    await refused([m(join(allowed, '.AWS'))], /blocked name "\.AWS"/, 'blocked_name');
    // Even when the folder does not exist yet.
    await refused(
      [m(join(allowed, 'project', '.ssh', 'id'))],
      /\/\.ssh\/id is under a blocked name "\.ssh" \(--block-mount-name\)/,
      'blocked_name',
    );
    // A prefix configured under a blocked name does not make it allowed.
    await refused([m(join(root, 'home', '.ssh', 'keys'))], /blocked name "\.ssh"/, 'blocked_name', {
      allowPrefixes: [root],
      blockedNames: ['.ssh'],
    });
    // Configurable: a custom name blocks, and without defaults .ssh no longer does.
    mkdirSync(join(allowed, 'private'), { recursive: true });
    await refused([m(join(allowed, 'private'))], /blocked name "private"/, 'blocked_name', {
      allowPrefixes: [allowed],
      blockedNames: ['PRIVATE'],
    });
    const r = await decideMounts([m(join(allowed, 'link-ssh', 'keys'))], { allowPrefixes: [root], blockedNames: [] });
    assert.equal(r[0]!.hostPath, join(root, 'home', '.ssh', 'keys'));
  });

  test('a missing leaf resolves through its parent', async () => {
    const r = await decideMounts([m(join(allowed, 'link-in', 'new', 'deeper'))], cfg);
    assert.equal(r[0]!.hostPath, join(allowed, 'project', 'new', 'deeper'));
    assert.equal(await resolveHostPath(join(allowed, 'nope')), join(allowed, 'nope'));
  });

  test('a missing leaf under a symlinked parent that points outside is refused', async () => {
    await refused(
      [m(join(allowed, 'link-out', 'not-yet'))],
      /resolves to .*outside\/not-yet.* outside every allowed prefix/,
      'allow_prefix',
    );
    await refused([m(join(allowed, 'link-ssh', 'new-key'))], /blocked name "\.ssh"/, 'blocked_name');
  });

  test("allowed prefixes are realpath'd themselves", async () => {
    const alias = join(root, 'alias');
    symlinkSync(allowed, alias);
    const r = await decideMounts([m(join(allowed, 'project'))], { allowPrefixes: [alias], blockedNames: [] });
    assert.equal(r[0]!.hostPath, join(allowed, 'project'));
    await refused([m(join(alias, 'link-out'))], /outside every allowed prefix/, 'allow_prefix', {
      allowPrefixes: [alias],
      blockedNames: [],
    });
  });

  test('guest paths: absolute, no .., not a system path', async () => {
    const p = join(allowed, 'project');
    await refused([m(p, 'work')], /guest_path "work": must be an absolute path/, 'guest_path');
    await refused([m(p, '/work/../etc')], /'\.\.'/, 'guest_path');
    for (const g of [
      '/',
      '/proc',
      '/sys/x',
      '/dev',
      '/etc',
      '/etc/ssh',
      '/usr/local',
      '/bin',
      '/sbin',
      '/lib',
      '/lib64',
      '/boot',
      '/run/x',
      '/var',
      '/root',
      '/.sandforge/x',
      '//etc/',
    ]) {
      await refused([m(p, g)], /system path/, 'guest_path');
    }
    for (const g of ['/workspace', '/root/project', '/var/data', '/mnt/x', '/home/user/src']) {
      assert.equal(guestMountPathProblem(g), null, g);
    }
  });

  test('at most 4 mounts, no duplicate or nested guest paths', async () => {
    const p = join(allowed, 'project');
    await refused([m(p, '/a'), m(p, '/b'), m(p, '/c'), m(p, '/d'), m(p, '/e')], /5 mounts requested; at most 4/, 'max_mounts');
    assert.equal((await decideMounts([m(p, '/a'), m(p, '/b'), m(p, '/c'), m(p, '/d')], cfg)).length, 4);
    await refused([m(p, '/a'), m(p, '/a/')], /used by two mounts/, 'duplicate_guest_path');
    await refused([m(p, '/a'), m(p, '/a/b')], /overlap/, 'overlapping_guest_path');
  });

  test('clone shares: slot i exports mount i with its read_only; spare slots keep the empty read-only folder', async () => {
    const r = await decideMounts([m(join(allowed, 'project'), '/w'), m(join(allowed, 'project', 'sub'), '/r', true)], cfg);
    assert.deepEqual(sharesFor(spareShares('/tpl/empty'), r), [
      { tag: 'sf0', path: join(allowed, 'project'), readOnly: false },
      { tag: 'sf1', path: join(allowed, 'project', 'sub'), readOnly: true },
      { tag: 'sf2', path: '/tpl/empty', readOnly: true },
      { tag: 'sf3', path: '/tpl/empty', readOnly: true },
    ]);
  });

  test('the agent-side validator checks tags and guest paths too', () => {
    assert.deepEqual(checkMountRequest({ mounts: [{ tag: 'sf3', guest_path: '/w//x/', read_only: true }] }, 'req'), {
      mounts: [{ tag: 'sf3', guest_path: '/w/x', read_only: true }],
    });
    for (const bad of [
      { mounts: [{ tag: 'sf4', guest_path: '/w', read_only: false }] },
      { mounts: [{ tag: 'sf0;rm', guest_path: '/w', read_only: false }] },
      { mounts: [{ tag: 'sf0', guest_path: '/etc', read_only: false }] },
      { mounts: [{ tag: 'sf0', guest_path: '/w/../etc', read_only: false }] },
      { mounts: [{ tag: 'sf0', guest_path: 'w', read_only: false }] },
      {
        mounts: [
          { tag: 'sf0', guest_path: '/w', read_only: false },
          { tag: 'sf0', guest_path: '/x', read_only: false },
        ],
      },
      { mounts: [{ tag: 'sf0', guest_path: '/w' }] },
    ]) {
      assert.throws(() => checkMountRequest(bad, 'req'), ProtocolViolation, JSON.stringify(bad));
    }
  });

  test('supervisor flags: --block-mount-name adds to the defaults, --no-default-blocked-names drops them', () => {
    const a = mountPolicyFrom({ allowMount: ['/srv/work'], blockMountName: ['private'] });
    assert.deepEqual(a.allowPrefixes, ['/srv/work']);
    assert.ok(a.blockedNames.includes('.ssh') && a.blockedNames.includes('private'));
    assert.deepEqual(mountPolicyFrom({ blockMountName: ['x'], defaultBlockedNames: false }).blockedNames, ['x']);
    assert.throws(() => mountPolicyFrom({ allowMount: ['rel/dir'] }), /must be an absolute path/);
    assert.throws(() => mountPolicyFrom({ blockMountName: ['a/b'] }), /one path segment/);
  });
});
