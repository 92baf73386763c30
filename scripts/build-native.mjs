// Builds native/egress-guard.c into dist/native/egress-guard.so (network mode
// `full` preloads it into QEMU). Without a C compiler it says so and moves on:
// everything else works, and creating a `full` sandbox then fails with that reason.
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'dist/native/egress-guard.so');
mkdirSync(dirname(out), { recursive: true });
const cc = process.env.CC || 'cc';
try {
  execFileSync(cc, ['-shared', '-fPIC', '-O2', '-Wall', '-Wextra', '-Werror', '-o', out, join(root, 'native/egress-guard.c'), '-ldl', '-lpthread'], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
} catch (err) {
  if (err.code === 'ENOENT') console.warn(`build-native: no C compiler (${cc}): network mode "full" is unavailable until gcc is installed`);
  else throw err;
}
