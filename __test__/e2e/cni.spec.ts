/**
 * The CNI plugin end to end, driven the way runtimes drive it: the reference
 * client `cnitool` (built from containernetworking/cni through the Go module
 * proxy) runs ADD, CHECK, DEL, STATUS and GC with deploy/cni/10-membrane.conflist
 * against a real `membrane agent` on a lab apiserver; the spec's error paths are
 * invoked directly (bad JSON and unknown versions never get past libcni) and each
 * must leave nothing behind: no host link, no endpoint, no address.
 * Needs root (netns, veth, BPF, the lab). Its own lab: ports 22990/23000/22643/22457,
 * ranges 10.239.0.0/16 and 10.240.0.0/16; namespaces "mbr-cni-<pid>-*".
 */
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { CoreV1Api, NetworkingV1Api, type KubeConfig } from '@kubernetes/client-node';
import { callAgent } from '../../ts/api/client.js';
import type { EndpointView, IpamAllocation } from '../../ts/api/types.js';
import { invokeCni, pluginConfig, type CniResult, type Conflist } from '../../ts/cni/invoke.js';
import { labLayout } from '../../ts/lab/layout.js';
import {
  cnitool,
  cnitoolBinary,
  cnitoolContainerId,
  createNetns,
  deleteNetns,
  inNetns,
  ownNetns,
  pingOnce,
  pluginBinary,
  pluginLinks,
  removeLibcniCache,
  startAgent,
  testConflist,
  writeNetconfDir,
  type AgentProcess,
} from './helpers/cni.js';
import { createNamespace, k8sLabSettings, MINUTE, podSpec, requireRoot, startLab, stopLab, until } from './helpers/k8s-lab.js';

const serial = test.serial;
const lab = k8sLabSettings(`cni-${process.pid}`, {
  etcdClientPort: 22990,
  etcdPeerPort: 23000,
  apiserverPort: 22643,
  controllerManagerPort: 22457,
  podNet: '10.239',
  serviceNet: '10.240',
});
const NETWORK = `mbr-e2e-${process.pid}`;
const NS = 'cni-e2e';
const MTU = 1450;
const GATEWAY = '169.254.1.1';

let kc: KubeConfig;
let agent: AgentProcess;
let plugin: string;
let tool: string;
let conflist: Conflist;
let netconfDir: string;

test.before(async (t) => {
  requireRoot('the CNI');
  t.timeout(45 * MINUTE);
  plugin = pluginBinary();
  tool = cnitoolBinary();
  // Control plane only: the test runs its own agent and is the only caller of the plugin
  // (the lab's node simulator would realize the test's pods through CNI too).
  kc = await startLab(lab, { MEMBRANE_LAB_NODE: 'none' });
  await createNamespace(kc, NS);
  agent = await startAgent({ kubeconfig: labLayout(lab.dir).kubeconfig, nodeName: lab.nodeName, tag: String(process.pid) });
  conflist = testConflist(NETWORK, agent.socket, { mtu: MTU });
  netconfDir = writeNetconfDir(conflist);
});

test.after.always(async () => {
  if (process.getuid?.() !== 0) return;
  for (const link of pluginLinks(NETWORK)) execFileSync('ip', ['link', 'del', link.ifname], { stdio: 'ignore' });
  for (const ns of ownNetns()) deleteNetns(ns);
  await agent?.cleanup();
  if (netconfDir) rmSync(netconfDir, { recursive: true, force: true });
  removeLibcniCache(NETWORK);
  await stopLab(lab);
});

