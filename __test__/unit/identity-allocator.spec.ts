/**
 * The identity allocator, garbage collector and pod glue against an in-memory
 * apiserver for MembraneIdentity objects (409 on existing names, resourceVersion
 * preconditions, a change feed) and informer stand-ins whose delivery can lag,
 * so races that are rare on a real cluster happen on purpose here.
 */
import { Writable } from 'node:stream';
import test from 'ava';
import type { V1Namespace, V1Pod } from '@kubernetes/client-node';
import { Observable, Subject } from 'rxjs';
import { IdentityAllocator, IdentityError, type IdentitySource } from '../../ts/identity/allocator.js';
import type { DeleteOutcome, IdentityApi } from '../../ts/identity/api.js';
import { IdentityGarbageCollector } from '../../ts/identity/gc.js';
import { labelsHash, type SecurityLabels } from '../../ts/identity/labels.js';
import { firstCandidate } from '../../ts/identity/numbering.js';
import { identityFromLabels, identityObject, LABELS_HASH_LABEL } from '../../ts/identity/object.js';
import { PodIdentities, type PodIdentityChange } from '../../ts/identity/pods.js';
import { startIdentityService } from '../../ts/identity/service.js';
import { resourceKey } from '../../ts/k8s/keys.js';
import type { InformerEvent } from '../../ts/k8s/store.js';
import type { MembraneIdentity } from '../../ts/k8s/types.js';
import { createLogger, type Logger } from '../../ts/log/logger.js';

// ---------------------------------------------------------------------------
// fakes

