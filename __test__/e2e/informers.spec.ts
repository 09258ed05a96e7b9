/**
 * ts/k8s informers against a real lab apiserver: every watched kind syncs and
 * sees objects come and go; pod events and their latency; reconnects through a
 * proxy that cuts connections or refuses them; a 410 relist after etcd
 * compaction; clean stop. Needs root (the lab). Its own lab: ports
 * 24790/24800/26443/26257 (below the kernel's ephemeral range 32768-60999, so a
 * client connection cannot be holding one), ranges 10.235.0.0/16 and 10.236.0.0/16, always torn
 * down with `lab down --purge`.
 */
import test from 'ava';
import {
  CoreV1Api,
  CustomObjectsApi,
  DiscoveryV1Api,
  NetworkingV1Api,
  type KubeConfig,
  type V1Pod,
} from '@kubernetes/client-node';
import { filter, firstValueFrom, type Observable } from 'rxjs';
import { Informer, type InformerEvent } from '../../ts/k8s/informer.js';
import { createInformers, type InformerSet } from '../../ts/k8s/informers.js';
import { RESOURCE_KINDS, RESOURCE_NAMES } from '../../ts/k8s/resources.js';
import { HttpsTransport, isGone, type KubeObject } from '../../ts/k8s/index.js';
import { identityFromLabels, identityObject } from '../../ts/identity/object.js';
import type { MembraneIdentity } from '../../ts/k8s/types.js';
import { captureLog, createNamespace, k8sLabSettings, MINUTE, percentile, podSpec, requireRoot, startLab, stopLab, until, withServer } from './helpers/k8s-lab.js';
import { TcpProxy } from './helpers/tcp-proxy.js';

const serial = test.serial;
const lab = k8sLabSettings(`informers-${process.pid}`, {
  etcdClientPort: 24790,
  etcdPeerPort: 24800,
  apiserverPort: 26443,
  controllerManagerPort: 26257,
  podNet: '10.235',
  serviceNet: '10.236',
});

let kc: KubeConfig;

test.before(async (t) => {
  requireRoot('the informer');
  t.timeout(45 * MINUTE);
  // Compact etcd every few seconds and serve watches from etcd (no watch cache, which would keep
  // old events around), so a watch from an old resourceVersion really gets 410 Gone within seconds.
  // The identity e2e runs its lab with the default watch cache.
  kc = await startLab(lab, { MEMBRANE_LAB_EXTRA_ARGS_KUBE_APISERVER: '--etcd-compaction-interval=5s --watch-cache=false' });
});

test.after.always(async () => {
  if (process.getuid?.() !== 0) return;
  await stopLab(lab);
});

function nextEvent<T extends KubeObject>(events$: Observable<InformerEvent<T>>, pred: (e: InformerEvent<T>) => boolean): Promise<InformerEvent<T>> {
  return firstValueFrom(events$.pipe(filter(pred)));
}

const custom = () => kc.makeApiClient(CustomObjectsApi);

serial('every informer of the table syncs against the lab, and sees what exists', async (t) => {
  t.timeout(2 * MINUTE);
  const { log } = captureLog('informers-e2e');
  const set = createInformers(new HttpsTransport(kc), { log });
  const syncedStates: boolean[] = [];
  set.synced$.subscribe((s) => syncedStates.push(s));
  t.teardown(() => set.stop());
  const sub = set.start();
  const t0 = Date.now();
  await set.whenSynced();
  t.log(`all ${RESOURCE_NAMES.length} informers synced in ${Date.now() - t0} ms`);
  t.deepEqual(syncedStates, [false, true]);
  t.deepEqual(
    set.health().map((h) => [h.resource, h.synced]),
    RESOURCE_NAMES.map((n) => [RESOURCE_KINDS[n].group === '' ? n : `${n}.${RESOURCE_KINDS[n].group}`, true]),
  );
  t.truthy(set.get('namespaces').get('kube-system'));
  t.truthy(set.get('nodes').get(lab.nodeName));
  t.truthy(set.get('services').get('default/kubernetes'));
  sub.unsubscribe();
  await set.stop();
});

