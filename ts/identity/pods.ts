/**
 * Pods -> identities, for the reconcilers:
 *
 *   const podIds = new PodIdentities(informers.get('pods'), informers.get('namespaces'), allocator, { clusterName, nodeName, log });
 *   const sub = podIds.start();
 *   podIds.identityOf('default/web-0')          // number | undefined
 *   podIds.changes$.subscribe(({ pod, identity, previous }) => ...)
 *
 * Pods this node owns (default: spec.nodeName is this node) get their identity
 * acquired and held (allocating it cluster-wide if new) until they are deleted
 * or finish. Other pods are only looked up: their node's agent allocates, and
 * they resolve when that identity appears in the store. A relabelled pod, or a
 * pod whose namespace is relabelled, moves to the identity of its new labels.
 *
 * A pod whose labels cannot form an identity (label syntax or length limits,
 * too many labels) is logged with the reason and skipped; nothing throws.
 * An API failure during allocation is retried with backoff.
 */
import type { V1Namespace, V1Pod } from '@kubernetes/client-node';
import { Observable, Subject, Subscription } from 'rxjs';
import { backoffDelay, type BackoffOptions } from '../k8s/backoff.js';
import { tryResourceKey } from '../k8s/keys.js';
import type { InformerEvent } from '../k8s/store.js';
import type { Logger } from '../log/logger.js';
import { IdentityError, type IdentityAllocator } from './allocator.js';
import { describeApiError } from './api.js';
import { canonicalLabels, DEFAULT_LABEL_FILTER, hashCanonical, podSecurityLabels, type LabelFilter, type SecurityLabels } from './labels.js';

export interface PodSource {
  readonly state$: Observable<InformerEvent<V1Pod>>;
  get(key: string): V1Pod | undefined;
  list(): V1Pod[];
}

export interface NamespaceSource {
  readonly state$: Observable<InformerEvent<V1Namespace>>;
  get(key: string): V1Namespace | undefined;
}

export interface PodIdentityOptions {
  clusterName: string;
  nodeName: string;
  log: Logger;
  filter?: LabelFilter;
  /** Pods whose identity this agent acquires; default: those scheduled on nodeName. */
  owns?: (pod: V1Pod) => boolean;
  /** Retry of failed allocations. */
  retry?: BackoffOptions;
}

export type PodIdentityStatus =
  /** identity is set. */
  | 'resolved'
  /** Being allocated, or waiting for its namespace or (not owned) for the owning node to allocate. */
  | 'pending'
  /** The labels cannot form an identity; reason says why. */
  | 'invalid';

export interface PodIdentity {
  pod: string;
  status: PodIdentityStatus;
  identity?: number;
  labels?: SecurityLabels;
  reason?: string;
  owned: boolean;
}

export interface PodIdentityChange {
  pod: string;
  /** undefined: the pod has no identity any more (deleted, finished, relabelled to invalid labels, pending). */
  identity: number | undefined;
  previous: number | undefined;
}

interface Entry extends PodIdentity {
  canonical?: string;
  hash?: string;
  retryTimer?: NodeJS.Timeout;
  attempts: number;
}

const DEFAULT_RETRY: BackoffOptions = { initialMs: 500, maxMs: 30_000, factor: 2, jitter: 0.5 };

export class PodIdentities {
  private readonly entries = new Map<string, Entry>();
  /** hash -> pods (not owned) waiting for an identity with those labels to appear. */
  private readonly waiting = new Map<string, Set<string>>();
  private readonly changesSubject = new Subject<PodIdentityChange>();
  private readonly filter: LabelFilter;
  private readonly owns: (pod: V1Pod) => boolean;
  private readonly retry: BackoffOptions;
  private readonly log: Logger;
  private stopped = false;

  /** Every change of a pod's identity. No replay: use list()/get() for the current state. */
  readonly changes$: Observable<PodIdentityChange> = this.changesSubject.asObservable();

  constructor(
    private readonly pods: PodSource,
    private readonly namespaces: NamespaceSource,
    private readonly allocator: Pick<IdentityAllocator, 'acquire' | 'release' | 'lookupByLabels' | 'events$' | 'lost$'>,
    private readonly options: PodIdentityOptions,
  ) {
    this.filter = options.filter ?? DEFAULT_LABEL_FILTER;
    this.owns = options.owns ?? ((pod) => pod.spec?.nodeName === options.nodeName);
    this.retry = options.retry ?? DEFAULT_RETRY;
    this.log = options.log;
  }

