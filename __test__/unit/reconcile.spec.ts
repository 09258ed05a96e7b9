import test from 'ava';
import { firstValueFrom, filter } from 'rxjs';
import { createLogger } from '../../ts/log/logger.js';
import { chunks, diffEntries, entrySet, plainEqual } from '../../ts/reconcile/diff.js';
import { Reconciler, type MapBackend } from '../../ts/reconcile/reconciler.js';

type Key = { prefix: string };
type Value = { identity: number };
const keyId = (k: Key) => k.prefix;
const log = createLogger({ component: 'test', level: 'silent' });

/** An in-memory map that records every call and can be told to fail. */
class FakeMap implements MapBackend<Key, Value> {
  readonly name = 'fake_map';
  readonly content = new Map<string, Value>();
  readonly calls: Array<{ op: 'update' | 'delete'; count: number }> = [];
  failNext = 0;

  constructor(initial: Array<[string, number]> = []) {
    for (const [p, id] of initial) this.content.set(p, { identity: id });
  }
  async dump(): Promise<Array<readonly [Key, Value]>> {
    return [...this.content].map(([prefix, v]) => [{ prefix }, { ...v }] as const);
  }
  async update(entries: Array<readonly [Key, Value]>): Promise<void> {
    if (this.failNext > 0) {
      this.failNext--;
      throw new Error('map fake_map: update batch: EBUSY');
    }
    this.calls.push({ op: 'update', count: entries.length });
    for (const [k, v] of entries) this.content.set(k.prefix, v);
  }
  async delete(keys: Key[]): Promise<void> {
    this.calls.push({ op: 'delete', count: keys.length });
    for (const k of keys) this.content.delete(k.prefix);
  }
}

const desired = (pairs: Array<[string, number]>) => pairs.map(([prefix, identity]) => [{ prefix }, { identity }] as const);

function reconciler(map: FakeMap, extra: Partial<ConstructorParameters<typeof Reconciler<Key, Value>>[0]> = {}) {
  return new Reconciler<Key, Value>({ backend: map, keyId, equal: plainEqual, log, windowMs: 5, retryBaseMs: 1, ...extra });
}

test('diffEntries: upserts what is missing or different, deletes what is not desired', (t) => {
  const d = entrySet(desired([['a', 1], ['b', 2], ['c', 3]]), keyId);
  const r = entrySet(desired([['a', 1], ['b', 9], ['z', 7]]), keyId);
  const diff = diffEntries(d, r, plainEqual);
  t.deepEqual(diff.upserts.map(([k]) => k.prefix).sort(), ['b', 'c']);
  t.deepEqual(diff.deletes.map((k) => k.prefix), ['z']);
});

test('chunks splits and refuses a size below 1', (t) => {
  t.deepEqual(chunks([1, 2, 3, 4, 5], 2), [[1, 2], [3, 4], [5]]);
  t.throws(() => chunks([1], 0), { instanceOf: RangeError });
});

test('on start it adopts the map and writes only the difference (no flush)', async (t) => {
  const map = new FakeMap([['a', 1], ['b', 2], ['stale', 5]]);
  const r = reconciler(map);
  await r.start();
  r.setDesired(desired([['a', 1], ['b', 2], ['c', 3]]));
  await r.whenInSync();
  t.deepEqual(map.calls, [
    { op: 'update', count: 1 },
    { op: 'delete', count: 1 },
  ]);
  t.deepEqual([...map.content.keys()].sort(), ['a', 'b', 'c']);
  t.is(r.stats().upserts, 1);
  t.is(r.stats().deletes, 1);
  r.stop();
});

test('an unchanged desired state writes nothing', async (t) => {
  const map = new FakeMap([['a', 1]]);
  const r = reconciler(map);
  await r.start();
  r.setDesired(desired([['a', 1]]));
  await r.whenInSync();
  t.deepEqual(map.calls, []);
  r.stop();
});

test('a burst of changes is coalesced into one pass', async (t) => {
  const map = new FakeMap();
  const r = reconciler(map, { windowMs: 30 });
  await r.start();
  for (let i = 1; i <= 50; i++) r.setDesired(desired(Array.from({ length: i }, (_, j) => [`p${j}`, j] as [string, number])));
  await r.whenInSync();
  t.is(map.calls.length, 1);
  t.is(map.content.size, 50);
  r.stop();
});

test('writes go in batches of the configured size', async (t) => {
  const map = new FakeMap();
  const r = reconciler(map, { batchSize: 100 });
  await r.start();
  r.setDesired(desired(Array.from({ length: 250 }, (_, j) => [`p${j}`, j] as [string, number])));
  await r.whenInSync();
  t.deepEqual(map.calls.map((c) => c.count), [100, 100, 50]);
  r.stop();
});

test('a failed write is retried with backoff and counted; nothing is lost', async (t) => {
  const map = new FakeMap();
  map.failNext = 2;
  const delays: number[] = [];
  const r = reconciler(map, { sleep: async (ms) => void delays.push(ms) });
  await r.start();
  const report = firstValueFrom(r.reports.pipe(filter((p) => p.upserts > 0)));
  r.setDesired(desired([['a', 1], ['b', 2]]));
  const done = await report;
  t.is(done.attempts, 3);
  t.deepEqual(delays, [1, 2]);
  t.is(r.stats().errors, 2);
  t.regex(r.stats().lastError ?? '', /EBUSY/);
  t.is(map.content.size, 2);
  r.stop();
});

test('lag is measured from the first unapplied change', async (t) => {
  let now = 1000;
  const map = new FakeMap();
  const r = reconciler(map, { now: () => now });
  await r.start();
  r.setDesired(desired([['a', 1]]));
  now += 7;
  await r.whenInSync();
  t.is(r.stats().lastLagMs, 7);
  r.stop();
});
