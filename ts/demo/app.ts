/**
 * The demo's chapter for the agent: a small application on the lab's node
 * (frontend -> backend-api -> database, plus DNS), realized by the node
 * simulator through our CNI plugin, then the policies of the README applied
 * (deploy/examples/demo-policies.yaml) and probed, with the flows the datapath
 * reported.
 */
import { readFileSync } from 'node:fs';
import { CoreV1Api, KubernetesObjectApi, loadAllYaml, type KubeConfig, type KubernetesObject, type V1Pod } from '@kubernetes/client-node';
import type { EndpointView } from '../api/types.js';
import { callAgent } from '../api/client.js';
import type { MembraneConfig } from '../config/config.js';
import { FlowStream, type HubbleFlow } from '../datapath/flows.js';
import { labLayout } from '../lab/layout.js';
import { nodeLayout } from '../lab/node.js';
import { parseProbeArgs, resolveProbe, runProbeInNetns } from '../lab/probe.js';
import { repoRoot } from '../lab/repo.js';

const NS = 'demo';

interface AppPod {
  name: string;
  ports: Array<{ port: number; protocol: 'TCP' | 'UDP' }>;
}

const APP: AppPod[] = [
  { name: 'frontend', ports: [{ port: 80, protocol: 'TCP' }] },
  { name: 'backend-api', ports: [{ port: 8080, protocol: 'TCP' }] },
  { name: 'database', ports: [{ port: 5432, protocol: 'TCP' }] },
  { name: 'dns', ports: [{ port: 53, protocol: 'UDP' }, { port: 53, protocol: 'TCP' }] },
];

export const DEMO_POLICIES_FILE = 'deploy/examples/demo-policies.yaml';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitRunning(core: CoreV1Api, names: string[], timeoutMs: number): Promise<Map<string, string>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pods = (await core.listNamespacedPod({ namespace: NS })).items;
    const ips = new Map(pods.filter((p) => p.status?.phase === 'Running' && p.status.podIP).map((p) => [p.metadata!.name!, p.status!.podIP!]));
    if (names.every((n) => ips.has(n))) return ips;
    if (Date.now() > deadline) throw new Error(`demo pods not running after ${timeoutMs / 1000} s: ${names.filter((n) => !ips.has(n)).join(', ')}; see the node simulator log under the lab dir (logs/node-simulator.log)`);
    await sleep(200);
  }
}

async function applyAll(kc: KubeConfig, objects: KubernetesObject[]): Promise<void> {
  const client = KubernetesObjectApi.makeApiClient(kc);
  for (const obj of objects) {
    try {
      await client.create(obj);
    } catch {
      const current = await client.read(obj as KubernetesObject & { metadata: { name: string; namespace: string } });
      await client.replace({ ...obj, metadata: { ...obj.metadata, resourceVersion: current.metadata?.resourceVersion } });
    }
  }
}

export async function appChapter(config: MembraneConfig, kc: KubeConfig, say: (line: string) => void): Promise<void> {
  const core = kc.makeApiClient(CoreV1Api);
  const socketPath = nodeLayout(labLayout(config.lab.dir)).agentSocket;
  const pinDir = nodeLayout(labLayout(config.lab.dir)).pinDir;
  await core.createNamespace({ body: { metadata: { name: NS } } }).catch(() => undefined);
  for (const p of APP) {
    const body: V1Pod = {
      metadata: { name: p.name, labels: { app: p.name } },
      spec: { containers: [{ name: 'main', image: 'membrane.io/echo:lab', ports: p.ports.map((x) => ({ containerPort: x.port, protocol: x.protocol })) }] },
    };
    await core.createNamespacedPod({ namespace: NS, body }).catch(() => undefined);
  }
  const ips = await waitRunning(core, APP.map((p) => p.name), 60_000);
  say(`pods in namespace ${NS}: ${APP.map((p) => `${p.name} ${ips.get(p.name)}`).join(', ')} (network namespaces wired by membrane-cni, addresses from the node's podCIDR)`);
  const endpoints = await callAgent<EndpointView[]>({ socketPath, method: 'GET', path: '/v1/endpoints' });
  for (const ep of endpoints.filter((e) => e.pod.namespace === NS)) say(`  endpoint ${ep.id}: ${ep.pod.name} ${ep.ipv4} identity ${ep.identity} ${ep.labels.filter((l) => l.startsWith('k8s:app=')).join(' ')}`);

  const flows = FlowStream.open(pinDir, config.bpffsRoot);
  try {
    const probe = async (from: string, to: string, port: number) => {
      const args = parseProbeArgs({ from: `${NS}/${from}`, to: `${NS}/${to}`, port: String(port), timeout: '1500' });
      const r = await runProbeInNetns(await resolveProbe(kc, args), args);
      say(`  ${from} -> ${to}:${port}  ${r.outcome}`);
    };
    say('with no policy, every pod reaches every other (Kubernetes default):');
    await probe('frontend', 'database', 5432);
    await flows.read(4096, 50); // drop what the no-policy probes reported

    const yaml = readFileSync(`${repoRoot()}/${DEMO_POLICIES_FILE}`, 'utf8');
    await applyAll(kc, loadAllYaml(yaml) as KubernetesObject[]);
    say(`applied ${DEMO_POLICIES_FILE} (the README's policies): backend-api from frontend on 8080, database from backend-api on 5432, DNS from the namespace`);
    for (let i = 0; i < 50; i++) {
      const eps = await callAgent<EndpointView[]>({ socketPath, method: 'GET', path: '/v1/endpoints' });
      if (eps.filter((e) => e.pod.namespace === NS && e.policyEnforcement.ingress).length >= 3) break;
      await sleep(100);
    }
    await probe('frontend', 'backend-api', 8080);
    await probe('backend-api', 'database', 5432);
    await probe('frontend', 'database', 5432);
    say('flows the datapath reported for these probes (policy verdicts and drops):');
    const batch: HubbleFlow[] = await flows.read(256, 300);
    // Identical lines (a policy verdict and its drop event, SYN retransmissions) are shown once, with a count.
    const lines = new Map<string, number>();
    for (const f of batch.filter((x) => x.event_type.type !== 4)) {
      const why = f.verdict === 'DROPPED' ? ` (${f.drop_reason_desc ?? ''})` : '';
      const port = f.l4 && 'TCP' in f.l4 ? `TCP/${f.l4.TCP.destination_port}` : '';
      const line = `  ${f.IP.source} -> ${f.IP.destination} ${port} ${f.traffic_direction ?? ''} ${f.verdict}${why} identity ${f.source.identity ?? '?'} -> ${f.destination.identity ?? '?'}`;
      lines.set(line, (lines.get(line) ?? 0) + 1);
    }
    for (const [line, n] of [...lines].slice(0, 12)) say(n > 1 ? `${line}  (x${n})` : line);
  } finally {
    flows.close();
  }
  say(`try it: membrane --config ${labLayout(config.lab.dir).dir}/agent/config.yaml endpoint list | bpf policy get <id> | status`);
}
