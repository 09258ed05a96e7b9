/**
 * A reconciler keeps one pinned BPF map equal to a desired state computed by
 * pure functions. It is the only place where that map is written.
 *
 * - On start it adopts what is in the map (a dump), waits for the first desired
 *   state (the agent emits it once its informers have synced) and writes only the
 *   difference: it never flushes and refills.
 * - Bursts of desired-state changes are coalesced (a short window), then applied
 *   as batched updates and deletes (one addon crossing per batch).
 * - A failed write is retried with capped exponential backoff; the entries that
 *   failed stay pending, nothing else is lost. Each attempt is logged.
 * - It exposes its lag (time from a desired change to the map matching it), its
 *   write and error counts, and how many entries it holds.
 */
import { BehaviorSubject, Subject, Subscription, auditTime, concatMap, from, type Observable } from 'rxjs';
import type { Logger } from '../log/logger.js';
import { chunks, diffEntries, entrySet, isEmptyDiff, type EntrySet, type MapDiff } from './diff.js';

/** The addon-facing side of one map; batch-oriented. */
export interface MapBackend<K, V> {
  /** The map's name, for logs and errors. */
  readonly name: string;
  dump(): Promise<Array<readonly [K, V]>>;
  update(entries: Array<readonly [K, V]>): Promise<void>;
  delete(keys: K[]): Promise<void>;
}

export interface ReconcilerOptions<K, V> {
  backend: MapBackend<K, V>;
  /** Stable string form of a key, for diffing. */
  keyId: (key: K) => string;
  /** Value equality. */
  equal: (a: V, b: V) => boolean;
  log: Logger;
  /** Coalescing window in ms (default 20). */
  windowMs?: number;
  /** Entries per addon call (default 8192). */
  batchSize?: number;
  /** Backoff of retries: first delay and cap, ms (defaults 100 and 10000). */
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** For tests: the clock. */
  now?: () => number;
  /** For tests: how to wait. */
  sleep?: (ms: number) => Promise<void>;
}

export interface ReconcilerStats {
  map: string;
  /** Entries the map holds, as far as this reconciler knows. */
  entries: number;
  /** Whether the map matches the latest desired state. */
  inSync: boolean;
  /** Desired-to-realized delay of the last completed pass, ms. */
  lastLagMs: number | null;
  /** Largest lag seen, ms. */
  maxLagMs: number;
  passes: number;
  upserts: number;
  deletes: number;
  errors: number;
  lastError: string | null;
}

/** What one pass wrote. */
export interface PassReport {
  map: string;
  upserts: number;
  deletes: number;
  lagMs: number;
  attempts: number;
}

export class Reconciler<K, V> {
  private readonly opts: Required<Omit<ReconcilerOptions<K, V>, 'now' | 'sleep'>> & { now: () => number; sleep: (ms: number) => Promise<void> };
  private realized: Map<string, readonly [K, V]> | null = null;
  private desired: EntrySet<K, V> | null = null;
  /** The latest desired state asks to add and change only (entries it lacks stay for now). */
  private keepExtra = false;
  /** When the oldest desired change not yet applied arrived. */
  private pendingSince: number | null = null;
  private readonly changes = new Subject<void>();
  private readonly passes = new Subject<PassReport>();
  private subscription: Subscription | null = null;
  private readonly stats$ = new BehaviorSubject<ReconcilerStats>(emptyStats(''));

  constructor(options: ReconcilerOptions<K, V>) {
    this.opts = {
      windowMs: 20,
      batchSize: 8192,
      retryBaseMs: 100,
      retryMaxMs: 10_000,
      now: () => Date.now(),
      sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
      ...options,
    };
    this.stats$.next(emptyStats(options.backend.name));
  }

  /** Completed passes, for tests and logs. */
  get reports(): Observable<PassReport> {
    return this.passes.asObservable();
  }

  stats(): ReconcilerStats {
    return this.stats$.getValue();
  }

  /** The entries the map holds as far as this reconciler knows (adopted at start, then written). */
  held(): Iterable<readonly [K, V]> {
    return this.realized?.values() ?? [];
  }

  /** Starts applying desired states; the map is adopted (dumped) first. */
  async start(): Promise<void> {
    if (this.subscription) return;
    const dumped = await this.opts.backend.dump();
    this.realized = entrySet(dumped, this.opts.keyId);
    this.patchStats({ entries: this.realized.size });
    this.opts.log.info({ map: this.opts.backend.name, entries: this.realized.size }, 'adopted the pinned map');
    // Window 0: the caller coalesces (the agent's pipeline sets each map once per pass).
    const coalesced = this.opts.windowMs > 0 ? this.changes.pipe(auditTime(this.opts.windowMs)) : this.changes.asObservable();
    this.subscription = coalesced.pipe(concatMap(() => from(this.pass()))).subscribe();
    if (this.desired) this.changes.next();
  }

