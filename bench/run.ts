/**
 * Sandforge benchmark: everything measured in one run on this machine, so
 * the ratios mean something even where absolute times are noise.
 *
 *   npm run bench            (needs the default image: scripts/setup.sh)
 *
 * Prints a table and writes bench/results/latest.json.
 */
import { execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client } from '../sdk/src/index.js';
import type { SandboxHandle } from '../sdk/src/index.js';
import { Runtime } from '../src/sandbox/local-runtime.js';
import { makeVmDir, MicroVm, vmFiles } from '../src/vmm/microvm.js';
import { buildQemuArgs } from '../src/vmm/qemu-args.js';
import { QemuProcess } from '../src/vmm/qemu-process.js';
import { QmpClient } from '../src/vmm/qmp-client.js';
import { spareShares } from '../src/vmm/template.js';
import { qemuProcesses, ROOT } from '../test/helpers/env.js';
import { SupervisorProcess } from '../test/helpers/supervisor.js';

const SHAPE = { image: 'default', cpus: 2, memoryMb: 1024, diskMb: 4096 };
const N = Number(process.env.BENCH_N ?? 15);

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? NaN;
};
const round = (x: number) => Math.round(x * 10) / 10;
const say = (m: string) => process.stderr.write(`bench: ${m}\n`);

async function timed<T>(fn: () => Promise<T>): Promise<[number, T]> {
  const t0 = performance.now();
  const v = await fn();
  return [performance.now() - t0, v];
}

/** QEMU alone restoring the template to paused: spawn → `paused`, nothing of Sandforge in the path. */
async function restoreFloor(runtime: Runtime, n: number): Promise<number[]> {
  const { template } = await runtime.templates.get(SHAPE);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const files = await makeVmDir(join(runtime.dirs.dataDir, 'vms', `bench-floor-${i}`));
    copyFileSync(template.overlayPath, files.scratch);
    const args = buildQemuArgs({
      ...MicroVm.spec(template.vmOptions, template.boot, files, template.spareShares(), 'qcow2'),
      ramFile: { path: template.ramPath, share: false },
      incoming: true,
    });
    // QEMU 7.2 takes x-ignore-shared only over QMP: the minimum of driving needed to restore.
    const t0 = performance.now();
    const q = QemuProcess.spawn({ args, logFile: files.qemuLog, dieWithParent: true });
    const qmp = await QmpClient.connect(files.qmpSocket, 10_000);
    await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
    await qmp.execute('migrate-incoming', { uri: `exec:cat ${template.statePath}` });
    await qmp.waitStatus('paused', 30_000);
    out.push(performance.now() - t0);
    qmp.close();
    await q.killAndWait();
    rmSync(files.dir, { recursive: true, force: true });
  }
  return out;
}

let coldBootFailures = 0;

/** A cold boot to a ready agent: what a create costs without snapshots. */
async function coldBoots(runtime: Runtime, n: number): Promise<number[]> {
  const inputs = await runtime.templates.inputs(SHAPE);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const dir = join(runtime.dirs.dataDir, 'vms', `bench-cold-${i}`);
    const files = { ...vmFiles(dir), scratch: join(dir, 'scratch.raw') };
    mkdirSync(dir, { recursive: true });
    execFileSync('truncate', ['-s', `${SHAPE.diskMb}M`, files.scratch]);
    execFileSync('mkfs.ext4', ['-q', '-F', files.scratch]);
    const spec = MicroVm.spec(
      { accel: runtime.accel.accel, cpus: SHAPE.cpus, memoryMb: SHAPE.memoryMb, dieWithParent: true },
      inputs.boot,
      files,
      spareShares(dir),
      'raw',
    );
    try {
      const [ms, vm] = await timed(() => MicroVm.coldBoot(spec, files, { dieWithParent: true, timeoutMs: 60_000 }));
      out.push(ms);
      await vm.destroy();
    } catch (err) {
      // Early-boot hangs under TCG happen now and then; template builds retry them, and so does this.
      say(`cold boot ${i} failed (${(err as Error).message.split('\n')[0]}); retrying`);
      coldBootFailures++;
      rmSync(dir, { recursive: true, force: true });
      if (coldBootFailures > 3) throw err;
      i--;
    }
  }
  return out;
}

/** Proportional set size of a process in MiB: its fair share of pages shared with other clones. */
function pssMb(pid: number): number {
  const m = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}
