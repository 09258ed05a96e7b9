/**
 * Identity garbage collection: delete MembraneIdentity objects nobody uses.
 *
 * An identity is garbage when this node holds no reference to it AND its
 * status.lastUsed (or, never stamped, its creationTimestamp) is older than the
 * grace period. Every agent that uses an identity re-stamps lastUsed well within
 * the grace period (allocator refreshIntervalMs <= grace / 3), so "old stamp"
 * means "no agent has used it for a whole grace period". The delete carries the
 * resourceVersion we judged as precondition: if any agent stamped it meanwhile
 * the delete fails with 409 and the identity stays.
 *
 * Malformed objects are never deleted (we do not delete what we do not understand).
 * Running the collector on several agents at once is safe (preconditions; 404s are fine).
 */
import { Subscription } from 'rxjs';
import type { Logger } from '../log/logger.js';
import type { IdentityAllocator } from './allocator.js';
import { describeApiError, type IdentityApi } from './api.js';
import type { IdentityRecord } from './object.js';

export const DEFAULT_GC_GRACE_MS = 15 * 60_000;
export const DEFAULT_GC_INTERVAL_MS = 60_000;

/**
 * Agents re-stamp identities they use every refreshIntervalMs; with at least
 * three refreshes per grace period, one failed write or a little clock skew
 * cannot make a used identity look unused.
 */
export function checkIdentityTimings(refreshIntervalMs: number, graceMs: number): void {
  if (refreshIntervalMs * 3 > graceMs) {
    throw new RangeError(`identity refresh interval ${refreshIntervalMs} ms must be at most a third of the GC grace period ${graceMs} ms`);
  }
}

export interface GcCandidate {
  id: number;
  resourceVersion: string;
  lastUsed: number | undefined;
}

/** Pure: which records are garbage at `now`. A record without any timestamp is kept (cannot judge its age). */
export function gcCandidates(records: readonly IdentityRecord[], inUseHere: (id: number) => boolean, now: number, graceMs: number): GcCandidate[] {
  const out: GcCandidate[] = [];
  for (const r of records) {
    const id = r.identity.id;
    if (inUseHere(id)) continue;
    if (r.lastUsed === undefined || now - r.lastUsed < graceMs) continue;
    out.push({ id, resourceVersion: r.resourceVersion, lastUsed: r.lastUsed });
  }
  return out.sort((a, b) => a.id - b.id);
}

export interface IdentityGcOptions {
  log: Logger;
  /** How long an identity must go unused before it is deleted. */
  graceMs?: number;
  /** How often to look. */
  intervalMs?: number;
  now?: () => number;
}

export interface GcRunResult {
  deleted: number[];
  /** Changed since judged (precondition failed): kept. */
  conflicts: number[];
  /** Already gone. */
  gone: number[];
  errors: { id: number; error: string }[];
}

export class IdentityGarbageCollector {
  readonly graceMs: number;
  readonly intervalMs: number;
  private readonly log: Logger;
  private readonly now: () => number;
  private running: Promise<GcRunResult> | undefined;

  constructor(
    private readonly api: IdentityApi,
    private readonly allocator: Pick<IdentityAllocator, 'records' | 'localRefs' | 'isSynced' | 'refreshIntervalMs'>,
    options: IdentityGcOptions,
  ) {
    this.graceMs = options.graceMs ?? DEFAULT_GC_GRACE_MS;
    this.intervalMs = options.intervalMs ?? DEFAULT_GC_INTERVAL_MS;
    if (!(this.graceMs > 0)) throw new RangeError(`identity GC grace ${this.graceMs} ms must be > 0`);
    if (!(this.intervalMs > 0)) throw new RangeError(`identity GC interval ${this.intervalMs} ms must be > 0`);
    checkIdentityTimings(allocator.refreshIntervalMs, this.graceMs);
    this.log = options.log;
    this.now = options.now ?? Date.now;
  }

  /** Runs every intervalMs until unsubscribed. */
  start(): Subscription {
    const timer = setInterval(() => {
      this.runOnce().catch((err: unknown) => this.log.warn({ err: describeApiError(err) }, 'identity garbage collection failed; will retry'));
    }, this.intervalMs);
    timer.unref();
    return new Subscription(() => clearInterval(timer));
  }

  /** One pass (passes never overlap: a call during a pass returns that pass). */
  runOnce(): Promise<GcRunResult> {
    this.running ??= this.pass().finally(() => (this.running = undefined));
    return this.running;
  }

  private async pass(): Promise<GcRunResult> {
    const result: GcRunResult = { deleted: [], conflicts: [], gone: [], errors: [] };
    if (!this.allocator.isSynced()) return result;
    const now = this.now();
    const garbage = gcCandidates(this.allocator.records(), (id) => this.allocator.localRefs(id) > 0, now, this.graceMs);
    for (const c of garbage) {
      // An endpoint here may have taken it since we judged.
      if (this.allocator.localRefs(c.id) > 0) continue;
      try {
        const outcome = await this.api.deleteIfUnchanged(String(c.id), c.resourceVersion);
        if (outcome === 'deleted') {
          result.deleted.push(c.id);
          this.log.info({ identity: c.id, unusedForMs: c.lastUsed === undefined ? undefined : now - c.lastUsed }, 'unused identity deleted');
        } else if (outcome === 'conflict') {
          result.conflicts.push(c.id);
          this.log.debug({ identity: c.id }, 'identity changed since judged unused; kept');
        } else result.gone.push(c.id);
      } catch (err) {
        result.errors.push({ id: c.id, error: describeApiError(err) });
        this.log.warn({ identity: c.id, err: describeApiError(err) }, 'could not delete unused identity');
      }
    }
    return result;
  }
}
