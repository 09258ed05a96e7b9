/**
 * CNI benchmark for `npm run bench`: what a container runtime waits for.
 *
 *   cni/add-sequential      ADD latency p50/p99 over 50 pods added one after another
 *   cni/add-concurrent-100  100 pods added at once: wall time, p99, failures
 *   cni/del-sequential      DEL latency p50 (endpoint, address and link removed)
 *   (the sequential ones also split into their phases, from the plugin's log:
 *   the agent's IPAM, the netlink wiring, the agent's endpoint attach / detach)
 *
 * Every ADD is the real path: the plugin binary, the agent's IPAM and endpoint
 * API over its socket, the veth wiring and the datapath attach. The baseline of
 * the same run is the plugin's VERSION round-trip (process start, stdin, stdout),
 * sequential or 100 at once, so the ratio is what the networking work costs on
 * top of merely running the binary. Target: no failures, p99 < 100 ms.
 *
 * Needs root. Runs its own lab (the CNI e2e test's ports and ranges: do not run
 * both at once) and its own agent, and removes every namespace, link and pin.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api } from '@kubernetes/client-node';
import { agentSocketOf, startAgentProcess, stopAgentProcess } from '../agent/process.js';
import type { BenchContext } from '../bench/groups.js';
import { result, type BenchResult } from '../bench/results.js';
import { resolveConfig, type MembraneConfig } from '../config/config.js';
import { labKubeConfig } from '../lab/kube.js';
import { labDown, labUp } from '../lab/lab.js';
import { labLayout } from '../lab/layout.js';
import { createLogger, type Logger } from '../log/logger.js';
import { cniPluginPath, invokeCni, requirePlugin, type CniInvocation } from './invoke.js';

const SEQUENTIAL = 50;
const CONCURRENT = 100;
const NAMESPACE = 'cni-bench';
const NETWORK = 'membrane-bench';
const NODE = 'membrane-bench-node';

export function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] ?? Number.NaN;
}

function benchConfig(dir: string): MembraneConfig {
  return resolveConfig([
    {
      source: 'cni bench',
      values: {
        nodeName: NODE,
        lab: {
          dir,
          nodeName: NODE,
          etcdClientPort: 22990,
          etcdPeerPort: 23000,
          apiserverPort: 22643,
          controllerManagerPort: 22457,
          clusterCIDR: '10.239.0.0/16',
          podCIDR: '10.239.7.0/24',
          serviceCIDR: '10.240.0.0/16',
          // Control plane only: this benchmark runs its own agent and calls the plugin itself
          // (a lab node simulator would realize the same pods through CNI at the same time).
          node: 'none',
        },
      },
    },
  ]);
}

interface Agent {
  socket: string;
  stop(): Promise<void>;
}

/** `membrane agent` as its own process (ts/agent/process.ts). */
async function startAgent(kubeconfig: string, stateDir: string, pinDir: string, log: Logger): Promise<Agent> {
  const settings = { kubeconfig, nodeName: NODE, stateDir, pinDir, logFile: join(stateDir, 'agent.log') };
  const removePins = () => rmSync(pinDir, { recursive: true, force: true });
  const { child } = await startAgentProcess(settings, 120_000).catch((err: unknown) => {
    removePins();
    throw err;
  });
  log.info({ socket: agentSocketOf(settings) }, 'agent ready');
  return {
    socket: agentSocketOf(settings),
    stop: async () => {
      await stopAgentProcess(child);
      removePins();
    },
  };
}

async function timed<T>(work: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const t0 = process.hrtime.bigint();
  const value = await work();
  return { ms: Number(process.hrtime.bigint() - t0) / 1e6, value };
}

interface Pod {
  name: string;
  netns: string;
  containerId: string;
}

/**
 * The phases of each ADD and DEL, from the plugin's log lines:
 * ADD "... (address A ms, wiring W ms, endpoint E ms)", DEL "agent {...} in A ms; mbr... removed (L ms)".
 */
