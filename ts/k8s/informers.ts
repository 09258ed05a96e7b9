/**
 * The agent's informers, built from the resource table:
 *
 *   const informers = createInformers(new HttpsTransport(kc), { log });
 *   const sub = informers.start();            // sub.unsubscribe() stops every watch
 *   await informers.whenSynced();             // every initial list is in
 *   informers.get('pods').events$.subscribe(...)
 *
 * Pass `resources` to watch a subset, `options` for per-resource settings
 * (selectors, namespace), e.g. { pods: { fieldSelector: 'spec.nodeName=node-1' } }.
 */
import { combineLatest, distinctUntilChanged, map, Subscription, type Observable } from 'rxjs';
import type { Logger } from '../log/logger.js';
import { Informer, type InformerHealth, type InformerOptions } from './informer.js';
import { RESOURCE_KINDS, RESOURCE_NAMES, type ResourceName, type ResourceTypes } from './resources.js';
import type { KubeTransport } from './transport.js';

export interface InformerSetOptions<N extends ResourceName> {
  log: Logger;
  resources?: readonly N[];
  /** Settings for every informer (log excluded). */
  defaults?: Omit<InformerOptions, 'log'>;
  /** Per-resource settings, over the defaults. */
  options?: { [K in N]?: Omit<InformerOptions, 'log'> };
}

export type InformerMap<N extends ResourceName> = { readonly [K in N]: Informer<ResourceTypes[K]> };

export class InformerSet<N extends ResourceName> {
  readonly informers: InformerMap<N>;
  /** true once every informer of the set has synced. */
  readonly synced$: Observable<boolean>;

  constructor(transport: KubeTransport, options: InformerSetOptions<N>) {
    const names = (options.resources ?? (RESOURCE_NAMES as N[])) as readonly N[];
    const informers = {} as Record<N, Informer<ResourceTypes[N]>>;
    for (const name of names) {
      const kind = RESOURCE_KINDS[name];
      if (!kind) throw new Error(`unknown resource ${String(name)}; known: ${RESOURCE_NAMES.join(', ')}`);
      informers[name] = new Informer<ResourceTypes[N]>(transport, kind, { ...options.defaults, ...options.options?.[name], log: options.log });
    }
    this.informers = informers as unknown as InformerMap<N>;
    const all = names.map((n) => informers[n].synced$);
    this.synced$ = combineLatest(all).pipe(
      map((xs) => xs.every(Boolean)),
      distinctUntilChanged(),
    );
  }

  get<K extends N>(name: K): Informer<ResourceTypes[K]> {
    return this.informers[name];
  }

  list(): Informer<ResourceTypes[N]>[] {
    return Object.values(this.informers) as Informer<ResourceTypes[N]>[];
  }

  start(): Subscription {
    const sub = new Subscription();
    for (const inf of this.list()) sub.add(inf.start());
    return sub;
  }

  async stop(): Promise<void> {
    await Promise.all(this.list().map((i) => i.stop()));
  }

  async whenSynced(signal?: AbortSignal): Promise<void> {
    await Promise.all(this.list().map((i) => i.whenSynced(signal)));
  }

  health(): InformerHealth[] {
    return this.list().map((i) => i.health());
  }
}

export function createInformers<N extends ResourceName = ResourceName>(transport: KubeTransport, options: InformerSetOptions<N>): InformerSet<N> {
  return new InformerSet(transport, options);
}
