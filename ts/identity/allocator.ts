/**
 * Cluster-wide identity allocation through MembraneIdentity objects.
 *
 *   const allocator = new IdentityAllocator(new KubeIdentityApi(kc), informers.get('membraneidentities'), { nodeName, log });
 *   const sub = allocator.start();
 *   const id = await allocator.acquire('default/web-0', labels);   // owner = the endpoint
 *   allocator.release('default/web-0');
 *
 * Allocation of a label set, every agent doing the same steps:
 *   1. the lowest valid identity with these labels in the informer's store;
 *   2. else the same, asked of the apiserver by label selector
 *      membrane.io/labels-hash=<hash> (a consistent read: covers a lagging watch);
 *   3. else create objects along the candidate sequence of the labels hash
 *      (numbering.ts): 201 -> ours; 409 -> read it: same labels -> use it,
 *      different (or malformed) -> next candidate.
 * Agents racing on one label set walk the same sequence, and the apiserver lets
 * only one create of a name succeed, so they end with the same number. A number
 * never stands for two label sets: labels are immutable (CRD rule) and a
 * number is only used after reading its object back.
 *
 * Usage. The allocator counts local references per identity (one per owner).
 * For identities in use it keeps this node in status.nodes and status.lastUsed
 * fresh: it stamps when lastUsed (by any node) is older than half of
 * refreshIntervalMs, so the write rate per identity does not grow with the
 * number of nodes. When the last local user goes, it stamps lastUsed and
 * removes the node. The garbage collector (gc.ts) deletes identities nobody
 * has stamped for a grace period (>= 3 refresh intervals).
 * An acquire of an identity whose stamp is not fresh (or that does not list
 * this node) stamps it before returning, with the object's resourceVersion as precondition,
 * so a concurrent GC delete (which also carries a precondition) and our use
 * cannot both succeed: either our stamp wins (the delete fails) or the delete
 * wins (our stamp gets 404, and we allocate again).
 */
import { Observable, Subject, Subscription } from 'rxjs';
import type { InformerEvent } from '../k8s/store.js';
import type { MembraneIdentity } from '../k8s/types.js';
import type { Logger } from '../log/logger.js';
import { describeApiError, statusCodeOf, type IdentityApi } from './api.js';
import { IdentityCache, type CacheChange } from './cache.js';
import { formatLabels, securityLabelsProblem, type SecurityLabels } from './labels.js';
import { candidates } from './numbering.js';
import { IDENTITY_GROUP, IDENTITY_KIND, IDENTITY_VERSION, identityFromLabels, identityObject, nodesWith, parseIdentityObject, type Identity, type IdentityRecord } from './object.js';
import { hasReservedLabels, reservedIdentity, reservedIdentityForLabels, type ReservedIdentity } from './reserved.js';

/** What the allocator needs of the MembraneIdentity informer. */
export interface IdentitySource {
  readonly state$: Observable<InformerEvent<MembraneIdentity>>;
  whenSynced(signal?: AbortSignal): Promise<void>;
  isSynced(): boolean;
}

export interface AllocatorOptions {
  nodeName: string;
  log: Logger;
  /**
   * How often this node re-stamps status.lastUsed of identities it uses. Must be
   * well below the GC grace period (at most a third of it).
   */
  refreshIntervalMs?: number;
  /** Give up a create walk after this many candidates. */
  maxProbes?: number;
  now?: () => number;
}

export class IdentityError extends Error {
  override name = 'IdentityError';
}

export type IdentityEvent = { type: 'add'; identity: Identity } | { type: 'delete'; identity: Identity };

export interface LostIdentity {
  id: number;
  labels: SecurityLabels;
  owners: string[];
}

export interface AllocatorStats {
  /** Objects this allocator created. */
  created: number;
  /** 409 on create, the object had our labels: another agent won the race. */
  conflictsSameLabels: number;
  /** 409 on create, the object had other labels: next candidate. */
  conflictsOtherLabels: number;
  /** Found by the label-selector read after the store missed. */
  foundByList: number;
  statusWrites: number;
  statusConflicts: number;
  malformedSeen: number;
}

export const DEFAULT_REFRESH_INTERVAL_MS = 5 * 60_000;

interface StatusChain {
  running: Promise<boolean>;
  /** The one write waiting behind the running one; force is ORed over the callers it stands for. */
  queued?: { promise: Promise<boolean>; force: boolean };
}

