/**
 * One generic informer: list, then watch from the list's resourceVersion, keep a
 * store of current objects, and publish every change as an RxJS event.
 *
 *   const pods = new Informer<V1Pod>(transport, RESOURCE_KINDS.pods, { log });
 *   const sub = pods.start();          // sub.unsubscribe() aborts the watch
 *   pods.events$.subscribe((e) => ...) // live changes only
 *   pods.state$.subscribe(...)         // the current store as 'add' events, then live changes
 *   await pods.whenSynced();           // the initial list is in the store
 *   pods.get('default/web-0'); pods.list();
 *
 * Nothing is buffered for subscribers: events$ is a plain Subject (no replay);
 * a late subscriber reads the store (or uses state$) instead of history.
 *
 * Failure handling:
 * - 410 Gone / Expired (resourceVersion compacted, or continue token expired):
 *   list again, diff against the store (add / update / delete events), watch on;
 * - any other failure (connection refused or reset, 5xx, 403 before RBAC
 *   exists, CRD not installed yet, idle stream): reconnect after an exponential,
 *   capped, jittered delay; each reconnect is logged with its attempt and delay;
 * - the server ending a watch normally (timeoutSeconds): watch again at once.
 * `synced` turns true after the first complete list and stays true: the store
 * is then complete as of some point and kept current on a best-effort basis.
 */
import { BehaviorSubject, filter, firstValueFrom, Observable, Subject, Subscription, type Observer } from 'rxjs';
import type { Logger } from '../log/logger.js';
import { backoffDelay, DEFAULT_BACKOFF, validateBackoff, type BackoffOptions } from './backoff.js';
import { collectionPath, type ResourceKind } from './resources.js';
import { applyEvent, deleteEvent, relistEvents, upsertEvent, type InformerEvent } from './store.js';
import { isGone, watchErrorFromStatus, type KubeTransport, type WatchEvent } from './transport.js';
import type { KubeObject } from './types.js';

export type { InformerEvent } from './store.js';

export interface InformerOptions {
  log: Logger;
  /** Only objects in this namespace (namespaced kinds); all namespaces when absent. */
  namespace?: string;
  labelSelector?: string;
  fieldSelector?: string;
  /** Objects per list page. */
  pageSize?: number;
  backoff?: BackoffOptions;
  /** The server ends each watch after a random time in [this, 2 x this) seconds; we then watch again. */
  watchTimeoutSeconds?: number;
  /** A watch that delivers nothing (not even a bookmark) for this long is dropped and reopened. */
  idleTimeoutMs?: number;
  /** A watch that lasted at least this long, or delivered an event, resets the backoff. */
  healthyAfterMs?: number;
  random?: () => number;
  /**
   * Applied to every object before it is stored and emitted: keep only the
   * fields the consumers read, so a large cluster costs little memory.
   */
  transform?: (obj: KubeObject) => KubeObject;
}

export interface InformerHealth {
  resource: string;
  synced: boolean;
  /** A watch stream is open right now (the server accepted it). */
  watching: boolean;
  resourceVersion: string;
  objects: number;
  /** Reconnects after failures since start (410 relists not included). */
  reconnects: number;
  relists: number;
  lastError?: string;
}

const DEFAULTS = { pageSize: 500, watchTimeoutSeconds: 300, healthyAfterMs: 10_000 };

class Stopped extends Error {}

export class Informer<T extends KubeObject> {
  readonly resource: string;
  private readonly store = new Map<string, T>();
  private readonly eventsSubject = new Subject<InformerEvent<T>>();
  private readonly syncedSubject = new BehaviorSubject<boolean>(false);
  private readonly opts: Required<Omit<InformerOptions, 'namespace' | 'labelSelector' | 'fieldSelector' | 'transform'>> &
    Pick<InformerOptions, 'namespace' | 'labelSelector' | 'fieldSelector' | 'transform'>;
  private readonly path: string;
  private readonly log: Logger;
  private abort: AbortController | undefined;
  private running: Promise<void> | undefined;
  private resourceVersion = '';
  private watching = false;
  private reconnects = 0;
  private relists = 0;
  private lastError: string | undefined;
  private stopped = false;

  /** Live changes: add / update / delete with the object (and the old one for update). No replay. */
  readonly events$: Observable<InformerEvent<T>> = this.eventsSubject.asObservable();
  /** false until the first complete list is in the store, then true. Replays its current value. */
  readonly synced$: Observable<boolean> = this.syncedSubject.asObservable();
  /** The current store as 'add' events, then live changes: what a reconciler needs to build its own view. */
  readonly state$: Observable<InformerEvent<T>> = new Observable<InformerEvent<T>>((subscriber) => {
    for (const [key, object] of this.store) {
      if (subscriber.closed) return;
      subscriber.next({ type: 'add', key, object });
    }
    return this.eventsSubject.subscribe(subscriber as Observer<InformerEvent<T>>);
  });

