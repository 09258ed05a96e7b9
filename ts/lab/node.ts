/**
 * The lab's node: what `lab up` starts after the control plane, and `lab down`
 * stops before it.
 *
 *   membrane-agent   `membrane --config <lab>/agent/config.yaml agent`: the real
 *                    agent, with state, socket and bpffs pins of this lab's own
 *                    (so a lab never touches the host's /var/run/membrane or
 *                    /sys/fs/bpf/membrane)
 *   node-simulator   `membrane lab node-simulator --lab-dir=<lab>`: kubelet and the
 *                    container runtime for the lab's Node (ts/lab/sim/simulator.ts)
 *
 * Both are detached processes recorded in state.json (pid + start time) like the
 * control plane. Stopping: the simulator first (it tears every pod down through
 * CNI DEL while the agent still answers), then whatever pod records remain are
 * swept, then the agent; its state directory and bpffs pins are removed last.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { AGENT_NODE_OPTIONS } from '../agent/process.js';
import { callAgent } from '../api/client.js';
import type { Healthz } from '../api/types.js';
import { cniPluginPath } from '../cni/invoke.js';
import type { LabConfig } from '../config/config.js';
import type { Logger } from '../log/logger.js';
import type { LabLayout } from './layout.js';
import { isOurs, spawnDetached, stopProcess, tailFile, type ProcessRecord, type StopResult } from './proc.js';
import { repoRoot } from './repo.js';
import { sweepSimulatedPods } from './sim/simulator.js';

export const NODE_PROCESSES = ['membrane-agent', 'node-simulator'] as const;
export type NodeProcessName = (typeof NODE_PROCESSES)[number];

export interface NodeProcessRecord extends ProcessRecord {
  name: NodeProcessName;
  log: string;
  args: string[];
  startedAt: string;
}

/** Where the lab's node keeps things (all inside lab.dir, except the bpffs pins). */
export interface NodeLayout {
  agentDir: string;
  agentConfig: string;
  agentSocket: string;
  /** bpffs directory of this lab's datapath: /sys/fs/bpf/membrane-lab-<hash of lab.dir>. */
  pinDir: string;
  simDir: string;
  simReady: string;
  cniLog: string;
  serverLog: string;
  log: (p: NodeProcessName) => string;
  /** <lab.dir>/run/<name>.pid, like the control plane's (removed with run/ by lab down). */
  pidFile: (p: NodeProcessName) => string;
}

export function nodeLayout(l: LabLayout): NodeLayout {
  const tag = createHash('sha256').update(l.dir).digest('hex').slice(0, 12);
  return {
    agentDir: join(l.dir, 'agent'),
    agentConfig: join(l.dir, 'agent', 'config.yaml'),
    agentSocket: join(l.dir, 'agent', 'agent.sock'),
    pinDir: `/sys/fs/bpf/membrane-lab-${tag}`,
    simDir: join(l.run, 'sim'),
    simReady: join(l.run, 'sim', 'ready'),
    cniLog: join(l.logs, 'cni.log'),
    serverLog: join(l.logs, 'pod-servers.log'),
    log: (p) => join(l.logs, `${p}.log`),
    pidFile: (p) => join(l.run, `${p}.pid`),
  };
}

/** node [--import=tsx] <the CLI entry of this build>. */
export function cliCommand(): string[] {
  const here = fileURLToPath(import.meta.url);
  if (here.endsWith('.js')) return [process.execPath, join(repoRoot(), 'dist', 'cli', 'main.js')];
  return [process.execPath, `--import=${import.meta.resolve('tsx')}`, join(repoRoot(), 'ts', 'cli', 'main.ts')];
}

/** The agent's config file for this lab (keys of ts/config). */
export function agentConfigText(lab: LabConfig, l: LabLayout, n: NodeLayout): string {
  return stringify({
    nodeName: lab.nodeName,
    kubeconfig: l.kubeconfig,
    stateDir: n.agentDir,
    apiSocket: n.agentSocket,
    pinDir: n.pinDir,
    logLevel: 'info',
  });
}

async function agentReady(socket: string): Promise<{ ok: boolean; detail: string }> {
  try {
    const h = await callAgent<Healthz>({ socketPath: socket, method: 'GET', path: '/v1/healthz', timeoutMs: 2000 });
    return { ok: h.ok, detail: h.detail ?? 'ready' };
  } catch (err) {
    return { ok: false, detail: (err as Error).message };
  }
}

export interface StartNodeOptions {
  lab: LabConfig;
  l: LabLayout;
  log: Logger;
  /** The membrane-cni binary (checked to exist). */
  cniPlugin: string;
  timeoutMs: number;
  signal?: AbortSignal | undefined;
  /** Called with each record the moment its process exists (so a failed up can stop it). */
  record: (rec: NodeProcessRecord) => void;
}

export class NodeStartError extends Error {
  override name = 'NodeStartError';
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what: string, rec: NodeProcessRecord, probe: () => Promise<{ ok: boolean; detail: string }>, timeoutMs: number, signal?: AbortSignal): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    if (!isOurs(rec)) throw new NodeStartError(`${rec.name} exited while starting (pid ${rec.pid}); its log is ${rec.log}. Last lines:\n${tailFile(rec.log, 20)}`);
    const p = await probe();
    if (p.ok) return;
    last = p.detail;
    if (signal?.aborted) throw new NodeStartError(`interrupted while ${rec.name} was starting`);
    if (Date.now() > deadline) throw new NodeStartError(`${what} did not happen within ${timeoutMs / 1000}s (last: ${last}); the log is ${rec.log}. Last lines:\n${tailFile(rec.log, 20)}`);
    await sleep(100);
  }
}