export class IdentityAllocator {
  private readonly cache = new IdentityCache();
  private readonly log: Logger;
  private readonly nodeName: string;
  readonly refreshIntervalMs: number;
  private readonly maxProbes: number;
  private readonly now: () => number;

  /** owner -> identity it holds. */
  private readonly owners = new Map<string, number>();
  /** identity -> number of owners here. */
  private readonly refs = new Map<number, number>();
  /** owner -> token of its newest acquire (older ones are superseded). */
  private readonly pending = new Map<string, number>();
  private seq = 0;
  /** canonical labels -> in-flight resolution, shared by concurrent acquires. */
  private readonly resolving = new Map<string, Promise<number>>();
  private readonly statusChains = new Map<number, StatusChain>();
  private readonly eventsSubject = new Subject<IdentityEvent>();
  private readonly lostSubject = new Subject<LostIdentity>();
  private subscription: Subscription | undefined;
  private refreshing = false;
  private stopped = false;
  readonly stats: AllocatorStats = { created: 0, conflictsSameLabels: 0, conflictsOtherLabels: 0, foundByList: 0, statusWrites: 0, statusConflicts: 0, malformedSeen: 0 };

  /** Valid cluster identities appearing and disappearing (from any agent). No replay; use list() for the current set. */
  readonly events$: Observable<IdentityEvent> = this.eventsSubject.asObservable();
  /** Current identities as 'add' events, then live changes. */
  readonly state$: Observable<IdentityEvent> = new Observable<IdentityEvent>((subscriber) => {
    for (const r of this.cache.records()) {
      if (subscriber.closed) return;
      subscriber.next({ type: 'add', identity: r.identity });
    }
    return this.eventsSubject.subscribe(subscriber);
  });
  /**
   * An identity with local owners was deleted and could not be restored under
   * its number: the owners must acquire again (their labels get a new number).
   */
  readonly lost$: Observable<LostIdentity> = this.lostSubject.asObservable();

  constructor(
    private readonly api: IdentityApi,
    private readonly source: IdentitySource,
    options: AllocatorOptions,
  ) {
    if (!options.nodeName) throw new IdentityError('the allocator needs a node name');
    this.nodeName = options.nodeName;
    this.log = options.log;
    this.refreshIntervalMs = options.refreshIntervalMs ?? DEFAULT_REFRESH_INTERVAL_MS;
    if (!(this.refreshIntervalMs > 0)) throw new RangeError(`refreshIntervalMs ${this.refreshIntervalMs} must be > 0`);
    this.maxProbes = options.maxProbes ?? 4096;
    this.now = options.now ?? Date.now;
  }

  /** Follows the identity informer and starts the periodic status refresh. Unsubscribe (or stop()) to end. */
  start(): Subscription {
    if (this.subscription) return this.subscription;
    const sub = new Subscription();
    sub.add(
      this.source.state$.subscribe({
        next: (e) => this.onInformerEvent(e),
        error: (err: unknown) => this.log.error({ err: (err as Error)?.message }, 'identity informer stream failed'),
      }),
    );
    const tick = Math.max(50, Math.min(30_000, Math.floor(this.refreshIntervalMs / 4)));
    const timer = setInterval(() => void this.refreshUsage(), tick);
    timer.unref();
    sub.add(() => clearInterval(timer));
    sub.add(() => {
      this.stopped = true;
      this.eventsSubject.complete();
      this.lostSubject.complete();
    });
    this.subscription = sub;
    return sub;
  }

  stop(): void {
    this.subscription?.unsubscribe();
  }

  // ---------------------------------------------------------------------------
  // Public API

  /**
   * The identity for `labels`, held by `owner` (an endpoint key) until release
   * or until the same owner acquires other labels. Allocates cluster-wide if
   * needed. Reserved label sets ("reserved:host", ...) give their reserved
   * number. Resolves undefined if a later acquire or release for this owner
   * superseded this one. Rejects with IdentityError for invalid labels, or with
   * the API error if the apiserver cannot be reached (the caller retries).
   */
  async acquire(owner: string, labels: SecurityLabels, signal?: AbortSignal): Promise<number | undefined> {
    const token = ++this.seq;
    this.pending.set(owner, token);
    try {
      const id = await this.resolve(labels, signal);
      if (this.pending.get(owner) !== token) {
        // Superseded: undo the in-use stamp this acquire may have written if nobody here holds the identity.
        if (this.localRefs(id) === 0 && this.cache.record(id)?.nodes.includes(this.nodeName) && !this.stopped) {
          this.syncStatus(id, false).catch(() => undefined);
        }
        return undefined;
      }
      this.setOwner(owner, id);
      return id;
    } finally {
      if (this.pending.get(owner) === token) this.pending.delete(owner);
    }
  }