function rssMb(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

/**
 * Runs in a fetch-mode guest: GETs through the egress proxy to a host server
 * against the same GETs to a server on the guest's own loopback, so the
 * tunnel's cost shows as a ratio. Prints one JSON line.
 */
const EGRESS_SCRIPT = String.raw`
import json, os, sys, threading, time, urllib.request, http.server
for k in ('NO_PROXY', 'no_proxy'): os.environ.pop(k, None)  # the host target is on 127.0.0.1 too
host_port = int(sys.argv[1]); big = int(sys.argv[2]); nat = sys.argv[3] == 'nat'
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b'x' if self.path == '/small' else b'0' * big
        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
local = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)
threading.Thread(target=local.serve_forever, daemon=True).start()
direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
proxied = urllib.request.build_opener(urllib.request.ProxyHandler({'http': 'http://127.0.0.1:3128'}))
def p50(opener, url, n=15):
    ts = []
    for _ in range(n):
        t = time.perf_counter(); opener.open(url).read(); ts.append((time.perf_counter() - t) * 1000)
    return sorted(ts)[len(ts) // 2]
def mbps(opener, url):
    t = time.perf_counter(); n = len(opener.open(url).read()); return n / 2**20 / (time.perf_counter() - t)
lp = 'http://127.0.0.1:%d' % local.server_address[1]
# fetch: through the proxy to the host's 127.0.0.1; full: straight through NAT, where the host is 10.0.2.2.
hp = 'http://%s:%d' % ('10.0.2.2' if nat else '127.0.0.1', host_port); out = direct if nat else proxied
print(json.dumps({'local_get_ms': p50(direct, lp + '/small'), 'egress_get_ms': p50(out, hp + '/small'),
                  'local_mb_s': mbps(direct, lp + '/big'), 'egress_mb_s': mbps(out, hp + '/big')}))
`;

interface EgressNumbers {
  local_get_ms: number;
  egress_get_ms: number;
  local_mb_s: number;
  egress_mb_s: number;
}

async function egressBench(): Promise<{ fetch: EgressNumbers; full: EgressNumbers }> {
  const BIG = 32 * 2 ** 20;
  const blob = Buffer.alloc(BIG);
  const server = createServer((req, res) => res.end(req.url === '/small' ? 'x' : blob));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  // The bench's own target is on host loopback, which only an explicit CIDR opens.
  const sup = new SupervisorProcess();
  await sup.start(['--destroy-on-exit', '--log-level', 'warn', '--fetch-allow-cidr', '127.0.0.1/32']);
  try {
    const client = new Client({ baseUrl: sup.url, token: sup.token });
    const measure = async (network: 'fetch' | 'full'): Promise<EgressNumbers> => {
      const sb = await client.create({ network });
      const r = await sb.commands.run(['python3', '-c', EGRESS_SCRIPT, String(port), String(BIG), network === 'full' ? 'nat' : 'proxy'], {
        timeoutSeconds: 300,
      });
      await sb.kill();
      if (r.exit_code !== 0) throw new Error(`egress bench (${network}) failed: ${r.stderr}`);
      return JSON.parse(r.stdout);
    };
    return { fetch: await measure('fetch'), full: await measure('full') };
  } finally {
    await sup.stop();
    sup.removeDataDir();
    server.close();
  }
}

async function main(): Promise<void> {
  const runtime = Runtime.create({ dieWithParent: true, onProgress: say });
  say(`acceleration: ${runtime.accel.accel} (${runtime.accel.kvm})`);
  say('ensuring the template (a cold boot the first time)');
  await runtime.templates.get(SHAPE);

  const sup = new SupervisorProcess();
  await sup.start(['--destroy-on-exit', '--log-level', 'warn']);
  const client = new Client({ baseUrl: sup.url, token: sup.token });
  try {
    say(`create (clone) × ${N}`);
    const create: number[] = [];
    const firstExec: number[] = [];
    for (let i = 0; i < N; i++) {
      const [ms, sb] = await timed(() => client.create({ cpu: SHAPE.cpus, memory_mb: SHAPE.memoryMb, disk_mb: SHAPE.diskMb }));
      create.push(ms);
      const [fe] = await timed(() => sb.commands.run(['true']));
      firstExec.push(fe);
      await sb.kill();
    }

    say('exec true × 20 on one sandbox');
    const sb = await client.create();
    const exec: number[] = [];
    const guestSpawn: number[] = [];
    await sb.commands.run(['true']);
    for (let i = 0; i < 20; i++) {
      const [ms, r] = await timed(() => sb.commands.run(['true']));
      exec.push(ms);
      guestSpawn.push(r.duration_ms ?? NaN);
    }
    await sb.kill();

    say('20 concurrent creates');
    const conc = await Promise.allSettled(Array.from({ length: 20 }, () => timed(() => client.create())));
    const ok = conc.filter((r): r is PromiseFulfilledResult<[number, SandboxHandle]> => r.status === 'fulfilled');
    const concMs = ok.map((r) => r.value[0]);
    // Let them settle, then measure idle memory of their QEMU processes.
    await Promise.all(ok.map((r) => r.value[1].commands.run(['true'])));
    await new Promise((r) => setTimeout(r, 2000));
    const pids = ok.flatMap((r) => qemuProcesses(join(sup.dataDir, 'vms', r.value[1].id)));
    const pss = pids.map(pssMb);
    const rss = pids.map(rssMb);
    await Promise.all(ok.map((r) => r.value[1].kill()));

    say('egress: GETs and a 32 MiB download via the fetch proxy and via full NAT, vs the guest loopback');
    const eg = await egressBench();

    say('restore floor × 10 (QEMU alone)');
    const floor = await restoreFloor(runtime, 10);
    say('cold boot × 2');
    const cold = await coldBoots(runtime, 2);

    const results = {
      accel: runtime.accel.accel,
      memory_mb: SHAPE.memoryMb,
      cpus: SHAPE.cpus,
      create_clone_p50_ms: round(pct(create, 50)),
      create_clone_p95_ms: round(pct(create, 95)),
      first_exec_after_create_p50_ms: round(pct(firstExec, 50)),
      create_cold_p50_ms: round(pct(cold, 50)),
      cold_boot_hangs_retried: coldBootFailures,
      restore_floor_p50_ms: round(pct(floor, 50)),
      concurrent_creates: ok.length,
      concurrent_create_p95_ms: round(pct(concMs, 95)),
      exec_true_p50_ms: round(pct(exec, 50)),
      guest_spawn_true_p50_ms: round(pct(guestSpawn, 50)),
      idle_rss_mb_per_sandbox: round(rss.reduce((a, b) => a + b, 0) / Math.max(1, rss.length)),
      idle_pss_mb_per_sandbox: round(pss.reduce((a, b) => a + b, 0) / Math.max(1, pss.length)),
      fetch_proxy_get_p50_ms: round(eg.fetch.egress_get_ms),
      full_nat_get_p50_ms: round(eg.full.egress_get_ms),
      guest_loopback_get_p50_ms: round(eg.fetch.local_get_ms),
      fetch_proxy_download_mb_s: round(eg.fetch.egress_mb_s),
      full_nat_download_mb_s: round(eg.full.egress_mb_s),
      guest_loopback_download_mb_s: round(eg.fetch.local_mb_s),
      ratio_fetch_get_over_loopback: round(eg.fetch.egress_get_ms / eg.fetch.local_get_ms),
      ratio_full_get_over_loopback: round(eg.full.egress_get_ms / eg.full.local_get_ms),
      ratio_cold_over_clone: round(pct(cold, 50) / pct(create, 50)),
      ratio_clone_over_floor: round(pct(create, 50) / pct(floor, 50)),
      measured_at: new Date().toISOString(),
    };
    const table = Object.entries(results)
      .map(([k, v]) => `${k.padEnd(34)} ${v}`)
      .join('\n');
    process.stdout.write(`${table}\n\n`);
    process.stdout.write(
      `create_clone_p50 ≤ create_cold_p50 / 20: ${results.ratio_cold_over_clone >= 20 ? 'yes' : 'NO'} (cold/clone = ${results.ratio_cold_over_clone})\n` +
        `create_clone_p50 ≤ 2 × restore_floor_p50: ${results.ratio_clone_over_floor <= 2 ? 'yes' : 'NO'} (clone/floor = ${results.ratio_clone_over_floor})\n` +
        `20 concurrent creates succeeded: ${ok.length}/20\n`,
    );
    mkdirSync(join(ROOT, 'bench/results'), { recursive: true });
    writeFileSync(join(ROOT, 'bench/results/latest.json'), JSON.stringify(results, null, 2) + '\n');
  } finally {
    await sup.stop();
    sup.removeDataDir();
  }
}

main().catch((err) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
