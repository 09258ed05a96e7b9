import test from 'ava';
import type { Endpoint } from '../../ts/endpoint/endpoint.js';
import { computeDesired, type DesiredInputs, type PolicyOutcome } from '../../ts/agent/desired.js';
import { Pipeline } from '../../ts/agent/pipeline.js';
import { normaliser, type DatapathMaps, type MapSpec } from '../../ts/agent/backends.js';
import { ctState, policyPort, policyViews } from '../../ts/agent/views.js';
import { endpointInfoCodec, ipcacheEntryCodec, policyEntryCodec, type StructCodec } from '../../ts/datapath/codecs.js';
import { plainEqual } from '../../ts/reconcile/diff.js';
import type { MapBackend } from '../../ts/reconcile/reconciler.js';
import { createLogger } from '../../ts/log/logger.js';

const log = createLogger({ component: 'test', level: 'silent' });

const endpoint = (id: number, ip: string, over: Partial<Endpoint> = {}): Endpoint => ({
  id,
  containerId: `c${id}`,
  netns: `/var/run/netns/p${id}`,
  ifname: 'eth0',
  hostIface: `lxc${id}`,
  ifindex: 100 + id,
  ipv4: ip,
  mac: '02:00:00:00:00:01',
  nodeMac: '02:00:00:00:00:02',
  pod: { namespace: 'default', name: `p${id}` },
  identity: 0,
  state: 'ready',
  createdAt: '2026-11-23T00:00:00.000Z',
  ...over,
});

const noPolicy: PolicyOutcome = { entries: [], enforcement: new Map(), cidrIdentities: new Map() };

const inputs = (over: Partial<DesiredInputs> = {}): DesiredInputs => ({
  localNode: 'n1',
  pods: [],
  lastKnown: new Map(),
  nodes: [{ name: 'n1', ips: ['192.168.0.1'] }, { name: 'n2', ips: ['192.168.0.2'] }],
  apiserverIps: ['192.168.0.10'],
  endpoints: [],
  policy: noPolicy,
  ...over,
});

const ipcacheOf = (s: ReturnType<typeof computeDesired>) => Object.fromEntries(s.ipcache.map(([k, v]) => [`${k.addr}/${k.prefixLen}`, v.identity]));

test('pods, nodes and the apiserver land in the ipcache with their identities', (t) => {
  const s = computeDesired(inputs({ pods: [{ key: 'default/a', ip: '10.0.0.5', identity: 300, pending: false }] }));
  t.deepEqual(ipcacheOf(s), { '10.0.0.5/32': 300, '192.168.0.1/32': 1, '192.168.0.2/32': 6, '192.168.0.10/32': 7 });
  t.is(s.ipcacheSources.get('10.0.0.5/32'), 'pod');
});

test('a pod still resolving keeps the identity its address had; an invalid one does not', (t) => {
  const lastKnown = new Map([['10.0.0.5', 300], ['10.0.0.6', 301]]);
  const s = computeDesired(
    inputs({
      lastKnown,
      pods: [
        { key: 'default/a', ip: '10.0.0.5', identity: undefined, pending: true },
        { key: 'default/b', ip: '10.0.0.6', identity: undefined, pending: false },
      ],
    }),
  );
  t.is(ipcacheOf(s)['10.0.0.5/32'], 300);
  t.is(ipcacheOf(s)['10.0.0.6/32'], undefined);
});

test('a local endpoint is in the ipcache from its own record, and denies everything until its identity is known', (t) => {
  const s = computeDesired(inputs({ endpoints: [{ endpoint: endpoint(1, '10.0.0.9'), identity: undefined }, { endpoint: endpoint(2, '10.0.0.10'), identity: 400 }] }));
  t.is(ipcacheOf(s)['10.0.0.10/32'], 400);
  t.is(ipcacheOf(s)['10.0.0.9/32'], undefined);
  const [unknown, known] = s.endpoints;
  t.is(unknown!.flags, 3, 'ingress and egress enforced, no allow: default deny');
  t.is(unknown!.identity, 0);
  t.is(known!.flags, 0, 'no policy selects it: not enforced, as Kubernetes does');
  t.deepEqual(s.enforcement.get(1), { epId: 1, ingress: true, egress: true });
});

test('policy entries are written only for endpoints that are local; enforcement flags come from the policy', (t) => {
  const policy: PolicyOutcome = {
    entries: [
      [{ prefixLen: 96, epId: 2, direction: 1, identity: 300, proto: 6, dport: 80 }, { action: 1 }],
      [{ prefixLen: 96, epId: 9, direction: 1, identity: 300, proto: 6, dport: 80 }, { action: 1 }],
    ],
    enforcement: new Map([[2, { epId: 2, ingress: true, egress: false }]]),
    cidrIdentities: new Map([['203.0.113.0/24', 16777217]]),
  };
  const s = computeDesired(inputs({ endpoints: [{ endpoint: endpoint(2, '10.0.0.10'), identity: 400 }], policy }));
  t.deepEqual(s.policy.map(([k]) => k.epId), [2]);
  t.is(s.endpoints[0]!.flags, 1);
  t.is(ipcacheOf(s)['203.0.113.0/24'], 16777217);
});