function captureLog(): { log: Logger; lines: () => Record<string, unknown>[] } {
  const buf: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      buf.push(...chunk.toString().split('\n').filter(Boolean));
      cb();
    },
  });
  return { log: createLogger({ component: 'test', level: 'debug', destination: sink }), lines: () => buf.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

const tick = () => new Promise((r) => setImmediate(r));

class Clock {
  constructor(public t = Date.parse('2030-01-01T00:00:00Z')) {}
  now = () => this.t;
}

function apiError(code: number): Error {
  return Object.assign(new Error(`HTTP ${code}`), { code });
}

/** An apiserver for one cluster-scoped resource: JSON copies in and out, a resourceVersion counter, a change feed. */
class FakeServer {
  readonly objects = new Map<string, MembraneIdentity>();
  readonly feed = new Subject<InformerEvent<MembraneIdentity>>();
  readonly calls: string[] = [];
  private rv = 100;
  constructor(readonly clock: Clock) {}

  private stamp(o: MembraneIdentity): MembraneIdentity {
    o.metadata!.resourceVersion = String(++this.rv);
    return o;
  }

  put(o: MembraneIdentity): MembraneIdentity {
    const copy = this.stamp(structuredClone(o));
    const name = copy.metadata!.name!;
    copy.metadata!.creationTimestamp ??= new Date(this.clock.now()).toISOString() as unknown as Date;
    const old = this.objects.get(name);
    this.objects.set(name, copy);
    this.feed.next(old ? { type: 'update', key: name, object: structuredClone(copy), old } : { type: 'add', key: name, object: structuredClone(copy) });
    return structuredClone(copy);
  }

  remove(name: string): void {
    const old = this.objects.get(name);
    if (!old) return;
    this.objects.delete(name);
    this.feed.next({ type: 'delete', key: name, object: old });
  }

  api(): IdentityApi {
    return {
      create: async (obj) => {
        this.calls.push(`create ${obj.metadata?.name}`);
        await tick();
        if (this.objects.has(obj.metadata!.name!)) throw apiError(409);
        const o = structuredClone(obj);
        delete o.status; // status subresource: ignored on create
        return this.put(o);
      },
      get: async (name) => {
        this.calls.push(`get ${name}`);
        await tick();
        const o = this.objects.get(name);
        return o && structuredClone(o);
      },
      listByHash: async (hash) => {
        this.calls.push(`list ${hash.slice(0, 6)}`);
        await tick();
        return [...this.objects.values()].filter((o) => o.metadata?.labels?.[LABELS_HASH_LABEL] === hash).map((o) => structuredClone(o));
      },
      replaceStatus: async (obj) => {
        const name = obj.metadata!.name!;
        this.calls.push(`status ${name}`);
        await tick();
        const cur = this.objects.get(name);
        if (!cur) throw apiError(404);
        if (obj.metadata?.resourceVersion && obj.metadata.resourceVersion !== cur.metadata?.resourceVersion) throw apiError(409);
        const next = structuredClone(cur);
        next.status = structuredClone(obj.status);
        return this.put(next);
      },
      deleteIfUnchanged: async (name, rv): Promise<DeleteOutcome> => {
        this.calls.push(`delete ${name}`);
        await tick();
        const cur = this.objects.get(name);
        if (!cur) return 'gone';
        if (cur.metadata?.resourceVersion !== rv) return 'conflict';
        this.remove(name);
        return 'deleted';
      },
    };
  }
}

/** An informer stand-in over the fake server's feed; with lag, events wait for flush(). */
class FakeSource implements IdentitySource {
  private readonly store = new Map<string, MembraneIdentity>();
  private readonly subject = new Subject<InformerEvent<MembraneIdentity>>();
  private readonly queue: InformerEvent<MembraneIdentity>[] = [];
  lag: boolean;
  readonly state$ = new Observable<InformerEvent<MembraneIdentity>>((sub) => {
    for (const [key, object] of this.store) sub.next({ type: 'add', key, object });
    return this.subject.subscribe(sub);
  });
  constructor(server: FakeServer, options: { lag?: boolean } = {}) {
    this.lag = options.lag ?? false;
    for (const [key, object] of server.objects) this.store.set(key, structuredClone(object));
    server.feed.subscribe((e) => (this.lag ? this.queue.push(e) : this.apply(e)));
  }
  private apply(e: InformerEvent<MembraneIdentity>): void {
    if (e.type === 'delete') this.store.delete(e.key);
    else this.store.set(e.key, e.object);
    this.subject.next(e);
  }
  flush(): void {
    for (const e of this.queue.splice(0)) this.apply(e);
  }
  isSynced = () => true;
  whenSynced = async () => {};
}

const L = (app: string, ns = 'default'): SecurityLabels => ({ 'k8s:app': app, 'k8s:io.kubernetes.pod.namespace': ns, 'k8s:io.cilium.k8s.policy.cluster': 'lab' });

function setup(options: { lag?: boolean; nodeName?: string; refreshIntervalMs?: number; server?: FakeServer; clock?: Clock } = {}) {
  const clock = options.clock ?? new Clock();
  const server = options.server ?? new FakeServer(clock);
  const source = new FakeSource(server, { lag: options.lag ?? false });
  const { log, lines } = captureLog();
  const allocator = new IdentityAllocator(server.api(), source, { nodeName: options.nodeName ?? 'node-a', log, refreshIntervalMs: options.refreshIntervalMs ?? 20_000, now: clock.now });
  const sub = allocator.start();
  return { clock, server, source, allocator, lines, log, stop: () => sub.unsubscribe() };
}

// ---------------------------------------------------------------------------
// allocation

test('two allocators with lagging informers agree on every number; no number holds two label sets', async (t) => {
  const a = setup({ lag: true, nodeName: 'node-a' });
  const b = setup({ lag: true, nodeName: 'node-b', server: a.server, clock: a.clock });
  const sets = Array.from({ length: 40 }, (_, i) => L(`app-${i}`));
  const [ra, rb] = await Promise.all([Promise.all(sets.map((l, i) => a.allocator.acquire(`a/p${i}`, l))), Promise.all([...sets].reverse().map((l, i) => b.allocator.acquire(`b/p${i}`, l)))]);
  rb.reverse();
  t.deepEqual(ra, rb);
  t.is(new Set(ra).size, sets.length, 'distinct label sets, distinct numbers');
  t.is(a.server.objects.size, sets.length, 'one object per label set');
  for (const [i, id] of ra.entries()) t.deepEqual(a.server.objects.get(String(id))?.spec?.securityLabels, { ...sets[i] });
  const created = a.allocator.stats.created + b.allocator.stats.created;
  const raced = a.allocator.stats.conflictsSameLabels + b.allocator.stats.conflictsSameLabels;
  t.is(created, sets.length);
  t.true(raced > 0, 'the informers lag, so the two agents really raced on creates');
  t.log(`created ${created}, lost create races ${raced}`);
  a.stop();
  b.stop();
});

test('a number taken by other labels the informer has not shown yet: 409, read, next candidate', async (t) => {
  const s = setup({ lag: true });
  const labels = L('web');
  const first = firstCandidate(labelsHash(labels));
  s.server.put(identityObject(identityFromLabels(first, L('squatter'))));
  const id = await s.allocator.acquire('default/web-0', labels);
  t.is(id, first === 65535 ? 256 : first + 1);
  t.is(s.allocator.stats.conflictsOtherLabels, 1);
  t.deepEqual(s.server.calls.slice(0, 4), [`list ${labelsHash(labels).slice(0, 6)}`, `create ${first}`, `get ${first}`, `create ${id}`]);
  s.stop();
});

test('an identity the informer has not shown yet is found by the label-selector read, not created again', async (t) => {
  const s = setup({ lag: true });
  s.server.put(identityObject(identityFromLabels(777, L('web'))));
  t.is(await s.allocator.acquire('default/web-0', L('web')), 777);
  t.is(s.allocator.stats.foundByList, 1);
  t.is(s.allocator.stats.created, 0);
  s.stop();
});

test('of two identities with the same labels (a rare race), everyone uses the lowest', async (t) => {
  const s = setup();
  s.server.put(identityObject(identityFromLabels(9000, L('web'))));
  s.server.put(identityObject(identityFromLabels(700, L('web'))));
  t.is(await s.allocator.acquire('default/web-0', L('web')), 700);
  t.is(s.allocator.lookupByLabels(L('web')), 700);
  s.stop();
});

test('malformed MembraneIdentity objects are logged and skipped; their numbers count as taken; the allocator stays healthy', async (t) => {
  const clock = new Clock();
  const server = new FakeServer(clock);
  const labels = L('web');
  const first = firstCandidate(labelsHash(labels));
  const wrongHash = identityObject(identityFromLabels(first, labels));
  wrongHash.metadata!.labels![LABELS_HASH_LABEL] = '0'.repeat(32);
  server.put(wrongHash);
  const badLabels = identityObject(identityFromLabels(5000, L('x')));
  badLabels.spec = { securityLabels: { 'not prefixed': 'v' } };
  server.put(badLabels);
  server.put({ apiVersion: 'membrane.io/v1alpha1', kind: 'MembraneIdentity', metadata: { name: 'frontend' }, spec: { securityLabels: { 'k8s:a': 'b' } } });
  const s = setup({ server, clock });
  const id = await s.allocator.acquire('default/web-0', labels);
  t.not(id, first, 'the malformed object with our labels is not used');
  t.is(id, first === 65535 ? 256 : first + 1);
  t.true(await s.allocator.acquire('default/other', L('other')).then((n) => typeof n === 'number'));
  const warned = s.lines().filter((l) => l['msg'] === 'malformed MembraneIdentity skipped');
  t.deepEqual(warned.map((l) => l['identityObject']).sort(), [String(first), '5000', 'frontend'].sort());
  t.regex(String(warned.find((l) => l['identityObject'] === String(first))?.['reason']), /labels-hash label 0+ does not match/);
  t.regex(String(warned.find((l) => l['identityObject'] === 'frontend')?.['reason']), /not a number/);
  t.deepEqual(s.allocator.malformed().map((m) => m.id).sort(), [first, 5000].sort());
  t.is(s.allocator.lookup(5000), undefined);
  s.stop();
});

test('reserved label sets give reserved numbers without API calls; invalid labels are refused with a reason', async (t) => {
  const s = setup();
  t.is(await s.allocator.acquire('host', { 'reserved:host': '' }), 1);
  t.is(await s.allocator.acquire('lb', { 'reserved:ingress': '' }), 8);
  t.deepEqual(s.server.calls, []);
  await t.throwsAsync(s.allocator.acquire('x', { 'reserved:bogus': '' }), { instanceOf: IdentityError, message: /name no reserved identity/ });
  await t.throwsAsync(s.allocator.acquire('x', { app: 'no-source' }), { instanceOf: IdentityError, message: /no source prefix/ });
  t.is(s.allocator.lookup(2)?.labels['reserved:world'], '');
  s.stop();
});

test('owners: relabel moves the reference, release drops it, a superseded acquire resolves undefined', async (t) => {
  const s = setup();
  const web = (await s.allocator.acquire('ns/p', L('web')))!;
  t.is(s.allocator.localRefs(web), 1);
  const api = (await s.allocator.acquire('ns/p', L('api')))!;
  t.is(s.allocator.localRefs(web), 0);
  t.is(s.allocator.localRefs(api), 1);
  t.is(s.allocator.ownerIdentity('ns/p'), api);
  const slow = s.allocator.acquire('ns/q', L('db'));
  const fast = s.allocator.acquire('ns/q', L('cache'));
  t.is(await slow, undefined);
  const cache = (await fast)!;
  t.is(s.allocator.ownerIdentity('ns/q'), cache);
  const cancelled = s.allocator.acquire('ns/r', L('queue'));
  s.allocator.release('ns/r');
  t.is(await cancelled, undefined);
  t.is(s.allocator.ownerIdentity('ns/r'), undefined);
  s.allocator.release('ns/p');
  t.deepEqual(s.allocator.inUse().sort(), [cache]);
  s.stop();
});

test('usage stamps: acquire lists this node with lastUsed; re-acquire within the refresh interval writes nothing; the last release stamps and unlists', async (t) => {
  const s = setup({ refreshIntervalMs: 20_000 });
  const id = (await s.allocator.acquire('ns/a', L('web')))!;
  let o = s.server.objects.get(String(id))!;
  t.deepEqual(o.status?.nodes, ['node-a']);
  t.is(o.status?.lastUsed, new Date(s.clock.t).toISOString());
  const writes = s.allocator.stats.statusWrites;
  s.clock.t += 5_000;
  await s.allocator.acquire('ns/b', L('web'));
  t.is(s.allocator.stats.statusWrites, writes, 'rate-limited');
  s.clock.t += 30_000;
  await s.allocator.refreshUsage();
  t.is(s.server.objects.get(String(id))!.status?.lastUsed, new Date(s.clock.t).toISOString(), 'refreshed once the interval passed');
  s.allocator.release('ns/a');
  await tick();
  t.deepEqual(s.server.objects.get(String(id))!.status?.nodes, ['node-a'], 'still one owner');
  s.clock.t += 1_000;
  s.allocator.release('ns/b');
  for (let i = 0; i < 10; i++) await tick();
  o = s.server.objects.get(String(id))!;
  t.deepEqual(o.status?.nodes, []);
  t.is(o.status?.lastUsed, new Date(s.clock.t).toISOString(), 'the grace period starts at the last release');
  s.stop();
});

test('usage stamps from many nodes: a fresh stamp by any node counts, so writes do not grow with the node count', async (t) => {
  const a = setup({ nodeName: 'n1', refreshIntervalMs: 20_000 });
  const others = ['n2', 'n3', 'n4', 'n5'].map((n) => setup({ nodeName: n, server: a.server, clock: a.clock, refreshIntervalMs: 20_000 }));
  const all = [a, ...others];
  const id = (await a.allocator.acquire('p1', L('web')))!;
  for (const [i, s] of others.entries()) t.is(await s.allocator.acquire(`p${i + 2}`, L('web')), id);
  t.deepEqual(a.server.objects.get(String(id))?.status?.nodes, ['n1', 'n2', 'n3', 'n4', 'n5']);
  const writes = () => all.reduce((n, s) => n + s.allocator.stats.statusWrites, 0);
  const before = writes();
  // Ten refresh intervals, every node running its refresh every quarter interval.
  for (let step = 0; step < 40; step++) {
    a.clock.t += 5_000;
    for (const s of all) await s.allocator.refreshUsage();
  }
  const during = writes() - before;
  t.log(`5 nodes, 10 refresh intervals: ${during} status writes`);
  t.true(during <= 25, `about two writes per refresh interval in all, not one per node (${during})`);
  t.true(during >= 10, `but it is refreshed (${during})`);
  const lastUsed = Date.parse(a.server.objects.get(String(id))!.status!.lastUsed!);
  t.true(a.clock.t - lastUsed < 20_000);
  for (const s of all) s.stop();
});

// ---------------------------------------------------------------------------
// garbage collection

test('gc: an unused identity is kept through the grace period and deleted after it', async (t) => {
  const s = setup({ refreshIntervalMs: 20_000 });
  const gc = new IdentityGarbageCollector(s.server.api(), s.allocator, { log: s.log, graceMs: 60_000, now: s.clock.now });
  const id = (await s.allocator.acquire('ns/a', L('web')))!;
  s.clock.t += 120_000;
  t.deepEqual((await gc.runOnce()).deleted, [], 'in use here: never garbage');
  await s.allocator.refreshUsage();
  s.allocator.release('ns/a');
  for (let i = 0; i < 10; i++) await tick();
  s.clock.t += 59_999;
  t.deepEqual((await gc.runOnce()).deleted, [], 'within the grace period');
  t.true(s.server.objects.has(String(id)));
  s.clock.t += 2;
  t.deepEqual((await gc.runOnce()).deleted, [id]);
  t.false(s.server.objects.has(String(id)));
  t.is(s.allocator.lookup(id), undefined, 'the informer delete reaches the allocator');
  s.stop();
});

test('gc: an identity another node keeps using is never collected', async (t) => {
  const a = setup({ nodeName: 'node-a', refreshIntervalMs: 20_000 });
  const b = setup({ nodeName: 'node-b', server: a.server, clock: a.clock, refreshIntervalMs: 20_000 });
  const gc = new IdentityGarbageCollector(a.server.api(), a.allocator, { log: a.log, graceMs: 60_000, now: a.clock.now });
  const id = (await b.allocator.acquire('ns/b', L('web')))!;
  for (let i = 0; i < 10; i++) {
    a.clock.t += 25_000;
    await b.allocator.refreshUsage();
    t.deepEqual((await gc.runOnce()).deleted, [], `round ${i}`);
  }
  t.true(a.server.objects.has(String(id)));
  a.stop();
  b.stop();
});

test('gc: the delete carries the judged resourceVersion, so an identity stamped meanwhile survives', async (t) => {
  const a = setup({ nodeName: 'node-a' });
  const b = setup({ nodeName: 'node-b', server: a.server, clock: a.clock, lag: true });
  const id = (await a.allocator.acquire('ns/a', L('web')))!;
  a.allocator.release('ns/a');
  for (let i = 0; i < 10; i++) await tick();
  a.clock.t += 120_000;
  const api = a.server.api();
  // Between the collector's judgement and its delete, node-b starts using the identity.
  const racing: IdentityApi = {
    ...api,
    deleteIfUnchanged: async (name, rv) => {
      t.is(await b.allocator.acquire('ns/b', L('web')), id);
      return api.deleteIfUnchanged(name, rv);
    },
  };
  const gc = new IdentityGarbageCollector(racing, a.allocator, { log: a.log, graceMs: 60_000, now: a.clock.now });
  const r = await gc.runOnce();
  t.deepEqual(r.conflicts, [id]);
  t.deepEqual(r.deleted, []);
  t.deepEqual(a.server.objects.get(String(id))?.status?.nodes, ['node-b']);
  a.stop();
  b.stop();
});

test('gc deleting an identity just as a node acquires it: the node allocates it again and ends up with a live object', async (t) => {
  const a = setup({ nodeName: 'node-a' });
  const id = (await a.allocator.acquire('ns/a', L('web')))!;
  a.allocator.release('ns/a');
  for (let i = 0; i < 10; i++) await tick();
  a.clock.t += 120_000;
  // node-b sees the old identity in its store, but it is deleted before node-b stamps it.
  const b = setup({ nodeName: 'node-b', server: a.server, clock: a.clock, lag: true });
  const bApi = a.server.api();
  let deletedFirst = false;
  const b2 = new IdentityAllocator(
    {
      ...bApi,
      replaceStatus: async (obj) => {
        if (!deletedFirst) {
          deletedFirst = true;
          const gc = new IdentityGarbageCollector(a.server.api(), a.allocator, { log: a.log, graceMs: 60_000, now: a.clock.now });
          t.deepEqual((await gc.runOnce()).deleted, [id]);
        }
        return bApi.replaceStatus(obj);
      },
    },
    b.source,
    { nodeName: 'node-b', log: b.log, now: a.clock.now, refreshIntervalMs: 20_000 },
  );
  const sub = b2.start();
  const got = await b2.acquire('ns/b', L('web'));
  t.is(got, id, 'the same number, re-created (it was free again)');
  const o = a.server.objects.get(String(got));
  t.truthy(o);
  t.deepEqual(o?.status?.nodes, ['node-b']);
  sub.unsubscribe();
  a.stop();
  b.stop();
});

test('an identity in use here that someone deletes is restored under its number', async (t) => {
  const s = setup();
  const id = (await s.allocator.acquire('ns/a', L('web')))!;
  s.server.remove(String(id));
  await settle(() => s.server.objects.get(String(id))?.status?.nodes?.length === 1, 'the identity to be restored and stamped');
  t.deepEqual(s.server.objects.get(String(id))?.status?.nodes, ['node-a']);
  t.true(s.lines().some((l) => l['msg'] === 'identity restored'));
  s.stop();
});

// ---------------------------------------------------------------------------
// pods -> identities

class Store<T extends { metadata?: { name?: string; namespace?: string } }> {
  readonly map = new Map<string, T>();
  readonly subject = new Subject<InformerEvent<T>>();
  readonly state$ = new Observable<InformerEvent<T>>((sub) => {
    for (const [key, object] of this.map) sub.next({ type: 'add', key, object });
    return this.subject.subscribe(sub);
  });
  get = (k: string) => this.map.get(k);
  list = () => [...this.map.values()];
  set(o: T): void {
    const key = resourceKey(o);
    const old = this.map.get(key);
    this.map.set(key, o);
    this.subject.next(old ? { type: 'update', key, object: o, old } : { type: 'add', key, object: o });
  }
  delete(key: string): void {
    const old = this.map.get(key);
    if (!old) return;
    this.map.delete(key);
    this.subject.next({ type: 'delete', key, object: old });
  }
}

function mkPod(name: string, labels: Record<string, string>, node = 'node-a', ns = 'shop'): V1Pod {
  return { metadata: { name, namespace: ns, labels }, spec: { nodeName: node, serviceAccountName: 'default', containers: [] } };
}

async function settle(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (cond()) return;
    await tick();
  }
  throw new Error(`timed out waiting for ${what}`);
}

