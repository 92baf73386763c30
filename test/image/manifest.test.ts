import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, writeFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadImage, listImages, removeImage, type ImageManifest } from '../../src/image/index.js';
import { SandforgeError } from '../../src/shared/errors.js';

const manifest = (name: string): ImageManifest => ({
  schema: 1,
  name,
  id: '0123456789abcdef',
  created_at: '2025-01-01T00:00:00.000Z',
  kernel_release: '6.1.0-99-amd64',
  min_memory_mb: 256,
  packages: ['bash'],
  files: { kernel: 'vmlinuz', initramfs: 'initramfs.img', rootfs: 'rootfs.erofs' },
});

async function withImages(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'sf-images-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function fakeImage(images: string, name: string, m: unknown = manifest(name)): Promise<void> {
  const dir = join(images, name);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'manifest.json'), JSON.stringify(m));
  await writeFile(join(dir, 'vmlinuz'), Buffer.alloc(100));
  await writeFile(join(dir, 'initramfs.img'), Buffer.alloc(20));
  await writeFile(join(dir, 'rootfs.erofs'), Buffer.alloc(3));
}

test('loadImage returns dir and manifest', () =>
  withImages(async (images) => {
    await fakeImage(images, 'default');
    const { dir, manifest: m } = await loadImage(images, 'default');
    assert.equal(dir, join(images, 'default'));
    assert.equal(m.kernel_release, '6.1.0-99-amd64');
    assert.equal(m.files.rootfs, 'rootfs.erofs');
  }));

test('loadImage of an unknown image throws image_not_found with the build command', () =>
  withImages(async (images) => {
    await assert.rejects(loadImage(images, 'nope'), (err: unknown) => {
      assert.ok(err instanceof SandforgeError);
      assert.equal(err.code, 'image_not_found');
      assert.match(err.message, /sandforge image build --name nope/);
      return true;
    });
  }));

test('loadImage rejects bad names and malformed manifests', () =>
  withImages(async (images) => {
    await assert.rejects(loadImage(images, '../etc'), { code: 'invalid_argument' });
    await fakeImage(images, 'bad', { ...manifest('bad'), files: { kernel: '../../x', initramfs: 'i', rootfs: 'r' } });
    await assert.rejects(loadImage(images, 'bad'), /files\.kernel/);
  }));

test('listImages lists valid images with sizes and skips hidden/broken dirs', () =>
  withImages(async (images) => {
    await fakeImage(images, 'b');
    await fakeImage(images, 'a');
    await mkdir(join(images, '.cache'));
    await mkdir(join(images, 'broken'));
    const list = await listImages(images);
    assert.deepEqual(
      list.map((i) => i.name),
      ['a', 'b'],
    );
    assert.equal(list[0]!.size_bytes, 123);
    assert.deepEqual(await listImages(join(images, 'missing')), []);
  }));

test('removeImage deletes an image and refuses unknown names', () =>
  withImages(async (images) => {
    await fakeImage(images, 'x');
    await removeImage(images, 'x');
    assert.deepEqual(await listImages(images), []);
    await assert.rejects(removeImage(images, 'x'), { code: 'image_not_found' });
  }));