serial('a pod created, relabelled and deleted is seen as add, update and delete; event latency is measured', async (t) => {
  t.timeout(5 * MINUTE);
  const { log } = captureLog('informers-e2e');
  const core = kc.makeApiClient(CoreV1Api);
  const ns = 'informer-pods';
  await createNamespace(kc, ns);
  const pods = new Informer<V1Pod>(new HttpsTransport(kc), RESOURCE_KINDS.pods, { log, namespace: ns });
  t.teardown(() => pods.stop());
  pods.start();
  await pods.whenSynced();
  const latency = { add: [] as number[], update: [] as number[], delete: [] as number[] };
  const N = 20;
  for (let i = 0; i < N; i++) {
    const name = `p${i}`;
    const key = `${ns}/${name}`;
    let seen = nextEvent(pods.events$, (e) => e.key === key && e.type === 'add');
    let t0 = performance.now();
    await core.createNamespacedPod({ namespace: ns, body: podSpec(name, { app: 'web', i: String(i) }) });
    const added = await seen;
    latency.add.push(performance.now() - t0);
    t.is(added.object.metadata?.labels?.['app'], 'web');

    seen = nextEvent(pods.events$, (e) => e.key === key && e.type === 'update' && e.object.metadata?.labels?.['app'] === 'api');
    const current = await core.readNamespacedPod({ namespace: ns, name });
    current.metadata!.labels = { app: 'api', i: String(i) };
    t0 = performance.now();
    await core.replaceNamespacedPod({ namespace: ns, name, body: current });
    const updated = await seen;
    latency.update.push(performance.now() - t0);
    t.true(updated.type === 'update' && updated.old.metadata?.labels?.['app'] === 'web');
    t.is(pods.get(key)?.metadata?.labels?.['app'], 'api', 'the store is updated before subscribers hear of it');

    seen = nextEvent(pods.events$, (e) => e.key === key && e.type === 'delete');
    t0 = performance.now();
    await core.deleteNamespacedPod({ namespace: ns, name, gracePeriodSeconds: 0 });
    await seen;
    latency.delete.push(performance.now() - t0);
    t.is(pods.get(key), undefined);
  }
  for (const [kind, v] of Object.entries(latency)) {
    const p50 = percentile(v, 50).toFixed(1);
    const p99 = percentile(v, 99).toFixed(1);
    t.log(`pod ${kind} -> informer event: p50 ${p50} ms, max ${Math.max(...v).toFixed(1)} ms over ${v.length} (p99 ${p99} ms), from issuing the write`);
    log.info({ event: kind, p50Ms: Number(p50), p99Ms: Number(p99), samples: v.length }, 'informer event latency');
    t.true(percentile(v, 50) < 1000, `${kind} p50 under a second`);
  }
  await pods.stop();
});