test('pod identities: owned pods are allocated, relabels and namespace relabels move them, invalid pods are skipped with a reason, deletes release', async (t) => {
  const s = setup({ nodeName: 'node-a' });
  const pods = new Store<V1Pod>();
  const namespaces = new Store<V1Namespace>();
  namespaces.set({ metadata: { name: 'shop', labels: { team: 'a' } } });
  const pi = new PodIdentities(pods, namespaces, s.allocator, { clusterName: 'lab', nodeName: 'node-a', log: s.log });
  const changes: PodIdentityChange[] = [];
  pi.changes$.subscribe((c) => changes.push(c));
  const sub = pi.start();

  pods.set(mkPod('web-0', { app: 'web', 'pod-template-hash': 'abc' }));
  pods.set(mkPod('web-1', { app: 'web', 'pod-template-hash': 'def' }));
  await settle(() => pi.identityOf('shop/web-0') !== undefined && pi.identityOf('shop/web-1') !== undefined, 'web pods resolved');
  const web = pi.identityOf('shop/web-0')!;
  t.is(pi.identityOf('shop/web-1'), web, 'replicas share an identity');
  t.is(s.allocator.localRefs(web), 2);
  t.like(s.allocator.lookup(web)?.labels, { 'k8s:app': 'web', 'k8s:io.cilium.k8s.namespace.labels.team': 'a', 'k8s:io.cilium.k8s.policy.serviceaccount': 'default', 'k8s:io.cilium.k8s.policy.cluster': 'lab' });

  pods.set(mkPod('web-1', { app: 'web', canary: 'true' }));
  await settle(() => pi.identityOf('shop/web-1') !== web && pi.identityOf('shop/web-1') !== undefined, 'relabelled pod moved');
  t.is(s.allocator.localRefs(web), 1);

  namespaces.set({ metadata: { name: 'shop', labels: { team: 'b' } } });
  await settle(() => pi.identityOf('shop/web-0') !== web && pi.identityOf('shop/web-0') !== undefined, 'namespace relabel moved pods');
  t.is(s.allocator.lookup(pi.identityOf('shop/web-0')!)?.labels['k8s:io.cilium.k8s.namespace.labels.team'], 'b');

  pods.set(mkPod('bad', { app: 'x'.repeat(70) }));
  await tick();
  t.like(pi.get('shop/bad'), { status: 'invalid', owned: true });
  t.regex(pi.get('shop/bad')?.reason ?? '', /at most 63/);
  t.true(s.lines().some((l) => l['msg'] === 'pod labels cannot form an identity; pod skipped' && l['pod'] === 'shop/bad'));

  const before = pi.identityOf('shop/web-0')!;
  pods.delete('shop/web-0');
  t.is(pi.identityOf('shop/web-0'), undefined);
  t.is(s.allocator.localRefs(before), 0);
  t.deepEqual(changes.at(-1), { pod: 'shop/web-0', identity: undefined, previous: before });

  // A pod of another node is only looked up: it resolves when that node's agent allocates.
  pods.set(mkPod('remote', { app: 'remote' }, 'node-b'));
  await tick();
  t.like(pi.get('shop/remote'), { status: 'pending', owned: false });
  const other = setup({ nodeName: 'node-b', server: s.server, clock: s.clock });
  const rid = await other.allocator.acquire('shop/remote', { 'k8s:app': 'remote', 'k8s:io.cilium.k8s.namespace.labels.team': 'b', 'k8s:io.cilium.k8s.policy.cluster': 'lab', 'k8s:io.cilium.k8s.policy.serviceaccount': 'default', 'k8s:io.kubernetes.pod.namespace': 'shop' });
  await settle(() => pi.identityOf('shop/remote') === rid, 'remote pod resolved by lookup');
  t.is(s.allocator.localRefs(rid!), 0, 'not held by this node');

  // Finished pods give their identity up.
  const canary = pi.identityOf('shop/web-1')!;
  pods.set({ ...mkPod('web-1', { app: 'web', canary: 'true' }), status: { phase: 'Succeeded' } });
  t.is(pi.identityOf('shop/web-1'), undefined);
  t.is(s.allocator.localRefs(canary), 0);
  sub.unsubscribe();
  other.stop();
  s.stop();
});

