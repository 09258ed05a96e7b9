/**
 * `npm run bench -- agent`: the agent at cluster scale, on a lab of its own.
 *
 *   5000 pods in 1000 namespaces, 2000 identities, spread over 10 other nodes
 *   (their identities exist: another node's agent made them), each with an IP.
 *
 * Measured, each beside a baseline of the same run:
 * - initial sync: process start to ready, loaded cluster vs. empty cluster;
 * - agent RSS when ready, loaded vs. empty;
 * - restart-to-ready at scale vs. the first (cold) start;
 * - event-to-map latency p50/p99 for a pod getting its IP (create) and for a
 *   relabel to another existing identity, vs. the apiserver write itself.
 */
import { rmSync, mkdirSync } from 'node:fs';
import { CoreV1Api, CustomObjectsApi, type KubeConfig, type V1Namespace, type V1Pod } from '@kubernetes/client-node';
import { defaultConfig, type MembraneConfig } from '../config/config.js';
import { ipcacheMap } from '../datapath/maps.js';
import { purgeDatapath } from '../datapath/lxc.js';
import { podSecurityLabels } from '../identity/labels.js';
import { identityFromLabels, identityObject, IDENTITY_GROUP, IDENTITY_PLURAL, IDENTITY_VERSION } from '../identity/object.js';
import { labDown, labUp } from '../lab/lab.js';
import { labKubeConfig } from '../lab/kube.js';
import type { Logger } from '../log/logger.js';
import { result, type BenchResult } from '../bench/results.js';
import { rssBytes, startAgentProcess, stopAgentProcess, type AgentProcessSettings } from './process.js';

const NAMESPACES = 1000;
const PODS = 5000;
const LABEL_SETS_PER_NS = 2; // 1000 x 2 = 2000 identities
const REMOTE_NODES = 10;
const LATENCY_SAMPLES = 200;
const SETTLE_MS = 15_000;

function benchConfig(): MembraneConfig {
  const c = defaultConfig();
  c.lab = { ...c.lab, dir: '/tmp/membrane-lab-bench-agent', nodeName: 'bench-node', etcdClientPort: 21890, etcdPeerPort: 21900, apiserverPort: 21543, controllerManagerPort: 21357, clusterCIDR: '10.229.0.0/16', podCIDR: '10.229.0.0/24', serviceCIDR: '10.230.0.0/16', node: 'none' };
  return c;
}

/** Runs `fn` over `items` with at most `width` in flight; retries each item (apiserver hiccups) a few times. */
async function pool<T>(items: readonly T[], width: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const item = items[next++]!;
      for (let attempt = 1; ; attempt++) {
        try {
          await fn(item);
          break;
        } catch (err) {
          if (attempt >= 20) throw err;
          await new Promise((r) => setTimeout(r, 100 * attempt));
        }
      }
    }
  };
  await Promise.all(Array.from({ length: width }, worker));
}

const podIp = (i: number) => `10.229.${1 + Math.floor(i / 250)}.${1 + (i % 250)}`;

