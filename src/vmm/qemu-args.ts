import type { Accel } from './accel.js';

/** A virtio-blk disk, identified in the guest by its serial (not by vdX order). */
export interface DiskSpec {
  path: string;
  format: 'raw' | 'qcow2';
  readOnly: boolean;
  serial: string;
}

/** A 9p export slot. Templates carry spare slots so clones can point them at host folders. */
export interface ShareSpec {
  tag: string;
  path: string;
  readOnly: boolean;
}

/** Everything that decides a QEMU command line. Clones must keep the template's device list. */
export interface QemuSpec {
  accel: Accel;
  cpus: number;
  memoryMb: number;
  kernel: string;
  initrd: string;
  cmdline: string;
  disks: DiskSpec[];
  shares: ShareSpec[];
  agentSocket: string;
  qmpSocket: string;
  consoleLog: string;
  /** File-backed RAM: `share: true` for a template (writes land in the file), false for a copy-on-write clone. */
  ramFile?: { path: string; share: boolean };
  /** Start with `-incoming defer -S`: the VM waits for a migrate-incoming and a cont. */
  incoming?: boolean;
  /** A virtio-net device on QEMU's user-mode network (network mode `full`); absent: no network device. */
  nic?: boolean;
  name?: string;
}

/** Builds the argv (without the binary) for `qemu-system-x86_64 -M microvm`. */
export function buildQemuArgs(s: QemuSpec): string[] {
  const machine = ['microvm', 'x-option-roms=off', 'isa-serial=on', 'rtc=off'];
  if (s.ramFile) machine.push('memory-backend=mem');
  const args: string[] = ['-nodefaults', '-no-user-config', '-nographic', '-no-reboot', '-M', machine.join(',')];
  if (s.name) args.push('-name', s.name);
  if (s.accel === 'kvm') args.push('-accel', 'kvm', '-cpu', 'host');
  else args.push('-accel', 'tcg,thread=multi', '-cpu', 'max');
  args.push('-smp', String(s.cpus), '-m', `${s.memoryMb}M`);
  if (s.ramFile) {
    args.push(
      '-object',
      `memory-backend-file,id=mem,size=${s.memoryMb}M,mem-path=${opt(s.ramFile.path)},share=${s.ramFile.share ? 'on' : 'off'}`,
    );
  }
  args.push('-kernel', s.kernel, '-initrd', s.initrd, '-append', s.cmdline);
  args.push('-chardev', `file,id=con0,path=${opt(s.consoleLog)}`, '-serial', 'chardev:con0');
  s.disks.forEach((d, i) => {
    args.push(
      '-drive',
      `id=d${i},file=${opt(d.path)},format=${d.format},if=none,readonly=${d.readOnly ? 'on' : 'off'}`,
      '-device',
      `virtio-blk-device,drive=d${i},serial=${d.serial}`,
    );
  });
  args.push(
    '-device',
    'virtio-serial-device,max_ports=2',
    '-chardev',
    `socket,id=agent0,path=${opt(s.agentSocket)},server=on,wait=off`,
    '-device',
    'virtserialport,chardev=agent0,name=sandforge.agent',
    '-device',
    'virtio-rng-device',
  );
  if (s.nic) {
    // Fixed addresses: init.sh configures eth0 statically (no DHCP round trip at boot).
    args.push('-netdev', 'user,id=net0,net=10.0.2.0/24,host=10.0.2.2,dns=10.0.2.3,ipv6=off', '-device', 'virtio-net-device,netdev=net0');
  }
  s.shares.forEach((sh, i) => {
    args.push(
      '-fsdev',
      `local,id=fs${i},path=${opt(sh.path)},security_model=none${sh.readOnly ? ',readonly=on' : ''}`,
      '-device',
      `virtio-9p-device,fsdev=fs${i},mount_tag=${sh.tag}`,
    );
  });
  args.push('-qmp', `unix:${opt(s.qmpSocket)},server=on,wait=off`);
  if (s.incoming) args.push('-incoming', 'defer', '-S');
  return args;
}

/** QEMU option values escape a comma by doubling it. */
function opt(v: string): string {
  return v.replaceAll(',', ',,');
}