serial('every kind in the table delivers add and delete for an object the test creates', async (t) => {
  t.timeout(3 * MINUTE);
  const { log } = captureLog('informers-e2e');
  const ns = 'informer-kinds';
  await createNamespace(kc, ns);
  const set: InformerSet<'services' | 'endpointslices' | 'networkpolicies' | 'ciliumnetworkpolicies' | 'ciliumclusterwidenetworkpolicies' | 'membraneidentities' | 'namespaces' | 'nodes'> = createInformers(new HttpsTransport(kc), {
    log,
    resources: ['services', 'endpointslices', 'networkpolicies', 'ciliumnetworkpolicies', 'ciliumclusterwidenetworkpolicies', 'membraneidentities', 'namespaces', 'nodes'],
  });
  t.teardown(() => set.stop());
  set.start();
  await set.whenSynced();
  const core = kc.makeApiClient(CoreV1Api);
  const cases: { resource: Parameters<typeof set.get>[0]; key: string; create: () => Promise<unknown>; remove: () => Promise<unknown> }[] = [
    {
      resource: 'services',
      key: `${ns}/svc`,
      create: () => core.createNamespacedService({ namespace: ns, body: { metadata: { name: 'svc' }, spec: { ports: [{ port: 80 }], selector: { app: 'x' } } } }),
      remove: () => core.deleteNamespacedService({ namespace: ns, name: 'svc' }),
    },
    {
      resource: 'endpointslices',
      key: `${ns}/manual-slice`,
      create: () =>
        kc.makeApiClient(DiscoveryV1Api).createNamespacedEndpointSlice({
          namespace: ns,
          body: { metadata: { name: 'manual-slice' }, addressType: 'IPv4', endpoints: [{ addresses: ['10.235.7.9'] }], ports: [{ port: 80, protocol: 'TCP' }] },
        }),
      remove: () => kc.makeApiClient(DiscoveryV1Api).deleteNamespacedEndpointSlice({ namespace: ns, name: 'manual-slice' }),
    },
    {
      resource: 'networkpolicies',
      key: `${ns}/deny`,
      create: () => kc.makeApiClient(NetworkingV1Api).createNamespacedNetworkPolicy({ namespace: ns, body: { metadata: { name: 'deny' }, spec: { podSelector: {}, policyTypes: ['Ingress'] } } }),
      remove: () => kc.makeApiClient(NetworkingV1Api).deleteNamespacedNetworkPolicy({ namespace: ns, name: 'deny' }),
    },
    {
      resource: 'ciliumnetworkpolicies',
      key: `${ns}/cnp`,
      create: () =>
        custom().createNamespacedCustomObject({
          group: 'cilium.io',
          version: 'v2',
          namespace: ns,
          plural: 'ciliumnetworkpolicies',
          body: { apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name: 'cnp' }, spec: { endpointSelector: { matchLabels: { app: 'x' } }, ingress: [{ fromEndpoints: [{ matchLabels: { app: 'y' } }] }] } },
        }),
      remove: () => custom().deleteNamespacedCustomObject({ group: 'cilium.io', version: 'v2', namespace: ns, plural: 'ciliumnetworkpolicies', name: 'cnp' }),
    },
    {
      resource: 'ciliumclusterwidenetworkpolicies',
      key: 'ccnp',
      create: () =>
        custom().createClusterCustomObject({
          group: 'cilium.io',
          version: 'v2',
          plural: 'ciliumclusterwidenetworkpolicies',
          body: { apiVersion: 'cilium.io/v2', kind: 'CiliumClusterwideNetworkPolicy', metadata: { name: 'ccnp' }, spec: { endpointSelector: {}, egress: [{ toEntities: ['world'] }] } },
        }),
      remove: () => custom().deleteClusterCustomObject({ group: 'cilium.io', version: 'v2', plural: 'ciliumclusterwidenetworkpolicies', name: 'ccnp' }),
    },
    {
      resource: 'membraneidentities',
      key: '40001',
      create: () => custom().createClusterCustomObject({ group: 'membrane.io', version: 'v1alpha1', plural: 'membraneidentities', body: identityObject(identityFromLabels(40001, { 'k8s:app': 'kinds' })) }),
      remove: () => custom().deleteClusterCustomObject({ group: 'membrane.io', version: 'v1alpha1', plural: 'membraneidentities', name: '40001' }),
    },
    {
      resource: 'namespaces',
      key: 'informer-kinds-extra',
      create: () => core.createNamespace({ body: { metadata: { name: 'informer-kinds-extra' } } }),
      // Namespace deletion is finalized by the controller-manager; the informer sees it leave.
      remove: () => core.deleteNamespace({ name: 'informer-kinds-extra' }),
    },
    {
      resource: 'nodes',
      key: 'informer-fake-node',
      create: () => core.createNode({ body: { metadata: { name: 'informer-fake-node', labels: { role: 'test' } } } }),
      remove: () => core.deleteNode({ name: 'informer-fake-node' }),
    },
  ];
  for (const c of cases) {
    const inf = set.get(c.resource) as unknown as Informer<KubeObject>;
    const added = nextEvent(inf.events$, (e) => e.key === c.key && e.type === 'add');
    await c.create();
    const a = await added;
    t.is(a.key, c.key, `${c.resource} add`);
    const removed = nextEvent(inf.events$, (e) => e.key === c.key && e.type === 'delete');
    await c.remove();
    await removed;
    t.is(inf.get(c.key), undefined, `${c.resource} delete`);
  }
  await set.stop();
});

serial('cut connections and an apiserver outage: the informer reconnects with logged backoff and catches up', async (t) => {
  t.timeout(3 * MINUTE);
  const { log, lines } = captureLog('informers-e2e');
  const proxy = new TcpProxy('127.0.0.1', lab.apiserverPort);
  const port = await proxy.listen();
  t.teardown(() => proxy.stop());
  const viaProxy = withServer(kc, `https://127.0.0.1:${port}`);
  const ns = 'informer-blips';
  await createNamespace(kc, ns);
  const core = kc.makeApiClient(CoreV1Api);
  const viaProxyTransport = new HttpsTransport(viaProxy);
  const pods = new Informer<V1Pod>(viaProxyTransport, RESOURCE_KINDS.pods, {
    log,
    namespace: ns,
    backoff: { initialMs: 100, maxMs: 1600, factor: 2, jitter: 0.2 },
  });
  t.teardown(() => pods.stop());
  pods.start();
  await pods.whenSynced();
  await until(() => pods.health().watching, 'the watch to open');

  // A blip: every connection reset. The informer resumes from its resourceVersion.
  t.true(proxy.cutAll() >= 1);
  await core.createNamespacedPod({ namespace: ns, body: podSpec('during-blip', { app: 'x' }) });
  await until(() => pods.get(`${ns}/during-blip`), 'the pod created during the blip');
  t.true(lines().some((l) => l['msg'] === 'watch failed; reconnecting' && l['attempt'] === 1));

  // An outage: nothing accepts connections for a few seconds; attempts back off.
  await proxy.stop();
  await core.createNamespacedPod({ namespace: ns, body: podSpec('during-outage', { app: 'y' }) });
  await core.deleteNamespacedPod({ namespace: ns, name: 'during-blip', gracePeriodSeconds: 0 });
  await until(() => lines().filter((l) => l['msg'] === 'watch failed; reconnecting' && Number(l['attempt']) >= 4).length > 0, 'four failed attempts', 30_000);
  const attempts = lines()
    .filter((l) => l['msg'] === 'watch failed; reconnecting')
    .map((l) => [l['attempt'], l['delayMs'], String(l['err']).slice(0, 60)]);
  t.log(`reconnect attempts (attempt, delayMs, error): ${JSON.stringify(attempts)}`);
  const delays = lines()
    .filter((l) => l['msg'] === 'watch failed; reconnecting' && Number(l['attempt']) >= 2)
    .map((l) => Number(l['delayMs']));
  t.true(delays.every((d, i) => i === 0 || d >= delays[i - 1]! * 0.8 - 1 || d >= 1600 * 0.8), `delays grow: ${delays.join(', ')}`);
  t.true(delays.every((d) => d <= 1600), 'and are capped');
  t.true(lines().some((l) => l['msg'] === 'watch failed; reconnecting' && /ECONNREFUSED/.test(String(l['err']))));
  await proxy.listen(port);
  await until(() => pods.get(`${ns}/during-outage`) && !pods.get(`${ns}/during-blip`), 'the informer to catch up after the outage', 30_000);
  t.true(pods.isSynced());
  t.true(proxy.active >= 1);
  await pods.stop();
  viaProxyTransport.close(); // idle keep-alive sockets
  await until(() => proxy.active === 0, 'stop to close every connection', 5000);
  t.is(proxy.active, 0, 'stop leaves no connection open');
});

