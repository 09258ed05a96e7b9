/**
 * The ordered application of desired state to the maps. Each pass computes the
 * whole desired state (pure functions, see desired.ts) and applies it map by map
 * in an order that never opens a hole (make before break):
 *
 *   1. policy, additions and changes - entries for an identity exist before any
 *      address maps to it, and before an endpoint's flags enforce them;
 *   2. ipcache                       - peers move to their (new) identities;
 *   3. endpoints                     - identity and enforcement flags of the local endpoints;
 *   4. policy, removals              - entries of identities no address uses any more.
 *
 * So a relabelled peer is allowed under its new identity before its address
 * carries it, and an endpoint never enforces a policy whose entries are missing.
 * Triggers are coalesced (auditTime), passes never overlap, and `sync()` resolves
 * after a pass that started after the call has completed, so the CNI ADD path
 * can wait until a new endpoint's policy is in the kernel before attaching it.
 */
import { auditTime, concatMap, from, Subject, type Subscription } from 'rxjs';
import type { Logger } from '../log/logger.js';
import { Reconciler, type ReconcilerStats } from '../reconcile/reconciler.js';
import type { DatapathMaps, MapSpec } from './backends.js';
import type { DesiredState } from './desired.js';

export interface PipelineOptions {
  maps: DatapathMaps;
  compute: () => DesiredState;
  log: Logger;
  /** Coalescing window of triggers, ms (default 2). */
  windowMs?: number;
  /** Called with every computed desired state (for views and problems). */
  onDesired?: (state: DesiredState) => void;
}

export interface PassTiming {
  computeMs: number;
  applyMs: number;
}

export class Pipeline {
  readonly ipcache: Reconciler<DesiredKey<'ipcache'>, DesiredValue<'ipcache'>>;
  readonly policy: Reconciler<DesiredKey<'policy'>, DesiredValue<'policy'>>;
  readonly endpointsByIfindex: Reconciler<number, DesiredValue<'endpointsByIfindex'>>;
  readonly endpointsByIp: Reconciler<string, DesiredValue<'endpointsByIp'>>;
  private readonly triggers = new Subject<void>();
  private subscription: Subscription | undefined;
  private requested = 0;
  private completed = 0;
  private readonly waiters: Array<{ gen: number; resolve: () => void }> = [];
  private lastTiming: PassTiming = { computeMs: 0, applyMs: 0 };
  passes = 0;

  constructor(private readonly opts: PipelineOptions) {
    const mk = <K, V>(spec: MapSpec<K, V>) => new Reconciler<K, V>({ backend: spec.backend, keyId: spec.keyId, equal: spec.equal, log: opts.log, windowMs: 0 });
    this.ipcache = mk(opts.maps.ipcache);
    this.policy = mk(opts.maps.policy);
    this.endpointsByIfindex = mk(opts.maps.endpointsByIfindex);
    this.endpointsByIp = mk(opts.maps.endpointsByIp);
  }

  /** Adopts every map (dump); the first pass runs on the first trigger. */
  async start(): Promise<void> {
    await Promise.all(this.reconcilers().map((r) => r.start()));
    this.subscription = this.triggers
      .pipe(
        auditTime(this.opts.windowMs ?? 2),
        concatMap(() => from(this.pass())),
      )
      .subscribe();
  }

  stop(): void {
    this.subscription?.unsubscribe();
    for (const r of this.reconcilers()) r.stop();
  }

  /** Something the desired state depends on changed. */
  trigger(): void {
    this.requested++;
    this.triggers.next();
  }

  /** Resolves once a pass that started after this call has been applied. */
  sync(): Promise<void> {
    this.trigger();
    const gen = this.requested;
    return new Promise((resolve) => this.waiters.push({ gen, resolve }));
  }

  stats(): ReconcilerStats[] {
    return this.reconcilers().map((r) => r.stats());
  }

  timing(): PassTiming {
    return this.lastTiming;
  }

  private reconcilers() {
    return [this.ipcache, this.policy, this.endpointsByIfindex, this.endpointsByIp] as const;
  }

  private async pass(): Promise<void> {
    const gen = this.requested;
    const t0 = performance.now();
    let state: DesiredState;
    try {
      state = this.opts.compute();
    } catch (err) {
      // A bug in a pure function must not stop the agent: keep the maps as they are.
      this.opts.log.error({ err }, 'computing the desired state failed; the maps keep their current content');
      this.release(gen);
      return;
    }
    const t1 = performance.now();
    this.opts.onDesired?.(state);
    const { maps } = this.opts;
    const policy = state.policy.map(([k, v]) => [k, maps.policy.normalise(v)] as const);
    this.policy.setDesired(policy, { keepExtra: true });
    await this.policy.whenInSync();
    this.ipcache.setDesired(state.ipcache.map(([k, v]) => [k, maps.ipcache.normalise(v)] as const));
    await this.ipcache.whenInSync();
    const eps = state.endpoints.map((e) => maps.endpointsByIfindex.normalise(e));
    this.endpointsByIfindex.setDesired(eps.map((e) => [e.ifindex, e] as const));
    this.endpointsByIp.setDesired(eps.map((e) => [String(e.ipv4), e] as const));
    await Promise.all([this.endpointsByIfindex.whenInSync(), this.endpointsByIp.whenInSync()]);
    this.policy.setDesired(policy);
    await this.policy.whenInSync();
    this.lastTiming = { computeMs: t1 - t0, applyMs: performance.now() - t1 };
    this.passes++;
    this.release(gen);
  }

  private release(gen: number): void {
    this.completed = Math.max(this.completed, gen);
    for (let i = this.waiters.length - 1; i >= 0; i--) {
      const w = this.waiters[i]!;
      if (w.gen <= this.completed) {
        this.waiters.splice(i, 1);
        w.resolve();
      }
    }
  }
}

type DesiredKey<N extends 'ipcache' | 'policy'> = DesiredState[N][number][0];
type DesiredValue<N extends keyof DatapathMaps> = N extends 'ipcache' | 'policy' ? DesiredState[N][number][1] : DesiredState['endpoints'][number];
