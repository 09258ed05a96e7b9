/**
 * The lab's node: `lab up` starts the membrane agent and the node simulator;
 * 30 pods created in the apiserver are bound, get a network namespace and an
 * address through the real CNI plugin, a server on their ports, Running/Ready
 * status, and reach one another; `lab probe` reports connected, refused and timed
 * out (and HTTP, UDP, JSON output, usage errors); deleting the pods removes the
 * objects, their netns, their host links and their addresses; `lab down` leaves
 * nothing behind (netns, links, bpffs pins, processes).
 * Needs root (the lab, netns, BPF). Its own lab: ports 23090/23100/22743/22557,
 * ranges 10.241.0.0/16 and 10.242.0.0/16; pods' netns are mbr-sim-<uid>.
 */
import { existsSync, readFileSync } from 'node:fs';
import test from 'ava';
import { CoreV1Api, CustomObjectsApi, type KubeConfig, type V1Pod } from '@kubernetes/client-node';
import type { LabState, LabStatus } from '../../ts/lab/lab.js';
import { labLayout } from '../../ts/lab/layout.js';
import { nodeLayout } from '../../ts/lab/node.js';
import type { ProbeResult } from '../../ts/lab/probe.js';
import { apiCode, createNamespace, k8sLabSettings, MINUTE, requireRoot, startLab, stopLab, until } from './helpers/k8s-lab.js';
import { labEnv, membrane, sameProcessAlive } from './helpers/lab.js';
import { hostLinksOfPod, inBatches, labAllocations, netnsOfPod, probeFromNetns, simNetnsNames } from './helpers/sim.js';

const serial = test.serial;
const lab = {
  ...k8sLabSettings(`lab-pods-${process.pid}`, {
    etcdClientPort: 23090,
    etcdPeerPort: 23100,
    apiserverPort: 22743,
    controllerManagerPort: 22557,
    podNet: '10.241',
    serviceNet: '10.242',
  }),
  // The whole node: the membrane agent and the node simulator (tests default to the control plane only).
  node: 'simulated' as const,
};
const env = labEnv(lab);
const NS = 'sim';
const PODS = 30;
const TCP_PORT = 8080;
const UDP_PORT = 5353;

let kc: KubeConfig;
let core: CoreV1Api;

test.before(async (t) => {
  requireRoot('the lab pods');
  t.timeout(45 * MINUTE);
  kc = await startLab(lab);
  core = kc.makeApiClient(CoreV1Api);
  await createNamespace(kc, NS, { team: 'sim' });
});

test.after.always(async () => {
  if (process.getuid?.() !== 0) return;
  await stopLab(lab);
});

function podBody(name: string, labels: Record<string, string>): V1Pod {
  return {
    metadata: { name, labels },
    spec: {
      containers: [
        {
          name: 'app',
          image: 'membrane.io/echo:lab',
          ports: [
            { name: 'http', containerPort: TCP_PORT, protocol: 'TCP' },
            { name: 'dns', containerPort: UDP_PORT, protocol: 'UDP' },
          ],
        },
      ],
    },
  };
}

async function listPods(): Promise<V1Pod[]> {
  return (await core.listNamespacedPod({ namespace: NS })).items;
}

const running = (p: V1Pod) => p.status?.phase === 'Running' && !!p.status.podIP && p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');

const state = (): LabState => JSON.parse(readFileSync(labLayout(lab.dir).state, 'utf8')) as LabState;

serial('lab up starts the membrane agent and the node simulator', async (t) => {
  const r = await membrane(['-o', 'json', 'lab', 'status'], env);
  t.is(r.code, 0, r.stderr);
  const s = JSON.parse(r.stdout) as LabStatus;
  t.is(s.state, 'up');
  t.deepEqual(
    s.nodeProcesses.map((p) => [p.name, p.running, p.healthy]),
    [
      ['membrane-agent', true, true],
      ['node-simulator', true, true],
    ],
  );
  // The lab's agent keeps its pins in a bpffs directory of its own.
  const n = nodeLayout(labLayout(lab.dir));
  t.true(existsSync(n.pinDir));
  for (const p of s.nodeProcesses) t.is(readFileSync(n.pidFile(p.name), 'utf8').trim(), String(p.pid), `${p.name} pid file`);
});

let pods: V1Pod[] = [];

