import type { Command } from 'commander';
import { resolveImagesDir } from '../../config/paths.js';
import { runChecks } from '../../doctor/checks.js';

const MARK = { ok: 'ok  ', info: 'info', warn: 'warn', fail: 'FAIL' } as const;

export function registerDoctorCommand(program: Command): void {
  program
    .command('doctor')
    .description(
      'check what this host offers (KVM / PVM / TCG, QEMU, images, permissions, disk, kvm group, service unit, nginx site) and what to fix',
    )
    .option('--images <dir>', 'images directory')
    .option('--accel <mode>', 'accelerator to evaluate: auto, kvm or tcg')
    .option('--json', 'print JSON')
    .action(async (o: { images?: string; accel?: string; json?: boolean }) => {
      const results = await runChecks({ imagesDir: resolveImagesDir(o.images), accel: o.accel });
      const failed = results.some((r) => r.status === 'fail');
      if (o.json) {
        process.stdout.write(JSON.stringify({ ok: !failed, checks: results }, null, 2) + '\n');
      } else {
        for (const r of results) {
          process.stdout.write(`[${MARK[r.status]}] ${r.name}: ${r.detail}\n`);
          if (r.fix) process.stdout.write(`       fix: ${r.fix}\n`);
        }
        process.stdout.write(failed ? '\nSome checks failed.\n' : '\nSandforge can run here.\n');
      }
      process.exitCode = failed ? 1 : 0;
    });
}
