/**
 * The identity machinery of one agent, wired: allocator (over the
 * MembraneIdentity informer), pods -> identities, and the garbage collector.
 *
 *   const connection = new KubeConnection(kc);
 *   const informers = createInformers(new HttpsTransport(kc, { connection }), { log });
 *   const ids = startIdentityService({
 *     api: new KubeIdentityApi(kc, connection),
 *     identities: informers.get('membraneidentities'),
 *     pods: informers.get('pods'),
 *     namespaces: informers.get('namespaces'),
 *     nodeName: config.nodeName, clusterName: config.clusterName, log,
 *   });
 *   informers.start();
 *   ids.pods.identityOf('default/web-0'); ids.pods.changes$.subscribe(...);
 *   ids.allocator.state$.subscribe(...)       // every cluster identity (id -> labels), for policy
 *   ids.subscription.unsubscribe();           // stops all three
 */
import { Subscription } from 'rxjs';
import type { Logger } from '../log/logger.js';
import { IdentityAllocator, type IdentitySource } from './allocator.js';
import type { IdentityApi } from './api.js';
import { checkIdentityTimings, DEFAULT_GC_GRACE_MS, DEFAULT_GC_INTERVAL_MS, IdentityGarbageCollector } from './gc.js';
import type { LabelFilter } from './labels.js';
import { PodIdentities, type NamespaceSource, type PodSource } from './pods.js';

export interface IdentityServiceOptions {
  api: IdentityApi;
  identities: IdentitySource;
  pods: PodSource;
  namespaces: NamespaceSource;
  nodeName: string;
  clusterName: string;
  log: Logger;
  filter?: LabelFilter;
  /** Default 5 min; at most a third of the GC grace period. */
  refreshIntervalMs?: number;
  /** false: this agent runs no collector (another one does). */
  gc?: { graceMs?: number; intervalMs?: number } | false;
}

export interface IdentityService {
  allocator: IdentityAllocator;
  pods: PodIdentities;
  gc: IdentityGarbageCollector | undefined;
  subscription: Subscription;
}

export function startIdentityService(o: IdentityServiceOptions): IdentityService {
  const graceMs = o.gc === false ? undefined : (o.gc?.graceMs ?? DEFAULT_GC_GRACE_MS);
  const refreshIntervalMs = o.refreshIntervalMs ?? Math.min(5 * 60_000, Math.floor((graceMs ?? DEFAULT_GC_GRACE_MS) / 3));
  if (graceMs !== undefined) checkIdentityTimings(refreshIntervalMs, graceMs);
  const allocator = new IdentityAllocator(o.api, o.identities, { nodeName: o.nodeName, log: o.log.child({ part: 'identity-allocator' }), refreshIntervalMs });
  const pods = new PodIdentities(o.pods, o.namespaces, allocator, { clusterName: o.clusterName, nodeName: o.nodeName, log: o.log.child({ part: 'pod-identities' }), ...(o.filter ? { filter: o.filter } : {}) });
  const subscription = new Subscription();
  subscription.add(allocator.start());
  subscription.add(pods.start());
  let gc: IdentityGarbageCollector | undefined;
  if (o.gc !== false) {
    gc = new IdentityGarbageCollector(o.api, allocator, { log: o.log.child({ part: 'identity-gc' }), graceMs: graceMs!, intervalMs: o.gc?.intervalMs ?? DEFAULT_GC_INTERVAL_MS });
    subscription.add(gc.start());
  }
  return { allocator, pods, gc, subscription };
}
