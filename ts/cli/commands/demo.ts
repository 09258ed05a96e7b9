/**
 * `membrane demo`: what Membrane does today, end to end on this machine (needs root).
 */
import type { Command } from 'commander';
import { runDemo } from '../../demo/demo.js';
import { contextOf, type CliIO } from '../program.js';

export function registerDemoCommand(program: Command, io: CliIO): void {
  program
    .command('demo')
    .description('Bring up the lab and show what Membrane does today (needs root; the lab stays up)')
    .action(async (_opts: unknown, command: Command) => {
      const ctx = contextOf(command, io);
      await runDemo({ config: ctx.config, log: ctx.log, say: (line) => io.stdout(line + '\n') });
    });
}
