import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile, access, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { ensureAgentDisk } from '../../src/image/index.js';

const haveTools = (() => {
  try {
    execFileSync('sh', ['-c', 'command -v mkfs.erofs && command -v ldd && test -x /usr/bin/tini-static'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();
const skip = haveTools ? false : 'needs mkfs.erofs (erofs-utils), ldd and /usr/bin/tini-static (tini)';

test('agent disk is content-addressed by its inputs', { skip }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'sf-agent-'));
  try {
    const images = join(dir, 'images');
    const bundle = join(dir, 'agent.mjs');
    await writeFile(bundle, 'console.log("v1")\n');
    const a = await ensureAgentDisk(images, { agentBundle: bundle });
    assert.match(a.hash, /^[0-9a-f]{16}$/);
    assert.equal(a.path, join(images, '.agents', `${a.hash}.erofs`));
    await access(a.path);

    const t0 = performance.now();
    const again = await ensureAgentDisk(images, { agentBundle: bundle });
    assert.deepEqual(again, a);
    assert.ok(performance.now() - t0 < 3000, 'same inputs are a cache hit');

    await writeFile(bundle, 'console.log("v2")\n');
    const b = await ensureAgentDisk(images, { agentBundle: bundle });
    assert.notEqual(b.hash, a.hash);
    // No temp dirs left behind.
    assert.deepEqual((await readdir(join(images, '.agents'))).sort(), [`${a.hash}.erofs`, `${b.hash}.erofs`].sort());
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('agent disk build fails clearly without a bundle', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'sf-agent-'));
  try {
    await assert.rejects(ensureAgentDisk(dir, { agentBundle: join(dir, 'missing.mjs') }), /npm run build/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