/** Starts the agent, waits until it is ready, then the simulator, and waits until it watches pods. */
export async function startNode(o: StartNodeOptions): Promise<void> {
  const n = nodeLayout(o.l);
  const cniPlugin = o.cniPlugin;
  const conflist = join(repoRoot(), 'deploy', 'cni', '10-membrane.conflist');
  if (!existsSync(conflist)) throw new NodeStartError(`${conflist} is missing: the lab's node simulator calls the CNI plugin with it`);
  rmSync(n.agentDir, { recursive: true, force: true });
  mkdirSync(n.agentDir, { recursive: true, mode: 0o700 });
  mkdirSync(n.simDir, { recursive: true, mode: 0o700 });
  writeFileSync(n.agentConfig, agentConfigText(o.lab, o.l, n), { mode: 0o600 });
  for (const p of NODE_PROCESSES) writeFileSync(n.log(p), '', { mode: 0o600 });

  const start = (name: NodeProcessName, args: string[]): NodeProcessRecord => {
    const [node, ...rest] = cliCommand();
    const argv = [...(name === 'membrane-agent' ? [AGENT_NODE_OPTIONS] : []), ...rest, ...args];
    const rec: NodeProcessRecord = { ...spawnDetached(node!, argv, n.log(name), o.l.dir), name, log: n.log(name), args: argv, startedAt: new Date().toISOString() };
    o.record(rec);
    writeFileSync(n.pidFile(name), `${rec.pid}\n`);
    o.log.info({ labComponent: name, pid: rec.pid, log: rec.log }, `started ${name}`);
    return rec;
  };

  const agent = start('membrane-agent', [`--config=${n.agentConfig}`, 'agent']);
  await waitFor('the agent becoming ready (GET /v1/healthz)', agent, () => agentReady(n.agentSocket), o.timeoutMs, o.signal);
  o.log.info({ labComponent: 'membrane-agent', seconds: (Date.now() - Date.parse(agent.startedAt)) / 1000 }, 'membrane-agent is ready');

  const sim = start('node-simulator', ['lab', 'node-simulator', `--lab-dir=${o.l.dir}`, `--cni-plugin=${cniPlugin}`]);
  await waitFor('the node simulator watching pods', sim, async () => ({ ok: existsSync(n.simReady), detail: `no ${n.simReady} yet` }), o.timeoutMs, o.signal);
  o.log.info({ labComponent: 'node-simulator' }, 'node-simulator is watching pods');
}

export interface StopNodeResult {
  stopped: { component: NodeProcessName; pid: number; outcome: StopResult['outcome']; seconds: number }[];
  podsSwept: string[];
  removed: string[];
}

/** Stops the simulator (it tears its pods down), sweeps leftover pods, stops the agent, removes its state and pins. */
export async function stopNode(l: LabLayout, recs: Partial<Record<NodeProcessName, NodeProcessRecord>>, cniPlugin: string | undefined, log: Logger): Promise<StopNodeResult> {
  const n = nodeLayout(l);
  const stopped: StopNodeResult['stopped'] = [];
  const errors: string[] = [];
  const sim = recs['node-simulator'];
  if (sim) {
    const r = await stopProcess(sim, 120_000);
    stopped.push({ component: 'node-simulator', pid: sim.pid, outcome: r.outcome, seconds: r.seconds });
    if (r.outcome !== 'not-running') log.info({ labComponent: 'node-simulator', pid: sim.pid, outcome: r.outcome }, 'stopped node-simulator');
  }
  let podsSwept: string[] = [];
  if (existsSync(n.simDir)) {
    const plugin = cniPlugin ?? cniPluginPath();
    const swept = await sweepSimulatedPods(n.simDir, plugin, log);
    podsSwept = swept.removed;
    errors.push(...swept.failed);
    if (swept.removed.length) log.warn({ pods: swept.removed }, 'tore down pods the node simulator left behind');
  }
  const agent = recs['membrane-agent'];
  if (agent) {
    const r = await stopProcess(agent, 15_000);
    stopped.push({ component: 'membrane-agent', pid: agent.pid, outcome: r.outcome, seconds: r.seconds });
    if (r.outcome !== 'not-running') log.info({ labComponent: 'membrane-agent', pid: agent.pid, outcome: r.outcome }, 'stopped membrane-agent');
  }
  if (errors.length) throw new Error(`could not tear down every simulated pod:\n  ${errors.join('\n  ')}`);
  const removed: string[] = [];
  for (const p of [n.agentDir, n.pinDir]) {
    if (existsSync(p)) {
      rmSync(p, { recursive: true, force: true });
      removed.push(p);
    }
  }
  return { stopped, podsSwept, removed };
}

export interface NodeProcessStatus {
  name: NodeProcessName;
  running: boolean;
  pid: number | null;
  healthy: boolean | null;
  detail: string;
  log: string;
}

export async function nodeProcessStatus(l: LabLayout, recs: Partial<Record<NodeProcessName, NodeProcessRecord>> | undefined): Promise<NodeProcessStatus[]> {
  const n = nodeLayout(l);
  return Promise.all(
    NODE_PROCESSES.map(async (name): Promise<NodeProcessStatus> => {
      const rec = recs?.[name];
      const running = rec !== undefined && isOurs(rec);
      let healthy: boolean | null = null;
      let detail = running ? '' : 'not running';
      if (running && name === 'membrane-agent') {
        const h = await agentReady(n.agentSocket);
        healthy = h.ok;
        detail = h.detail;
      } else if (running) {
        healthy = existsSync(n.simReady);
        detail = healthy ? 'watching pods' : 'starting';
      }
      return { name, running, pid: rec?.pid ?? null, healthy, detail, log: n.log(name) };
    }),
  );
}