test('policy ports are shown as the map stores them', (t) => {
  const k = { epId: 1, direction: 1, identity: 0, proto: 6, dport: 0 };
  t.is(policyPort({ ...k, prefixLen: 64 }), 'ANY');
  t.is(policyPort({ ...k, prefixLen: 80 }), 'TCP/ANY');
  t.is(policyPort({ ...k, prefixLen: 96, dport: 443 }), 'TCP/443');
  t.is(policyPort({ ...k, prefixLen: 86, dport: 1024 }), 'TCP/1024-2047');
  const views = policyViews([[{ ...k, prefixLen: 96, dport: 80 }, { action: 2, cookie: 7 }], [{ ...k, epId: 2, prefixLen: 64 }, { action: 1 }]], 1);
  t.deepEqual(views, [{ direction: 'ingress', identity: 0, port: 'TCP/80', action: 'deny', proxyPort: 0, cookie: 7 }]);
  t.is(ctState({ saddr: '1.1.1.1', daddr: '2.2.2.2', sport: 1, dport: 2, proto: 6, direction: 2 }, { flags: 1 } as never), 'established');
});

/** An in-memory map that records the order of writes across maps. */
function memoryMap<K, V>(name: string, journal: string[], keyId: (k: K) => string, codec: StructCodec<V>): MapSpec<K, V> {
  const content = new Map<string, readonly [K, V]>();
  const backend: MapBackend<K, V> = {
    name,
    dump: async () => [...content.values()],
    update: async (entries) => {
      journal.push(`${name}:update:${entries.length}`);
      for (const e of entries) content.set(keyId(e[0]), e);
    },
    delete: async (keys) => {
      journal.push(`${name}:delete:${keys.length}`);
      for (const k of keys) content.delete(keyId(k));
    },
  };
  return { backend, keyId, equal: plainEqual, normalise: normaliser(codec) };
}

test('the pipeline adds policy, then moves the ipcache, then the endpoint flags, then removes stale policy; sync() waits for the maps', async (t) => {
  const journal: string[] = [];
  const maps: DatapathMaps = {
    ipcache: memoryMap('ipcache', journal, (k) => `${k.addr}/${k.prefixLen}`, ipcacheEntryCodec),
    policy: memoryMap('policy', journal, (k) => JSON.stringify(k), policyEntryCodec),
    endpointsByIfindex: memoryMap('ep_ifindex', journal, String, endpointInfoCodec),
    endpointsByIp: memoryMap('ep_ip', journal, (k) => k, endpointInfoCodec),
  };
  let state = inputs();
  const pipeline = new Pipeline({ maps, compute: () => computeDesired(state), log, windowMs: 1 });
  await pipeline.start();
  await pipeline.sync();
  journal.length = 0;
  state = inputs({
    endpoints: [{ endpoint: endpoint(2, '10.0.0.10'), identity: 400 }],
    policy: { entries: [[{ prefixLen: 96, epId: 2, direction: 1, identity: 300, proto: 6, dport: 80 }, { action: 1 }]], enforcement: new Map([[2, { epId: 2, ingress: true, egress: false }]]), cidrIdentities: new Map() },
  });
  await pipeline.sync();
  t.deepEqual(journal, ['policy:update:1', 'ipcache:update:1', 'ep_ifindex:update:1', 'ep_ip:update:1']);
  journal.length = 0;
  await pipeline.sync();
  t.deepEqual(journal, [], 'an unchanged desired state writes nothing');
  // A peer relabelled from 300 to 301: the allow for 301 goes in before the ipcache moves, the one for 300 after.
  state = inputs({
    pods: [{ key: 'default/peer', ip: '10.0.0.5', identity: 301, pending: false }],
    endpoints: [{ endpoint: endpoint(2, '10.0.0.10'), identity: 400 }],
    policy: { entries: [[{ prefixLen: 96, epId: 2, direction: 1, identity: 301, proto: 6, dport: 80 }, { action: 1 }]], enforcement: new Map([[2, { epId: 2, ingress: true, egress: false }]]), cidrIdentities: new Map() },
  });
  await pipeline.sync();
  t.deepEqual(journal, ['policy:update:1', 'ipcache:update:1', 'policy:delete:1']);
  pipeline.stop();
});

test('the agent keeps only the fields it reads of pods, namespaces and nodes', async (t) => {
  const { slimPod, slimNode, withoutManagedFields } = await import('../../ts/agent/slim.js');
  const pod = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'a', namespace: 'default', uid: 'u', resourceVersion: '7', labels: { app: 'web' }, managedFields: [{ manager: 'kubectl' }], annotations: { big: 'x'.repeat(1000) } },
    spec: { nodeName: 'n1', serviceAccountName: 'sa', containers: [{ name: 'c', image: 'i' }] },
    status: { podIP: '10.0.0.5', podIPs: [{ ip: '10.0.0.5' }], phase: 'Running', conditions: [{ type: 'Ready' }] },
  };
  t.deepEqual(slimPod(pod as never), {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'a', namespace: 'default', uid: 'u', resourceVersion: '7', labels: { app: 'web' } },
    spec: { nodeName: 'n1', serviceAccountName: 'sa' },
    status: { podIP: '10.0.0.5', podIPs: [{ ip: '10.0.0.5' }], phase: 'Running' },
  } as never);
  const node = { metadata: { name: 'n1' }, spec: { podCIDR: '10.0.0.0/24', taints: [] }, status: { addresses: [{ type: 'InternalIP', address: '192.168.0.1' }], images: [{}] } };
  t.deepEqual(slimNode(node as never), { apiVersion: undefined, kind: undefined, metadata: { name: 'n1' }, spec: { podCIDR: '10.0.0.0/24' }, status: { addresses: [{ type: 'InternalIP', address: '192.168.0.1' }] } } as never);
  const policy = { metadata: { name: 'p', managedFields: [{}], annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{}', keep: 'me' } }, spec: { endpointSelector: {} } };
  t.deepEqual(withoutManagedFields(policy as never), { metadata: { name: 'p', annotations: { keep: 'me' } }, spec: { endpointSelector: {} } } as never);
});