  start(): Subscription {
    const sub = new Subscription();
    sub.add(
      this.namespaces.state$.subscribe((e) => {
        if (e.type !== 'delete') this.recomputeNamespace(e.key);
      }),
    );
    sub.add(
      this.pods.state$.subscribe((e) => {
        if (e.type === 'delete') this.remove(e.key, 'deleted');
        else this.update(e.key, e.object);
      }),
    );
    sub.add(
      this.allocator.events$.subscribe((e) => {
        if (e.type === 'add') this.wake(e.identity.hash);
        else this.onIdentityDeleted(e.identity.id);
      }),
    );
    sub.add(
      this.allocator.lost$.subscribe((lost) => {
        for (const owner of lost.owners) {
          const pod = this.pods.get(owner);
          if (pod) this.update(owner, pod, true);
        }
      }),
    );
    sub.add(() => {
      // Stopping is not releasing: on an agent restart the endpoints live on, and
      // the identities they hold must not look unused in between.
      this.stopped = true;
      for (const entry of this.entries.values()) this.clearRetry(entry);
      this.changesSubject.complete();
    });
    return sub;
  }

  get(pod: string): PodIdentity | undefined {
    const e = this.entries.get(pod);
    if (!e) return undefined;
    const { retryTimer: _t, attempts: _a, canonical: _c, hash: _h, ...view } = e;
    return view;
  }

  identityOf(pod: string): number | undefined {
    return this.entries.get(pod)?.identity;
  }

  list(): PodIdentity[] {
    return [...this.entries.keys()].map((k) => this.get(k)!);
  }

  // ---------------------------------------------------------------------------

  private labelsOf(pod: V1Pod): { ok: true; labels: SecurityLabels } | { ok: false; reason: string; pending: boolean } {
    const ns = pod.metadata?.namespace ?? '';
    const namespace = this.namespaces.get(ns);
    if (!namespace) return { ok: false, reason: `namespace ${ns} is not known yet`, pending: true };
    const r = podSecurityLabels(
      {
        namespace: ns,
        podLabels: pod.metadata?.labels ?? {},
        namespaceLabels: namespace.metadata?.labels ?? {},
        serviceAccount: pod.spec?.serviceAccountName,
        clusterName: this.options.clusterName,
      },
      this.filter,
    );
    return r.ok ? r : { ok: false, reason: r.reason, pending: false };
  }

  private update(key: string, pod: V1Pod, force = false): void {
    if (this.stopped) return;
    const phase = pod.status?.phase;
    if (phase === 'Succeeded' || phase === 'Failed') return this.remove(key, `pod ${phase}`);
    const owned = this.owns(pod);
    let entry = this.entries.get(key);
    if (entry && entry.owned && !owned) {
      this.allocator.release(key);
      this.setIdentity(entry, undefined);
    }
    if (!entry) {
      entry = { pod: key, status: 'pending', owned, attempts: 0 };
      this.entries.set(key, entry);
    }
    // A pod bound to this node after it was seen unscheduled must now be acquired, not only looked up.
    const ownershipChanged = entry.owned !== owned;
    entry.owned = owned;
    const computed = this.labelsOf(pod);
    if (!computed.ok) {
      this.unwait(entry);
      this.clearRetry(entry);
      if (entry.owned) this.allocator.release(key);
      if (!computed.pending && entry.reason !== computed.reason) {
        this.log.warn({ pod: key, reason: computed.reason }, 'pod labels cannot form an identity; pod skipped');
      }
      entry.status = computed.pending ? 'pending' : 'invalid';
      entry.reason = computed.reason;
      delete entry.labels;
      delete entry.canonical;
      delete entry.hash;
      this.setIdentity(entry, undefined);
      return;
    }
    const canonical = canonicalLabels(computed.labels);
    if (!force && !ownershipChanged && entry.canonical === canonical && entry.status !== 'invalid') return;
    this.unwait(entry);
    this.clearRetry(entry);
    entry.attempts = 0;
    entry.labels = computed.labels;
    entry.canonical = canonical;
    entry.hash = hashCanonical(canonical);
    delete entry.reason;
    this.resolve(entry);
  }

