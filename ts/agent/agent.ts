/**
 * The agent: the composition root that turns Kubernetes state into map writes.
 *
 *   config -> KubeConfig -> informers (pods, namespaces, nodes, policies, identities)
 *          -> identity service (cluster-wide numbers, pods -> identities)
 *          -> desired state (pure: ./desired.ts, ts/ipcache, ts/policy)
 *          -> pipeline (ipcache, then policy, then endpoints) -> pinned maps
 *   CNI plugin -> API -> IPAM + endpoint manager -> attach (after its policy is in)
 *
 * Start order keeps traffic untouched across restarts: the datapath is opened
 * (adopted when this build is pinned), the API answers at once (not ready until
 * the first sync), the informers sync, pod identities settle, every map is
 * adopted by its reconciler, and the first pass writes only the difference.
 * Nothing is flushed. While the apiserver is unreachable the maps keep their
 * last state; the informers resync on reconnect and the pipeline applies the
 * difference.
 */
import { readFileSync } from 'node:fs';
import { KubeConfig, type V1Node, type V1Pod } from '@kubernetes/client-node';
import { filter, firstValueFrom, merge, of, timeout, type Subscription } from 'rxjs';
import type { MembraneConfig } from '../config/config.js';
import { openDatapath, type DatapathMapInfo, type EndpointSpec, type OpenDatapathResult } from '../datapath/lxc.js';
import { EndpointManager } from '../endpoint/manager.js';
import { EndpointStore } from '../endpoint/store.js';
import { KubeIdentityApi } from '../identity/api.js';
import { makeLabelFilter, parseLabelList, type SecurityLabels } from '../identity/labels.js';
import { startIdentityService, type IdentityService } from '../identity/service.js';
import { Ipam } from '../ipam/ipam.js';
import type { NodeAddresses } from '../ipcache/desired.js';
import { createInformers, type InformerSet } from '../k8s/informers.js';
import { KubeConnection } from '../k8s/connection.js';
import { HttpsTransport } from '../k8s/transport.js';
import type { Logger } from '../log/logger.js';
import { datapathMaps } from './backends.js';
import { computeDesired, type DesiredState, type LocalEndpointInput, type PodAddressInput } from './desired.js';
import { Pipeline } from './pipeline.js';
import { PolicyStep } from './policy-step.js';
import { AGENT_TRANSFORMS } from './slim.js';

export const AGENT_RESOURCES = ['pods', 'namespaces', 'nodes', 'networkpolicies', 'ciliumnetworkpolicies', 'ciliumclusterwidenetworkpolicies', 'membraneidentities'] as const;
export type AgentResource = (typeof AGENT_RESOURCES)[number];

export interface AgentOptions {
  config: MembraneConfig;
  log: Logger;
  /** Default: config.kubeconfig, or the in-cluster service account. */
  kubeConfig?: KubeConfig;
  /** How long a CNI ADD waits for its pod's identity before attaching in default deny (ms, default 10000). */
  identityWaitMs?: number;
  /** How long the first sync waits for pod identities to settle (ms, default 10000). */
  settleTimeoutMs?: number;
  /** Coalescing window of the pipeline (ms, default 2). */
  windowMs?: number;
}

export interface StartupReport {
  datapath: OpenDatapathResult['outcome'];
  endpointsRestored: number;
  endpointsRemoved: number;
  /** Map writes of the first pass (the difference found at start). */
  firstPassWrites: number;
  readyMs: number;
}

