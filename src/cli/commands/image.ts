import type { Command } from 'commander';
import { resolveImagesDir } from '../../config/paths.js';
import { buildImage, listImages, removeImage, DEFAULT_IMAGE } from '../../image/index.js';
import { withInterrupts } from '../../image/workspace.js';
import { createProgress } from '../progress.js';
import { SandforgeError } from '../../shared/errors.js';

const MiB = 1024 * 1024;

function humanSize(bytes: number): string {
  return bytes >= 1024 * MiB ? `${(bytes / 1024 / MiB).toFixed(1)}G` : `${Math.round(bytes / MiB)}M`;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n');
}

/** Adds `sandforge image build|ls|rm` to the CLI. */
export function registerImageCommands(program: Command): void {
  const image = program.command('image').description('Build and manage guest images');

  image
    .command('build')
    .description('Build a guest image (kernel, initramfs, rootfs) from the Debian archive')
    .option('--name <name>', 'image name', DEFAULT_IMAGE)
    .option('--images <dir>', 'images directory')
    .option('--force', 'rebuild even if up to date, refetching kernel and rootfs')
    .option('--json', 'print only a JSON result')
    .action(async (opts: { name: string; images?: string; force?: boolean; json?: boolean }) => {
      const imagesDir = resolveImagesDir(opts.images);
      const progress = createProgress({ prefix: 'image', json: opts.json });
      const started = Date.now();
      const res = await withInterrupts((signal) => buildImage(imagesDir, { name: opts.name, force: opts.force, progress, signal })).catch(
        (err: unknown) => {
          const sig = err instanceof SandforgeError ? err.details?.signal : undefined;
          if (!sig) throw err;
          // Temp dirs are already gone; exit like the signal would have.
          process.stderr.write('sandforge: image build interrupted; nothing was changed\n');
          process.exit(sig === 'SIGINT' ? 130 : 143);
        },
      );
      const { manifest: _m, ...summary } = res;
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(summary)}\n`);
      } else if (res.cached) {
        process.stdout.write(`image ${res.name} is up to date (${res.id}, ${res.dir})\n`);
      } else {
        const secs = ((Date.now() - started) / 1000).toFixed(1);
        process.stdout.write(
          `built image ${res.name} ${res.id} (kernel ${res.kernel_release}, ${humanSize(res.size_bytes)}) in ${secs}s: ${res.dir}\n`,
        );
      }
    });

  image
    .command('ls')
    .description('List images')
    .option('--images <dir>', 'images directory')
    .option('--json', 'print a JSON array')
    .action(async (opts: { images?: string; json?: boolean }) => {
      const images = await listImages(resolveImagesDir(opts.images));
      if (opts.json) {
        const out = images.map((i) => ({ ...i.manifest, dir: i.dir, size_bytes: i.size_bytes }));
        process.stdout.write(`${JSON.stringify(out)}\n`);
        return;
      }
      const rows = [['NAME', 'ID', 'KERNEL', 'SIZE', 'CREATED']];
      for (const i of images) {
        rows.push([i.name, i.manifest.id, i.manifest.kernel_release, humanSize(i.size_bytes), i.manifest.created_at]);
      }
      process.stdout.write(`${table(rows)}\n`);
    });

  image
    .command('rm')
    .description('Remove an image')
    .argument('<name>', 'image name')
    .option('--images <dir>', 'images directory')
    .action(async (name: string, opts: { images?: string }) => {
      await removeImage(resolveImagesDir(opts.images), name);
      process.stdout.write(`removed image ${name}\n`);
    });
}
