import { Command, CommanderError } from 'commander';
import { SandforgeApiError } from '../../sdk/src/errors.js';
import { SandforgeError } from '../shared/errors.js';
import { VERSION } from '../shared/version.js';
import { registerAuditCommand } from './commands/audit.js';
import { registerCreateCommand } from './commands/create.js';
import { registerDoctorCommand } from './commands/doctor.js';
import { registerExecCommand } from './commands/exec.js';
import { registerImageCommands } from './commands/image.js';
import { registerPsCommand } from './commands/ps.js';
import { registerRmCommand } from './commands/rm.js';
import { registerRunCommand } from './commands/run.js';
import { registerSupervisorCommand } from './commands/supervisor.js';
import { registerWebhooksCommands } from './commands/webhooks.js';

const program = new Command();
program
  .name('sandforge')
  .description('Hardware-isolated sandboxes: one microVM per sandbox')
  .version(VERSION)
  .showHelpAfterError('(run with --help for usage)')
  .enablePositionalOptions()
  .exitOverride();

registerRunCommand(program);
registerImageCommands(program);
registerDoctorCommand(program);
registerSupervisorCommand(program);
registerCreateCommand(program);
registerPsCommand(program);
registerExecCommand(program);
registerRmCommand(program);
registerWebhooksCommands(program);
registerAuditCommand(program);

function fail(err: unknown): never {
  if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
  if (err instanceof SandforgeApiError) {
    process.stderr.write(`sandforge: ${err.message}\n`);
    process.exit(1);
  }
  if (err instanceof SandforgeError) {
    process.stderr.write(`sandforge: ${err.message}\n`);
    process.exit(err.code === 'invalid_argument' ? 2 : 1);
  }
  const msg = err instanceof Error ? (process.env.SANDFORGE_DEBUG ? err.stack : err.message) : String(err);
  process.stderr.write(`sandforge: ${msg}\n`);
  process.exit(1);
}

program.parseAsync(process.argv).catch(fail);
