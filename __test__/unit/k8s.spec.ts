/**
 * ts/k8s without a cluster: resource table and paths, keys, backoff, store
 * transitions, and the generic informer against a scripted fake transport
 * (initial paged list, watch events, 410 relist, reconnect with backoff, stop).
 */
import { Writable } from 'node:stream';
import test from 'ava';
import type { V1Pod } from '@kubernetes/client-node';
import { backoffDelay, validateBackoff } from '../../ts/k8s/backoff.js';
import { Informer, type InformerEvent } from '../../ts/k8s/informer.js';
import { createInformers } from '../../ts/k8s/informers.js';
import { keyOf, parseResourceKey, resourceKey, ResourceKeyError, tryResourceKey } from '../../ts/k8s/keys.js';
import { apiVersionOf, collectionPath, RESOURCE_KINDS, RESOURCE_NAMES } from '../../ts/k8s/resources.js';
import { relistEvents, upsertEvent, deleteEvent } from '../../ts/k8s/store.js';
import { isGone, KubeApiError, type KubeTransport, type ListPage, type WatchEvent, type WatchOptions } from '../../ts/k8s/transport.js';
import type { KubeObject } from '../../ts/k8s/types.js';
import { createLogger, type Logger } from '../../ts/log/logger.js';

// ---------------------------------------------------------------------------
// helpers

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

function pod(ns: string, name: string, rv: string, labels: Record<string, string> = {}): V1Pod {
  return { apiVersion: 'v1', kind: 'Pod', metadata: { namespace: ns, name, resourceVersion: rv, labels } };
}

const tick = () => new Promise((r) => setImmediate(r));

