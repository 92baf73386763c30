import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync, statSync, readdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { SandforgeError } from '../../src/shared/errors.js';
import { startAgent, type TestAgent } from './helpers.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const code = (c: string) => (e: unknown) => e instanceof SandforgeError && e.code === c;

async function readAll(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

describe('agent files (real agent over a unix socket)', () => {
  let a: TestAgent;
  before(async () => {
    a = await startAgent();
  });
  after(async () => {
    await a.stop();
  });

  test('50 MB random file: write (Buffer) then read, byte-identical', async () => {
    const data = randomBytes(50 * 1024 * 1024);
    const path = join(a.dir, 'big.bin');
    const t0 = Date.now();
    const w = await a.client.writeFile(path, data);
    const t1 = Date.now();
    assert.equal(w.bytes_written, data.length);
    const back = await readAll(await a.client.readFile(path));
    const t2 = Date.now();
    assert.equal(back.length, data.length);
    assert.equal(sha(back), sha(data));
    assert.equal(sha(readFileSync(path)), sha(data));
    console.log(`# 50 MB write ${t1 - t0} ms, read ${t2 - t1} ms`);
    assert.deepEqual(
      readdirSync(a.dir).filter((n) => n.includes('.sf-')),
      [],
      'temp file left behind',
    );
  });

  test('write from a Readable stream, mode, mkdirs, overwrite keeps mode', async () => {
    const parts = Array.from({ length: 40 }, () => randomBytes(256 * 1024));
    const path = join(a.dir, 'deep/er/stream.bin');
    const w = await a.client.writeFile(path, Readable.from(parts), { mode: 0o750, mkdirs: true });
    assert.equal(w.bytes_written, 40 * 256 * 1024);
    assert.equal(sha(readFileSync(path)), sha(Buffer.concat(parts)));
    assert.equal(statSync(path).mode & 0o777, 0o750);
    await a.client.writeFile(path, Buffer.from('small'));
    assert.equal(readFileSync(path, 'utf8'), 'small');
    assert.equal(statSync(path).mode & 0o777, 0o750);
  });

  test('write without mkdirs into a missing dir is not_found; onto a dir is invalid', async () => {
    await assert.rejects(a.client.writeFile(join(a.dir, 'nope/x'), Buffer.from('x')), code('not_found'));
    await assert.rejects(a.client.writeFile(a.dir, Buffer.from('x')), code('invalid_argument'));
    await assert.rejects(a.client.writeFile('relative/path', Buffer.from('x')), code('invalid_argument'));
  });

  test('read errors: not_found, directory', async () => {
    await assert.rejects(a.client.readFile(join(a.dir, 'missing')), code('not_found'));
    await assert.rejects(a.client.readFile(a.dir), code('invalid_argument'));
  });

  test('mkdir, stat, list, rename, remove', async () => {
    const d = join(a.dir, 'tree/a/b');
    await a.client.mkdir(d);
    await a.client.mkdir(d); // recursive accepts an existing dir
    await assert.rejects(a.client.mkdir(d, { recursive: false }), code('conflict'));
    writeFileSync(join(d, 'f.txt'), 'hello');
    const st = await a.client.stat(join(d, 'f.txt'));
    assert.deepEqual([st.name, st.type, st.size], ['f.txt', 'file', 5]);
    assert.ok(Math.abs(st.mtime_ms - Date.now()) < 60_000);
    const ls = await a.client.listDir(join(a.dir, 'tree/a'));
    assert.equal(ls.truncated, false);
    assert.deepEqual(
      ls.entries.map((e) => [e.name, e.type]),
      [['b', 'dir']],
    );
    await a.client.rename(join(d, 'f.txt'), join(d, 'g.txt'));
    assert.ok(existsSync(join(d, 'g.txt')) && !existsSync(join(d, 'f.txt')));
    await assert.rejects(a.client.rename(join(d, 'f.txt'), join(d, 'h.txt')), code('not_found'));
    await assert.rejects(a.client.remove(join(a.dir, 'tree')), code('conflict'));
    await a.client.remove(join(d, 'g.txt'));
    await a.client.remove(join(a.dir, 'tree'), { recursive: true });
    assert.ok(!existsSync(join(a.dir, 'tree')));
    await assert.rejects(a.client.remove(join(a.dir, 'tree')), code('not_found'));
    await assert.rejects(a.client.stat(join(a.dir, 'tree')), code('not_found'));
    await assert.rejects(a.client.listDir(join(a.dir, 'tree')), code('not_found'));
  });

  test('list reports types, sizes and modes', async () => {
    const d = join(a.dir, 'ls');
    await a.client.mkdir(d);
    await a.client.writeFile(join(d, 'x'), Buffer.alloc(1234), { mode: 0o600 });
    await a.client.mkdir(join(d, 'sub'));
    await a.client.run({ argv: ['ln', '-s', 'x', join(d, 'link')] });
    const ls = await a.client.listDir(d);
    const byName = Object.fromEntries(ls.entries.map((e) => [e.name, e]));
    assert.equal(byName.x?.type, 'file');
    assert.equal(byName.x?.size, 1234);
    assert.equal(byName.x?.mode, 0o600);
    assert.equal(byName.sub?.type, 'dir');
    assert.equal(byName.link?.type, 'symlink');
  });
});
