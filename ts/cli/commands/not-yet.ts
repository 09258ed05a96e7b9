/**
 * Verbs of the published interface whose capability has not landed yet. Each one
 * has real --help text and, when run, says plainly that it is not available and
 * which piece of work brings it. None of them pretends to answer.
 */
import type { Command } from 'commander';
import { NotAvailableError } from '../output.js';

export interface PendingVerb {
  path: string[];
  summary: string;
  arguments?: string;
  /** What must land before this verb works. */
  landsWith: string;
}

export const PENDING_VERBS: readonly PendingVerb[] = [
  { path: ['service', 'list'], summary: 'List load-balanced services and their backends', landsWith: 'service load balancing (kube-proxy replacement)' },
  { path: ['policy', 'get'], summary: 'Show the policy rules the agent has imported, with their revision', landsWith: 'network policy enforcement' },
  { path: ['policy', 'trace'], summary: 'Explain the verdict of policy for a source, destination and port', landsWith: 'network policy enforcement' },
  { path: ['bpf', 'lb', 'list'], summary: 'List the load-balancer maps: frontends, backends, reverse NAT', landsWith: 'service load balancing (kube-proxy replacement)' },
  { path: ['observe'], summary: 'Show flows with verdicts, with filters as in hubble observe', landsWith: 'flow observability (Hubble-style)' },
];

export function notAvailable(verb: PendingVerb): NotAvailableError {
  return new NotAvailableError(`membrane ${verb.path.join(' ')} is not available yet: it lands with ${verb.landsWith}. Nothing was done.`);
}

/** Finds or creates the chain of parent commands, then adds the pending leaf. */
export function registerPendingVerbs(root: Command): void {
  for (const verb of PENDING_VERBS) {
    let parent = root;
    for (const name of verb.path.slice(0, -1)) {
      parent = parent.commands.find((c) => c.name() === name) ?? parent.command(name).description(`${name} commands`);
    }
    const leaf = parent.command(verb.path[verb.path.length - 1]!).description(`${verb.summary} [not available yet]`);
    if (verb.arguments) leaf.argument(verb.arguments);
    leaf.addHelpText('after', `\nNot available yet: lands with ${verb.landsWith}.`);
    leaf.allowUnknownOption(false).action(() => {
      throw notAvailable(verb);
    });
  }
}
