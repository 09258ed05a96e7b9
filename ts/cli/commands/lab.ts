/**
 * `membrane lab up | down | status | probe`: the single-node lab cluster.
 */
import type { Command } from 'commander';
import { NotAvailableError } from '../output.js';
import type { CliIO } from '../program.js';

export function registerLabCommands(program: Command, _io: CliIO): void {
  const lab = program.command('lab').description('Run a single-node Kubernetes lab on this machine (real etcd, kube-apiserver, kube-controller-manager)');
  for (const verb of ['up', 'down', 'status', 'probe']) {
    lab.command(verb).action(() => {
      throw new NotAvailableError(`membrane lab ${verb} is not available yet.`);
    });
  }
}
