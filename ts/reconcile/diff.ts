/**
 * The difference between what should be in a map and what is: pure, so that
 * every reconciler applies exactly the changes it needs and nothing else.
 */

/** Entries keyed by a stable string form of their map key. */
export type EntrySet<K, V> = ReadonlyMap<string, readonly [K, V]>;

export interface MapDiff<K, V> {
  /** Entries to write: missing in the map, or present with another value. */
  upserts: Array<readonly [K, V]>;
  /** Keys to remove: in the map but no longer desired. */
  deletes: K[];
}

export function diffEntries<K, V>(desired: EntrySet<K, V>, realized: EntrySet<K, V>, equal: (a: V, b: V) => boolean): MapDiff<K, V> {
  const upserts: Array<readonly [K, V]> = [];
  const deletes: K[] = [];
  for (const [id, entry] of desired) {
    const current = realized.get(id);
    if (current === undefined || !equal(current[1], entry[1])) upserts.push(entry);
  }
  for (const [id, [key]] of realized) {
    if (!desired.has(id)) deletes.push(key);
  }
  return { upserts, deletes };
}

export function isEmptyDiff(diff: MapDiff<unknown, unknown>): boolean {
  return diff.upserts.length === 0 && diff.deletes.length === 0;
}

/** Builds an EntrySet from entries, with `keyId` giving each key's stable string form. */
export function entrySet<K, V>(entries: Iterable<readonly [K, V]>, keyId: (key: K) => string): Map<string, readonly [K, V]> {
  const out = new Map<string, readonly [K, V]>();
  for (const entry of entries) out.set(keyId(entry[0]), entry);
  return out;
}

/** Structural equality of plain values (objects, arrays, numbers, bigints, strings). */
export function plainEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ka = Object.keys(a as object);
  const kb = Object.keys(b as object);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => plainEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]));
}

/** Splits a list into chunks of at most `size`. */
export function chunks<T>(items: readonly T[], size: number): T[][] {
  if (size < 1) throw new RangeError(`chunk size must be >= 1, got ${size}`);
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}
