import type { Command } from 'commander';
import type { DeleteResult } from '../../shared/api-types.js';
import { toSandforgeError } from '../../shared/errors.js';
import { clientFromFlags, printJson, withClientOptions, type ClientFlags } from './client-options.js';

export function registerRmCommand(program: Command): void {
  withClientOptions(program.command('rm').description('destroy sandboxes').argument('<id...>', 'sandbox ids')).action(
    async (ids: string[], o: ClientFlags) => {
      const client = clientFromFlags(o);
      const settled = await Promise.allSettled(ids.map((id) => client.kill(id)));
      // One entry per id, in order: the DeleteResult, or the error.
      const results: (DeleteResult | { id: string; error: { code: string; message: string } })[] = [];
      settled.forEach((s, i) => {
        const id = ids[i]!;
        if (s.status === 'fulfilled') {
          results.push(s.value);
          if (!o.json) process.stdout.write(`${s.value.id}\n`);
        } else {
          const err = toSandforgeError(s.reason);
          results.push({ id, error: { code: err.code, message: err.message } });
          if (!o.json) process.stderr.write(`sandforge: ${id}: ${err.message}\n`);
          process.exitCode = 1;
        }
      });
      if (o.json) printJson(results);
    },
  );
}