async function until(cond: () => boolean, what: string, ms = 2000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

interface FakeWatch {
  path: string;
  query: Record<string, string>;
  signal: AbortSignal;
  send: (event: WatchEvent) => void;
  end: () => void;
  fail: (err: Error) => void;
}

/** A transport whose answers the test scripts: list results are queued, watches are handed to the test. */
class FakeTransport implements KubeTransport {
  readonly server = 'https://fake.invalid';
  readonly listCalls: Record<string, string>[] = [];
  readonly listAnswers: (ListPage | Error)[] = [];
  readonly watches: FakeWatch[] = [];
  aborted = 0;

  async list(_path: string, query: Record<string, string>, signal: AbortSignal): Promise<ListPage> {
    signal.throwIfAborted();
    this.listCalls.push(query);
    await tick();
    const a = this.listAnswers.shift();
    if (a === undefined) throw new Error('fake: no list answer scripted');
    if (a instanceof Error) throw a;
    return a;
  }

  watch(path: string, query: Record<string, string>, signal: AbortSignal, onEvent: (event: WatchEvent) => void, opts: WatchOptions): Promise<void> {
    opts.onOpen?.();
    return new Promise((resolve, reject) => {
      let done = false;
      const finish = (err?: Error) => {
        if (done) return;
        done = true;
        if (err) reject(err);
        else resolve();
      };
      signal.addEventListener('abort', () => {
        this.aborted++;
        finish(new Error('aborted'));
      });
      this.watches.push({
        path,
        query,
        signal,
        send: (event) => {
          if (done) return;
          try {
            onEvent(event);
          } catch (err) {
            finish(err as Error);
          }
        },
        end: () => finish(),
        fail: (err) => finish(err),
      });
    });
  }

  async nextWatch(n: number): Promise<FakeWatch> {
    await until(() => this.watches.length >= n, `watch #${n}`);
    return this.watches[n - 1]!;
  }
}

const fastBackoff = { initialMs: 5, maxMs: 40, factor: 2, jitter: 0 };

function informer(t: FakeTransport, log: Logger, extra: Partial<ConstructorParameters<typeof Informer>[2]> = {}) {
  return new Informer<V1Pod>(t, RESOURCE_KINDS.pods, { log, backoff: fastBackoff, healthyAfterMs: 1_000_000, random: () => 0, ...extra });
}

// ---------------------------------------------------------------------------
// pure parts

test('the resource table covers every watched kind with the right API paths', (t) => {
  t.deepEqual(RESOURCE_NAMES, [
    'pods',
    'namespaces',
    'nodes',
    'services',
    'endpointslices',
    'networkpolicies',
    'ciliumnetworkpolicies',
    'ciliumclusterwidenetworkpolicies',
    'membraneidentities',
  ]);
  t.is(collectionPath(RESOURCE_KINDS.pods), '/api/v1/pods');
  t.is(collectionPath(RESOURCE_KINDS.pods, 'kube-system'), '/api/v1/namespaces/kube-system/pods');
  t.is(collectionPath(RESOURCE_KINDS.endpointslices), '/apis/discovery.k8s.io/v1/endpointslices');
  t.is(collectionPath(RESOURCE_KINDS.networkpolicies, 'a'), '/apis/networking.k8s.io/v1/namespaces/a/networkpolicies');
  t.is(collectionPath(RESOURCE_KINDS.ciliumclusterwidenetworkpolicies), '/apis/cilium.io/v2/ciliumclusterwidenetworkpolicies');
  t.is(collectionPath(RESOURCE_KINDS.membraneidentities), '/apis/membrane.io/v1alpha1/membraneidentities');
  t.throws(() => collectionPath(RESOURCE_KINDS.nodes, 'default'), { message: /cluster-scoped/ });
  t.is(apiVersionOf(RESOURCE_KINDS.namespaces), 'v1');
  t.is(apiVersionOf(RESOURCE_KINDS.ciliumnetworkpolicies), 'cilium.io/v2');
});

test('resource keys: ns/name for namespaced objects, name for cluster-scoped ones', (t) => {
  t.is(resourceKey(pod('default', 'web-0', '1')), 'default/web-0');
  t.is(resourceKey({ metadata: { name: 'node-1' } }), 'node-1');
  t.is(keyOf('a', 'b'), 'a/b');
  t.is(keyOf(undefined, 'b'), 'b');
  t.throws(() => resourceKey({ kind: 'Pod', metadata: {} }), { instanceOf: ResourceKeyError, message: /Pod has no metadata.name/ });
  t.is(tryResourceKey({ metadata: {} }), undefined);
  t.deepEqual(parseResourceKey('default/web-0'), { namespace: 'default', name: 'web-0' });
  t.deepEqual(parseResourceKey('node-1'), { name: 'node-1' });
  t.throws(() => parseResourceKey('a/b/c'), { instanceOf: ResourceKeyError });
  t.throws(() => parseResourceKey('/b'), { instanceOf: ResourceKeyError });
});

test('backoff grows exponentially, is capped, and jitter only shortens it', (t) => {
  const o = { initialMs: 100, maxMs: 1000, factor: 2, jitter: 0.5 };
  t.deepEqual([1, 2, 3, 4, 5, 10, 1000].map((a) => backoffDelay(a, o, () => 0)), [100, 200, 400, 800, 1000, 1000, 1000]);
  t.is(backoffDelay(3, o, () => 1), 200, 'full jitter halves the delay at most');
  for (let i = 0; i < 100; i++) {
    const d = backoffDelay(4, o);
    t.true(d >= 400 && d <= 800, String(d));
  }
  t.is(backoffDelay(0, o, () => 0), 100, 'attempt below 1 counts as the first');
  t.throws(() => validateBackoff({ ...o, maxMs: 10 }), { message: /maxMs/ });
  t.throws(() => validateBackoff({ ...o, jitter: 2 }), { message: /jitter/ });
});

test('store transitions: add, update only on a new resourceVersion, delete only of known objects, relist diff', (t) => {
  const store = new Map<string, V1Pod>([['a/x', pod('a', 'x', '1')]]);
  t.like(upsertEvent(store, pod('a', 'y', '2')), { type: 'add', key: 'a/y' });
  t.is(upsertEvent(store, pod('a', 'x', '1')), undefined, 'same resourceVersion is no change');
  t.like(upsertEvent(store, pod('a', 'x', '3')), { type: 'update', key: 'a/x', old: { metadata: { resourceVersion: '1' } } });
  t.is(deleteEvent(store, pod('a', 'nope', '4')), undefined);
  t.like(deleteEvent(store, pod('a', 'x', '5')), { type: 'delete', key: 'a/x', object: { metadata: { resourceVersion: '5' } } });
  const s2 = new Map<string, V1Pod>([
    ['a/keep', pod('a', 'keep', '1')],
    ['a/change', pod('a', 'change', '1')],
    ['a/gone', pod('a', 'gone', '1')],
  ]);
  const evs = relistEvents(s2, [pod('a', 'keep', '1'), pod('a', 'change', '2'), pod('a', 'new', '3')]);
  t.deepEqual(
    evs.map((e) => [e.type, e.key]),
    [
      ['update', 'a/change'],
      ['add', 'a/new'],
      ['delete', 'a/gone'],
    ],
  );
});

test('isGone recognises 410 and Expired', (t) => {
  t.true(isGone(new KubeApiError(410, 'Gone', 'too old resource version')));
  t.true(isGone(new KubeApiError(410, 'Expired', 'continue token expired')));
  t.false(isGone(new KubeApiError(500, 'InternalError', 'x')));
  t.false(isGone(new Error('410')));
});

// ---------------------------------------------------------------------------
// the informer

test('informer: paged initial list fills the store, emits adds, then synced; watches from the list resourceVersion', async (t) => {
  const ft = new FakeTransport();
  const { log, lines } = captureLog();
  ft.listAnswers.push({ items: [pod('a', 'p1', '10'), pod('a', 'p2', '11')], resourceVersion: '20', continue: 'tok' }, { items: [pod('b', 'p3', '12')], resourceVersion: '20' });
  const inf = informer(ft, log, { pageSize: 2, labelSelector: 'app=web' });
  const seen: string[] = [];
  const syncedAt: number[] = [];
  inf.events$.subscribe((e) => seen.push(`${e.type} ${e.key}`));
  inf.synced$.subscribe((s) => s && syncedAt.push(seen.length));
  t.false(inf.isSynced());
  const sub = inf.start();
  await inf.whenSynced();
  t.deepEqual(seen, ['add a/p1', 'add a/p2', 'add b/p3']);
  t.deepEqual(syncedAt, [3], 'synced only after every add of the initial list');
  t.deepEqual(ft.listCalls, [
    { labelSelector: 'app=web', limit: '2' },
    { labelSelector: 'app=web', limit: '2', continue: 'tok' },
  ]);
  const w = await ft.nextWatch(1);
  t.is(w.path, '/api/v1/pods');
  t.like(w.query, { resourceVersion: '20', allowWatchBookmarks: 'true', labelSelector: 'app=web' });
  t.true(Number(w.query['timeoutSeconds']) >= 300);
  t.deepEqual(inf.keys().sort(), ['a/p1', 'a/p2', 'b/p3']);
  t.true(lines().some((l) => l['msg'] === 'initial list synced' && l['resource'] === 'pods' && l['objects'] === 3));
  sub.unsubscribe();
  await inf.stop();
});

test('informer: watch events update the store; a no-op MODIFIED is dropped; bookmarks advance the resourceVersion', async (t) => {
  const ft = new FakeTransport();
  const { log } = captureLog();
  ft.listAnswers.push({ items: [pod('a', 'p1', '10')], resourceVersion: '10' });
  const inf = informer(ft, log);
  const events: InformerEvent<V1Pod>[] = [];
  inf.events$.subscribe((e) => events.push(e));
  inf.start();
  await inf.whenSynced();
  const w = await ft.nextWatch(1);
  w.send({ type: 'ADDED', object: pod('a', 'p2', '11') });
  w.send({ type: 'MODIFIED', object: pod('a', 'p1', '12', { v: '2' }) });
  w.send({ type: 'MODIFIED', object: pod('a', 'p1', '12', { v: '2' }) });
  w.send({ type: 'DELETED', object: pod('a', 'p2', '13') });
  w.send({ type: 'DELETED', object: pod('a', 'never-seen', '14') });
  w.send({ type: 'BOOKMARK', object: { kind: 'Pod', metadata: { resourceVersion: '99' } } });
  t.deepEqual(
    events.map((e) => `${e.type} ${e.key}`),
    ['add a/p1', 'add a/p2', 'update a/p1', 'delete a/p2'],
  );
  const upd = events[2]!;
  t.true(upd.type === 'update' && upd.old.metadata?.resourceVersion === '10' && upd.object.metadata?.labels?.['v'] === '2');
  t.deepEqual(inf.keys(), ['a/p1']);
  t.is(inf.health().resourceVersion, '99');
  // The server ends the watch normally: the informer watches again from the bookmark.
  w.end();
  const w2 = await ft.nextWatch(2);
  t.is(w2.query['resourceVersion'], '99');
  t.is(ft.listCalls.length, 1, 'no relist after a normal end');
  await inf.stop();
});

test('informer: a 410 ERROR event makes it list again and emit the difference, then watch from the new list', async (t) => {
  const ft = new FakeTransport();
  const { log, lines } = captureLog();
  ft.listAnswers.push({ items: [pod('a', 'keep', '1'), pod('a', 'change', '2'), pod('a', 'gone', '3')], resourceVersion: '5' });
  const inf = informer(ft, log);
  const events: string[] = [];
  inf.start();
  await inf.whenSynced();
  inf.events$.subscribe((e) => events.push(`${e.type} ${e.key}`));
  const w = await ft.nextWatch(1);
  ft.listAnswers.push({ items: [pod('a', 'keep', '1'), pod('a', 'change', '7'), pod('a', 'new', '8')], resourceVersion: '50' });
  w.send({ type: 'ERROR', object: { kind: 'Status', code: 410, reason: 'Expired', message: 'too old resource version: 5 (40)' } });
  const w2 = await ft.nextWatch(2);
  t.is(w2.query['resourceVersion'], '50');
  t.deepEqual(events, ['update a/change', 'add a/new', 'delete a/gone']);
  t.deepEqual(inf.keys().sort(), ['a/change', 'a/keep', 'a/new']);
  t.is(inf.health().relists, 1);
  t.is(inf.health().reconnects, 0, 'a relist is not a failed reconnect');
  t.true(inf.isSynced());
  t.true(lines().some((l) => l['msg'] === 'resource version expired; listing again' && l['resourceVersion'] === '5'));
  await inf.stop();
});

test('informer: an expired continue token restarts the list from the first page', async (t) => {
  const ft = new FakeTransport();
  const { log } = captureLog();
  ft.listAnswers.push(
    { items: [pod('a', 'p1', '1')], resourceVersion: '5', continue: 'old' },
    new KubeApiError(410, 'Expired', 'The provided continue parameter is too old'),
    { items: [pod('a', 'p1', '1'), pod('a', 'p2', '2')], resourceVersion: '9' },
  );
  const inf = informer(ft, log);
  inf.start();
  await inf.whenSynced();
  t.deepEqual(
    ft.listCalls.map((q) => q['continue'] ?? '-'),
    ['-', 'old', '-'],
  );
  t.deepEqual(inf.keys().sort(), ['a/p1', 'a/p2']);
  t.is((await ft.nextWatch(1)).query['resourceVersion'], '9');
  await inf.stop();
});

test('informer: failures reconnect with growing, capped delays, each logged; success resets the backoff', async (t) => {
  const ft = new FakeTransport();
  const { log, lines } = captureLog();
  const refused = () => Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:6443'), { code: 'ECONNREFUSED' });
  ft.listAnswers.push(refused(), refused(), refused(), refused(), { items: [], resourceVersion: '3' });
  const inf = informer(ft, log);
  inf.start();
  await inf.whenSynced();
  const reconnects = lines().filter((l) => l['msg'] === 'watch failed; reconnecting');
  t.deepEqual(
    reconnects.map((l) => [l['attempt'], l['delayMs']]),
    [
      [1, 5],
      [2, 10],
      [3, 20],
      [4, 40],
    ],
  );
  t.regex(String(reconnects[0]!['err']), /ECONNREFUSED/);
  t.is(reconnects[0]!['resource'], 'pods');
  t.is(reconnects[0]!['phase'], 'list');
  // The watch breaks: attempt counting starts over because the list succeeded.
  const w = await ft.nextWatch(1);
  w.fail(new Error('socket hang up'));
  await ft.nextWatch(2);
  const after = lines().filter((l) => l['msg'] === 'watch failed; reconnecting');
  t.deepEqual([after[4]!['attempt'], after[4]!['delayMs'], after[4]!['phase']], [1, 5, 'watch']);
  t.is(inf.health().reconnects, 5);
  t.is(ft.listCalls.length, 5, 'a broken watch resumes from its resourceVersion without listing');
  t.is(ft.watches[1]!.query['resourceVersion'], '3');
  await inf.stop();
});

test('informer: a 403 before RBAC exists (or a CRD not installed yet) is retried, not fatal', async (t) => {
  const ft = new FakeTransport();
  const { log } = captureLog();
  ft.listAnswers.push(new KubeApiError(404, 'NotFound', 'the server could not find the requested resource'), new KubeApiError(403, 'Forbidden', 'forbidden'), { items: [pod('a', 'p', '1')], resourceVersion: '1' });
  const inf = informer(ft, log);
  inf.start();
  await inf.whenSynced();
  t.is(inf.size, 1);
  t.regex(inf.health().lastError ?? '', /403/);
  await inf.stop();
});

test('informer: stop aborts the open watch, completes the streams, and a never-synced whenSynced rejects', async (t) => {
  const ft = new FakeTransport();
  const { log } = captureLog();
  ft.listAnswers.push({ items: [], resourceVersion: '1' });
  const inf = informer(ft, log);
  let completed = false;
  inf.events$.subscribe({ complete: () => (completed = true) });
  const sub = inf.start();
  await inf.whenSynced();
  const w = await ft.nextWatch(1);
  sub.unsubscribe();
  await until(() => w.signal.aborted, 'the watch to be aborted');
  await inf.stop();
  t.true(completed);
  t.is(ft.aborted, 1);
  t.throws(() => inf.start(), { message: /was stopped/ });

  const ft2 = new FakeTransport();
  for (let i = 0; i < 50; i++) ft2.listAnswers.push(new Error('down'));
  const never = informer(ft2, log);
  never.start();
  const waiting = never.whenSynced();
  await tick();
  await never.stop();
  await t.throwsAsync(waiting, { message: /stopped before it synced/ });
});

test('informer: events$ keeps no history; state$ replays the current store, then live events', async (t) => {
  const ft = new FakeTransport();
  const { log } = captureLog();
  ft.listAnswers.push({ items: [pod('a', 'p1', '1'), pod('a', 'p2', '2')], resourceVersion: '2' });
  const inf = informer(ft, log);
  inf.start();
  await inf.whenSynced();
  const w = await ft.nextWatch(1);
  w.send({ type: 'DELETED', object: pod('a', 'p1', '3') });
  const late: string[] = [];
  const state: string[] = [];
  inf.events$.subscribe((e) => late.push(`${e.type} ${e.key}`));
  inf.state$.subscribe((e) => state.push(`${e.type} ${e.key}`));
  t.deepEqual(late, []);
  t.deepEqual(state, ['add a/p2']);
  w.send({ type: 'ADDED', object: pod('a', 'p3', '4') });
  t.deepEqual(late, ['add a/p3']);
  t.deepEqual(state, ['add a/p2', 'add a/p3']);
  const snap = inf.snapshot();
  w.send({ type: 'DELETED', object: pod('a', 'p3', '5') });
  t.true(snap.has('a/p3'), 'a snapshot is a copy');
  t.false(inf.get('a/p3') !== undefined);
  await inf.stop();
});

test('informer set: one informer per table row, synced when all are', async (t) => {
  const ft = new FakeTransport();
  const { log } = captureLog();
  const set = createInformers(ft, { log, resources: ['pods', 'namespaces'], defaults: { backoff: fastBackoff } });
  const states: boolean[] = [];
  set.synced$.subscribe((s) => states.push(s));
  ft.listAnswers.push({ items: [pod('a', 'p', '1')], resourceVersion: '1' }, { items: [{ metadata: { name: 'a', resourceVersion: '1' } } as KubeObject], resourceVersion: '1' });
  const sub = set.start();
  await set.whenSynced();
  t.is(set.get('pods').size, 1);
  t.is(set.get('namespaces').size, 1);
  t.deepEqual(states.at(-1), true);
  t.false(states[0]);
  t.deepEqual(
    set.health().map((h) => h.resource),
    ['pods', 'namespaces'],
  );
  sub.unsubscribe();
  await set.stop();
});