  /** Drops `owner`'s reference (and cancels its in-flight acquire). */
  release(owner: string): void {
    this.pending.delete(owner);
    const id = this.owners.get(owner);
    if (id === undefined) return;
    this.owners.delete(owner);
    this.decRef(id);
  }

  /** The identity `owner` holds, if any. */
  ownerIdentity(owner: string): number | undefined {
    return this.owners.get(owner);
  }

  localRefs(id: number): number {
    return this.refs.get(id) ?? 0;
  }

  /** Identities with local owners. */
  inUse(): number[] {
    return [...this.refs.keys()];
  }

  /** A cluster identity from the store, or a reserved one. */
  lookup(id: number): Identity | ReservedIdentity | undefined {
    return reservedIdentity(id) ?? this.cache.identity(id);
  }

  /** The number for these labels if it exists already (no allocation). */
  lookupByLabels(labels: SecurityLabels): number | undefined {
    const r = reservedIdentityForLabels(labels);
    if (r) return r.id;
    if (hasReservedLabels(labels) || securityLabelsProblem(labels)) return undefined;
    const probe = identityFromLabels(0, labels);
    return this.cache.lookup(probe.canonical, probe.hash);
  }

  /** Valid cluster identities in the store. */
  list(): Identity[] {
    return this.cache.records().map((r) => r.identity);
  }

  /** Valid identities with usage data, for the garbage collector. */
  records(): IdentityRecord[] {
    return this.cache.records();
  }

  /** Objects skipped as malformed, with why. */
  malformed(): { id: number; reason: string }[] {
    return this.cache.malformed();
  }

  isSynced(): boolean {
    return this.source.isSynced();
  }

  // ---------------------------------------------------------------------------
  // References

  private setOwner(owner: string, id: number): void {
    const old = this.owners.get(owner);
    if (old === id) return;
    this.owners.set(owner, id);
    if (!reservedIdentity(id)) this.refs.set(id, (this.refs.get(id) ?? 0) + 1);
    if (old !== undefined) this.decRef(old);
  }

  private decRef(id: number): void {
    if (reservedIdentity(id)) return;
    const n = (this.refs.get(id) ?? 0) - 1;
    if (n > 0) {
      this.refs.set(id, n);
      return;
    }
    this.refs.delete(id);
    this.log.debug({ identity: id }, 'identity no longer used on this node');
    // Stamp lastUsed (the grace period starts now) and take this node off status.nodes.
    if (this.cache.record(id)?.nodes.includes(this.nodeName) && !this.stopped) {
      this.syncStatus(id, false).catch((err: unknown) => this.log.warn({ identity: id, err: describeApiError(err) }, 'could not record that the identity is unused here'));
    }
  }

  // ---------------------------------------------------------------------------
  // Resolution

  private async resolve(labels: SecurityLabels, signal?: AbortSignal): Promise<number> {
    if (hasReservedLabels(labels)) {
      const r = reservedIdentityForLabels(labels);
      if (!r) throw new IdentityError(`labels ${formatLabels(labels)} use the reserved: source but name no reserved identity`);
      return r.id;
    }
    const problem = securityLabelsProblem(labels);
    if (problem) throw new IdentityError(`cannot allocate an identity: ${problem}`);
    const wanted = identityFromLabels(0, labels);
    const inflight = this.resolving.get(wanted.canonical);
    if (inflight) return inflight;
    const p = this.resolveFresh(wanted, signal).finally(() => this.resolving.delete(wanted.canonical));
    this.resolving.set(wanted.canonical, p);
    return p;
  }

  private async resolveFresh(wanted: Identity, signal?: AbortSignal): Promise<number> {
    await this.source.whenSynced(signal);
    for (let round = 0; round < 5; round++) {
      signal?.throwIfAborted();
      let id = this.cache.lookup(wanted.canonical, wanted.hash);
      if (id === undefined) {
        for (const obj of await this.api.listByHash(wanted.hash)) this.ingest(obj);
        id = this.cache.lookup(wanted.canonical, wanted.hash);
        if (id !== undefined) this.stats.foundByList++;
      }
      if (id === undefined) id = await this.createAlongCandidates(wanted, signal);
      if (await this.ensureStamped(id)) return id;
      this.log.info({ identity: id, labels: formatLabels(wanted.labels) }, 'identity disappeared while being acquired; allocating again');
    }
    throw new IdentityError(`the identity for ${formatLabels(wanted.labels)} keeps disappearing while being acquired`);
  }