async function loadCluster(kc: KubeConfig, log: Logger): Promise<void> {
  const core = kc.makeApiClient(CoreV1Api);
  const custom = kc.makeApiClient(CustomObjectsApi);
  const t0 = Date.now();
  await pool([...Array(REMOTE_NODES).keys()], 10, async (n) => {
    await core.createNode({ body: { metadata: { name: `bench-remote-${n}` }, spec: {} } }).catch(ignoreExists);
  });
  const namespaces: V1Namespace[] = [];
  await pool([...Array(NAMESPACES).keys()], 32, async (n) => {
    namespaces[n] = await core.createNamespace({ body: { metadata: { name: `bench-ns-${n}`, labels: { team: `team-${n % 50}` } } } }).catch(async (err) => {
      ignoreExists(err);
      return core.readNamespace({ name: `bench-ns-${n}` });
    });
  });
  log.info({ namespaces: NAMESPACES, ms: Date.now() - t0 }, 'namespaces created');
  const identities = new Map<string, ReturnType<typeof identityFromLabels>>();
  await pool([...Array(PODS).keys()], 32, async (i) => {
    const ns = i % NAMESPACES;
    const name = `pod-${i}`;
    const body: V1Pod = {
      metadata: { name, labels: { app: `app-${Math.floor(i / NAMESPACES) % LABEL_SETS_PER_NS}`, 'pod-template-hash': `h${i}` } },
      spec: { nodeName: `bench-remote-${i % REMOTE_NODES}`, automountServiceAccountToken: false, containers: [{ name: 'main', image: 'membrane.io/echo:lab' }] },
    };
    let pod: V1Pod;
    try {
      pod = await core.createNamespacedPod({ namespace: `bench-ns-${ns}`, body });
    } catch (err) {
      ignoreExists(err);
      pod = await core.readNamespacedPod({ namespace: `bench-ns-${ns}`, name });
    }
    const labels = podSecurityLabels({ namespace: `bench-ns-${ns}`, podLabels: pod.metadata?.labels ?? {}, namespaceLabels: namespaces[ns]?.metadata?.labels ?? {}, serviceAccount: pod.spec?.serviceAccountName, clusterName: 'default' });
    if (!labels.ok) throw new Error(labels.reason);
    const key = JSON.stringify(labels.labels);
    if (!identities.has(key)) identities.set(key, identityFromLabels(256 + identities.size, labels.labels));
    pod.status = { ...pod.status, podIP: podIp(i), podIPs: [{ ip: podIp(i) }], phase: 'Running' };
    await core.replaceNamespacedPodStatus({ namespace: `bench-ns-${ns}`, name, body: pod });
  });
  log.info({ pods: PODS, ms: Date.now() - t0 }, 'pods created with addresses');
  await pool([...identities.values()], 32, async (id) => {
    await custom.createClusterCustomObject({ group: IDENTITY_GROUP, version: IDENTITY_VERSION, plural: IDENTITY_PLURAL, body: identityObject(id) }).catch(ignoreExists);
  });
  log.info({ identities: identities.size, ms: Date.now() - t0 }, 'identities created');
}

function ignoreExists(err: unknown): void {
  if ((err as { code?: number }).code !== 409) throw err;
}

function percentile(values: number[], p: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? Number.NaN;
}

