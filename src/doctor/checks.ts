import { execFile } from 'node:child_process';
import { accessSync, constants, existsSync, statfsSync } from 'node:fs';
import { promisify } from 'node:util';
import { listImages } from '../image/store.js';
import { detectAccel } from '../vmm/accel.js';
import { QEMU_BINARY } from '../vmm/qemu-process.js';

const run = promisify(execFile);

export type CheckStatus = 'ok' | 'warn' | 'fail';

/** One line of `sandforge doctor`: what was checked, what was found, what to do. */
export interface CheckResult {
  name: string;
  status: CheckStatus;
  detail: string;
  fix?: string;
}

async function toolVersion(cmd: string, args: string[]): Promise<string | null> {
  try {
    const { stdout } = await run(cmd, args, { timeout: 5000 });
    return stdout.split('\n')[0]?.trim() ?? '';
  } catch {
    return null;
  }
}

export async function runChecks(opts: { imagesDir: string; accel?: string }): Promise<CheckResult[]> {
  const out: CheckResult[] = [];
  try {
    const a = detectAccel(opts.accel);
    out.push({
      name: 'acceleration',
      status: a.accel === 'kvm' ? 'ok' : 'warn',
      detail: `${a.accel.toUpperCase()} will be used — ${a.reason}`,
      ...(a.kvm === 'kvm'
        ? {}
        : {
            fix:
              a.kvm === 'no-access'
                ? 'add the service user to the kvm group (usermod -aG kvm USER) and log in again'
                : 'for native speed run on a host with usable KVM (bare metal, GCP with nested virtualization, AWS .metal)',
          }),
    });
  } catch (err) {
    out.push({ name: 'acceleration', status: 'fail', detail: (err as Error).message });
  }

  const qemu = await toolVersion(QEMU_BINARY, ['--version']);
  out.push(
    qemu
      ? { name: 'qemu', status: 'ok', detail: qemu }
      : { name: 'qemu', status: 'fail', detail: `${QEMU_BINARY} not found`, fix: 'apt-get install qemu-system-x86 qemu-utils' },
  );
  const qemuImg = await toolVersion('qemu-img', ['--version']);
  if (!qemuImg) out.push({ name: 'qemu-img', status: 'fail', detail: 'qemu-img not found', fix: 'apt-get install qemu-utils' });
  const mkfs = existsSync('/sbin/mkfs.ext4') || existsSync('/usr/sbin/mkfs.ext4');
  if (!mkfs) out.push({ name: 'mkfs.ext4', status: 'fail', detail: 'mkfs.ext4 not found', fix: 'apt-get install e2fsprogs' });

  try {
    const images = await listImages(opts.imagesDir);
    out.push(
      images.length > 0
        ? { name: 'images', status: 'ok', detail: `${images.length} in ${opts.imagesDir}: ${images.map((i) => i.manifest.name).join(', ')}` }
        : { name: 'images', status: 'fail', detail: `no images in ${opts.imagesDir}`, fix: 'sandforge image build' },
    );
  } catch (err) {
    out.push({ name: 'images', status: 'fail', detail: (err as Error).message, fix: 'sandforge image build' });
  }

  if (existsSync(opts.imagesDir)) {
    try {
      accessSync(opts.imagesDir, constants.R_OK | constants.W_OK | constants.X_OK);
      out.push({ name: 'permissions', status: 'ok', detail: `${opts.imagesDir} is writable by uid ${process.getuid?.()}` });
    } catch {
      out.push({
        name: 'permissions',
        status: 'fail',
        detail: `${opts.imagesDir} is not writable by uid ${process.getuid?.()}`,
        fix: `chown the directory to the user that runs sandforge, or pass --images`,
      });
    }
    try {
      const s = statfsSync(opts.imagesDir);
      const freeGb = (s.bavail * s.bsize) / 2 ** 30;
      out.push({
        name: 'disk',
        status: freeGb < 5 ? (freeGb < 1 ? 'fail' : 'warn') : 'ok',
        detail: `${freeGb.toFixed(1)} GiB free under ${opts.imagesDir}`,
        ...(freeGb < 5 ? { fix: 'free disk space: each template keeps a RAM file and a scratch disk' } : {}),
      });
    } catch {
      // statfs unsupported: nothing to say
    }
  }
  return out;
}
