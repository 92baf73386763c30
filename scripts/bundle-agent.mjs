// Bundles the guest agent into one ESM file for the agent disk: fewer files to
// read at first start under TCG, and no node_modules inside the guest except
// the native PTY module, which cannot be bundled.
import { build } from 'esbuild';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
await build({
  entryPoints: [join(root, 'agent/main.ts')],
  outfile: join(root, 'dist/agent-bundle/agent.mjs'),
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  external: ['@lydell/node-pty'],
  banner: { js: "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);" },
  logLevel: 'warning',
});
