import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Client } from '../../sdk/src/index.js';
import type { SandboxHandle } from '../../sdk/src/index.js';
import { HostCgroup, hostCgroupStatus } from '../../src/vmm/host-cgroup.js';
import { imageSkipReason, qemuProcesses, vmLeftovers, waitFor } from '../helpers/env.js';
import { SupervisorProcess } from '../helpers/supervisor.js';

const skip = imageSkipReason();

/** A's shape: a small disk so filling it takes seconds (~90 MB/s under TCG), a small RAM so the hog is quick. */
const A_DISK_MB = 512;
const A_MEMORY_MB = 512;
/** qcow2 metadata (L2 tables, refcounts) and ext4's own writes on top of the virtual size. */
const QCOW2_SLACK_MB = 32;

function pct(xs: number[], p: number): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

function rssMb(pid: number): number | null {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Math.round(Number(m[1]) / 1024) : null;
  } catch {
    return null;
  }
}

/**
 * Issue 4's acceptance: a sandbox that fills its disk, forks without bound or
 * allocates without bound disturbs neither a second sandbox running commands
 * at the same time nor the supervisor. Asserts success, not speed (shared
 * machine, TCG); the latencies are printed.
 */
describe('resource isolation between sandboxes', { skip }, () => {
  const sup = new SupervisorProcess();
  let client: Client;
  let a: SandboxHandle;
  let b: SandboxHandle;
  let aDir: string;
  let aPid: number;
  let bPid: number;

  // Background load: B runs `echo ok` every 200 ms; the supervisor is polled every 250 ms.
  const bLatencies: number[] = [];
  const bFailures: string[] = [];
  const pollLatencies: number[] = [];
  const pollFailures: string[] = [];
  const rss = { a: [] as number[], b: [] as number[], aCgroup: [] as number[] };
  let stop = false;
  let loops: Promise<void>[] = [];
  const phase = { name: 'idle' };
  const perPhase = new Map<string, number[]>();

  before(async () => {
    await sup.start(['--destroy-on-exit']);
    client = new Client({ baseUrl: sup.url, token: sup.token });
    // B first (default shape: its template is usually there); A's shape may build a template (one cold boot).
    b = await client.create({});
    a = await client.create({ memory_mb: A_MEMORY_MB, disk_mb: A_DISK_MB });
    aDir = join(sup.dataDir, 'vms', a.id);
    aPid = qemuProcesses(aDir)[0]!;
    bPid = qemuProcesses(join(sup.dataDir, 'vms', b.id))[0]!;
    assert.ok(aPid && bPid, 'QEMU pids of A and B');
    const first = await b.commands.run('echo ok', { timeoutSeconds: 60 });
    assert.equal(first.stdout, 'ok\n');

    loops = [
      (async () => {
        while (!stop) {
          const t0 = performance.now();
          try {
            const r = await b.commands.run('echo ok', { timeoutSeconds: 60 });
            const ms = performance.now() - t0;
            if (r.exit_code !== 0 || r.stdout !== 'ok\n')
              bFailures.push(`${phase.name}: exit ${r.exit_code} ${JSON.stringify(r.stdout + r.stderr)}`);
            else {
              bLatencies.push(ms);
              (perPhase.get(phase.name) ?? perPhase.set(phase.name, []).get(phase.name)!).push(ms);
            }
          } catch (err) {
            bFailures.push(`${phase.name}: ${(err as Error).message}`);
          }
          await new Promise((r) => setTimeout(r, 200));
        }
      })(),
      (async () => {
        while (!stop) {
          const t0 = performance.now();
          try {
            const list = await client.list({ requestTimeoutMs: 30_000 });
            if (!list.some((s) => s.id === a.id) || !list.some((s) => s.id === b.id))
              pollFailures.push('a sandbox is missing from the list');
            pollLatencies.push(performance.now() - t0);
          } catch (err) {
            pollFailures.push(`${phase.name}: ${(err as Error).message}`);
          }
          const ra = rssMb(aPid);
          const rb = rssMb(bPid);
          if (ra !== null) rss.a.push(ra);
          if (rb !== null) rss.b.push(rb);
          const used = HostCgroup.find(a.id)?.memoryUsage();
          if (used) rss.aCgroup.push(Math.round(used / 2 ** 20));
          await new Promise((r) => setTimeout(r, 250));
        }
      })(),
    ];
  });

  after(async () => {
    stop = true;
    await Promise.all(loops);
    const line = (xs: number[]) =>
      `n=${xs.length} p50=${pct(xs, 50).toFixed(0)} p95=${pct(xs, 95).toFixed(0)} max=${pct(xs, 100).toFixed(0)} ms`;
    console.log(`# B 'echo ok' latency overall: ${line(bLatencies)}`);
    for (const [name, xs] of perPhase) console.log(`#   during ${name}: ${line(xs)}`);
    console.log(`# supervisor GET /v1/sandboxes: ${line(pollLatencies)}`);
    console.log(
      `# QEMU RSS MB: A max ${pct(rss.a, 100)} (p50 ${pct(rss.a, 50)}), B max ${pct(rss.b, 100)} (p50 ${pct(rss.b, 50)}); ` +
        `A host cgroup charge max ${rss.aCgroup.length ? pct(rss.aCgroup, 100) : 'n/a'} MB`,
    );
    const cgA = HostCgroup.find(a.id);
    await sup.stop();
    assert.deepEqual(vmLeftovers(sup.dataDir), [], 'VM dirs left after --destroy-on-exit');
    assert.deepEqual(qemuProcesses(sup.dataDir), []);
    if (cgA) await waitFor('A host cgroup removed', () => cgA.dirs.every((d) => !existsSync(d)), 10_000);
    sup.removeDataDir();
    assert.deepEqual(bFailures, [], 'every command in B succeeded');
    assert.deepEqual(pollFailures, [], 'the supervisor answered every poll');
    assert.ok(bLatencies.length >= 10, `B ran only ${bLatencies.length} commands`);
  });

  const alive = async () => {
    const r = await a.commands.run('echo alive', { timeoutSeconds: 60 });
    assert.equal(r.stdout, 'alive\n', `A's agent after the abuse: ${JSON.stringify(r)}`);
  };

  test('commands run in the workload cgroup with limits; QEMU in its host cgroup', async () => {
    const r = await a.commands.run(
      'cat /proc/self/cgroup; cat /sys/fs/cgroup/workload/memory.max /sys/fs/cgroup/workload/pids.max; grep MemTotal /proc/meminfo',
      { timeoutSeconds: 60 },
    );
    assert.equal(r.exit_code, 0, r.stderr);
    const [cg, memMax, pidsMax, memTotal] = r.stdout.trim().split('\n');
    assert.match(cg!, /^0::\/workload\/c\d+$/, 'each command has its own cgroup under workload');
    const totalKb = Number(/(\d+) kB/.exec(memTotal!)![1]);
    assert.ok(Number(memMax) < totalKb * 1024 && Number(memMax) > totalKb * 1024 * 0.5, `memory.max ${memMax} of MemTotal ${totalKb} kB`);
    assert.ok(Number(pidsMax) >= 512, `pids.max ${pidsMax}`);
    console.log(
      `# A: workload memory.max ${Math.round(Number(memMax) / 2 ** 20)} MiB of ${Math.round(totalKb / 1024)} MiB, pids.max ${pidsMax}`,
    );
    const host = hostCgroupStatus();
    console.log(`# host cgroup: ${JSON.stringify(host)}`);
    if (host.enabled) {
      const cgA = HostCgroup.find(a.id);
      assert.ok(cgA, `no host cgroup for ${a.id}`);
      for (const d of cgA.dirs)
        assert.ok(readFileSync(join(d, 'cgroup.procs'), 'utf8').split('\n').includes(String(aPid)), `QEMU not in ${d}`);
    }
  });

  test('A fills its disk: ENOSPC inside, the host qcow2 stays bounded, A keeps working', async () => {
    phase.name = 'disk fill';
    const r = await a.commands.run('dd if=/dev/zero of=/root/fill bs=1M; sync; df -m / | tail -1', { timeoutSeconds: 120 });
    assert.match(r.stderr, /No space left on device/, JSON.stringify(r));
    const qcowMb = statSync(join(aDir, 'scratch.qcow2')).size / 2 ** 20;
    console.log(`# A disk full: ${r.stdout.trim()}; host qcow2 ${qcowMb.toFixed(0)} MB for disk_mb ${A_DISK_MB}`);
    assert.ok(qcowMb <= A_DISK_MB + QCOW2_SLACK_MB, `qcow2 is ${qcowMb} MB`);
    await alive();
    const rm = await a.commands.run('rm -f /root/fill && echo freed', { timeoutSeconds: 60 });
    assert.equal(rm.stdout, 'freed\n');
  });

  test('A runs a fork bomb: capped by pids.max, ended by its timeout, A keeps working', async () => {
    phase.name = 'fork bomb';
    // Everything the bomb forks stays in the command's cgroup, which the timeout's SIGKILL empties (cgroup.kill).
    const r = await a.commands.run(['bash', '-c', 'bomb() { bomb | bomb & }; bomb; sleep 600'], {
      timeoutSeconds: 15,
      requestTimeoutMs: 90_000,
    });
    assert.equal(r.timed_out, true, JSON.stringify({ ...r, stderr: r.stderr.slice(0, 500) }));
    // The answer comes once the leader exited and the tree was SIGKILLed; until the kernel has reaped it,
    // a new command may be refused with limit_exceeded (the limit doing its job).
    const refusals: string[] = [];
    const t0 = performance.now();
    const events = await waitFor(
      'A to run commands again',
      async () => {
        try {
          const c = await a.commands.run('cat /sys/fs/cgroup/workload/pids.current /sys/fs/cgroup/workload/pids.events', {
            timeoutSeconds: 60,
          });
          return c.exit_code === 0 ? c.stdout : null;
        } catch (err) {
          refusals.push((err as { code?: string }).code ?? (err as Error).message);
          await new Promise((res) => setTimeout(res, 500));
          return null;
        }
      },
      30_000,
    );
    assert.ok(
      refusals.every((c) => c === 'limit_exceeded'),
      `unexpected errors: ${refusals.join(', ')}`,
    );
    const [current, ...ev] = events.trim().split('\n');
    const hits = Number(/max (\d+)/.exec(ev.join(' '))?.[1] ?? 0);
    console.log(
      `# A fork bomb: pids.max reached ${hits} times; A ran commands again ${(performance.now() - t0).toFixed(0)} ms after the ` +
        `timeout answer (${refusals.length} refusals meanwhile); ${current} task(s) left in the workload`,
    );
    assert.ok(hits > 0, `pids.max was never reached: ${events}`);
    // cgroup.kill took the whole tree: only a probe (sh + cat) is left in the workload once the
    // killed tasks are reaped, which may trail the answer by a moment.
    let left = Number(current);
    const deadline = performance.now() + 10_000;
    while (left > 2 && performance.now() < deadline) {
      await new Promise((res) => setTimeout(res, 250));
      left = Number((await a.commands.run('cat /sys/fs/cgroup/workload/pids.current')).stdout.trim());
    }
    assert.ok(left <= 2, `bomb processes left: ${left}`);
    await alive();
  });

  test('A allocates without bound: the guest OOM killer kills the hog, not the agent', async () => {
    phase.name = 'memory hog';
    const r = await a.commands.run(['python3', '-c', 'a = []\nwhile True: a.append(bytearray(8 << 20))'], { timeoutSeconds: 120 });
    assert.ok(
      r.signal === 'SIGKILL' || r.exit_code === 137,
      `the hog was not OOM-killed: ${JSON.stringify({ ...r, stderr: r.stderr.slice(-300) })}`,
    );
    await alive();
    const ev = await a.commands.run('cat /sys/fs/cgroup/workload/memory.events', { timeoutSeconds: 60 });
    const kills = Number(/oom_kill (\d+)/.exec(ev.stdout)?.[1] ?? 0);
    console.log(`# A memory hog: ${r.signal ?? `exit ${r.exit_code}`}, workload oom_kill ${kills}`);
    assert.ok(kills >= 1, ev.stdout);
    phase.name = 'after';
    await new Promise((r) => setTimeout(r, 1000));
  });
});
