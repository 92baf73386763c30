import assert from 'node:assert/strict';
import { test } from 'node:test';
import { commandSpec, envOption, intOption } from '../../src/cli/parse.js';
import { checkCreateLimits, type Limits } from '../../src/sandbox/limits.js';

test('commandSpec: argv for several words, sh -c for one word with shell syntax', () => {
  assert.deepEqual(commandSpec(['uname', '-r']), { argv: ['uname', '-r'] });
  assert.deepEqual(commandSpec(['true']), { argv: ['true'] });
  assert.deepEqual(commandSpec(['echo hi | wc -c']), { shell: 'echo hi | wc -c' });
  assert.throws(() => commandSpec([]), /missing command/);
});

test('intOption names the option and range', () => {
  const cpu = intOption('--cpu', 1, 8);
  assert.equal(cpu('2'), 2);
  assert.throws(() => cpu('0'), /--cpu must be between 1 and 8, got 0/);
  assert.throws(() => cpu('two'), /--cpu must be a whole number/);
});

test('envOption parses KEY=VALUE and rejects bad names', () => {
  assert.deepEqual(envOption('A=1=2', { B: 'x' }), { B: 'x', A: '1=2' });
  assert.throws(() => envOption('noequals'), /KEY=VALUE/);
  assert.throws(() => envOption('1A=x'), /invalid environment variable name/);
});

test('create limits name the limit that was exceeded', () => {
  const l: Limits = { maxCpu: 2, maxMemoryMb: 2048, maxDiskMb: 8192, maxSandboxes: 4, maxTimeoutSeconds: 60 };
  assert.doesNotThrow(() => checkCreateLimits({ cpu: 2, memory_mb: 2048 }, l));
  assert.throws(() => checkCreateLimits({ cpu: 3 }, l), /cpu 3 exceeds the server limit of 2 \(--max-cpu\)/);
  assert.throws(() => checkCreateLimits({ memory_mb: 4096 }, l), /--max-memory-mb/);
  assert.throws(() => checkCreateLimits({ timeout_seconds: 61 }, l), /--max-timeout-seconds/);
});
