import { Option, type Command } from 'commander';
import { Client, DEFAULT_BASE_URL } from '../../../sdk/src/index.js';

/** Options every API command takes. */
export interface ClientFlags {
  url: string;
  token?: string;
  json?: boolean;
}

/** Adds `--url`, `--token` and `--json` to a command. */
export function withClientOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--url <url>', 'supervisor URL').env('SANDFORGE_URL').default(DEFAULT_BASE_URL))
    .addOption(
      new Option('--token <token>', 'API token (prefer the env var: command lines are visible to other users)').env('SANDFORGE_TOKEN'),
    )
    .option('--json', 'print JSON');
}

/** A client for the flags; the token is passed through, never printed. */
export function clientFromFlags(flags: ClientFlags): Client {
  return new Client({ baseUrl: flags.url, token: flags.token });
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}
