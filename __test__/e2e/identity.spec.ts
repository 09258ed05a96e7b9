/**
 * Cluster identities against a real lab apiserver: several agents (each with
 * its own transport, informer and API client) allocating in parallel agree on
 * every number; a late agent finds what exists; usage stamps; garbage
 * collection after (not before) the grace period, sparing identities in use;
 * malformed MembraneIdentity objects skipped; pods -> identities end to end.
 * Needs root (the lab). Its own lab: ports 25790/25800/27443/27257, ranges
 * 10.237.0.0/16 and 10.238.0.0/16, default apiserver settings (watch cache on),
 * always torn down with `lab down --purge`.
 */
import test from 'ava';
import { CoreV1Api, CustomObjectsApi, type KubeConfig, type V1Namespace, type V1Pod } from '@kubernetes/client-node';
import { filter, firstValueFrom } from 'rxjs';
import { IdentityAllocator } from '../../ts/identity/allocator.js';
import { KubeIdentityApi } from '../../ts/identity/api.js';
import { IdentityGarbageCollector } from '../../ts/identity/gc.js';
import { formatLabels, labelsHash, type SecurityLabels } from '../../ts/identity/labels.js';
import { firstCandidate } from '../../ts/identity/numbering.js';
import { identityFromLabels, identityObject, LABELS_HASH_LABEL, parseIdentityObject } from '../../ts/identity/object.js';
import { PodIdentities } from '../../ts/identity/pods.js';
import { KubeConnection } from '../../ts/k8s/connection.js';
import { Informer } from '../../ts/k8s/informer.js';
import { RESOURCE_KINDS } from '../../ts/k8s/resources.js';
import { HttpsTransport } from '../../ts/k8s/transport.js';
import type { MembraneIdentity } from '../../ts/k8s/types.js';
import { captureLog, createNamespace, k8sLabSettings, MINUTE, percentile, podSpec, requireRoot, startLab, stopLab, until, type CapturedLog } from './helpers/k8s-lab.js';

const serial = test.serial;
const lab = k8sLabSettings(`identity-${process.pid}`, {
  etcdClientPort: 25790,
  etcdPeerPort: 25800,
  apiserverPort: 27443,
  controllerManagerPort: 27257,
  podNet: '10.237',
  serviceNet: '10.238',
});
const GROUP = { group: 'membrane.io', version: 'v1alpha1', plural: 'membraneidentities' };

let kc: KubeConfig;

test.before(async (t) => {
  requireRoot('the identity');
  t.timeout(45 * MINUTE);
  kc = await startLab(lab);
});

test.after.always(async () => {
  if (process.getuid?.() !== 0) return;
  await stopLab(lab);
});

interface Agent {
  node: string;
  informer: Informer<MembraneIdentity>;
  allocator: IdentityAllocator;
  api: KubeIdentityApi;
  logs: CapturedLog;
  stop: () => Promise<void>;
}

/** One agent's identity machinery: its own transport, informer, API client and allocator. */
async function startAgent(node: string, refreshIntervalMs = 60_000): Promise<Agent> {
  const logs = captureLog(`agent-${node}`);
  const connection = new KubeConnection(kc);
  const informer = new Informer<MembraneIdentity>(new HttpsTransport(kc, { connection }), RESOURCE_KINDS.membraneidentities, { log: logs.log });
  const api = new KubeIdentityApi(kc, connection);
  const allocator = new IdentityAllocator(api, informer, { nodeName: node, log: logs.log, refreshIntervalMs });
  informer.start();
  const sub = allocator.start();
  await informer.whenSynced();
  return {
    node,
    informer,
    allocator,
    api,
    logs,
    stop: async () => {
      sub.unsubscribe();
      await informer.stop();
      connection.close();
    },
  };
}

async function serverIdentities(): Promise<MembraneIdentity[]> {
  const list = (await kc.makeApiClient(CustomObjectsApi).listClusterCustomObject(GROUP)) as { items: MembraneIdentity[] };
  return list.items;
}