serial(`${PODS} pods become Running with addresses from the podCIDR, each in its own netns`, async (t) => {
  t.timeout(5 * MINUTE);
  const started = Date.now();
  await Promise.all(Array.from({ length: PODS }, (_x, i) => core.createNamespacedPod({ namespace: NS, body: podBody(`p${i}`, { app: 'sim', index: String(i) }) })));
  pods = await until(
    async () => {
      const ps = await listPods();
      return ps.length === PODS && ps.every(running) ? ps : undefined;
    },
    `${PODS} pods Running and Ready`,
    3 * MINUTE,
    100,
  );
  t.log(`${PODS} pods from create to Running/Ready: ${Date.now() - started} ms`);
  const ips = pods.map((p) => p.status!.podIP!);
  t.is(new Set(ips).size, PODS, 'every pod has its own address');
  for (const ip of ips) t.regex(ip, /^10\.241\.7\.\d+$/, 'inside the node podCIDR 10.241.7.0/24');
  for (const p of pods) {
    t.is(p.spec?.nodeName, lab.nodeName, 'bound by the simulator');
    t.deepEqual(p.status?.podIPs?.map((x) => x.ip), [p.status!.podIP!]);
    t.true(simNetnsNames().includes(netnsOfPod(p.metadata!.uid!)));
    t.is(hostLinksOfPod(p.metadata!.uid!).length, 1, 'one host-side veth');
  }
  const allocated = new Set((await labAllocations(lab.dir)).map((a) => a.ipv4));
  for (const ip of ips) t.true(allocated.has(ip), `${ip} is allocated by the agent's IPAM`);
});

serial('every pod reaches the next one over TCP (echo) and UDP (echo), from inside its netns', async (t) => {
  t.timeout(5 * MINUTE);
  const started = Date.now();
  const ring = pods.map((p, i) => [p, pods[(i + 1) % pods.length]!] as const);
  const results = await inBatches(ring, 6, async ([from, to]) => {
    const netns = netnsOfPod(from.metadata!.uid!);
    const tcp = await probeFromNetns(netns, { ip: to.status!.podIP!, port: TCP_PORT, protocol: 'tcp', timeoutMs: 3000 });
    const udp = await probeFromNetns(netns, { ip: to.status!.podIP!, port: UDP_PORT, protocol: 'udp', timeoutMs: 3000 });
    return { from: from.metadata!.name!, to: to.metadata!.name!, tcp, udp };
  });
  t.log(`${ring.length * 2} probes (TCP + UDP around the ring): ${Date.now() - started} ms`);
  for (const r of results) {
    t.like(r.tcp, { outcome: 'connected', echoed: true }, `${r.from} -> ${r.to} TCP: ${r.tcp.detail}`);
    t.like(r.udp, { outcome: 'connected', echoed: true }, `${r.from} -> ${r.to} UDP: ${r.udp.detail}`);
  }
});

const probe = (args: string[]) => membrane(['lab', 'probe', ...args], env, 2 * MINUTE);

serial('lab probe reports connected (HTTP with method, path and headers), refused and timed out', async (t) => {
  t.timeout(5 * MINUTE);
  const [a, b] = [pods[0]!, pods[1]!];
  const from = `${NS}/${a.metadata!.name}`;
  const to = `${NS}/${b.metadata!.name}`;

  const ok = await probe([from, to, '--port', String(TCP_PORT)]);
  t.is(ok.code, 0, ok.stderr);
  t.regex(ok.stdout, new RegExp(`^connected: ${from} \\(${a.status!.podIP!.replace(/\./g, '\\.')}\\) -> ${to}`));

  const http = await membrane(['-o', 'json', 'lab', 'probe', from, to, '--port', String(TCP_PORT), '--http', 'POST', '/orders?id=7', '-H', 'x-user: alice'], env);
  t.is(http.code, 0, http.stderr);
  const h = JSON.parse(http.stdout) as ProbeResult;
  t.is(h.outcome, 'connected');
  t.is(h.http?.status, 200);
  const body = JSON.parse(h.http!.body) as { pod: string; method: string; path: string; headers: Record<string, string> };
  t.like(body, { pod: to, method: 'POST', path: '/orders?id=7', headers: { 'x-user': 'alice' } });

  const udp = await membrane(['-o', 'json', 'lab', 'probe', from, b.status!.podIP!, '--port', String(UDP_PORT), '--protocol', 'udp'], env);
  t.is(udp.code, 0, udp.stderr);
  t.like(JSON.parse(udp.stdout) as ProbeResult, { outcome: 'connected', echoed: true, protocol: 'udp', toIP: b.status!.podIP! });

  // Nobody listens on 9999: the pod's kernel answers with a RST.
  const refused = await membrane(['-o', 'json', 'lab', 'probe', from, to, '--port', '9999'], env);
  t.is(refused.code, 1, 'exit 1 when not connected');
  t.like(JSON.parse(refused.stdout) as ProbeResult, { outcome: 'refused', port: 9999 });
  t.regex(refused.stderr, /could not connect to .* TCP\/9999: refused/);

  // An address of the pod range that no pod holds: the host's blackhole route drops it silently.
  const used = new Set(pods.map((p) => p.status!.podIP!));
  const free = Array.from({ length: 250 }, (_x, i) => `10.241.7.${i + 2}`).reverse().find((ip) => !used.has(ip))!;
  const timedOut = await membrane(['-o', 'json', 'lab', 'probe', from, free, '--port', '80', '--timeout', '700'], env);
  t.is(timedOut.code, 1);
  t.like(JSON.parse(timedOut.stdout) as ProbeResult, { outcome: 'timed-out', toIP: free });

  const human = await probe([from, free, '--port', '80', '--timeout', '500']);
  t.is(human.code, 1);
  t.regex(human.stdout, /^timed out: /);
});

