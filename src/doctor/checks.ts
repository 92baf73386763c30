import { execFile } from 'node:child_process';
import { accessSync, constants, existsSync, readFileSync, statSync, statfsSync } from 'node:fs';
import { userInfo } from 'node:os';
import { promisify } from 'node:util';
import { listImages } from '../image/store.js';
import { detectAccel } from '../vmm/accel.js';
import { probeHostCgroup } from '../vmm/host-cgroup.js';
import { QEMU_BINARY } from '../vmm/qemu-process.js';

const run = promisify(execFile);

/** `info` and `warn` never fail doctor; `fail` means Sandforge cannot run as configured. */
export type CheckStatus = 'ok' | 'info' | 'warn' | 'fail';

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

/** Host paths the deployment checks look at; overridable for tests. */
export interface HostPaths {
  kvm: string;
  dmiDir: string;
  groupFile: string;
  unit: string;
  nginxSite: string;
  envFile: string;
}

export const HOST_PATHS: HostPaths = {
  kvm: '/dev/kvm',
  dmiDir: '/sys/class/dmi/id',
  groupFile: '/etc/group',
  unit: '/etc/systemd/system/sandforge.service',
  nginxSite: '/etc/nginx/sites-enabled/sandforge.conf',
  envFile: '/etc/sandforge/sandforge.env',
};

function readTrim(path: string): string {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return '';
  }
}

export type Cloud = { provider: 'gcp' | 'aws'; instance: string } | null;

/** GCP or AWS from DMI (no metadata-server calls: doctor must work offline). */
export function detectCloud(dmiDir: string): Cloud {
  const vendor = readTrim(`${dmiDir}/sys_vendor`);
  const product = readTrim(`${dmiDir}/product_name`);
  const bios = readTrim(`${dmiDir}/bios_vendor`);
  if (/google/i.test(vendor) || /google compute engine/i.test(product)) return { provider: 'gcp', instance: product };
  if (/amazon/i.test(vendor) || /amazon/i.test(bios)) return { provider: 'aws', instance: product };
  return null;
}

/** Members of `group` in an /etc/group-format file, and its gid (null if there is no such group). */
export function groupEntry(groupFile: string, group: string): { gid: number; members: string[] } | null {
  for (const line of readTrim(groupFile).split('\n')) {
    const [name, , gid, members] = line.split(':');
    if (name === group && gid !== undefined) return { gid: Number(gid), members: (members ?? '').split(',').filter(Boolean) };
  }
  return null;
}

