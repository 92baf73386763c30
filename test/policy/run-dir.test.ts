import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { imageSkipReason, qemuProcesses, runCli, SHARED_DATA_DIR, vmLeftovers, waitFor } from '../helpers/env.js';

const skip = imageSkipReason();

/** `sandforge run --dir`: the chosen folder at /workspace, read-write, and the cwd there. */
describe('sandforge run --dir', { skip }, () => {
  let dir: string;
  /** A folder like a home directory: it holds a `.ssh`. */
  let home: string;
  before(() => {
    dir = realpathSync(mkdtempSync(join(tmpdir(), 'sf-rundir-')));
    writeFileSync(join(dir, 'alpha.txt'), 'a\n');
    writeFileSync(join(dir, 'beta.txt'), 'b\n');
    home = realpathSync(mkdtempSync(join(tmpdir(), 'sf-runhome-')));
    mkdirSync(join(home, '.ssh'));
  });
  after(async () => {
    await waitFor(
      'no VM leftovers',
      () => vmLeftovers(SHARED_DATA_DIR, 'runs').length === 0 && qemuProcesses(`${SHARED_DATA_DIR}/runs/`).length === 0,
      10_000,
    );
    rmSync(dir, { recursive: true, force: true });
    rmSync(home, { recursive: true, force: true });
  });

  test("--dir lists the folder and leaves the guest's file on the host", async () => {
    const r = await runCli(['run', '--dir', dir, '--', 'sh', '-c', 'ls; echo hi > out.txt; pwd']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /alpha\.txt\nbeta\.txt\n/);
    assert.match(r.stdout, /\/workspace\n$/);
    assert.equal(readFileSync(join(dir, 'out.txt'), 'utf8'), 'hi\n');
  });

  test('the default is the current directory; --no-dir mounts nothing', async () => {
    const r = await runCli(['run', '--', 'sh', '-c', 'pwd; cat alpha.txt'], { cwd: dir });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, '/workspace\na\n');
    const none = await runCli(['run', '--no-dir', '--', 'sh', '-c', 'pwd; ls /workspace 2>&1; grep -c " /workspace " /proc/mounts'], {
      cwd: dir,
    });
    assert.doesNotMatch(none.stdout, /alpha\.txt/);
    assert.doesNotMatch(none.stdout, /^\/workspace\n/);
    assert.match(none.stdout, /0\n$/);
  });

  test('a blocked folder is refused with a clear error, before anything boots', async () => {
    const r = await runCli(['run', '--dir', join(home, '.ssh'), '--', 'true']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /sandforge: mount refused: .*\.ssh is under a blocked name "\.ssh"/);
    // A folder that holds a blocked name (a home folder, say) is not shared read-write either, nor is /.
    const broad = await runCli(['run', '--', 'true'], { cwd: home });
    assert.equal(broad.code, 1, broad.stderr);
    assert.match(broad.stderr, /mount refused: .* contains "\.ssh".*--no-dir/);
    const root = await runCli(['run', '--dir', '/', '--', 'true']);
    assert.equal(root.code, 1, root.stderr);
    assert.match(root.stderr, /it is the root folder/);
    const missing = await runCli(['run', '--dir', join(dir, 'nope'), '--', 'true']);
    assert.equal(missing.code, 2, missing.stderr);
    assert.match(missing.stderr, /does not exist/);
    assert.equal(existsSync(join(dir, 'nope')), false);
  });
});
