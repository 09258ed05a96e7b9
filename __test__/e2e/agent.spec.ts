/**
 * The agent end to end, against the lab's real apiserver and the real datapath:
 * pods into the ipcache and identities (with measured event-to-map latency),
 * endpoints registered through the agent API with policy enforced, kill -9 of
 * the agent under traffic (zero failed requests, the first pass after restart
 * writes nothing), a frozen kube-apiserver (traffic keeps flowing; a change made
 * when it returns is applied), and bad input that is logged and skipped.
 *
 * Needs root (netns, veth, BPF). Fails, never skips, without it.
 */
import test from 'ava';
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { CoreV1Api, CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import { callAgent, AgentApiError } from '../../ts/api/client.js';
import type { EndpointView, IdentityView, IpcacheView, PolicyEntryView } from '../../ts/api/types.js';
import { purgeDatapath } from '../../ts/datapath/lxc.js';
import { labKubeconfigPath } from '../../ts/lab/kube.js';
import { agentStatus, collect, removeNetns, runInPod, socketOf, startAgentProcess, stopAgentProcess, unwirePod, waitForLine, wirePod, type AgentSettings, type WiredPod } from './helpers/agent.js';
import { createNamespace, k8sLabSettings, podSpec, requireRoot, startLab, stopLab, until } from './helpers/k8s-lab.js';
import { labEnv, membrane } from './helpers/lab.js';

const serial = test.serial;
const LAB = k8sLabSettings('agent', { etcdClientPort: 22890, etcdPeerPort: 22900, apiserverPort: 22543, controllerManagerPort: 22357, podNet: '10.237', serviceNet: '10.238' });
const NS = 'agent-e2e';
const AGENT: AgentSettings = {
  kubeconfig: labKubeconfigPath(LAB),
  nodeName: LAB.nodeName,
  stateDir: '/tmp/membrane-agent-e2e-state',
  pinDir: '/sys/fs/bpf/mbr-e2e-agent',
  logFile: '/tmp/membrane-agent-e2e.log',
  logLevel: 'debug',
};
const PODS = {
  client: { namespace: NS, name: 'client', netns: 'mbr-agt-client', hostIface: 'mbragtclient' },
  server: { namespace: NS, name: 'server', netns: 'mbr-agt-server', hostIface: 'mbragtserver' },
  other: { namespace: NS, name: 'other', netns: 'mbr-agt-other', hostIface: 'mbragtother' },
};

let kc: KubeConfig;
let core: CoreV1Api;
let agent: ChildProcess | undefined;
const wired: Record<string, WiredPod> = {};
let echo: ChildProcess | undefined;

const api = <T>(path: string, method: 'GET' | 'POST' | 'DELETE' = 'GET', body?: unknown) => callAgent<T>({ socketPath: socketOf(AGENT), method, path, body });

async function ipcacheIdentity(ip: string): Promise<number | undefined> {
  const rows = await api<IpcacheView[]>('/v1/bpf/ipcache');
  return rows.find((r) => r.prefix === `${ip}/32`)?.identity;
}

async function setPodIp(name: string, ip: string): Promise<void> {
  const pod = await core.readNamespacedPod({ namespace: NS, name });
  pod.status = { ...pod.status, podIP: ip, podIPs: [{ ip }], phase: 'Running' };
  await core.replaceNamespacedPodStatus({ namespace: NS, name, body: pod });
}

async function tcpConnect(from: WiredPod, to: WiredPod, port: number): Promise<string> {
  const r = await collect(runInPod(from.netns, 'tcp-connect.mjs', [to.ip, String(port), '1500']));
  return r.stdout.trim();
}

function allowClientCnp(fromApps: string[]) {
  return {
    apiVersion: 'cilium.io/v2',
    kind: 'CiliumNetworkPolicy',
    metadata: { name: 'server-from-clients', namespace: NS },
    spec: {
      endpointSelector: { matchLabels: { app: 'server' } },
      ingress: [{ fromEndpoints: [{ matchExpressions: [{ key: 'app', operator: 'In', values: fromApps }] }], toPorts: [{ ports: [{ port: '8080', protocol: 'TCP' }] }] }],
    },
  };
}

test.before(async () => {
  requireRoot('agent');
  for (const p of Object.values(PODS)) removeNetns(p);
  rmSync(AGENT.stateDir, { recursive: true, force: true });
  rmSync(AGENT.logFile, { force: true });
  mkdirSync(AGENT.stateDir, { recursive: true });
  await purgeDatapath({ pinDir: AGENT.pinDir }).catch(() => undefined);
  kc = await startLab(LAB);
  core = kc.makeApiClient(CoreV1Api);
  await createNamespace(kc, NS, { team: 'e2e' });
  agent = (await startAgentProcess(AGENT)).child;
});

test.after.always(async () => {
  echo?.kill('SIGTERM');
  for (let i = 0; i < 4; i++) removeNetns({ netns: `mbr-agt-burst${i}`, hostIface: `mbragtburst${i}` });
  for (const p of Object.values(wired)) await unwirePod(AGENT, p);
  for (const p of Object.values(PODS)) removeNetns(p);
  if (agent) await stopAgentProcess(agent);
  await purgeDatapath({ pinDir: AGENT.pinDir }).catch(() => undefined);
  await stopLab(LAB);
  rmSync(AGENT.stateDir, { recursive: true, force: true });
});

serial('a pod created, relabelled and deleted in the apiserver enters, moves in and leaves the ipcache and identity list', async (t) => {
  const ip = '10.237.200.10';
  await core.createNamespacedPod({ namespace: NS, body: podSpec('lifecycle', { app: 'alpha' }, LAB.nodeName) });
  const t0 = Date.now();
  await setPodIp('lifecycle', ip);
  const first = await until(() => ipcacheIdentity(ip), 'the pod in the ipcache', 30_000, 5);
  const createMs = Date.now() - t0;
  const ids = await api<IdentityView[]>('/v1/identities');
  const alpha = ids.find((i) => i.id === first);
  t.truthy(alpha, 'the identity is listed');
  t.true(alpha!.labels.includes('k8s:app=alpha'));
  t.true(alpha!.labels.includes(`k8s:io.kubernetes.pod.namespace=${NS}`));
  t.true(first >= 256 && first <= 65535);

  const pod = await core.readNamespacedPod({ namespace: NS, name: 'lifecycle' });
  pod.metadata!.labels = { app: 'beta' };
  const t1 = Date.now();
  await core.replaceNamespacedPod({ namespace: NS, name: 'lifecycle', body: pod });
  const second = await until(async () => {
    const id = await ipcacheIdentity(ip);
    return id !== undefined && id !== first ? id : undefined;
  }, 'the relabelled pod on its new identity', 30_000, 5);
  const relabelMs = Date.now() - t1;
  const beta = (await api<IdentityView[]>('/v1/identities')).find((i) => i.id === second);
  t.true(beta!.labels.includes('k8s:app=beta'));

  await core.deleteNamespacedPod({ namespace: NS, name: 'lifecycle', gracePeriodSeconds: 0 });
  await until(async () => (await ipcacheIdentity(ip)) === undefined, 'the deleted pod out of the ipcache', 30_000, 5);
  t.log(`event-to-map: create ${createMs} ms, relabel ${relabelMs} ms`);
});

serial('endpoints registered through the API get their identity and policy; a CiliumNetworkPolicy is enforced', async (t) => {
  for (const p of Object.values(PODS)) await core.createNamespacedPod({ namespace: NS, body: podSpec(p.name, { app: p.name }, LAB.nodeName) });
  await api('/v1/bpf/ipcache');
  for (const [k, p] of Object.entries(PODS)) wired[k] = await wirePod(AGENT, p);
  for (const w of Object.values(wired)) {
    t.true(w.endpoint.identity >= 256, `${w.name} has a cluster identity (got ${w.endpoint.identity})`);
    t.is(w.endpoint.state, 'ready');
    t.true(w.endpoint.ipv4.startsWith('10.237.7.'), 'the address comes from the node podCIDR');
  }
  echo = runInPod(wired['server']!.netns, 'tcp-echo-server.mjs', ['8080']);
  await waitForLine(echo, 'listening');
  // No policy selects the server yet: everyone may connect.
  t.is(await tcpConnect(wired['other']!, wired['server']!, 8080), 'connected');

  await kc.makeApiClient(CustomObjectsApi).createNamespacedCustomObject({ group: 'cilium.io', version: 'v2', namespace: NS, plural: 'ciliumnetworkpolicies', body: allowClientCnp(['client']) });
  await until(async () => (await api<EndpointView[]>('/v1/endpoints')).find((e) => e.pod.name === 'server')?.policyEnforcement.ingress === true, 'the server in ingress enforcement');
  t.is(await tcpConnect(wired['client']!, wired['server']!, 8080), 'connected');
  t.is(await tcpConnect(wired['other']!, wired['server']!, 8080), 'timed out');
  const entries = await api<PolicyEntryView[]>(`/v1/bpf/policy/${wired['server']!.endpoint.id}`);
  t.true(entries.some((e) => e.direction === 'ingress' && e.identity === wired['client']!.endpoint.identity && e.port === 'TCP/8080' && e.action === 'allow'));

  // The CLI shows the same.
  const env = { ...labEnv(LAB), MEMBRANE_API_SOCKET: socketOf(AGENT) };
  const list = await membrane(['endpoint', 'list'], env);
  t.is(list.code, 0, list.stderr);
  t.regex(list.stdout, /k8s:app=server/);
  const status = await membrane(['status', '-o', 'json'], env);
  t.is(status.code, 0, status.stderr);
  t.is(JSON.parse(status.stdout).endpoints.ready, 3);
});

serial('kill -9 of the agent under traffic: zero failed requests, and the first pass after restart writes nothing', async (t) => {
  const probe = runInPod(wired['client']!.netns, 'traffic-probe.mjs', [wired['server']!.ip, '8080', '8']);
  const done = collect(probe);
  await new Promise((r) => setTimeout(r, 2000));
  agent!.kill('SIGKILL');
  await new Promise<void>((r) => agent!.once('exit', () => r()));
  const restarted = await startAgentProcess(AGENT);
  agent = restarted.child;
  const result = await done;
  t.is(result.code, 0, result.stderr);
  const r = JSON.parse(result.stdout) as { longRequests: number; longFailures: number; newConnections: number; newFailures: number; reasons: string[] };
  t.log(`restart-to-ready ${restarted.readyMs} ms; ${r.longRequests} requests on the long connection, ${r.newConnections} new connections`);
  t.true(r.longRequests > 200 && r.newConnections > 30, 'the probe ran');
  t.is(r.longFailures, 0, r.reasons.join('\n'));
  t.is(r.newFailures, 0, r.reasons.join('\n'));
  const status = await agentStatus(AGENT);
  t.is(status.startup?.datapath, 'adopted');
  t.is(status.startup?.endpointsRestored, 3);
  t.is(status.startup?.firstPassWrites, 0, 'nothing changed while the agent was down, so nothing is written');
  t.is(await tcpConnect(wired['other']!, wired['server']!, 8080), 'timed out', 'the policy still holds');
});

serial('a frozen kube-apiserver (30 s): traffic keeps flowing under the last policy; a change made when it returns is applied', async (t) => {
  const lab = await membrane(['lab', 'status', '-o', 'json'], labEnv(LAB));
  const apiserver = (JSON.parse(lab.stdout) as { components: Array<{ name: string; pid: number | null }> }).components.find((c) => c.name === 'kube-apiserver');
  t.truthy(apiserver?.pid, lab.stdout);
  const probe = collect(runInPod(wired['client']!.netns, 'traffic-probe.mjs', [wired['server']!.ip, '8080', '34']));
  await new Promise((r) => setTimeout(r, 1000));
  process.kill(apiserver!.pid!, 'SIGSTOP');
  try {
    await new Promise((r) => setTimeout(r, 30_000));
  } finally {
    process.kill(apiserver!.pid!, 'SIGCONT');
  }
  const custom = kc.makeApiClient(CustomObjectsApi);
  const changedAt = Date.now();
  await until(
    async () => {
      try {
        const current = (await custom.getNamespacedCustomObject({ group: 'cilium.io', version: 'v2', namespace: NS, plural: 'ciliumnetworkpolicies', name: 'server-from-clients' })) as { metadata: { resourceVersion: string } };
        const body = { ...allowClientCnp(['client', 'other']), metadata: { ...allowClientCnp([]).metadata, resourceVersion: current.metadata.resourceVersion } };
        await custom.replaceNamespacedCustomObject({ group: 'cilium.io', version: 'v2', namespace: NS, plural: 'ciliumnetworkpolicies', name: 'server-from-clients', body });
        return true;
      } catch {
        return false;
      }
    },
    'the apiserver to accept the policy change',
    60_000,
    200,
  );
  await until(async () => (await tcpConnect(wired['other']!, wired['server']!, 8080)) === 'connected', 'the changed policy to let other in', 60_000, 100);
  t.log(`change applied ${Date.now() - changedAt} ms after the apiserver came back`);
  const result = await probe;
  const r = JSON.parse(result.stdout) as { longRequests: number; longFailures: number; newFailures: number; newConnections: number; reasons: string[] };
  t.is(r.longFailures, 0, r.reasons.join('\n'));
  t.is(r.newFailures, 0, r.reasons.join('\n'));
  t.true(r.longRequests > 1000);
  t.true((await agentStatus(AGENT)).kubernetes.ok);
});

serial('relabelling an endpoint\'s pod moves it to a new identity without dropping a request, old or new', async (t) => {
  const before = (await api<EndpointView[]>('/v1/endpoints')).find((e) => e.pod.name === 'client')!.identity;
  const probe = collect(runInPod(wired['client']!.netns, 'traffic-probe.mjs', [wired['server']!.ip, '8080', '6']));
  await new Promise((r) => setTimeout(r, 1500));
  const pod = await core.readNamespacedPod({ namespace: NS, name: 'client' });
  pod.metadata!.labels = { ...pod.metadata!.labels, version: 'v2' };
  await core.replaceNamespacedPod({ namespace: NS, name: 'client', body: pod });
  const after = await until(async () => {
    const id = (await api<EndpointView[]>('/v1/endpoints')).find((e) => e.pod.name === 'client')!.identity;
    return id !== before ? id : undefined;
  }, 'the client endpoint on its new identity');
  await until(async () => (await ipcacheIdentity(wired['client']!.ip)) === after, 'the client address on its new identity in the ipcache');
  const r = JSON.parse((await probe).stdout) as { longFailures: number; newFailures: number; newConnections: number; reasons: string[] };
  t.true(r.newConnections > 30);
  t.is(r.longFailures, 0, r.reasons.join('\n'));
  t.is(r.newFailures, 0, r.reasons.join('\n'));
  const entries = await api<PolicyEntryView[]>(`/v1/bpf/policy/${wired['server']!.endpoint.id}`);
  // The old identity still exists (it is collected after the GC grace period) and still
  // matches the selector, so it stays allowed until then, as in Cilium.
  t.true(entries.some((e) => e.identity === after), 'the server allows the new identity');
});

serial('bad input is logged and skipped; the agent stays healthy', async (t) => {
  // A pod with more labels than an identity may hold (valid for Kubernetes).
  const labels: Record<string, string> = {};
  for (let i = 0; i < 300; i++) labels[`l${i}`] = 'x';
  await core.createNamespacedPod({ namespace: NS, body: podSpec('too-many-labels', labels, LAB.nodeName) });
  await setPodIp('too-many-labels', '10.237.200.20');
  // A MembraneIdentity with labels no pod can have.
  const custom = kc.makeApiClient(CustomObjectsApi);
  await custom.createClusterCustomObject({
    group: 'membrane.io',
    version: 'v1alpha1',
    plural: 'membraneidentities',
    body: { apiVersion: 'membrane.io/v1alpha1', kind: 'MembraneIdentity', metadata: { name: '60001', labels: { 'membrane.io/labels-hash': 'e'.repeat(32) } }, spec: { securityLabels: { app: 'no source', 'k8s:x': 'bad value!' } } },
  });
  await until(() => readFileSync(AGENT.logFile, 'utf8').includes('too-many-labels'), 'the agent to log the pod');
  t.is(await ipcacheIdentity('10.237.200.20'), undefined, 'no identity, no ipcache entry');
  t.false((await api<IdentityView[]>('/v1/identities')).some((i) => i.id === 60001));
  const h = await api<{ ok: boolean }>('/v1/healthz');
  t.true(h.ok);
  t.is(await tcpConnect(wired['client']!, wired['server']!, 8080), 'connected');
});

serial('malformed API requests get a clear error and change nothing', async (t) => {
  const before = await api<EndpointView[]>('/v1/endpoints');
  const err1 = await t.throwsAsync(api('/v1/endpoints', 'POST', { containerId: '', ifindex: -1 }), { instanceOf: AgentApiError });
  t.is((err1 as AgentApiError).status, 400);
  t.regex(err1!.message, /ifindex must be a positive integer/);
  const err2 = await t.throwsAsync(api('/v1/ipam/allocations', 'POST', { containerId: 'x', ifname: 'eth0' }), { instanceOf: AgentApiError });
  t.regex(err2!.message, /pod must be an object/);
  const err3 = await t.throwsAsync(
    api('/v1/endpoints', 'POST', { containerId: 'nope', netns: '/var/run/netns/nope', ifname: 'eth0', hostIface: 'lo', ifindex: 1, ipv4: '10.237.7.99', mac: '02:00:00:00:00:01', nodeMac: '02:00:00:00:00:02', pod: { namespace: NS, name: 'x' } }),
    { instanceOf: AgentApiError },
  );
  t.is((err3 as AgentApiError).code, 'no_allocation');
  const err4 = await t.throwsAsync(api('/v1/bpf/policy/abc'), { instanceOf: AgentApiError });
  t.is((err4 as AgentApiError).status, 400);
  const err5 = await t.throwsAsync(api('/v1/cni/gc', 'POST', { valid: 'all' }), { instanceOf: AgentApiError });
  t.is((err5 as AgentApiError).status, 400);
  t.deepEqual(await api('/v1/endpoints/unknown/eth0', 'DELETE'), { removed: false, released: false });
  t.deepEqual((await api<EndpointView[]>('/v1/endpoints')).map((e) => e.id), before.map((e) => e.id));
});

serial('endpoints created concurrently get distinct ids and addresses', async (t) => {
  const batch = [0, 1, 2, 3].map((i) => ({ namespace: NS, name: `burst-${i}`, netns: `mbr-agt-burst${i}`, hostIface: `mbragtburst${i}` }));
  for (const p of batch) await core.createNamespacedPod({ namespace: NS, body: podSpec(p.name, { app: 'burst' }, LAB.nodeName) });
  const made = await Promise.all(batch.map((p) => wirePod(AGENT, p)));
  try {
    t.is(new Set(made.map((w) => w.endpoint.id)).size, made.length, made.map((w) => w.endpoint.id).join(','));
    t.is(new Set(made.map((w) => w.ip)).size, made.length);
    t.true(made.every((w) => w.endpoint.state === 'ready'));
  } finally {
    for (const w of made) await unwirePod(AGENT, w);
  }
});

serial('deleting an endpoint detaches it and releases its address', async (t) => {
  const other = wired['other']!;
  const r = await api<{ removed: boolean; released: boolean }>(`/v1/endpoints/${other.containerId}/eth0`, 'DELETE');
  t.deepEqual(r, { removed: true, released: true });
  delete wired['other'];
  removeNetns(other);
  t.false((await api<EndpointView[]>('/v1/endpoints')).some((e) => e.id === other.endpoint.id));
  t.is(await ipcacheIdentity(other.ip), undefined);
  t.false((await api<Array<{ ipv4: string }>>('/v1/ipam/allocations')).some((a) => a.ipv4 === other.ip));
});