/** /dev/kvm, cloud nested-virtualization hints, kvm group, and the shipped unit/nginx site/token file. */
export function deploymentChecks(paths: HostPaths = HOST_PATHS, who = currentUser()): CheckResult[] {
  const out: CheckResult[] = [];
  const cloud = detectCloud(paths.dmiDir);
  const hasKvm = existsSync(paths.kvm);
  let kvmUsable = false;
  if (hasKvm) {
    try {
      accessSync(paths.kvm, constants.R_OK | constants.W_OK);
      kvmUsable = true;
    } catch {
      // no access
    }
  }
  out.push(
    !hasKvm
      ? {
          name: 'kvm device',
          status: 'warn',
          detail: `${paths.kvm} does not exist: VMs will run under TCG (full emulation, much slower)`,
          fix: 'load kvm_intel/kvm_amd, or use a host with hardware or nested virtualization (see the cloud line)',
        }
      : kvmUsable
        ? { name: 'kvm device', status: 'ok', detail: `${paths.kvm} is readable and writable by ${who.name}` }
        : {
            name: 'kvm device',
            status: 'warn',
            detail: `${paths.kvm} exists but ${who.name} cannot open it read-write`,
            fix: `add ${who.name} to the kvm group (usermod -aG kvm ${who.name}); the shipped unit runs with Group=kvm`,
          },
  );

  const nestedHint = {
    gcp: 'GCP: use an N2, N1 or C2 machine type created with --enable-nested-virtualization (gcloud compute instances create … --enable-nested-virtualization)',
    aws: 'AWS: use a .metal instance (c5.metal, m6i.metal, …) or a Nitro instance type that supports nested virtualization (e.g. c6i)',
  };
  if (cloud) {
    out.push({
      name: 'cloud',
      status: hasKvm ? 'info' : 'warn',
      detail: `${cloud.provider === 'gcp' ? 'Google Cloud' : 'AWS'}${cloud.instance ? ` (${cloud.instance})` : ''}${hasKvm ? ', KVM is exposed' : ', no KVM exposed to this instance'}`,
      ...(hasKvm ? {} : { fix: nestedHint[cloud.provider] }),
    });
  } else if (!hasKvm) {
    out.push({
      name: 'cloud',
      status: 'info',
      detail: `no GCP/AWS instance detected. In the cloud, KVM needs nested virtualization — ${nestedHint.gcp}; ${nestedHint.aws}`,
    });
  }

  const kvmGroup = groupEntry(paths.groupFile, 'kvm');
  if (!kvmGroup) {
    out.push({
      name: 'kvm group',
      status: 'warn',
      detail: 'there is no kvm group; the shipped unit runs with Group=kvm and will not start',
      fix: 'groupadd --system kvm (deploy/install.sh does this)',
    });
  } else {
    const inGroup = who.uid === 0 || who.gids.includes(kvmGroup.gid) || kvmGroup.members.includes(who.name);
    out.push(
      inGroup
        ? { name: 'kvm group', status: 'ok', detail: who.uid === 0 ? 'running as root' : `${who.name} is in group kvm` }
        : {
            name: 'kvm group',
            status: 'warn',
            detail: `${who.name} is not in group kvm`,
            fix: `usermod -aG kvm ${who.name} and log in again`,
          },
    );
    if (who.name !== 'sandforge' && existsSync(paths.unit)) {
      out.push(
        kvmGroup.members.includes('sandforge')
          ? { name: 'service user', status: 'ok', detail: 'sandforge is in group kvm' }
          : {
              name: 'service user',
              status: 'info',
              detail: 'sandforge is not listed in group kvm (the unit sets Group=kvm, so the service has it anyway)',
            },
      );
    }
  }

  out.push(
    existsSync(paths.unit)
      ? { name: 'systemd unit', status: 'ok', detail: `${paths.unit} is installed` }
      : {
          name: 'systemd unit',
          status: 'info',
          detail: `${paths.unit} is not installed`,
          fix: 'deploy/install.sh installs it (docs/deployment.md)',
        },
  );
  out.push(
    existsSync(paths.nginxSite)
      ? { name: 'nginx site', status: 'ok', detail: `${paths.nginxSite} is enabled` }
      : {
          name: 'nginx site',
          status: 'info',
          detail: `${paths.nginxSite} is not enabled: do not expose the supervisor port directly`,
          fix: 'copy deploy/nginx/sandforge.conf to /etc/nginx/sites-available/ and link it into sites-enabled/',
        },
  );
  if (existsSync(paths.envFile)) {
    try {
      const st = statSync(paths.envFile);
      const mode = st.mode & 0o777;
      out.push(
        mode & 0o007
          ? {
              name: 'token file',
              status: 'warn',
              detail: `${paths.envFile} is readable by every user (mode ${mode.toString(8)})`,
              fix: `chown root:sandforge ${paths.envFile} && chmod 0640 ${paths.envFile}`,
            }
          : {
              name: 'token file',
              status: 'ok',
              detail: `${paths.envFile} mode ${mode.toString(8).padStart(4, '0')}, uid ${st.uid} gid ${st.gid}`,
            },
      );
    } catch (err) {
      out.push({ name: 'token file', status: 'info', detail: `cannot stat ${paths.envFile}: ${(err as Error).message}` });
    }
  }
  return out;
}

export function currentUser(): { name: string; uid: number; gids: number[] } {
  let name = String(process.getuid?.() ?? '?');
  try {
    name = userInfo().username;
  } catch {
    // no passwd entry
  }
  return { name, uid: process.getuid?.() ?? -1, gids: process.getgroups?.() ?? [] };
}

export async function runChecks(opts: { imagesDir: string; accel?: string; paths?: HostPaths }): Promise<CheckResult[]> {
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
        ? {
            name: 'images',
            status: 'ok',
            detail: `${images.length} in ${opts.imagesDir}: ${images.map((i) => i.manifest.name).join(', ')}`,
          }
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
  const cg = probeHostCgroup();
  out.push(
    cg.enabled
      ? { name: 'host cgroup', status: 'ok', detail: `each QEMU gets its own cgroup with memory and pids limits: ${cg.reason}` }
      : {
          name: 'host cgroup',
          status: 'info',
          detail: `QEMU runs without a host cgroup (the guest's own limits still apply): ${cg.reason}`,
          fix: 'run the supervisor as root, or under systemd with Delegate=yes on cgroup v2',
        },
  );
  out.push(...deploymentChecks(opts.paths ?? HOST_PATHS));
  return out;
}