serial('lab probe: a pod a CiliumNetworkPolicy does not allow times out, an allowed one connects', async (t) => {
  t.timeout(5 * MINUTE);
  const [client, server, other] = [pods[2]!, pods[3]!, pods[4]!];
  const custom = kc.makeApiClient(CustomObjectsApi);
  await custom.createNamespacedCustomObject({
    group: 'cilium.io',
    version: 'v2',
    namespace: NS,
    plural: 'ciliumnetworkpolicies',
    body: {
      apiVersion: 'cilium.io/v2',
      kind: 'CiliumNetworkPolicy',
      metadata: { name: 'only-client' },
      spec: {
        endpointSelector: { matchLabels: { index: server.metadata!.labels!['index']! } },
        ingress: [{ fromEndpoints: [{ matchLabels: { index: client.metadata!.labels!['index']! } }], toPorts: [{ ports: [{ port: String(TCP_PORT), protocol: 'TCP' }] }] }],
      },
    },
  });
  const to = `${NS}/${server.metadata!.name}`;
  const run = async (from: V1Pod) => JSON.parse((await membrane(['-o', 'json', 'lab', 'probe', `${NS}/${from.metadata!.name}`, to, '--port', String(TCP_PORT), '--timeout', '1000'], env)).stdout) as ProbeResult;
  // The agent applies the policy asynchronously: wait until the other pod is cut off.
  const denied = await until(async () => {
    const r = await run(other);
    return r.outcome === 'timed-out' ? r : undefined;
  }, 'the policy to drop the other pod', 60_000, 200);
  t.is(denied.outcome, 'timed-out');
  t.like(await run(client), { outcome: 'connected', echoed: true });
  // UDP is not allowed by the policy either.
  const udp = await probeFromNetns(netnsOfPod(client.metadata!.uid!), { ip: server.status!.podIP!, port: UDP_PORT, protocol: 'udp', timeoutMs: 1000 });
  t.is(udp.outcome, 'timed-out');
  await custom.deleteNamespacedCustomObject({ group: 'cilium.io', version: 'v2', namespace: NS, plural: 'ciliumnetworkpolicies', name: 'only-client' });
  const restored = await until(async () => {
    const r = await run(other);
    return r.outcome === 'connected' ? r : undefined;
  }, 'the other pod allowed again once the policy is gone', 60_000, 200);
  t.like(restored, { outcome: 'connected', echoed: true });
});

serial('lab probe: malformed arguments and pods that do not exist get clear errors', async (t) => {
  const from = `${NS}/${pods[0]!.metadata!.name}`;
  const usage: [string[], RegExp][] = [
    [[from, `${NS}/p1`], /--port is required/],
    [[from, `${NS}/p1`, '--port', '70000'], /--port 70000 is not a port number/],
    [[from, `${NS}/p1`, '--port', '80', '--protocol', 'icmp'], /--protocol icmp is not one of tcp, udp, sctp/],
    [['p0', `${NS}/p1`, '--port', '80'], /the source pod "p0" is not namespace\/name/],
    [[from, `${NS}/p1`, '--port', '80', '--http', 'GET'], /--http takes a method and a path/],
    [[from, `${NS}/p1`, '--port', '80', '--timeout', 'soon'], /--timeout soon is not a number of milliseconds/],
  ];
  for (const [args, message] of usage) {
    const r = await probe(args);
    t.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    t.regex(r.stderr, message);
  }
  const sctp = await probe([from, `${NS}/p1`, '--port', '80', '--protocol', 'sctp']);
  t.is(sctp.code, 3);
  t.regex(sctp.stderr, /SCTP probes are not supported/);
  const missing = await probe([`${NS}/nope`, `${NS}/p1`, '--port', '80']);
  t.is(missing.code, 1);
  t.regex(missing.stderr, /the source pod sim\/nope does not exist in the lab/);
  const missingDst = await probe([from, 'svc/sim/nothing', '--port', '80']);
  t.is(missingDst.code, 1);
  t.regex(missingDst.stderr, /the service sim\/nothing does not exist in the lab/);
});

