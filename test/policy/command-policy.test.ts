import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { firstShellWord, judgeProgram, programMatches, requestedProgramNames } from '../../src/policy/command-policy.js';
import { imageSkipReason, qemuProcesses, vmLeftovers } from '../helpers/env.js';
import { SupervisorProcess } from '../helpers/supervisor.js';

describe('command policy rules', () => {
  test('names match exactly or with a version suffix', () => {
    assert.ok(programMatches('python3', 'python3'));
    assert.ok(programMatches('python3.11', 'python3'));
    assert.ok(programMatches('node-20', 'node'));
    assert.ok(!programMatches('python3-config', 'python3'));
    assert.ok(!programMatches('curlish', 'curl'));
  });

  test('deny wins on any name of the chain; allow needs one name on the list', () => {
    assert.match(judgeProgram(['harmless', 'curl'], { allow: [], deny: ['curl'] })!, /"curl" is denied/);
    assert.equal(judgeProgram(['sh', 'dash'], { allow: ['sh'], deny: [] }), null);
    assert.match(judgeProgram(['ls'], { allow: ['python3'], deny: [] })!, /not on the allow list/);
    assert.equal(judgeProgram(['ls'], { allow: [], deny: [] }), null);
  });

  test('the host reads argv[0] and the first word of simple shell scripts', () => {
    assert.deepEqual(requestedProgramNames({ argv: ['/usr/bin/curl', 'x'] }), ['curl']);
    assert.deepEqual(requestedProgramNames({ shell: 'FOO=1 curl -s x | sh' }), ['sh', 'curl']);
    assert.deepEqual(requestedProgramNames({ shell: '"curl" x' }), ['sh']);
    assert.equal(firstShellWord('  ls -l; rm x'), 'ls');
    assert.equal(firstShellWord('$(echo curl) x'), null);
  });
});

const skip = imageSkipReason();

describe('command policy on a real supervisor', { skip }, () => {
  const deny = new SupervisorProcess();
  const allow = new SupervisorProcess();
  let denyId: string;
  let allowId: string;

  const api = (sup: SupervisorProcess, method: string, path: string, body?: unknown) => sup.api(method, path, body);
  const exec = (sup: SupervisorProcess, id: string, command: string | string[]) =>
    api(sup, 'POST', `/v1/sandboxes/${id}/execute`, { command, timeout_seconds: 60 });

  before(async () => {
    await deny.start(['--destroy-on-exit', '--deny-command', 'curl', '--deny-command', 'nc']);
    await allow.start(['--destroy-on-exit', '--allow-command', 'python3', '--allow-command', 'sh', '--allow-command', 'ln']);
    denyId = (await api(deny, 'POST', '/v1/sandboxes', {})).body.id;
    allowId = (await api(allow, 'POST', '/v1/sandboxes', {})).body.id;
  });
  after(async () => {
    for (const s of [deny, allow]) {
      await s.stop();
      assert.deepEqual(vmLeftovers(s.dataDir), []);
      assert.deepEqual(qemuProcesses(s.dataDir), []);
      s.removeDataDir();
    }
  });

  test('a denied program is 403 policy_denied, by name, by path and through a guest-made symlink', async () => {
    for (const cmd of ['curl --version', ['/usr/bin/curl', '--version'], ['curl']] as const) {
      const r = await exec(deny, denyId, cmd as string | string[]);
      assert.equal(r.status, 403, JSON.stringify(r.body));
      assert.equal(r.body.error.code, 'policy_denied');
      assert.match(r.body.error.message, /"curl" is denied \(--deny-command curl\)/);
    }
    const mk = await exec(deny, denyId, 'ln -sf /usr/bin/curl /tmp/harmless && echo made');
    assert.equal(mk.status, 200);
    assert.equal(mk.body.stdout, 'made\n');
    // Only the agent sees that /tmp/harmless is curl.
    const r = await exec(deny, denyId, ['/tmp/harmless', '--version']);
    assert.equal(r.status, 403, JSON.stringify(r.body));
    assert.equal(r.body.error.code, 'policy_denied');
    assert.match(r.body.error.message, /"curl" is denied/);
    const ok = await exec(deny, denyId, ['python3', '-c', 'print(6*7)']);
    assert.equal(ok.body.stdout, '42\n');
  });

  test('an allow list admits its programs (versioned names included) and refuses the rest', async () => {
    const ok = await exec(allow, allowId, ['python3', '-c', 'print("allowed")']);
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.equal(ok.body.stdout, 'allowed\n');
    for (const cmd of [['ls', '/'], 'ls /', ['/usr/bin/env', 'python3']]) {
      const r = await exec(allow, allowId, cmd);
      assert.equal(r.status, 403, JSON.stringify({ cmd, body: r.body }));
      assert.match(r.body.error.message, /not on the allow list/);
    }
  });

  test('refusals are counted in /v1/info and shown with the policy', async () => {
    const d = (await api(deny, 'GET', '/v1/info')).body;
    assert.equal(d.counters.command_refusals, 4, JSON.stringify(d.counters));
    assert.deepEqual(d.policy.commands, { allow: [], deny: ['curl', 'nc'] });
    const a = (await api(allow, 'GET', '/v1/info')).body;
    assert.equal(a.counters.command_refusals, 3);
    assert.ok(a.counters.security_violations >= 3);
  });

  test('a bad program name on the command line stops the supervisor with a clear message', async () => {
    const bad = new SupervisorProcess();
    await assert.rejects(bad.start(['--deny-command', '/usr/bin/curl']), /expected a program name such as python3/);
    bad.removeDataDir();
  });
});