  stop(): void {
    this.subscription?.unsubscribe();
    this.subscription = null;
  }

  /**
   * Sets the complete desired content of the map (computed by a pure function).
   * With `keepExtra`, entries the map holds beyond it are left for a later call
   * (make before break: add the new, remove the old after dependent maps moved).
   */
  setDesired(entries: Iterable<readonly [K, V]>, options: { keepExtra?: boolean } = {}): void {
    this.desired = entrySet(entries, this.opts.keyId);
    this.keepExtra = options.keepExtra ?? false;
    this.pendingSince ??= this.opts.now();
    this.patchStats({ inSync: false });
    this.changes.next();
  }

  /** Resolves when the map matches the latest desired state. */
  whenInSync(): Promise<void> {
    return new Promise((resolve) => {
      const sub = this.stats$.subscribe((s) => {
        if (s.inSync) {
          queueMicrotask(() => sub.unsubscribe());
          resolve();
        }
      });
    });
  }

  private async pass(): Promise<void> {
    const desired = this.desired;
    const realized = this.realized;
    if (!desired || !realized) return;
    const since = this.pendingSince ?? this.opts.now();
    this.pendingSince = null;
    const keepExtra = this.keepExtra;
    const diff = diffEntries(desired, realized, this.opts.equal);
    if (keepExtra) diff.deletes = [];
    let attempts = 0;
    if (!isEmptyDiff(diff)) {
      for (;;) {
        attempts++;
        try {
          await this.apply(diff, realized);
          break;
        } catch (err) {
          const delay = Math.min(this.opts.retryMaxMs, this.opts.retryBaseMs * 2 ** (attempts - 1));
          const s = this.stats();
          this.patchStats({ errors: s.errors + 1, lastError: (err as Error).message });
          this.opts.log.warn({ map: this.opts.backend.name, err, attempt: attempts, retryInMs: delay }, 'map write failed; retrying');
          await this.opts.sleep(delay);
          if (this.desired !== desired) {
            // A newer desired state arrived meanwhile: the next pass diffs against it.
            this.pendingSince ??= since;
            return;
          }
          // Recompute: part of the diff may have been written before the failure.
          Object.assign(diff, diffEntries(desired, realized, this.opts.equal));
          if (keepExtra) diff.deletes = [];
        }
      }
    }
    const lagMs = this.opts.now() - since;
    const s = this.stats();
    this.patchStats({
      entries: realized.size,
      inSync: this.desired === desired,
      lastLagMs: lagMs,
      maxLagMs: Math.max(s.maxLagMs, lagMs),
      passes: s.passes + 1,
      upserts: s.upserts + diff.upserts.length,
      deletes: s.deletes + diff.deletes.length,
    });
    if (!isEmptyDiff(diff)) {
      this.opts.log.debug({ map: this.opts.backend.name, upserts: diff.upserts.length, deletes: diff.deletes.length, lagMs, attempts }, 'map reconciled');
    }
    this.passes.next({ map: this.opts.backend.name, upserts: diff.upserts.length, deletes: diff.deletes.length, lagMs, attempts });
  }

  /** Writes a diff in batches, updating the realized view after each successful batch. */
  private async apply(diff: MapDiff<K, V>, realized: Map<string, readonly [K, V]>): Promise<void> {
    const { backend, keyId, batchSize, log } = this.opts;
    for (const batch of chunks(diff.upserts, batchSize)) {
      await backend.update(batch);
      for (const entry of batch) realized.set(keyId(entry[0]), entry);
      log.debug({ map: backend.name, op: 'update', entries: batch.length }, 'map write batch');
    }
    for (const batch of chunks(diff.deletes, batchSize)) {
      await backend.delete(batch);
      for (const key of batch) realized.delete(keyId(key));
      log.debug({ map: backend.name, op: 'delete', entries: batch.length }, 'map write batch');
    }
  }

  private patchStats(patch: Partial<ReconcilerStats>): void {
    this.stats$.next({ ...this.stats$.getValue(), ...patch });
  }
}

function emptyStats(map: string): ReconcilerStats {
  return { map, entries: 0, inSync: false, lastLagMs: null, maxLagMs: 0, passes: 0, upserts: 0, deletes: 0, errors: 0, lastError: null };
}