export function cniPhases(log: string): { address: number[]; wiring: number[]; endpoint: number[]; delAgent: number[]; delLink: number[] } {
  const out = { address: [] as number[], wiring: [] as number[], endpoint: [] as number[], delAgent: [] as number[], delLink: [] as number[] };
  for (const m of log.matchAll(/\(address ([\d.]+) ms, wiring ([\d.]+) ms, endpoint ([\d.]+) ms\)/g)) {
    out.address.push(Number(m[1]));
    out.wiring.push(Number(m[2]));
    out.endpoint.push(Number(m[3]));
  }
  for (const m of log.matchAll(/agent \{.*\} in ([\d.]+) ms; \S+ removed \(([\d.]+) ms\)/g)) {
    out.delAgent.push(Number(m[1]));
    out.delLink.push(Number(m[2]));
  }
  return out;
}

export async function cniBench(ctx: { log?: Logger } | BenchContext = {}): Promise<BenchResult[]> {
  if (process.getuid?.() !== 0) throw new Error('the CNI benchmark needs root (network namespaces, veth pairs, BPF, the lab)');
  const log = ctx.log ?? createLogger({ component: 'cni-bench' });
  const plugin = requirePlugin(cniPluginPath());
  const labDir = `/tmp/membrane-lab-bench-cni-${process.pid}`;
  const config = benchConfig(labDir);
  const stateDir = mkdtempSync(join(tmpdir(), 'mbr-cni-bench-'));
  const pinDir = `/sys/fs/bpf/membrane-cni-bench-${process.pid}`;
  const netnsPrefix = `mbr-cni-bench-${process.pid}-`;
  const pods: Pod[] = [];
  let agent: Agent | undefined;
  try {
    await labUp(config, { log });
    const kc = labKubeConfig({ dir: labDir });
    const core = kc.makeApiClient(CoreV1Api);
    await core.createNamespace({ body: { metadata: { name: NAMESPACE } } });
    for (let i = 0; i < SEQUENTIAL + CONCURRENT; i++) {
      const name = `bench-${i}`;
      // The default ServiceAccount appears shortly after the namespace; pods without it are refused.
      for (let attempt = 0; ; attempt++) {
        try {
          await core.createNamespacedPod({ namespace: NAMESPACE, body: { metadata: { name, labels: { app: `bench-${i % 5}` } }, spec: { nodeName: NODE, automountServiceAccountToken: false, containers: [{ name: 'main', image: 'membrane.io/echo:lab' }] } } });
          break;
        } catch (err) {
          if (attempt > 100) throw err;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      execFileSync('ip', ['netns', 'add', `${netnsPrefix}${i}`]);
      pods.push({ name, netns: `/var/run/netns/${netnsPrefix}${i}`, containerId: `bench-${process.pid}-${i}` });
    }
    agent = await startAgent(labLayout(labDir).kubeconfig, stateDir, pinDir, log);
    const cniLog = join(stateDir, 'cni.log');
    const conf = { cniVersion: '1.1.0', name: NETWORK, type: 'membrane-cni', agentSocket: agent.socket, logFile: cniLog };
    const add = (p: Pod): CniInvocation => ({ command: 'ADD', containerId: p.containerId, netns: p.netns, ifname: 'eth0', args: { K8S_POD_NAMESPACE: NAMESPACE, K8S_POD_NAME: p.name }, config: conf });
    const del = (p: Pod): CniInvocation => ({ command: 'DEL', containerId: p.containerId, netns: p.netns, ifname: 'eth0', config: conf });
    const version: CniInvocation = { command: 'VERSION', config: conf };

    // Baselines: the bare process round-trip, sequential and 100 at once.
    const versionMs: number[] = [];
    for (let i = 0; i < SEQUENTIAL; i++) versionMs.push((await timed(() => invokeCni(plugin, version))).ms);
    const versionBurst = await timed(() => Promise.all(Array.from({ length: CONCURRENT }, () => timed(() => invokeCni(plugin, version)))));

    // Sequential ADD, then sequential DEL.
    const addMs: number[] = [];
    let sequentialFailures = 0;
    for (const p of pods.slice(0, SEQUENTIAL)) {
      const { ms, value } = await timed(() => invokeCni(plugin, add(p)));
      addMs.push(ms);
      if (!value.ok) {
        sequentialFailures++;
        log.warn({ pod: p.name, error: value.error }, 'ADD failed');
      }
    }
    const delMs: number[] = [];
    for (const p of pods.slice(0, SEQUENTIAL)) delMs.push((await timed(() => invokeCni(plugin, del(p)))).ms);
    const phases = cniPhases(readFileSync(cniLog, 'utf8'));

    // 100 at once.
    const burst = pods.slice(SEQUENTIAL);
    const concurrent = await timed(() => Promise.all(burst.map((p) => timed(() => invokeCni(plugin, add(p)).catch((err: Error) => ({ ok: false as const, error: { code: -1, msg: err.message } }))))));
    const failures = concurrent.value.filter((r) => !r.value.ok);
    for (const f of failures.slice(0, 5)) log.warn({ error: (f.value as { error: unknown }).error }, 'concurrent ADD failed');
    await Promise.all(burst.map((p) => invokeCni(plugin, del(p))));

    const vSeqP50 = percentile(versionMs, 50);
    const vSeqP99 = percentile(versionMs, 99);
    const vBurstP99 = percentile(versionBurst.value.map((v) => v.ms), 99);
    const burstMs = concurrent.value.map((r) => r.ms);
    return [
      result({ bench: 'cni/add-sequential', metric: 'p50', value: percentile(addMs, 50), unit: 'ms', baseline: vSeqP50, target: '< 100 ms' }),
      result({ bench: 'cni/add-sequential', metric: 'p99', value: percentile(addMs, 99), unit: 'ms', baseline: vSeqP99, target: '< 100 ms' }),
      result({ bench: 'cni/add-sequential', metric: 'failures', value: sequentialFailures, unit: `of ${SEQUENTIAL}`, baseline: 0, target: '0' }),
      result({ bench: 'cni/add-sequential', metric: 'p50 address (agent IPAM)', value: percentile(phases.address, 50), unit: 'ms', baseline: vSeqP50 }),
      result({ bench: 'cni/add-sequential', metric: 'p50 wiring (netlink)', value: percentile(phases.wiring, 50), unit: 'ms', baseline: vSeqP50 }),
      result({ bench: 'cni/add-sequential', metric: 'p50 endpoint (agent attach)', value: percentile(phases.endpoint, 50), unit: 'ms', baseline: vSeqP50 }),
      result({ bench: 'cni/del-sequential', metric: 'p50', value: percentile(delMs, 50), unit: 'ms', baseline: vSeqP50 }),
      result({ bench: 'cni/del-sequential', metric: 'p50 agent (detach, release)', value: percentile(phases.delAgent, 50), unit: 'ms', baseline: vSeqP50 }),
      result({ bench: 'cni/del-sequential', metric: 'p50 link removal (netlink)', value: percentile(phases.delLink, 50), unit: 'ms', baseline: vSeqP50 }),
      result({ bench: 'cni/add-concurrent-100', metric: 'total', value: concurrent.ms, unit: 'ms', baseline: versionBurst.ms }),
      result({ bench: 'cni/add-concurrent-100', metric: 'p99', value: percentile(burstMs, 99), unit: 'ms', baseline: vBurstP99 }),
      result({ bench: 'cni/add-concurrent-100', metric: 'failures', value: failures.length, unit: `of ${CONCURRENT}`, baseline: 0, target: '0' }),
    ];
  } finally {
    await agent?.stop().catch((err: Error) => log.warn({ err }, 'stopping the agent failed'));
    for (const p of pods) {
      try {
        execFileSync('ip', ['netns', 'del', p.netns.split('/').pop()!], { stdio: 'ignore' });
      } catch {
        /* already gone */
      }
    }
    // Host links of a DEL that failed: the plugin names them mbr* with the network in the alias.
    const links = JSON.parse(execFileSync('ip', ['-j', '-d', 'link', 'show'], { encoding: 'utf8' })) as Array<{ ifname: string; ifalias?: string }>;
    for (const l of links) if ((l.ifalias ?? '').startsWith(`membrane-cni:${NETWORK}:`)) execFileSync('ip', ['link', 'del', l.ifname], { stdio: 'ignore' });
    if (existsSync(labDir)) await labDown(config, { log, purge: true }).catch((err: Error) => log.warn({ err }, 'lab down failed'));
    rmSync(stateDir, { recursive: true, force: true });
  }
}
