/**
 * The `membrane` command tree. Each verb group registers itself from its own
 * module under commands/; this file wires the global options and error policy.
 */
import { Command, CommanderError, Option } from 'commander';
import { loadConfig, type MembraneConfig } from '../config/config.js';
import { createLogger, type Logger } from '../log/logger.js';
import { NotAvailableError, OUTPUT_FORMATS, parseOutputFormat, UsageError, type OutputFormat } from './output.js';
import { registerPendingVerbs } from './commands/not-yet.js';
import { registerLabCommands } from './commands/lab.js';
import { registerDemoCommand } from './commands/demo.js';
import { registerAgentCommand } from './commands/agent.js';
import { registerAgentVerbs } from './commands/agent-verbs.js';

export interface CliContext {
  config: MembraneConfig;
  output: OutputFormat;
  log: Logger;
  print: (text: string) => void;
}

export interface CliIO {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
}

/** Reads the global options from the root command once a verb runs. */
export function contextOf(command: Command, io: CliIO): CliContext {
  const opts = command.optsWithGlobals<{ output: string; config?: string; logLevel?: string }>();
  const output = parseOutputFormat(opts.output);
  const overrides: Record<string, unknown> = {};
  if (opts.logLevel) overrides['logLevel'] = opts.logLevel;
  const config = loadConfig({ path: opts.config, overrides });
  const log = createLogger({ component: 'cli', level: config.logLevel });
  return { config, output, log, print: io.stdout };
}

export function buildProgram(io: CliIO): Command {
  const program = new Command('membrane')
    .description('Membrane: eBPF networking, security and observability for Kubernetes')
    .addOption(new Option('-o, --output <format>', `output format: ${OUTPUT_FORMATS.join(' | ')}`).default('human'))
    .option('-c, --config <path>', 'config file (YAML or JSON); also MEMBRANE_CONFIG')
    .option('--log-level <level>', 'log level: fatal, error, warn, info, debug, trace, silent')
    .showHelpAfterError('(run with --help for usage)')
    .configureOutput({ writeOut: io.stdout, writeErr: io.stderr })
    .exitOverride()
    // Validate the global options before any verb does work, so a bad -o changes nothing.
    .hook('preAction', (_root, action) => {
      parseOutputFormat(action.optsWithGlobals<{ output: string }>().output);
    });
  registerLabCommands(program, io);
  registerDemoCommand(program, io);
  registerAgentCommand(program, io);
  registerAgentVerbs(program, io);
  registerPendingVerbs(program);
  program.commands.forEach(applyExitOverride);
  return program;
}

function applyExitOverride(command: Command): void {
  command.exitOverride();
  command.commands.forEach(applyExitOverride);
}

/** Runs the CLI and returns the process exit code; never throws. */
export async function runCli(argv: string[], io: CliIO): Promise<number> {
  const program = buildProgram(io);
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version exit with code 0; usage mistakes were already printed by commander.
      return err.exitCode === 0 ? 0 : 2;
    }
    if (err instanceof UsageError) {
      io.stderr(`membrane: ${err.message}\n`);
      return 2;
    }
    if (err instanceof NotAvailableError) {
      io.stderr(`membrane: ${err.message}\n`);
      return 3;
    }
    io.stderr(`membrane: ${(err as Error).message}\n`);
    return 1;
  }
}