serial('deleting the pods removes the objects, their netns, their links and their addresses', async (t) => {
  t.timeout(5 * MINUTE);
  const uids = pods.map((p) => p.metadata!.uid!);
  const ips = pods.map((p) => p.status!.podIP!);
  const started = Date.now();
  // A normal (graceful) delete: the simulator tears down, then removes the object as kubelet would.
  await Promise.all(pods.map((p) => core.deleteNamespacedPod({ namespace: NS, name: p.metadata!.name! })));
  await until(async () => (await listPods()).length === 0, 'every pod object removed', 3 * MINUTE, 100);
  t.log(`${PODS} pods from delete to gone (teardown included): ${Date.now() - started} ms`);
  const netns = simNetnsNames();
  for (const uid of uids) {
    t.false(netns.includes(netnsOfPod(uid)), `netns of ${uid} removed`);
    t.deepEqual(hostLinksOfPod(uid), [], `host links of ${uid} removed`);
  }
  const allocated = new Set((await labAllocations(lab.dir)).map((a) => a.ipv4));
  for (const ip of ips) t.false(allocated.has(ip), `${ip} released`);
});

serial('a pod deleted with grace period 0 is torn down too', async (t) => {
  await core.createNamespacedPod({ namespace: NS, body: podBody('forced', { app: 'forced' }) });
  const pod = await until(async () => {
    const p = (await listPods()).find((x) => x.metadata?.name === 'forced');
    return p && running(p) ? p : undefined;
  }, 'pod forced Running');
  const uid = pod.metadata!.uid!;
  t.true(simNetnsNames().includes(netnsOfPod(uid)));
  await core.deleteNamespacedPod({ namespace: NS, name: 'forced', gracePeriodSeconds: 0 });
  await until(() => !simNetnsNames().includes(netnsOfPod(uid)) && hostLinksOfPod(uid).length === 0, 'the forced pod torn down');
  t.false((await labAllocations(lab.dir)).some((a) => a.ipv4 === pod.status!.podIP), 'address released');
  t.is(apiCode(await core.readNamespacedPod({ namespace: NS, name: 'forced' }).catch((e: unknown) => e)), 404);
});

serial('a hostNetwork pod runs with the node address and gets no netns and no CNI call', async (t) => {
  const before = (await labAllocations(lab.dir)).length;
  await core.createNamespacedPod({ namespace: NS, body: { ...podBody('host', { app: 'host' }), spec: { ...podBody('host', {}).spec!, hostNetwork: true } } });
  const pod = await until(async () => {
    const p = (await listPods()).find((x) => x.metadata?.name === 'host');
    return p && running(p) ? p : undefined;
  }, 'the hostNetwork pod Running');
  t.is(pod.status?.podIP, '127.0.0.1');
  t.false(simNetnsNames().includes(netnsOfPod(pod.metadata!.uid!)));
  t.deepEqual(hostLinksOfPod(pod.metadata!.uid!), []);
  t.is((await labAllocations(lab.dir)).length, before, 'no address allocated');
  await core.deleteNamespacedPod({ namespace: NS, name: 'host' });
  await until(async () => !(await listPods()).some((x) => x.metadata?.name === 'host'), 'the hostNetwork pod removed');
});

serial('lab down tears down running pods and leaves no netns, link, pin or process behind', async (t) => {
  t.timeout(5 * MINUTE);
  await Promise.all(['d0', 'd1', 'd2'].map((n) => core.createNamespacedPod({ namespace: NS, body: podBody(n, { app: 'down' }) })));
  const live = await until(async () => {
    const ps = (await listPods()).filter((p) => p.metadata?.labels?.['app'] === 'down');
    return ps.length === 3 && ps.every(running) ? ps : undefined;
  }, 'three pods Running');
  const st = state();
  const procs = Object.values(st.nodeProcesses ?? {});
  t.is(procs.length, 2);
  const simDir = nodeLayout(labLayout(lab.dir)).simDir;
  const records = live.map((p) => JSON.parse(readFileSync(`${simDir}/${p.metadata!.uid}.json`, 'utf8')) as { server?: { pid: number; startTime: number } });
  const down = await membrane(['lab', 'down'], env, 3 * MINUTE);
  t.is(down.code, 0, down.stderr);
  for (const p of live) {
    t.false(simNetnsNames().includes(netnsOfPod(p.metadata!.uid!)), `netns of ${p.metadata!.name} removed`);
    t.deepEqual(hostLinksOfPod(p.metadata!.uid!), []);
  }
  for (const r of records) t.false(r.server !== undefined && sameProcessAlive(r.server.pid, r.server.startTime), 'pod server stopped');
  for (const p of procs) t.false(sameProcessAlive(p.pid, p.startTime), `${p.name} stopped`);
  t.false(existsSync(nodeLayout(labLayout(lab.dir)).pinDir), 'the lab agent pins are removed');
});