serial('a watch from a compacted resourceVersion gets 410; the informer lists again and converges', async (t) => {
  t.timeout(3 * MINUTE);
  const { log, lines } = captureLog('informers-e2e');
  const transport = new HttpsTransport(kc);
  const path = '/apis/membrane.io/v1alpha1/membraneidentities';
  const group = { group: 'membrane.io', version: 'v1alpha1', plural: 'membraneidentities' };
  const mk = (n: number) => custom().createClusterCustomObject({ ...group, body: identityObject(identityFromLabels(n, { 'k8s:app': `compaction-${n}` })) });

  // The transport classifies the apiserver's answer as Gone.
  await mk(41000);
  const first = (await transport.list(path, {}, AbortSignal.timeout(10_000))).resourceVersion;
  for (let i = 1; i <= 5; i++) await mk(41000 + i);
  await until(
    async () => {
      try {
        await transport.watch(path, { resourceVersion: first }, AbortSignal.timeout(3000), () => {}, { idleTimeoutMs: 2000 });
        return false;
      } catch (err) {
        return isGone(err) ? true : false;
      }
    },
    `etcd compaction to pass resourceVersion ${first}`,
    60_000,
    1000,
  );

  // An informer that was away (proxy down) across a compaction comes back to a 410 and relists.
  const proxy = new TcpProxy('127.0.0.1', lab.apiserverPort);
  const port = await proxy.listen();
  t.teardown(() => proxy.stop());
  const ids = new Informer<MembraneIdentity>(new HttpsTransport(withServer(kc, `https://127.0.0.1:${port}`)), RESOURCE_KINDS.membraneidentities, {
    log,
    backoff: { initialMs: 200, maxMs: 1000, factor: 2, jitter: 0 },
  });
  t.teardown(() => ids.stop());
  ids.start();
  await ids.whenSynced();
  await until(() => ids.health().watching, 'the watch to open');
  const rvBefore = ids.health().resourceVersion;
  await proxy.stop();
  await custom().deleteClusterCustomObject({ ...group, name: '41001' });
  for (let i = 10; i < 15; i++) await mk(41000 + i);
  await until(
    async () => {
      try {
        await transport.watch(path, { resourceVersion: rvBefore }, AbortSignal.timeout(3000), () => {}, { idleTimeoutMs: 2000 });
        return false;
      } catch (err) {
        return isGone(err);
      }
    },
    `compaction past the informer's resourceVersion ${rvBefore}`,
    60_000,
    1000,
  );
  await proxy.listen(port);
  await until(() => ids.health().relists >= 1, 'the informer to relist after 410', 30_000);
  await until(() => ids.get('41014') && !ids.get('41001'), 'the store to converge', 30_000);
  const server = (await transport.list(path, {}, AbortSignal.timeout(10_000))).items.map((o) => o.metadata?.name).sort();
  t.deepEqual(ids.keys().sort(), server);
  t.true(lines().some((l) => l['msg'] === 'resource version expired; listing again'));
  t.log(`relists: ${ids.health().relists}, reconnects: ${ids.health().reconnects}`);
});
