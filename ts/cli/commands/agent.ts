/**
 * `membrane agent`: runs the node agent in the foreground (the DaemonSet's
 * container command). SIGTERM/SIGINT stop it gracefully; the datapath (maps,
 * programs, links) stays pinned so pods keep their traffic and policy, and the
 * next start adopts it.
 */
import type { Command } from 'commander';
import { startApiServer } from '../../api/server.js';
import { Agent } from '../../agent/agent.js';
import { agentRoutes } from '../../agent/routes.js';
import { createLogger } from '../../log/logger.js';
import { contextOf, type CliIO } from '../program.js';

export function registerAgentCommand(program: Command, io: CliIO): void {
  program
    .command('agent')
    .description('Run the Membrane node agent in the foreground (what the DaemonSet runs)')
    .addHelpText(
      'after',
      '\nConfiguration: --config FILE and MEMBRANE_* variables (nodeName, kubeconfig, stateDir, apiSocket, pinDir, bpffsRoot, identity.*).\n' +
        'Needs root (or CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN) and a reachable kube-apiserver.',
    )
    .action(async (_opts: unknown, command: Command) => {
      const ctx = contextOf(command, io);
      const log = createLogger({ component: 'agent', level: ctx.config.logLevel }).child({ node: ctx.config.nodeName });
      const agent = new Agent({ config: ctx.config, log });
      const api = await startApiServer({ socketPath: ctx.config.apiSocket, routes: agentRoutes(agent), log: log.child({ part: 'api' }) });
      let stopping = false;
      const stopped = new Promise<void>((resolve) => {
        const stop = (signal: string) => {
          if (stopping) return;
          stopping = true;
          log.info({ signal }, 'stopping the agent');
          void (async () => {
            await api.close();
            await agent.stop();
            resolve();
          })();
        };
        process.once('SIGTERM', () => stop('SIGTERM'));
        process.once('SIGINT', () => stop('SIGINT'));
      });
      try {
        await agent.start();
      } catch (err) {
        log.fatal({ err }, 'the agent could not start; see the error above, fix it and restart (nothing in the datapath was removed)');
        await api.close();
        await agent.stop().catch(() => undefined);
        throw err;
      }
      await stopped;
    });
}