const core = () => kc.makeApiClient(CoreV1Api);
const cniEnv = (pod: string) => ({ cniPath: dirname(plugin), netconfPath: netconfDir, cniArgs: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${NS};K8S_POD_NAME=${pod}` });

async function createPod(name: string, labels: Record<string, string>): Promise<void> {
  await core().createNamespacedPod({ namespace: NS, body: podSpec(name, labels, lab.nodeName) });
}

const endpoints = () => callAgent<EndpointView[]>({ socketPath: agent.socket, method: 'GET', path: '/v1/endpoints' });
const allocations = () => callAgent<IpamAllocation[]>({ socketPath: agent.socket, method: 'GET', path: '/v1/ipam/allocations' });

/** Nothing of this container anywhere: no host link (by alias), no endpoint, no address. */
async function leftovers(containerId: string): Promise<string[]> {
  const out: string[] = [];
  for (const l of pluginLinks(NETWORK)) if (l.ifalias?.includes(`:${containerId}/`)) out.push(`link ${l.ifname}`);
  for (const e of await endpoints()) if (e.containerId === containerId) out.push(`endpoint ${e.id}`);
  for (const a of await allocations()) if (a.containerId === containerId) out.push(`address ${a.ipv4}`);
  return out;
}

interface Added {
  name: string;
  netns: { name: string; path: string };
  containerId: string;
  result: CniResult;
  ip: string;
}
const pods = new Map<string, Added>();

async function addPod(name: string, labels: Record<string, string>): Promise<Added> {
  await createPod(name, labels);
  const netns = createNetns(name);
  const run = cnitool(tool, 'add', NETWORK, netns.path, cniEnv(name));
  if (run.code !== 0) throw new Error(`cnitool add ${name} failed (${run.code}): ${run.stderr}`);
  const result = JSON.parse(run.stdout) as CniResult;
  const added = { name, netns, containerId: await cnitoolContainerId(netns.path), result, ip: (result.ips[0]?.address ?? '').split('/')[0]! };
  pods.set(name, added);
  return added;
}

serial('VERSION names the versions the plugin speaks', async (t) => {
  const out = await invokeCni(plugin, { command: 'VERSION', config: '{"cniVersion":"1.1.0"}' });
  t.true(out.ok);
  const v = (out as { output: { cniVersion: string; supportedVersions: string[] } }).output;
  t.is(v.cniVersion, '1.1.0');
  t.deepEqual(v.supportedVersions, ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']);
});

serial('STATUS through cnitool succeeds while the agent is ready', (t) => {
  const run = cnitool(tool, 'status', NETWORK, '/var/run/netns/unused', cniEnv('x'));
  t.is(run.code, 0, run.stderr);
});

serial('ADD through cnitool wires the pod: the result field by field, the kernel, the agent', async (t) => {
  const a = await addPod('client', { app: 'client' });
  const r = a.result;
  t.is(r.cniVersion, '1.1.0');
  t.is(r.interfaces.length, 2);
  const [host, pod] = r.interfaces as [CniResult['interfaces'][0], CniResult['interfaces'][0]];
  t.regex(host.name, /^mbr[0-9a-f]{11}$/);
  t.is(host.sandbox, undefined);
  t.is(pod.name, 'eth0');
  t.is(pod.sandbox, a.netns.path);
  t.is(pod.mtu, MTU);
  t.regex(a.ip, /^10\.239\.7\.\d+$/);
  t.deepEqual(r.ips, [{ address: `${a.ip}/32`, gateway: GATEWAY, interface: 1 }]);
  t.deepEqual(r.routes, [{ dst: '0.0.0.0/0', gw: GATEWAY }, { dst: `${GATEWAY}/32`, scope: 253 }]);
  t.is(r.dns, undefined, 'no dns configured: the plugin answers {} and libcni drops the empty object when it prints the result');

  // The kernel holds what the result says.
  const [link] = pluginLinks(NETWORK).filter((l) => l.ifname === host.name);
  t.truthy(link, `host link ${host.name}`);
  t.is(link!.address, host.mac ?? "(no mac in the result)");
  t.is(link!.mtu, MTU);
  t.is(link!.ifalias, `membrane-cni:${NETWORK}:${a.containerId}/eth0`);
  t.true(link!.flags.includes('UP'));
  const podLink = JSON.parse(inNetns(a.netns.name, 'ip', ['-j', 'addr', 'show', 'dev', 'eth0']))[0] as { address: string; mtu: number; flags: string[]; addr_info: Array<{ family: string; local: string; prefixlen: number }> };
  t.is(podLink.address, pod.mac ?? "(no mac in the result)");
  t.is(podLink.mtu, MTU);
  t.true(podLink.flags.includes('UP'));
  t.deepEqual(podLink.addr_info.filter((i) => i.family === 'inet').map((i) => `${i.local}/${i.prefixlen}`), [`${a.ip}/32`]);
  t.is(podLink.addr_info.filter((i) => i.family === 'inet6').length, 0, 'IPv6 is off on the pod interface');
  const routes = JSON.parse(inNetns(a.netns.name, 'ip', ['-j', 'route', 'show'])) as Array<{ dst: string; gateway?: string; dev: string; scope?: string }>;
  t.true(routes.some((x) => x.dst === 'default' && x.gateway === GATEWAY && x.dev === 'eth0'));
  t.true(routes.some((x) => x.dst === GATEWAY && x.dev === 'eth0' && x.scope === 'link'));
  const neigh = JSON.parse(inNetns(a.netns.name, 'ip', ['-j', 'neigh', 'show', GATEWAY])) as Array<{ lladdr: string; state: string[] }>;
  t.is(neigh[0]?.lladdr, host.mac);
  t.true(neigh[0]?.state.includes('PERMANENT'));
  const hostRoutes = JSON.parse(execFileSync('ip', ['-j', 'route', 'show', `${a.ip}/32`], { encoding: 'utf8' })) as Array<{ dev: string; scope: string }>;
  t.deepEqual(hostRoutes.map((x) => [x.dev, x.scope]), [[host.name, 'link']]);
  const hostNeigh = JSON.parse(execFileSync('ip', ['-j', 'neigh', 'show', a.ip, 'dev', host.name], { encoding: 'utf8' })) as Array<{ lladdr: string; state: string[] }>;
  t.is(hostNeigh[0]?.lladdr, pod.mac);
  t.true(hostNeigh[0]?.state.includes('PERMANENT'));

  // The agent has the endpoint and its address.
  const ep = await callAgent<EndpointView>({ socketPath: agent.socket, method: 'GET', path: `/v1/endpoints/${a.containerId}/eth0` });
  t.is(ep.ipv4, a.ip);
  t.is(ep.hostIface, host.name);
  t.is(ep.ifindex, link!.ifindex);
  t.deepEqual((await allocations()).filter((x) => x.containerId === a.containerId).map((x) => x.ipv4), [a.ip]);
});

serial('CHECK through cnitool passes on a healthy pod and names what was changed', async (t) => {
  const a = pods.get('client')!;
  t.is(cnitool(tool, 'check', NETWORK, a.netns.path, cniEnv('client')).code, 0);
  inNetns(a.netns.name, 'ip', ['link', 'set', 'eth0', 'mtu', '1300']);
  inNetns(a.netns.name, 'ip', ['route', 'del', 'default']);
  inNetns(a.netns.name, 'ip', ['neigh', 'del', GATEWAY, 'dev', 'eth0']);
  const bad = cnitool(tool, 'check', NETWORK, a.netns.path, cniEnv('client'));
  t.not(bad.code, 0);
  t.regex(bad.stderr, /MTU 1300 instead of 1450/);
  t.regex(bad.stderr, /no default route via 169\.254\.1\.1/);
  t.regex(bad.stderr, /no permanent neighbour 169\.254\.1\.1/);
  // The same CHECK as a runtime sees it: code 103.
  const direct = await invokeCni(plugin, { command: 'CHECK', containerId: a.containerId, netns: a.netns.path, ifname: 'eth0', config: pluginConfig(conflist, 0, { prevResult: a.result }) });
  t.false(direct.ok);
  t.is((direct as { error: { code: number } }).error.code, 103);
  inNetns(a.netns.name, 'ip', ['link', 'set', 'eth0', 'mtu', String(MTU)]);
  inNetns(a.netns.name, 'ip', ['route', 'add', 'default', 'via', GATEWAY, 'dev', 'eth0']);
  inNetns(a.netns.name, 'ip', ['neigh', 'replace', GATEWAY, 'lladdr', a.result.interfaces[0]!.mac!, 'dev', 'eth0', 'nud', 'permanent']);
  t.is(cnitool(tool, 'check', NETWORK, a.netns.path, cniEnv('client')).code, 0);
});

serial('pods reach each other only as the datapath allows', async (t) => {
  const client = pods.get('client')!;
  const server = await addPod('server', { app: 'server' });
  const other = await addPod('other', { app: 'other' });
  t.not(server.ip, client.ip);
  t.not(other.ip, server.ip);
  // No policy selects the server: everyone may reach it.
  await until(() => pingOnce(client.netns.name, server.ip), 'client -> server before any policy', 30_000, 200);
  await until(() => pingOnce(other.netns.name, server.ip), 'other -> server before any policy', 30_000, 200);
  // Only clients may reach the server.
  const net = kc.makeApiClient(NetworkingV1Api);
  await net.createNamespacedNetworkPolicy({
    namespace: NS,
    body: { metadata: { name: 'server-from-clients' }, spec: { podSelector: { matchLabels: { app: 'server' } }, policyTypes: ['Ingress'], ingress: [{ _from: [{ podSelector: { matchLabels: { app: 'client' } } }] }] } },
  });
  await until(() => !pingOnce(other.netns.name, server.ip), 'other -> server to be denied by the policy', 30_000, 200);
  t.true(pingOnce(client.netns.name, server.ip), 'client -> server stays allowed');
  t.false(pingOnce(other.netns.name, server.ip), 'other -> server stays denied');
  t.true(pingOnce(server.netns.name, other.ip), 'the policy selects only the server');
  await net.deleteNamespacedNetworkPolicy({ namespace: NS, name: 'server-from-clients' });
});

serial('DEL through cnitool removes link, endpoint and address; a second DEL succeeds too', async (t) => {
  const other = pods.get('other')!;
  t.deepEqual(await leftovers(other.containerId), [`link ${other.result.interfaces[0]!.name}`, `endpoint ${(await endpoints()).find((e) => e.containerId === other.containerId)!.id}`, `address ${other.ip}`]);
  const first = cnitool(tool, 'del', NETWORK, other.netns.path, cniEnv('other'));
  t.is(first.code, 0, first.stderr);
  t.deepEqual(await leftovers(other.containerId), []);
  t.throws(() => inNetns(other.netns.name, 'ip', ['link', 'show', 'eth0']), undefined, 'the pod side went with the host side');
  const second = cnitool(tool, 'del', NETWORK, other.netns.path, cniEnv('other'));
  t.is(second.code, 0, second.stderr);
  pods.delete('other');
  deleteNetns(other.netns.name);
});

serial('DEL succeeds when the network namespace is already gone', async (t) => {
  const server = pods.get('server')!;
  deleteNetns(server.netns.name);
  const out = await invokeCni(plugin, { command: 'DEL', containerId: server.containerId, netns: server.netns.path, ifname: 'eth0', config: pluginConfig(conflist, 0, { prevResult: server.result }) });
  t.true(out.ok, JSON.stringify(out));
  t.deepEqual(await leftovers(server.containerId), []);
  pods.delete('server');
});

const ADD_ARGS = { K8S_POD_NAMESPACE: NS, K8S_POD_NAME: 'broken' };

async function expectFailedAdd(t: import('ava').ExecutionContext, containerId: string, code: number, inv: Partial<Parameters<typeof invokeCni>[1]>, msg: RegExp): Promise<void> {
  const out = await invokeCni(plugin, { command: 'ADD', containerId, ifname: 'eth0', args: ADD_ARGS, config: pluginConfig(conflist), ...inv });
  t.false(out.ok);
  const err = (out as { error: { code: number; msg: string } }).error;
  t.is(err.code, code, err.msg);
  t.regex(err.msg, msg);
  t.deepEqual(await leftovers(containerId), [], 'nothing left behind');
}

serial('spec errors: each gets its code and leaves nothing behind', async (t) => {
  await createPod('broken', { app: 'broken' });
  const netns = createNetns('broken');
  await expectFailedAdd(t, 'bad-json', 6, { netns: netns.path, config: '{"cniVersion": "1.1.0", "name": ' }, /not valid JSON/);
  await expectFailedAdd(t, 'bad-version', 1, { netns: netns.path, config: pluginConfig(conflist, 0, { cniVersion: '9.0.0' }) }, /cniVersion 9\.0\.0 is not supported/);
  await expectFailedAdd(t, 'no-netns', 4, {}, /CNI_NETNS is not set/);
  await expectFailedAdd(t, 'gone-netns', 3, { netns: `/var/run/netns/${'mbr-cni-never-created'}` }, /does not exist/);
  await expectFailedAdd(t, 'no-agent', 11, { netns: netns.path, config: pluginConfig(conflist, 0, { agentSocket: join(agent.stateDir, 'nobody-listens.sock') }) }, /agent is not reachable/);
  await expectFailedAdd(t, 'bad-mtu', 7, { netns: netns.path, config: pluginConfig(conflist, 0, { mtu: 20 }) }, /mtu/);
  await expectFailedAdd(t, 'no-pod', 4, { netns: netns.path, args: {} }, /does not name the pod/);
  // The kernel refuses (the pod interface name is taken): the address goes back, the veth goes.
  inNetns(netns.name, 'ip', ['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0-peer']);
  await expectFailedAdd(t, 'taken-ifname', 102, { netns: netns.path }, /create veth/);
  t.is(JSON.parse(inNetns(netns.name, 'ip', ['-j', 'link', 'show', 'eth0']))[0]?.link, 'eth0-peer', 'the namespace\'s own eth0 is untouched');
  deleteNetns(netns.name);
});

serial('GC through the plugin removes what no valid attachment names and keeps the rest', async (t) => {
  const client = pods.get('client')!;
  const stale = await addPod('stale', { app: 'stale' });
  // Another network's link with our naming scheme is not ours to collect.
  const foreign = 'mbr0000000000f';
  execFileSync('ip', ['link', 'add', foreign, 'type', 'veth', 'peer', 'name', `${foreign}p`]);
  execFileSync('ip', ['link', 'set', foreign, 'alias', 'membrane-cni:another-network:c/eth0']);
  try {
    const out = await invokeCni(plugin, { command: 'GC', config: pluginConfig(conflist, 0, { 'cni.dev/valid-attachments': [{ containerID: client.containerId, ifname: 'eth0' }] }) });
    t.true(out.ok, JSON.stringify(out));
    t.deepEqual(await leftovers(stale.containerId), []);
    t.is((await leftovers(client.containerId)).length, 3, 'the valid attachment keeps link, endpoint and address');
    t.notThrows(() => execFileSync('ip', ['link', 'show', foreign], { stdio: 'ignore' }));
  } finally {
    execFileSync('ip', ['link', 'del', foreign], { stdio: 'ignore' });
    pods.delete('stale');
    deleteNetns(stale.netns.name);
  }
});

serial('with the agent stopped: STATUS says 50, ADD says 11 and leaves nothing, DEL still removes the link', async (t) => {
  const client = pods.get('client')!;
  const hostIface = client.result.interfaces[0]!.name;
  await agent.stop();
  const status = await invokeCni(plugin, { command: 'STATUS', config: pluginConfig(conflist) });
  t.is((status as { error: { code: number } }).error.code, 50);
  const netns = createNetns('late');
  const add = await invokeCni(plugin, { command: 'ADD', containerId: 'late', netns: netns.path, ifname: 'eth0', args: ADD_ARGS, config: pluginConfig(conflist) });
  t.is((add as { error: { code: number } }).error.code, 11);
  t.deepEqual(pluginLinks(NETWORK).filter((l) => l.ifalias?.includes(':late/')), []);
  t.deepEqual(JSON.parse(inNetns(netns.name, 'ip', ['-j', 'link', 'show'])).map((l: { ifname: string }) => l.ifname), ['lo']);
  deleteNetns(netns.name);
  const del = cnitool(tool, 'del', NETWORK, client.netns.path, cniEnv('client'));
  t.is(del.code, 0, del.stderr);
  t.deepEqual(pluginLinks(NETWORK).filter((l) => l.ifname === hostIface), []);
  pods.delete('client');
  deleteNetns(client.netns.name);
});