  constructor(
    private readonly transport: KubeTransport,
    readonly kind: Readonly<ResourceKind>,
    options: InformerOptions,
  ) {
    this.opts = {
      pageSize: options.pageSize ?? DEFAULTS.pageSize,
      backoff: options.backoff ?? DEFAULT_BACKOFF,
      watchTimeoutSeconds: options.watchTimeoutSeconds ?? DEFAULTS.watchTimeoutSeconds,
      idleTimeoutMs: options.idleTimeoutMs ?? ((options.watchTimeoutSeconds ?? DEFAULTS.watchTimeoutSeconds) * 2 + 60) * 1000,
      healthyAfterMs: options.healthyAfterMs ?? DEFAULTS.healthyAfterMs,
      random: options.random ?? Math.random,
      log: options.log,
      namespace: options.namespace,
      labelSelector: options.labelSelector,
      fieldSelector: options.fieldSelector,
      transform: options.transform,
    };
    validateBackoff(this.opts.backoff);
    this.path = collectionPath(kind, options.namespace);
    this.resource = kind.group === '' ? kind.plural : `${kind.plural}.${kind.group}`;
    this.log = options.log.child({ resource: this.resource });
  }

  /** Starts listing and watching; unsubscribing the result stops (same as stop()). An informer runs once. */
  start(): Subscription {
    if (this.stopped) throw new Error(`informer for ${this.resource} was stopped; create a new one`);
    if (!this.running) {
      this.abort = new AbortController();
      this.running = this.run(this.abort.signal);
    }
    return new Subscription(() => void this.stop());
  }

  /** Aborts the watch, completes events$ and synced$; resolves when the loop has exited. */
  async stop(): Promise<void> {
    if (this.stopped) return this.running;
    this.stopped = true;
    this.abort?.abort(new Stopped('informer stopped'));
    await this.running;
    this.eventsSubject.complete();
    this.syncedSubject.complete();
  }

  isSynced(): boolean {
    return this.syncedSubject.value;
  }