export const agentVersion: string = (() => {
  try {
    return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
})();

export function loadKubeConfig(config: MembraneConfig): KubeConfig {
  const kc = new KubeConfig();
  if (config.kubeconfig) kc.loadFromFile(config.kubeconfig);
  else kc.loadFromCluster();
  return kc;
}

/** The addresses of a Node that get the host / remote-node identity. */
export function nodeAddresses(node: V1Node): NodeAddresses {
  const ips = (node.status?.addresses ?? []).filter((a) => a.type === 'InternalIP' || a.type === 'ExternalIP').map((a) => a.address);
  return { name: node.metadata?.name ?? '', ips: ips.filter((ip) => /^\d+\.\d+\.\d+\.\d+$/.test(ip)) };
}

/** The apiserver's address when the kubeconfig names it by IP. */
export function apiserverAddresses(kc: KubeConfig): string[] {
  const server = kc.getCurrentCluster()?.server;
  if (!server) return [];
  try {
    const host = new URL(server).hostname;
    return /^\d+\.\d+\.\d+\.\d+$/.test(host) ? [host] : [];
  } catch {
    return [];
  }
}

const podKey = (ns: string, name: string) => `${ns}/${name}`;

export class Agent {
  readonly startedAt = Date.now();
  readonly kc: KubeConfig;
  readonly informers: InformerSet<AgentResource>;
  readonly identities: IdentityService;
  readonly ipam: Ipam;
  readonly endpoints: EndpointManager;
  readonly policy: PolicyStep;
  pipeline: Pipeline | undefined;
  datapath: { outcome: OpenDatapathResult['outcome']; buildId: string; maps: DatapathMapInfo[] } | undefined;
  ready = false;
  startup: StartupReport | undefined;
  lastDesired: DesiredState | undefined;
  readonly nodeName: string;
  readonly pinDir: string;
  readonly bpffsRoot: string;
  private lastKnown = new Map<string, number>();
  private readonly subs: Subscription[] = [];
  private readonly log: Logger;

  constructor(private readonly opts: AgentOptions) {
    const { config } = opts;
    this.log = opts.log;
    this.nodeName = config.nodeName;
    this.pinDir = config.pinDir;
    this.bpffsRoot = config.bpffsRoot;
    this.kc = opts.kubeConfig ?? loadKubeConfig(config);
    const connection = new KubeConnection(this.kc);
    this.informers = createInformers(new HttpsTransport(this.kc, { connection }), {
      log: this.log.child({ part: 'informers' }),
      resources: AGENT_RESOURCES,
      options: Object.fromEntries(AGENT_RESOURCES.map((r) => [r, { transform: AGENT_TRANSFORMS[r] }])),
    });
    const filter = makeLabelFilter({
      excludePrefixes: parseLabelList(config.identity.excludeLabelPrefixes),
      excludeKeys: parseLabelList(config.identity.excludeLabelKeys),
      includeKeys: parseLabelList(config.identity.includeLabelKeys),
    });
    this.identities = startIdentityService({
      api: new KubeIdentityApi(this.kc, connection),
      identities: this.informers.get('membraneidentities'),
      pods: this.informers.get('pods'),
      namespaces: this.informers.get('namespaces'),
      nodeName: config.nodeName,
      clusterName: config.clusterName,
      log: this.log,
      filter,
      refreshIntervalMs: config.identity.refreshSeconds * 1000,
      gc: { graceMs: config.identity.gcGraceSeconds * 1000, intervalMs: config.identity.gcIntervalSeconds * 1000 },
    });
    this.ipam = new Ipam(config.stateDir, this.log.child({ part: 'ipam' }));
    this.policy = new PolicyStep(this.log.child({ part: 'policy' }));
    const dp = { pinDir: config.pinDir, bpffsRoot: config.bpffsRoot };
    this.endpoints = new EndpointManager({
      store: new EndpointStore(config.stateDir, this.log),
      ipam: this.ipam,
      datapath: dp,
      log: this.log.child({ part: 'endpoints' }),
      resolveIdentity: (pod) => this.resolveIdentity(pod, opts.identityWaitMs ?? 10_000),
      sync: () => this.sync(),
      specOf: (id) => this.specOf(id),
    });
  }

  /** Brings the agent to ready; see the file header for the order. */
  async start(): Promise<StartupReport> {
    const t0 = performance.now();
    const { config } = this.opts;
    const opened = await openDatapath({ pinDir: config.pinDir, bpffsRoot: config.bpffsRoot });
    this.datapath = { outcome: opened.outcome, buildId: opened.buildId, maps: opened.maps };
    this.log.info({ pinDir: config.pinDir, outcome: opened.outcome, buildId: opened.buildId }, 'datapath opened');
    const restored = await this.endpoints.restore();
    this.subs.push(this.informers.start());
    await this.informers.whenSynced();
    this.log.info({ resources: AGENT_RESOURCES.length, pods: this.informers.get('pods').size }, 'informers synced');
    this.applyNode();
    await this.settleIdentities(this.opts.settleTimeoutMs ?? 10_000);

    this.pipeline = new Pipeline({
      maps: datapathMaps(config.pinDir, config.bpffsRoot),
      compute: () => this.computeDesired(),
      log: this.log.child({ part: 'reconcile' }),
      windowMs: this.opts.windowMs ?? 2,
      onDesired: (s) => (this.lastDesired = s),
    });
    await this.pipeline.start(); // adopts every map (one dump each)
    // What the kernel has now is the last known truth for pods still resolving.
    for (const [k, v] of this.pipeline.ipcache.held()) if (k.prefixLen === 32) this.lastKnown.set(String(k.addr), v.identity);
    for (const ep of this.endpoints.list()) this.endpoints.setIdentity(ep.id, this.currentIdentity(ep.pod) ?? (ep.identity || undefined));
    await this.pipeline.sync();
    const reattached = await this.endpoints.reattachMissing(restored.attached);
    const firstPassWrites = this.pipeline.stats().reduce((n, s) => n + s.upserts + s.deletes, 0);
    this.subscribeToChanges();
    this.ready = true;
    this.startup = {
      datapath: opened.outcome,
      endpointsRestored: restored.restored,
      endpointsRemoved: restored.removed,
      firstPassWrites,
      readyMs: Math.round(performance.now() - t0),
    };
    this.log.info({ ...this.startup, reattached, endpoints: this.endpoints.list().length }, 'agent ready');
    return this.startup;
  }

  async stop(): Promise<void> {
    this.ready = false;
    for (const s of this.subs.splice(0)) s.unsubscribe();
    this.pipeline?.stop();
    this.identities.subscription.unsubscribe();
    await this.informers.stop();
    this.log.info({}, 'agent stopped (maps, programs and links stay pinned)');
  }

  /** Applies the desired state now; resolves when the maps hold it. */
  sync(): Promise<void> {
    if (!this.pipeline) return Promise.resolve(); // before start: the first pass covers it
    return this.pipeline.sync();
  }

  private subscribeToChanges(): void {
    const i = this.informers;
    const structural = merge(i.get('pods').events$, i.get('namespaces').events$, i.get('networkpolicies').events$, i.get('ciliumnetworkpolicies').events$, i.get('ciliumclusterwidenetworkpolicies').events$, this.identities.allocator.events$);
    this.subs.push(structural.subscribe(() => this.pipeline?.trigger()));
    this.subs.push(
      i.get('nodes').events$.subscribe(() => {
        this.applyNode();
        this.pipeline?.trigger();
      }),
    );
    this.subs.push(
      this.identities.pods.changes$.subscribe((c) => {
        for (const ep of this.endpoints.list()) {
          if (podKey(ep.pod.namespace, ep.pod.name) === c.pod && c.identity !== undefined) this.endpoints.setIdentity(ep.id, c.identity);
        }
        this.pipeline?.trigger();
      }),
    );
  }

  private applyNode(): void {
    const node = this.informers.get('nodes').get(this.opts.config.nodeName);
    const cidr = node?.spec?.podCIDR;
    if (!node) {
      this.log.warn({ node: this.opts.config.nodeName }, 'this node has no Node object; pods cannot get addresses until it exists (check nodeName / MEMBRANE_NODE_NAME)');
      return;
    }
    if (!cidr) {
      this.log.warn({ node: this.opts.config.nodeName }, 'the Node has no spec.podCIDR yet; pods cannot get addresses until it has one');
      return;
    }
    try {
      this.ipam.setPodCidr(cidr);
    } catch (err) {
      this.log.error({ node: this.opts.config.nodeName, podCIDR: cidr, err }, 'the Node podCIDR cannot be used for pods');
    }
  }

  /** Waits until no pod with an address is still being resolved (bounded). */
  private async settleIdentities(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const pending = this.informers.get('pods').list().filter((p) => p.status?.podIP && this.identities.pods.get(podKey(p.metadata?.namespace ?? '', p.metadata?.name ?? ''))?.status === 'pending').length;
      if (pending === 0) return;
      if (Date.now() > deadline) {
        this.log.warn({ pending }, 'pod identities still pending after the settle timeout; their addresses keep the identity the datapath has');
        return;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  private currentIdentity(pod: { namespace: string; name: string }): number | undefined {
    return this.identities.pods.identityOf(podKey(pod.namespace, pod.name));
  }

  /** The pod's identity once it resolves (or its labels prove invalid), waiting at most `waitMs`. */
  private async resolveIdentity(pod: string, waitMs: number): Promise<number | undefined> {
    const settled = () => this.identities.pods.identityOf(pod) !== undefined || this.identities.pods.get(pod)?.status === 'invalid';
    if (!settled()) {
      const changes = merge(this.identities.pods.changes$, this.informers.get('pods').events$);
      await firstValueFrom(changes.pipe(filter(settled), timeout({ first: waitMs, with: () => of(undefined) })), { defaultValue: undefined });
    }
    const id = this.identities.pods.identityOf(pod);
    if (id === undefined) this.log.warn({ pod, status: this.identities.pods.get(pod)?.status ?? 'unknown pod' }, 'no identity for the pod yet; its endpoint starts in default deny');
    return id;
  }

  private specOf(id: number): EndpointSpec | undefined {
    const e = this.lastDesired?.endpoints.find((x) => x.epId === id);
    if (!e) return undefined;
    return { ifindex: e.ifindex, identity: e.identity, ipv4: String(e.ipv4), epId: e.epId, flags: e.flags, mac: e.mac ?? '', nodeMac: e.nodeMac ?? '' };
  }

  /** The pure computation, fed from the informers' stores. */
  computeDesired(): DesiredState {
    const pods: PodAddressInput[] = [];
    for (const pod of this.informers.get('pods').list() as V1Pod[]) {
      const ip = pod.status?.podIP;
      if (!ip || pod.spec?.hostNetwork) continue;
      const key = podKey(pod.metadata?.namespace ?? '', pod.metadata?.name ?? '');
      const id = this.identities.pods.get(key);
      pods.push({ key, ip, identity: id?.identity, pending: id === undefined || id.status === 'pending' });
    }
    const endpoints: LocalEndpointInput[] = this.endpoints.list().map((ep) => ({ endpoint: ep, identity: ep.identity > 0 ? ep.identity : undefined }));
    const identities = new Map<number, SecurityLabels>();
    for (const id of this.identities.allocator.list()) identities.set(id.id, id.labels);
    const policyEndpoints = endpoints
      .filter((e) => e.identity !== undefined)
      .map((e) => ({ id: e.endpoint.id, identity: e.identity!, labels: identities.get(e.identity!) ?? this.identities.pods.get(podKey(e.endpoint.pod.namespace, e.endpoint.pod.name))?.labels ?? {} }));
    const i = this.informers;
    const policy = this.policy.compute(
      [
        ...i.get('networkpolicies').list().map((o) => ['NetworkPolicy', o] as const),
        ...i.get('ciliumnetworkpolicies').list().map((o) => ['CiliumNetworkPolicy', o] as const),
        ...i.get('ciliumclusterwidenetworkpolicies').list().map((o) => ['CiliumClusterwideNetworkPolicy', o] as const),
      ],
      policyEndpoints,
      identities,
    );
    const state = computeDesired({
      localNode: this.opts.config.nodeName,
      pods,
      lastKnown: this.lastKnown,
      nodes: i.get('nodes').list().map(nodeAddresses),
      apiserverIps: apiserverAddresses(this.kc),
      endpoints,
      policy,
    });
    // Only addresses the ipcache holds now are remembered (a deleted pod's address is forgotten).
    this.lastKnown = new Map(state.ipcache.filter(([k]) => k.prefixLen === 32).map(([k, v]) => [String(k.addr), v.identity]));
    return state;
  }
}

export async function startAgent(opts: AgentOptions): Promise<Agent> {
  const agent = new Agent(opts);
  await agent.start();
  return agent;
}