const labelSet = (app: string, ns = 'default'): SecurityLabels => ({
  'k8s:app': app,
  'k8s:io.kubernetes.pod.namespace': ns,
  'k8s:io.cilium.k8s.policy.cluster': 'lab',
});

function shuffled<T>(xs: readonly T[], seed: number): T[] {
  const out = [...xs];
  let s = seed;
  for (let i = out.length - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

serial('three agents allocating 40 label sets in parallel agree on every number; no number stands for two label sets', async (t) => {
  t.timeout(3 * MINUTE);
  const agents = await Promise.all(['node-a', 'node-b', 'node-c'].map((n) => startAgent(n)));
  t.teardown(() => Promise.all(agents.map((a) => a.stop())));
  const sets = Array.from({ length: 40 }, (_, i) => labelSet(`race-${i}`));
  const t0 = performance.now();
  const results = await Promise.all(
    agents.map(async (agent, k) => {
      const order = shuffled(
        sets.map((_, i) => i),
        k + 1,
      );
      const ids = new Array<number>(sets.length);
      await Promise.all(
        order.map(async (i) => {
          ids[i] = (await agent.allocator.acquire(`race/p${i}`, sets[i]!))!;
        }),
      );
      return ids;
    }),
  );
  const ms = performance.now() - t0;
  t.deepEqual(results[1], results[0]);
  t.deepEqual(results[2], results[0]);
  const ids = results[0]!;
  t.is(new Set(ids).size, sets.length, 'distinct label sets got distinct numbers');

  const objects = (await serverIdentities()).filter((o) => o.spec?.securityLabels?.['k8s:app']?.startsWith('race-'));
  t.is(objects.length, sets.length, 'exactly one object per label set');
  const byHash = new Map<string, string[]>();
  for (const o of objects) {
    const p = parseIdentityObject(o);
    t.true(p.ok, `object ${o.metadata?.name} is well-formed`);
    const h = o.metadata!.labels![LABELS_HASH_LABEL]!;
    byHash.set(h, [...(byHash.get(h) ?? []), o.metadata!.name!]);
  }
  t.true([...byHash.values()].every((names) => names.length === 1), 'no label set has two numbers');
  for (const [i, id] of ids.entries()) t.deepEqual(objects.find((o) => o.metadata?.name === String(id))?.spec?.securityLabels, { ...sets[i] });

  const stats = agents.map((a) => a.allocator.stats);
  const created = stats.reduce((n, s) => n + s.created, 0);
  const raced = stats.reduce((n, s) => n + s.conflictsSameLabels, 0);
  const foundByList = stats.reduce((n, s) => n + s.foundByList, 0);
  t.is(created, sets.length, 'each identity was created once; the other agents found or lost the race for it');
  t.log(`3 agents x ${sets.length} label sets in ${ms.toFixed(0)} ms: created ${created}, lost create races ${raced}, found by label-selector read ${foundByList}, other-label conflicts ${stats.reduce((n, s) => n + s.conflictsOtherLabels, 0)}`);
  // Every node is listed in status.nodes of every identity.
  await until(async () => (await serverIdentities()).filter((o) => o.spec?.securityLabels?.['k8s:app']?.startsWith('race-')).every((o) => o.status?.nodes?.length === 3), 'usage stamps from all three nodes', 30_000, 200);
  const one = (await serverIdentities()).find((o) => o.metadata?.name === String(ids[0]))!;
  t.deepEqual(one.status?.nodes, ['node-a', 'node-b', 'node-c']);
  t.true(Date.now() - Date.parse(one.status!.lastUsed!) < 60_000);
});

serial('an agent started later uses the identities that exist and creates none; identities reach other agents quickly', async (t) => {
  t.timeout(2 * MINUTE);
  const late = await startAgent('node-late');
  t.teardown(() => late.stop());
  const writer = await startAgent('node-writer');
  t.teardown(() => writer.stop());
  const sets = Array.from({ length: 40 }, (_, i) => labelSet(`race-${i}`));
  const ids = await Promise.all(sets.map((l, i) => late.allocator.acquire(`late/p${i}`, l)));
  t.is(late.allocator.stats.created, 0);
  t.true(ids.every((id) => typeof id === 'number'));
  t.deepEqual(late.allocator.lookup(ids[0]!)?.labels, sets[0]);

  // Propagation: an identity allocated by one agent appears in another agent's identity stream.
  const latencies: number[] = [];
  for (let i = 0; i < 10; i++) {
    const labels = labelSet(`propagate-${i}`);
    const seen = firstValueFrom(late.allocator.events$.pipe(filter((e) => e.type === 'add' && e.identity.hash === labelsHash(labels))));
    const t0 = performance.now();
    const id = await writer.allocator.acquire(`w/p${i}`, labels);
    const ev = await seen;
    latencies.push(performance.now() - t0);
    t.true(ev.identity.id === id);
  }
  t.log(`identity allocated on one agent -> add event on another: p50 ${percentile(latencies, 50).toFixed(1)} ms, max ${Math.max(...latencies).toFixed(1)} ms (includes the allocation)`);
});

serial('garbage collection: an unused identity survives the grace period and is deleted after it; one in use elsewhere never is', async (t) => {
  t.timeout(3 * MINUTE);
  const graceMs = 4000;
  const a = await startAgent('gc-a', 1000);
  t.teardown(() => a.stop());
  const b = await startAgent('gc-b', 1000);
  t.teardown(() => b.stop());
  const gc = new IdentityGarbageCollector(a.api, a.allocator, { log: a.logs.log, graceMs, intervalMs: 250 });
  const gcSub = gc.start();
  t.teardown(() => gcSub.unsubscribe());
  const unused = (await a.allocator.acquire('gc/temp', labelSet('gc-temp')))!;
  const kept = (await b.allocator.acquire('gc/kept', labelSet('gc-kept')))!;
  // Both are in use now; a few grace periods' worth of GC passes change nothing.
  await new Promise((r) => setTimeout(r, 1500));
  t.truthy(await a.api.get(String(unused)));

  a.allocator.release('gc/temp');
  const releasedAt = Date.now();
  await until(async () => (await a.api.get(String(unused)))?.status?.nodes?.length === 0, 'the release stamp', 10_000, 100);
  const stamped = Date.parse((await a.api.get(String(unused)))!.status!.lastUsed!);
  t.true(Math.abs(stamped - releasedAt) < 2000, 'lastUsed is stamped at release');

  // Not before the grace period...
  await new Promise((r) => setTimeout(r, graceMs - 1000 - (Date.now() - stamped)));
  t.truthy(await a.api.get(String(unused)), 'still there 1 s before the grace period ends');
  // ...but soon after it.
  await until(async () => (await a.api.get(String(unused))) === undefined, 'the unused identity to be collected', 10_000, 100);
  const goneAfter = Date.now() - stamped;
  t.log(`unused identity ${unused} deleted ${goneAfter} ms after its last use (grace ${graceMs} ms, GC every 250 ms)`);
  t.true(goneAfter >= graceMs, `not before the grace period (${goneAfter} ms)`);
  t.true(goneAfter < graceMs + 3000, `soon after it (${goneAfter} ms)`);
  t.true(a.logs.lines().some((l) => l['msg'] === 'unused identity deleted' && l['identity'] === unused));

  // The identity node gc-b keeps using outlives three grace periods of node gc-a's collector.
  await new Promise((r) => setTimeout(r, 3 * graceMs));
  const keptObj = await a.api.get(String(kept));
  t.truthy(keptObj, 'an identity in use on another node is never collected');
  t.deepEqual(keptObj?.status?.nodes, ['gc-b']);
  t.true(Date.now() - Date.parse(keptObj!.status!.lastUsed!) < 2500, 'gc-b keeps stamping it');
  t.false(a.logs.lines().some((l) => l['msg'] === 'unused identity deleted' && l['identity'] === kept));
  // And the collected label set gets a (fresh) identity again on demand.
  t.is(typeof (await a.allocator.acquire('gc/temp2', labelSet('gc-temp'))), 'number');
});

serial('malformed MembraneIdentity objects are logged and skipped; the allocator stays healthy and GC leaves them alone', async (t) => {
  t.timeout(2 * MINUTE);
  const custom = kc.makeApiClient(CustomObjectsApi);
  const victim = labelSet('malformed-victim');
  const first = firstCandidate(labelsHash(victim));
  // 1. Our labels at our first candidate, but a labels-hash label that does not match them.
  const wrongHash = identityObject(identityFromLabels(first, victim));
  wrongHash.metadata!.labels![LABELS_HASH_LABEL] = '0'.repeat(32);
  // 2. No labels-hash label at all.
  const noHash = identityObject(identityFromLabels(50001, labelSet('malformed-nohash')));
  delete noHash.metadata!.labels![LABELS_HASH_LABEL];
  // 3. A security label without a source prefix and a value breaking label syntax.
  const badLabels: MembraneIdentity = { apiVersion: 'membrane.io/v1alpha1', kind: 'MembraneIdentity', metadata: { name: '50002', labels: { [LABELS_HASH_LABEL]: 'f'.repeat(32) } }, spec: { securityLabels: { app: 'no source', 'k8s:x': 'bad value!' } } };
  for (const body of [wrongHash, noHash, badLabels]) await custom.createClusterCustomObject({ ...GROUP, body });

  const agent = await startAgent('malformed-node', 500);
  t.teardown(() => agent.stop());
  const gc = new IdentityGarbageCollector(agent.api, agent.allocator, { log: agent.logs.log, graceMs: 1500 });
  const skipped = agent.logs.lines().filter((l) => l['msg'] === 'malformed MembraneIdentity skipped');
  t.deepEqual(skipped.map((l) => l['identityObject']).sort(), [String(first), '50001', '50002'].sort());
  t.log(skipped.map((l) => `${l['identityObject']}: ${l['reason']}`).join('\n'));
  t.regex(String(skipped.find((l) => l['identityObject'] === '50001')?.['reason']), /labels-hash label is missing/);

  const id = await agent.allocator.acquire('m/victim', victim);
  t.not(id, first, 'the malformed object is not used even though it carries our labels');
  t.true(parseIdentityObject((await agent.api.get(String(id)))!).ok);
  t.is(typeof (await agent.allocator.acquire('m/other', labelSet('malformed-bystander'))), 'number');
  t.deepEqual(agent.allocator.malformed().map((m) => m.id).sort((x, y) => x - y), [first, 50001, 50002].sort((x, y) => x - y));

  agent.allocator.release('m/victim');
  agent.allocator.release('m/other');
  await new Promise((r) => setTimeout(r, 2000));
  const r = await gc.runOnce();
  t.true(r.deleted.includes(id!), 'the valid identity, unused past the grace period, is collected');
  t.false(r.deleted.includes(first) || r.deleted.includes(50001) || r.deleted.includes(50002), 'malformed objects are not ours to delete');
  for (const name of [String(first), '50001', '50002']) t.truthy(await agent.api.get(name));
  t.true(agent.allocator.isSynced());
});

serial('pods -> identities: replicas share one, relabels move, namespace labels count, a deleted pod releases; another node agrees', async (t) => {
  t.timeout(3 * MINUTE);
  const core = kc.makeApiClient(CoreV1Api);
  const ns = 'shop';
  await createNamespace(kc, ns, { team: 'payments' });
  const logs = captureLog('pods-e2e');
  const transport = new HttpsTransport(kc);
  const pods = new Informer<V1Pod>(transport, RESOURCE_KINDS.pods, { log: logs.log });
  const namespaces = new Informer<V1Namespace>(transport, RESOURCE_KINDS.namespaces, { log: logs.log });
  t.teardown(() => Promise.all([pods.stop(), namespaces.stop()]));
  const local = await startAgent(lab.nodeName);
  t.teardown(() => local.stop());
  const remote = await startAgent('other-node');
  t.teardown(() => remote.stop());
  const mine = new PodIdentities(pods, namespaces, local.allocator, { clusterName: 'lab', nodeName: lab.nodeName, log: logs.log });
  const theirs = new PodIdentities(pods, namespaces, remote.allocator, { clusterName: 'lab', nodeName: 'other-node', log: logs.log });
  const subs = [pods.start(), namespaces.start(), mine.start(), theirs.start()];
  t.teardown(() => subs.forEach((s) => s.unsubscribe()));
  await Promise.all([pods.whenSynced(), namespaces.whenSynced()]);

  const t0 = performance.now();
  await core.createNamespacedPod({ namespace: ns, body: podSpec('web-1', { app: 'web', 'pod-template-hash': 'aaa' }, lab.nodeName) });
  await core.createNamespacedPod({ namespace: ns, body: podSpec('web-2', { app: 'web', 'pod-template-hash': 'bbb' }, lab.nodeName) });
  const web = await until(() => mine.identityOf(`${ns}/web-1`), 'web-1 identity');
  t.log(`pod created -> identity resolved on its node in ${(performance.now() - t0).toFixed(0)} ms`);
  t.is(await until(() => mine.identityOf(`${ns}/web-2`), 'web-2 identity'), web, 'replicas share an identity');
  t.is(local.allocator.localRefs(web), 2);
  const labels = local.allocator.lookup(web)!.labels;
  t.log(`identity ${web}: ${formatLabels(labels)}`);
  t.like(labels, {
    'k8s:app': 'web',
    'k8s:io.kubernetes.pod.namespace': ns,
    'k8s:io.cilium.k8s.namespace.labels.team': 'payments',
    'k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name': ns,
    'k8s:io.cilium.k8s.policy.serviceaccount': 'default',
    'k8s:io.cilium.k8s.policy.cluster': 'lab',
  });
  t.false(Object.keys(labels).some((k) => k.includes('pod-template-hash')));
  // The other node only looks these pods up, and agrees.
  t.is(await until(() => theirs.identityOf(`${ns}/web-1`), 'the other node to resolve web-1'), web);
  t.is(remote.allocator.localRefs(web), 0);

  const pod = await core.readNamespacedPod({ namespace: ns, name: 'web-2' });
  pod.metadata!.labels = { ...pod.metadata!.labels, track: 'canary' };
  await core.replaceNamespacedPod({ namespace: ns, name: 'web-2', body: pod });
  const canary = await until(() => {
    const id = mine.identityOf(`${ns}/web-2`);
    return id !== undefined && id !== web ? id : undefined;
  }, 'the relabelled pod to move');
  t.is(local.allocator.lookup(canary)?.labels['k8s:track'], 'canary');
  t.is(local.allocator.localRefs(web), 1);

  const nsObj = await core.readNamespace({ name: ns });
  nsObj.metadata!.labels = { ...nsObj.metadata!.labels, team: 'checkout' };
  await core.replaceNamespace({ name: ns, body: nsObj });
  const moved = await until(() => {
    const id = mine.identityOf(`${ns}/web-1`);
    return id !== undefined && id !== web ? id : undefined;
  }, 'the namespace relabel to move web-1');
  t.is(local.allocator.lookup(moved)?.labels['k8s:io.cilium.k8s.namespace.labels.team'], 'checkout');
  t.is(await until(() => (theirs.identityOf(`${ns}/web-1`) === moved ? moved : undefined), 'the other node to follow'), moved);

  await core.deleteNamespacedPod({ namespace: ns, name: 'web-1', gracePeriodSeconds: 0 });
  await until(() => mine.get(`${ns}/web-1`) === undefined, 'the deleted pod to be dropped');
  t.is(local.allocator.ownerIdentity(`${ns}/web-1`), undefined);
  t.is(local.allocator.localRefs(moved), 0);
});