async function waitFor(probe: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

export async function agentBench(log: Logger): Promise<BenchResult[]> {
  const config = benchConfig();
  const settings: AgentProcessSettings = {
    kubeconfig: `${config.lab.dir}/kubeconfig`,
    nodeName: config.lab.nodeName,
    stateDir: '/tmp/membrane-bench-agent-state',
    pinDir: '/sys/fs/bpf/mbr-bench-agent',
    logFile: '/tmp/membrane-bench-agent.log',
  };
  const out: BenchResult[] = [];
  rmSync(settings.stateDir, { recursive: true, force: true });
  mkdirSync(settings.stateDir, { recursive: true });
  await purgeDatapath({ pinDir: settings.pinDir }).catch(() => undefined);
  await labDown(config, { log, purge: true }).catch(() => undefined);
  await labUp(config, { log });
  try {
    const kc = labKubeConfig(config.lab);
    // Baselines on the empty cluster.
    const empty = await startAgentProcess(settings);
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    const emptyRss = rssBytes(empty.child.pid!);
    await stopAgentProcess(empty.child);
    await loadCluster(kc, log);

    // Sync at scale: a fresh state dir (first start on this node), pinned maps from the empty run.
    const loaded = await startAgentProcess(settings);
    const ipcache = ipcacheMap(settings.pinDir);
    const entries = (await ipcache.dump()).filter(([k, v]) => k.prefixLen === 32 && v.identity >= 256).length;
    if (entries < PODS) throw new Error(`the agent was ready with ${entries} pod entries in the ipcache; expected ${PODS}`);
    const peakRss = rssBytes(loaded.child.pid!);
    // Steady state: what the agent holds once the sync's garbage is collected (V8 gives
    // memory back when idle). The same wait applies to the empty baseline.
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    const loadedRss = rssBytes(loaded.child.pid!);
    out.push(result({ bench: 'agent/initial-sync', metric: 'start_to_ready_ms', value: loaded.readyMs, unit: 'ms', baseline: empty.readyMs, target: '< 5000 ms (5k pods, 1k ns, 2k ids)' }));
    out.push(result({ bench: 'agent/rss', metric: 'rss_mb', value: loadedRss / 2 ** 20, unit: 'MB', baseline: emptyRss / 2 ** 20, target: '< 150 MB (steady state)' }));
    out.push(result({ bench: 'agent/rss', metric: 'rss_at_ready_mb', value: peakRss / 2 ** 20, unit: 'MB', baseline: emptyRss / 2 ** 20 }));

    // Event-to-map latency: a pod of an existing identity gets its IP; a pod moves to another existing identity.
    const core = kc.makeApiClient(CoreV1Api);
    const createLat: number[] = [];
    const relabelLat: number[] = [];
    const writeLat: number[] = [];
    for (let i = 0; i < LATENCY_SAMPLES; i++) {
      const ns = `bench-ns-${i % NAMESPACES}`;
      const name = `latency-${i}`;
      const ip = `10.229.100.${1 + (i % 250)}`;
      const pod = await core.createNamespacedPod({ namespace: ns, body: { metadata: { name, labels: { app: 'app-0' } }, spec: { nodeName: 'bench-remote-0', automountServiceAccountToken: false, containers: [{ name: 'main', image: 'membrane.io/echo:lab' }] } } });
      pod.status = { ...pod.status, podIP: ip, podIPs: [{ ip }], phase: 'Running' };
      const t0 = performance.now();
      await core.replaceNamespacedPodStatus({ namespace: ns, name, body: pod });
      writeLat.push(performance.now() - t0);
      const key = { prefixLen: 32, addr: ip };
      await waitFor(async () => ((await ipcache.lookup([key]))[0]?.identity ?? 0) >= 256, 30_000, `${ns}/${name} in the ipcache`);
      createLat.push(performance.now() - t0);
      const before = (await ipcache.lookup([key]))[0]!.identity;
      const current = await core.readNamespacedPod({ namespace: ns, name });
      current.metadata!.labels = { app: 'app-1' };
      const t1 = performance.now();
      await core.replaceNamespacedPod({ namespace: ns, name, body: current });
      await waitFor(async () => ((await ipcache.lookup([key]))[0]?.identity ?? before) !== before, 30_000, `${ns}/${name} relabelled`);
      relabelLat.push(performance.now() - t1);
      await core.deleteNamespacedPod({ namespace: ns, name, gracePeriodSeconds: 0 });
    }
    const writeP50 = percentile(writeLat, 50);
    for (const [what, lat] of [['pod-create', createLat], ['pod-relabel', relabelLat]] as const) {
      out.push(result({ bench: `agent/event-to-map/${what}`, metric: 'p50_ms', value: percentile(lat, 50), unit: 'ms', baseline: writeP50, target: 'baseline: the apiserver write p50' }));
      out.push(result({ bench: `agent/event-to-map/${what}`, metric: 'p99_ms', value: percentile(lat, 99), unit: 'ms', baseline: writeP50 }));
    }

    // Restart at scale: state dir and pins as a real restart finds them.
    await stopAgentProcess(loaded.child);
    const restarted = await startAgentProcess(settings);
    out.push(result({ bench: 'agent/restart-to-ready', metric: 'start_to_ready_ms', value: restarted.readyMs, unit: 'ms', baseline: empty.readyMs, target: '< 3000 ms' }));
    await stopAgentProcess(restarted.child);
  } finally {
    await purgeDatapath({ pinDir: settings.pinDir }).catch(() => undefined);
    await labDown(config, { log, purge: true });
    rmSync(settings.stateDir, { recursive: true, force: true });
  }
  return out;
}