  private resolve(entry: Entry): void {
    if (this.stopped || !entry.labels) return;
    const labels = entry.labels;
    if (!entry.owned) {
      const id = this.allocator.lookupByLabels(labels);
      if (id === undefined) {
        entry.status = 'pending';
        this.setIdentity(entry, undefined);
        this.waitFor(entry);
      } else {
        entry.status = 'resolved';
        this.setIdentity(entry, id);
      }
      return;
    }
    // Keep the old identity until the new one is known, so traffic is not cut in between.
    if (entry.identity === undefined) entry.status = 'pending';
    const canonical = entry.canonical;
    this.allocator.acquire(entry.pod, labels).then(
      (id) => {
        const current = this.entries.get(entry.pod);
        if (id === undefined || current !== entry || entry.canonical !== canonical || this.stopped) return;
        entry.status = 'resolved';
        entry.attempts = 0;
        this.setIdentity(entry, id);
        this.log.info({ pod: entry.pod, identity: id }, 'pod identity resolved');
      },
      (err: unknown) => {
        const current = this.entries.get(entry.pod);
        if (current !== entry || entry.canonical !== canonical || this.stopped) return;
        if (err instanceof IdentityError) {
          entry.status = 'invalid';
          entry.reason = (err as Error).message;
          this.log.warn({ pod: entry.pod, reason: entry.reason }, 'pod labels cannot form an identity; pod skipped');
          this.setIdentity(entry, undefined);
          return;
        }
        entry.attempts++;
        const delayMs = backoffDelay(entry.attempts, this.retry);
        this.log.warn({ pod: entry.pod, attempt: entry.attempts, delayMs, err: describeApiError(err) }, 'identity allocation failed; retrying');
        entry.retryTimer = setTimeout(() => {
          delete entry.retryTimer;
          if (this.entries.get(entry.pod) === entry && entry.canonical === canonical) this.resolve(entry);
        }, delayMs);
        entry.retryTimer.unref();
      },
    );
  }

  private remove(key: string, why: string): void {
    const entry = this.entries.get(key);
    if (!entry) return;
    this.unwait(entry);
    this.clearRetry(entry);
    if (entry.owned) this.allocator.release(key);
    this.entries.delete(key);
    this.log.debug({ pod: key, why }, 'pod identity dropped');
    this.setIdentity(entry, undefined);
  }

  private recomputeNamespace(ns: string): void {
    for (const pod of this.pods.list()) {
      if (pod.metadata?.namespace !== ns) continue;
      const key = tryResourceKey(pod);
      if (key) this.update(key, pod);
    }
  }

  private onIdentityDeleted(id: number): void {
    // Pods we only looked up lose that identity; they wait for its labels to reappear.
    for (const entry of this.entries.values()) {
      if (!entry.owned && entry.identity === id) this.resolve(entry);
    }
  }

  private setIdentity(entry: Entry, id: number | undefined): void {
    const previous = entry.identity;
    if (previous === id) return;
    if (id === undefined) delete entry.identity;
    else entry.identity = id;
    if (!this.changesSubject.closed) this.changesSubject.next({ pod: entry.pod, identity: id, previous });
  }

  private waitFor(entry: Entry): void {
    if (!entry.hash) return;
    let set = this.waiting.get(entry.hash);
    if (!set) this.waiting.set(entry.hash, (set = new Set()));
    set.add(entry.pod);
  }

  private unwait(entry: Entry): void {
    if (!entry.hash) return;
    const set = this.waiting.get(entry.hash);
    set?.delete(entry.pod);
    if (set?.size === 0) this.waiting.delete(entry.hash);
  }

  private wake(hash: string): void {
    const set = this.waiting.get(hash);
    if (!set) return;
    this.waiting.delete(hash);
    for (const key of set) {
      const entry = this.entries.get(key);
      if (entry && !entry.owned && entry.hash === hash) this.resolve(entry);
    }
  }

  private clearRetry(entry: Entry): void {
    if (entry.retryTimer) clearTimeout(entry.retryTimer);
    delete entry.retryTimer;
  }
}
