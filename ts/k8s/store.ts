/**
 * The informer's store and its pure transitions: what events a watch event or a
 * fresh list produces against the current contents.
 */
import { tryResourceKey } from './keys.js';
import type { KubeObject } from './types.js';

export type InformerEvent<T> =
  | { type: 'add'; key: string; object: T }
  | { type: 'update'; key: string; object: T; old: T }
  | { type: 'delete'; key: string; object: T };

function sameVersion(a: KubeObject, b: KubeObject): boolean {
  const rv = a.metadata?.resourceVersion;
  return rv !== undefined && rv !== '' && rv === b.metadata?.resourceVersion;
}

/** The event (if any) that setting `object` into `store` stands for. Does not mutate. */
export function upsertEvent<T extends KubeObject>(store: ReadonlyMap<string, T>, object: T): InformerEvent<T> | undefined {
  const key = tryResourceKey(object);
  if (key === undefined) return undefined;
  const old = store.get(key);
  if (old === undefined) return { type: 'add', key, object };
  if (sameVersion(old, object)) return undefined;
  return { type: 'update', key, object, old };
}

/** The event (if any) that deleting `object` from `store` stands for: only objects the store holds. */
export function deleteEvent<T extends KubeObject>(store: ReadonlyMap<string, T>, object: T): InformerEvent<T> | undefined {
  const key = tryResourceKey(object);
  if (key === undefined) return undefined;
  const old = store.get(key);
  // The final state the apiserver sent is more recent than what we hold.
  return old === undefined ? undefined : { type: 'delete', key, object };
}

/**
 * The events that turn `store` into exactly `items` (a complete, fresh list):
 * adds and updates in list order, then deletes of what the list no longer has.
 */
export function relistEvents<T extends KubeObject>(store: ReadonlyMap<string, T>, items: readonly T[]): InformerEvent<T>[] {
  const out: InformerEvent<T>[] = [];
  const seen = new Set<string>();
  for (const item of items) {
    const key = tryResourceKey(item);
    if (key === undefined || seen.has(key)) continue;
    seen.add(key);
    const ev = upsertEvent(store, item);
    if (ev) out.push(ev);
  }
  for (const [key, old] of store) if (!seen.has(key)) out.push({ type: 'delete', key, object: old });
  return out;
}

/** Applies one event to a mutable store. */
export function applyEvent<T>(store: Map<string, T>, event: InformerEvent<T>): void {
  if (event.type === 'delete') store.delete(event.key);
  else store.set(event.key, event.object);
}
