import { test } from 'node:test';
import assert from 'node:assert/strict';
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import { buildImage, computeImageId, defaultSpec, loadImage } from '../../src/image/index.js';
import { INIT_SCRIPT } from '../../src/image/builder.js';
import { BUSYBOX } from '../../src/image/prereqs.js';

// Uses a prebuilt image (`sandforge image build`) and never runs mmdebstrap.
const images = process.env.SANDFORGE_IMAGES ?? '/var/lib/sandforge/images';
const present = await access(join(images, 'default/manifest.json')).then(
  () => true,
  () => false,
);
const skip = present ? false : `no prebuilt image in ${images} (run \`sandforge image build\` or set SANDFORGE_IMAGES)`;

test('building an up-to-date image is an instant cache hit', { skip }, async (t) => {
  const before = await loadImage(images, 'default');
  const current = await computeImageId(defaultSpec(), INIT_SCRIPT, BUSYBOX);
  if (current !== before.manifest.id) {
    // Would rebuild (and replace) the real image: not a unit test's business.
    t.skip(`prebuilt image ${before.manifest.id} is stale (inputs now hash to ${current}); run \`sandforge image build\``);
    return;
  }
  const steps: string[] = [];
  const progress = { step: <T>(n: string, fn: () => Promise<T>) => (steps.push(n), fn()) };
  const t0 = performance.now();
  const res = await buildImage(images, { name: 'default', progress });
  const ms = performance.now() - t0;
  assert.equal(res.cached, true);
  assert.equal(res.id, before.manifest.id);
  assert.equal(res.dir, join(images, 'default'));
  assert.equal(res.kernel_release, before.manifest.kernel_release);
  assert.ok(res.size_bytes > 0);
  assert.deepEqual(steps, [], 'a cache hit runs no build steps');
  assert.ok(ms < 1000, `cache hit took ${ms.toFixed(0)} ms`);
});
