/**
 * The node simulator as a process (`membrane lab node-simulator`, started by
 * `lab up`): reads the lab's state for its settings, watches pods until SIGTERM
 * or SIGINT, then tears every pod down and exits.
 */
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readConflist } from '../../cni/invoke.js';
import type { Logger } from '../../log/logger.js';
import { kubeConfigFromFile } from '../kube.js';
import { LabError, readState } from '../lab.js';
import { labLayout } from '../layout.js';
import { nodeLayout } from '../node.js';
import { repoRoot } from '../repo.js';
import { NodeSimulator } from './simulator.js';

/** The lab Node's InternalIP (registerNode's), reported as each pod's hostIP. */
const LAB_HOST_IP = '127.0.0.1';

export async function runNodeSimulator(labDir: string, cniPlugin: string, log: Logger): Promise<void> {
  const l = labLayout(labDir);
  const state = readState(l);
  if (!state) throw new LabError(`no lab state in ${labDir}: the node simulator runs inside a lab (membrane lab up starts it)`);
  const n = nodeLayout(l);
  const conflist = readConflist(join(repoRoot(), 'deploy', 'cni', '10-membrane.conflist'));
  const sim = new NodeSimulator({
    kc: kubeConfigFromFile(l.kubeconfig),
    nodeName: state.settings.nodeName,
    log,
    cniPlugin,
    conflist,
    // The lab's own agent, and a log of every CNI command next to the lab's other logs.
    pluginOverrides: { agentSocket: n.agentSocket, logFile: n.cniLog },
    stateDir: n.simDir,
    serverLog: n.serverLog,
    hostIP: LAB_HOST_IP,
  });
  const stop = new Promise<string>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  const ac = new AbortController();
  void stop.then(() => ac.abort());
  await sim.start(ac.signal);
  writeFileSync(n.simReady, `${process.pid}\n`);
  log.info({ node: state.settings.nodeName }, 'the node simulator is watching pods');
  const signal = await stop;
  log.info({ signal, pods: sim.realizedPods().length }, 'stopping: tearing down every pod');
  rmSync(n.simReady, { force: true });
  await sim.stop();
  log.info('every pod is torn down');
}