  private async createAlongCandidates(wanted: Identity, signal?: AbortSignal): Promise<number> {
    let probes = 0;
    for (const candidate of candidates(wanted.hash, (n) => this.cache.isTakenByOther(n, wanted.canonical))) {
      if (++probes > this.maxProbes) break;
      signal?.throwIfAborted();
      const outcome = await this.tryClaim({ ...wanted, id: candidate });
      if (outcome === 'ours') return candidate;
    }
    throw new IdentityError(`no free identity number for ${formatLabels(wanted.labels)} after ${probes - 1} candidates`);
  }

  /** 'ours': the number now stands for our labels (created by us or by a racing agent); 'other': taken. */
  private async tryClaim(identity: Identity): Promise<'ours' | 'other'> {
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const created = await this.api.create(identityObject(identity));
        this.ingest(created);
        this.stats.created++;
        this.log.info({ identity: identity.id, labels: formatLabels(identity.labels), labelsHash: identity.hash }, 'identity allocated');
        return 'ours';
      } catch (err) {
        if (statusCodeOf(err) !== 409) throw err;
      }
      const existing = await this.api.get(String(identity.id));
      if (!existing) continue; // deleted between our create and read: try the same number again
      this.ingest(existing);
      const parsed = parseIdentityObject(existing);
      if (parsed.ok && parsed.record.identity.canonical === identity.canonical) {
        this.stats.conflictsSameLabels++;
        this.log.debug({ identity: identity.id }, 'identity created concurrently by another agent; using it');
        return 'ours';
      }
      this.stats.conflictsOtherLabels++;
      this.log.debug({ identity: identity.id, labelsHash: identity.hash }, 'candidate number taken by other labels; trying the next');
      return 'other';
    }
    return 'other';
  }

  // ---------------------------------------------------------------------------
  // Usage stamps (status.lastUsed / status.nodes)

  /**
   * Whether `id` needs a stamp for this node: this node is not listed in
   * status.nodes, or nobody has stamped lastUsed for half a refresh interval.
   * Any node's recent stamp counts, so an identity used on many nodes is
   * written about twice per refresh interval in all, not once per node.
   * (A stamp younger than refreshIntervalMs / 2 is also at least 2.5 refresh
   * intervals away from the GC grace period, so skipping the write is safe.)
   */
  private needsStamp(id: number): boolean {
    const r = this.cache.record(id);
    if (!r || !r.nodes.includes(this.nodeName)) return true;
    return r.lastUsed === undefined || this.now() - r.lastUsed >= this.refreshIntervalMs / 2;
  }

  /** True once the identity is stamped in use by this node recently; false if its object is gone. */
  private async ensureStamped(id: number): Promise<boolean> {
    if (this.cache.record(id) && !this.needsStamp(id)) return true;
    return this.syncStatus(id, true);
  }

  /**
   * Writes status for `id` (serialised per identity, coalesced: at most one
   * write waits behind the running one). forceInUse: list this node even if no
   * owner holds the identity yet (an acquire in progress).
   */
  private syncStatus(id: number, forceInUse: boolean): Promise<boolean> {
    const chain = this.statusChains.get(id);
    if (chain?.queued) {
      chain.queued.force ||= forceInUse;
      return chain.queued.promise;
    }
    // Shared with chain.queued, so callers coalescing onto this write can raise its force.
    const intent = { force: forceInUse, promise: undefined as unknown as Promise<boolean> };
    const prev = chain?.running ?? Promise.resolve(true);
    const next = prev.catch(() => false).then(() => this.writeStatus(id, intent.force));
    intent.promise = next;
    if (chain) chain.queued = intent;
    else this.statusChains.set(id, { running: next });
    const advance = () => {
      const c = this.statusChains.get(id);
      if (!c || c.running !== next) return;
      if (c.queued) {
        c.running = c.queued.promise;
        delete c.queued;
      } else this.statusChains.delete(id);
    };
    next.then(advance, advance);
    return next;
  }

  private async writeStatus(id: number, forceInUse: boolean): Promise<boolean> {
    for (let attempt = 0; attempt < 6; attempt++) {
      let record = this.cache.record(id);
      if (!record) {
        const obj = await this.api.get(String(id));
        if (!obj) return false;
        this.ingest(obj);
        record = this.cache.record(id);
        if (!record) return false; // malformed now: not ours to use
      }
      const inUse = forceInUse || this.localRefs(id) > 0;
      // Nothing to write: unused and not listed, or in use and freshly stamped (maybe by a queued twin of this call).
      if (!inUse && !record.nodes.includes(this.nodeName)) return true;
      if (inUse && !this.needsStamp(id)) return true;
      const now = this.now();
      const body: MembraneIdentity = {
        apiVersion: `${IDENTITY_GROUP}/${IDENTITY_VERSION}`,
        kind: IDENTITY_KIND,
        metadata: { name: String(id), resourceVersion: record.resourceVersion },
        spec: { securityLabels: { ...record.identity.labels } },
        status: { lastUsed: new Date(now).toISOString(), nodes: nodesWith(record.nodes, this.nodeName, inUse) },
      };
      try {
        const updated = await this.api.replaceStatus(body);
        this.stats.statusWrites++;
        this.ingest(updated);
        this.log.debug({ identity: id, inUse, nodes: body.status?.nodes }, 'identity usage recorded');
        return true;
      } catch (err) {
        const code = statusCodeOf(err);
        if (code === 404) {
          this.forget(String(id));
          return false;
        }
        if (code !== 409) throw err;
        this.stats.statusConflicts++;
        const fresh = await this.api.get(String(id));
        if (!fresh) {
          this.forget(String(id));
          return false;
        }
        this.ingest(fresh);
      }
    }
    throw new IdentityError(`status of identity ${id} keeps changing under us (409 six times)`);
  }

  /**
   * Re-stamps identities in use whose stamp is older than the refresh interval
   * (runs periodically on its own; callable for tests and before shutdown).
   */
  async refreshUsage(): Promise<void> {
    if (this.refreshing || this.stopped) return;
    this.refreshing = true;
    try {
      for (const id of this.inUse()) {
        if (this.stopped) return;
        if (this.cache.record(id) && !this.needsStamp(id)) continue;
        try {
          const exists = await this.syncStatus(id, false);
          if (!exists && this.localRefs(id) > 0) await this.restore(id);
        } catch (err) {
          this.log.warn({ identity: id, err: describeApiError(err) }, 'could not refresh identity usage; will retry');
        }
      }
    } finally {
      this.refreshing = false;
    }
  }

  // ---------------------------------------------------------------------------
  // Store maintenance

  private ingest(obj: MembraneIdentity): void {
    this.publish(this.cache.upsert(obj));
  }

  private forget(name: string): void {
    this.publish(this.cache.remove(name));
  }

  private publish(changes: CacheChange[]): void {
    for (const c of changes) {
      if (c.type === 'malformed') {
        this.stats.malformedSeen++;
        this.log.warn({ identityObject: c.name, reason: c.reason }, 'malformed MembraneIdentity skipped');
        continue;
      }
      if (!this.stopped) this.eventsSubject.next(c);
    }
  }

  private onInformerEvent(e: InformerEvent<MembraneIdentity>): void {
    if (e.type === 'delete') {
      const id = Number(e.object.metadata?.name);
      const had = this.cache.record(id);
      this.forget(e.key);
      if (had && this.localRefs(id) > 0 && !this.stopped) {
        this.log.warn({ identity: id, owners: this.ownersOf(id).length }, 'identity in use here was deleted; restoring it');
        void this.restore(id, had.identity);
      }
      return;
    }
    this.ingest(e.object);
  }

  private ownersOf(id: number): string[] {
    const out: string[] = [];
    for (const [owner, held] of this.owners) if (held === id) out.push(owner);
    return out;
  }

  /** Re-creates a deleted identity that local owners still hold, under the same number if possible. */
  private async restore(id: number, known?: Identity): Promise<void> {
    const identity = known ?? this.cache.identity(id);
    if (!identity) return this.reportLost(id, undefined);
    try {
      const outcome = await this.tryClaim(identity);
      if (outcome === 'ours' && (await this.syncStatus(id, false))) {
        this.log.info({ identity: id }, 'identity restored');
        return;
      }
    } catch (err) {
      this.log.warn({ identity: id, err: describeApiError(err) }, 'could not restore identity');
    }
    this.reportLost(id, identity);
  }

  private reportLost(id: number, identity: Identity | undefined): void {
    const owners = this.ownersOf(id);
    if (owners.length === 0 || this.stopped) return;
    this.log.error({ identity: id, owners }, 'identity lost; its owners must acquire again');
    this.lostSubject.next({ id, labels: identity?.labels ?? {}, owners });
  }
}