test('pod identities: a pod first seen unscheduled and then bound to this node is allocated (not only looked up)', async (t) => {
  const s = setup({ nodeName: 'node-a' });
  const pods = new Store<V1Pod>();
  const namespaces = new Store<V1Namespace>();
  namespaces.set({ metadata: { name: 'shop', labels: { team: 'a' } } });
  const pi = new PodIdentities(pods, namespaces, s.allocator, { clusterName: 'lab', nodeName: 'node-a', log: s.log });
  const sub = pi.start();
  const unscheduled = mkPod('late', { app: 'late' });
  delete unscheduled.spec!.nodeName;
  pods.set(unscheduled);
  await tick();
  t.like(pi.get('shop/late'), { status: 'pending', owned: false }, 'nobody allocates for an unscheduled pod');
  pods.set(mkPod('late', { app: 'late' }, 'node-a'));
  await settle(() => pi.identityOf('shop/late') !== undefined, 'the bound pod resolved');
  t.like(pi.get('shop/late'), { status: 'resolved', owned: true });
  t.is(s.allocator.localRefs(pi.identityOf('shop/late')!), 1, 'held by this node');
  sub.unsubscribe();
  s.stop();
});

test('the identity service wires allocator, pod identities and collector, and checks the timings', async (t) => {
  const clock = new Clock();
  const server = new FakeServer(clock);
  const source = new FakeSource(server);
  const { log } = captureLog();
  const pods = new Store<V1Pod>();
  const namespaces = new Store<V1Namespace>();
  namespaces.set({ metadata: { name: 'shop', labels: {} } });
  t.throws(() => startIdentityService({ api: server.api(), identities: source, pods, namespaces, nodeName: 'node-a', clusterName: 'lab', log, refreshIntervalMs: 60_000, gc: { graceMs: 60_000 } }), { message: /at most a third/ });
  const svc = startIdentityService({ api: server.api(), identities: source, pods, namespaces, nodeName: 'node-a', clusterName: 'lab', log, gc: { graceMs: 60_000, intervalMs: 1000 } });
  t.is(svc.allocator.refreshIntervalMs, 20_000, 'refresh defaults to a third of the grace period (at most 5 min)');
  pods.set(mkPod('web-0', { app: 'web' }));
  const id = await settle(() => svc.pods.identityOf('shop/web-0') !== undefined, 'the pod identity').then(() => svc.pods.identityOf('shop/web-0')!);
  t.is(svc.allocator.lookup(id)?.labels['k8s:app'], 'web');
  t.truthy(svc.gc);
  svc.subscription.unsubscribe();
  const off = startIdentityService({ api: server.api(), identities: source, pods, namespaces, nodeName: 'node-b', clusterName: 'lab', log, gc: false });
  t.is(off.gc, undefined);
  t.is(off.allocator.refreshIntervalMs, 5 * 60_000);
  off.subscription.unsubscribe();
});
