/**
 * The allocator's view of MembraneIdentity objects: by number, and by labels
 * hash for the valid ones. Fed by the identity informer and by the objects the
 * allocator's own API calls return (so it does not wait for its own writes to
 * come back through the watch). No I/O.
 */
import type { MembraneIdentity } from '../k8s/types.js';
import { parseIdentityName, parseIdentityObject, type Identity, type IdentityRecord } from './object.js';

export type CacheEntry = { kind: 'valid'; record: IdentityRecord } | { kind: 'malformed'; id: number; reason: string; resourceVersion: string };

export type CacheChange =
  | { type: 'add'; identity: Identity }
  | { type: 'delete'; identity: Identity }
  | { type: 'malformed'; name: string; id: number | undefined; reason: string };

export class IdentityCache {
  private readonly byId = new Map<number, CacheEntry>();
  private readonly byHash = new Map<string, Set<number>>();
  /** Malformed objects whose name is not even a number: remembered only to log them once per version. */
  private readonly badNames = new Map<string, string>();

  /** Records `obj`; returns what changed for subscribers (valid add/delete) and for logs (malformed, once per version). */
  upsert(obj: MembraneIdentity): CacheChange[] {
    const name = obj.metadata?.name ?? '';
    const rv = obj.metadata?.resourceVersion ?? '';
    const parsed = parseIdentityObject(obj);
    const out: CacheChange[] = [];
    if (!parsed.ok) {
      if (parsed.id === undefined) {
        if (this.badNames.get(name) !== rv) out.push({ type: 'malformed', name, id: undefined, reason: parsed.reason });
        this.badNames.set(name, rv);
        return out;
      }
      const prev = this.byId.get(parsed.id);
      if (prev?.kind === 'valid') out.push(...this.drop(parsed.id));
      if (!(prev?.kind === 'malformed' && prev.resourceVersion === rv)) out.push({ type: 'malformed', name, id: parsed.id, reason: parsed.reason });
      this.byId.set(parsed.id, { kind: 'malformed', id: parsed.id, reason: parsed.reason, resourceVersion: rv });
      return out;
    }
    const { record } = parsed;
    const id = record.identity.id;
    const prev = this.byId.get(id);
    if (prev?.kind === 'valid' && prev.record.identity.canonical !== record.identity.canonical) out.push(...this.drop(id));
    const isNew = !(prev?.kind === 'valid' && prev.record.identity.canonical === record.identity.canonical);
    this.byId.set(id, { kind: 'valid', record });
    let ids = this.byHash.get(record.identity.hash);
    if (!ids) this.byHash.set(record.identity.hash, (ids = new Set()));
    ids.add(id);
    if (isNew) out.push({ type: 'add', identity: record.identity });
    return out;
  }

  /** Forgets the object named `name`. */
  remove(name: string): CacheChange[] {
    const id = parseIdentityName(name);
    if (id === undefined) {
      this.badNames.delete(name);
      return [];
    }
    return this.drop(id);
  }

  private drop(id: number): CacheChange[] {
    const prev = this.byId.get(id);
    if (!prev) return [];
    this.byId.delete(id);
    if (prev.kind !== 'valid') return [];
    const ids = this.byHash.get(prev.record.identity.hash);
    ids?.delete(id);
    if (ids?.size === 0) this.byHash.delete(prev.record.identity.hash);
    return [{ type: 'delete', identity: prev.record.identity }];
  }

  /** The lowest valid identity with exactly these labels (several can exist after a rare race; the lowest wins everywhere). */
  lookup(canonical: string, hash: string): number | undefined {
    let best: number | undefined;
    for (const id of this.byHash.get(hash) ?? []) {
      const e = this.byId.get(id);
      if (e?.kind === 'valid' && e.record.identity.canonical === canonical && (best === undefined || id < best)) best = id;
    }
    return best;
  }

  /** True if `id` is held by an object that is not a valid identity for `canonical`. */
  isTakenByOther(id: number, canonical: string): boolean {
    const e = this.byId.get(id);
    if (!e) return false;
    return e.kind === 'malformed' || e.record.identity.canonical !== canonical;
  }

  entry(id: number): CacheEntry | undefined {
    return this.byId.get(id);
  }

  record(id: number): IdentityRecord | undefined {
    const e = this.byId.get(id);
    return e?.kind === 'valid' ? e.record : undefined;
  }

  identity(id: number): Identity | undefined {
    return this.record(id)?.identity;
  }

  records(): IdentityRecord[] {
    const out: IdentityRecord[] = [];
    for (const e of this.byId.values()) if (e.kind === 'valid') out.push(e.record);
    return out;
  }

  malformed(): { id: number; reason: string }[] {
    const out: { id: number; reason: string }[] = [];
    for (const e of this.byId.values()) if (e.kind === 'malformed') out.push({ id: e.id, reason: e.reason });
    return out;
  }

  get size(): number {
    return this.byId.size;
  }
}