  /** Resolves once the initial list is in the store; rejects if the informer stops first or signal aborts. */
  async whenSynced(signal?: AbortSignal): Promise<void> {
    if (this.syncedSubject.value) return;
    const synced = firstValueFrom(this.syncedSubject.pipe(filter(Boolean)));
    if (!signal) return synced.then(() => undefined, () => Promise.reject(new Error(`informer for ${this.resource} stopped before it synced`)));
    signal.throwIfAborted();
    await new Promise<void>((resolve, reject) => {
      const onAbort = () => reject(signal.reason instanceof Error ? signal.reason : new Error('aborted'));
      signal.addEventListener('abort', onAbort, { once: true });
      synced.then(
        () => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        },
        () => reject(new Error(`informer for ${this.resource} stopped before it synced`)),
      );
    });
  }

  get(key: string): T | undefined {
    return this.store.get(key);
  }

  list(): T[] {
    return [...this.store.values()];
  }

  keys(): string[] {
    return [...this.store.keys()];
  }

  get size(): number {
    return this.store.size;
  }

  /** A copy of the store, safe to keep while events keep coming. */
  snapshot(): ReadonlyMap<string, T> {
    return new Map(this.store);
  }

  health(): InformerHealth {
    const h: InformerHealth = {
      resource: this.resource,
      synced: this.syncedSubject.value,
      watching: this.watching,
      resourceVersion: this.resourceVersion,
      objects: this.store.size,
      reconnects: this.reconnects,
      relists: this.relists,
    };
    if (this.lastError !== undefined) h.lastError = this.lastError;
    return h;
  }

  // ---------------------------------------------------------------------------

  private emit(event: InformerEvent<T>): void {
    applyEvent(this.store, event);
    this.eventsSubject.next(event);
  }

  private selectors(): Record<string, string> {
    const q: Record<string, string> = {};
    if (this.opts.labelSelector) q['labelSelector'] = this.opts.labelSelector;
    if (this.opts.fieldSelector) q['fieldSelector'] = this.opts.fieldSelector;
    return q;
  }

  private async run(signal: AbortSignal): Promise<void> {
    let needList = true;
    let attempt = 0;
    let consecutiveGone = 0;
    while (!signal.aborted) {
      const started = Date.now();
      let delivered = 0;
      try {
        if (needList) {
          await this.listAll(signal);
          needList = false;
          attempt = 0;
        }
        await this.watchOnce(signal, () => delivered++);
        // The server closed the stream normally; watch on from where we are.
        if (delivered > 0 || Date.now() - started >= this.opts.healthyAfterMs) attempt = 0;
        else attempt = await this.retryAfter(attempt, signal, new Error('the watch ended at once without events'), 'watch');
        consecutiveGone = 0;
      } catch (err) {
        if (signal.aborted) break;
        if (delivered > 0 || Date.now() - started >= this.opts.healthyAfterMs) attempt = 0;
        if (isGone(err)) {
          // Our resourceVersion (or a list's continue token) is too old: list afresh.
          this.relists++;
          consecutiveGone++;
          needList = true;
          this.log.info({ resourceVersion: this.resourceVersion, reason: (err as Error).message }, 'resource version expired; listing again');
          this.resourceVersion = '';
          if (consecutiveGone > 1) attempt = await this.retryAfter(attempt, signal, err, 'list');
          continue;
        }
        consecutiveGone = 0;
        attempt = await this.retryAfter(attempt, signal, err, needList ? 'list' : 'watch');
      }
    }
    this.watching = false;
  }

  /** Waits out the backoff for the next attempt and logs the reconnect; returns the new attempt count. */
  private async retryAfter(attempt: number, signal: AbortSignal, err: unknown, phase: 'list' | 'watch'): Promise<number> {
    const next = attempt + 1;
    const delayMs = backoffDelay(next, this.opts.backoff, this.opts.random);
    this.reconnects++;
    this.lastError = (err as Error)?.message ?? String(err);
    this.log.warn({ phase, attempt: next, delayMs, err: this.lastError, server: this.transport.server }, 'watch failed; reconnecting');
    await sleep(delayMs, signal);
    return next;
  }

  private async listAll(signal: AbortSignal): Promise<void> {
    const items: T[] = [];
    let cont: string | undefined;
    let resourceVersion = '';
    const t0 = Date.now();
    do {
      const query: Record<string, string> = { ...this.selectors(), limit: String(this.opts.pageSize) };
      if (cont) query['continue'] = cont;
      const page = await this.transport.list(this.path, query, signal);
      for (const item of page.items) items.push(this.slim(item as T));
      resourceVersion = page.resourceVersion;
      cont = page.continue;
    } while (cont);
    signal.throwIfAborted();
    const events = relistEvents(this.store, items);
    for (const ev of events) this.emit(ev);
    this.resourceVersion = resourceVersion;
    const first = !this.syncedSubject.value;
    this.log[first ? 'info' : 'debug']({ objects: this.store.size, changes: events.length, resourceVersion, ms: Date.now() - t0 }, first ? 'initial list synced' : 'listed again');
    if (first) this.syncedSubject.next(true);
  }

  private async watchOnce(signal: AbortSignal, onDelivered: () => void): Promise<void> {
    const base = this.opts.watchTimeoutSeconds;
    const timeoutSeconds = Math.floor(base + base * this.opts.random());
    const query = {
      ...this.selectors(),
      resourceVersion: this.resourceVersion,
      allowWatchBookmarks: 'true',
      timeoutSeconds: String(timeoutSeconds),
    };
    try {
      await this.transport.watch(
        this.path,
        query,
        signal,
        (event) => {
          this.onWatchEvent(event);
          onDelivered();
        },
        { idleTimeoutMs: this.opts.idleTimeoutMs, onOpen: () => (this.watching = true) },
      );
    } finally {
      this.watching = false;
    }
  }

  private slim(obj: T): T {
    return this.opts.transform ? (this.opts.transform(obj) as T) : obj;
  }

  private onWatchEvent(event: WatchEvent): void {
    const obj = event.type === 'ADDED' || event.type === 'MODIFIED' || event.type === 'DELETED' ? this.slim(event.object as T) : (event.object as T);
    switch (event.type) {
      case 'ADDED':
      case 'MODIFIED': {
        const ev = upsertEvent(this.store, obj);
        if (ev) this.emit(ev);
        break;
      }
      case 'DELETED': {
        const ev = deleteEvent(this.store, obj);
        if (ev) this.emit(ev);
        break;
      }
      case 'BOOKMARK':
        break;
      case 'ERROR':
        throw watchErrorFromStatus(event.object, this.path);
      default:
        this.log.debug({ type: (event as { type?: unknown }).type }, 'unknown watch event type ignored');
        return;
    }
    const rv = obj.metadata?.resourceVersion;
    if (rv) this.resourceVersion = rv;
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
