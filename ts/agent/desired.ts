/**
 * The agent's whole desired datapath state, computed by one pure function from
 * what the informers, the identity allocator and the endpoint store hold.
 * No I/O: everything comes in as arguments; the pipeline applies the result.
 *
 * Rules beyond ts/ipcache/desired.ts and the policy compiler:
 * - A pod whose identity is still being resolved (pending) keeps the identity
 *   its address had (`lastKnown`), so a restart or a relabel never turns a
 *   known peer into `world` for a moment.
 * - A local endpoint whose identity is not known yet enforces both directions
 *   with no allow: it drops everything until its identity and policy exist.
 * - Local endpoints are in the ipcache from their own record (the CNI ADD),
 *   before the Pod's status carries the address.
 */
import type { Endpoint } from '../endpoint/endpoint.js';
import { EP_F_EGRESS_ENFORCED, EP_F_INGRESS_ENFORCED } from '../datapath/lxc.js';
import type { EndpointInfo, IpcacheEntry, IpcacheKey, PolicyEntry, PolicyKey } from '../datapath/codecs.js';
import { desiredIpcache, type IpcacheEntry as IpcacheRow, type NodeAddresses } from '../ipcache/desired.js';

export interface PodAddressInput {
  /** namespace/name */
  key: string;
  ip: string;
  /** undefined while pending or invalid. */
  identity: number | undefined;
  pending: boolean;
}

export interface LocalEndpointInput {
  endpoint: Endpoint;
  /** undefined until resolved. */
  identity: number | undefined;
}

export interface EndpointEnforcement {
  epId: number;
  ingress: boolean;
  egress: boolean;
}

/** What the policy step decided (see ts/policy): entries and per-endpoint enforcement. */
export interface PolicyOutcome {
  entries: Array<readonly [PolicyKey, PolicyEntry]>;
  enforcement: ReadonlyMap<number, EndpointEnforcement>;
  /** CIDRs policies name, with their CIDR identities (they go into the ipcache). */
  cidrIdentities: ReadonlyMap<string, number>;
}

export interface DesiredInputs {
  localNode: string;
  pods: Iterable<PodAddressInput>;
  lastKnown: ReadonlyMap<string, number>;
  nodes: Iterable<NodeAddresses>;
  apiserverIps: Iterable<string>;
  endpoints: readonly LocalEndpointInput[];
  policy: PolicyOutcome;
}

export interface DesiredState {
  ipcache: Array<readonly [IpcacheKey, IpcacheEntry]>;
  /** prefix -> where the entry comes from (for `bpf ipcache list`). */
  ipcacheSources: ReadonlyMap<string, IpcacheRow['source']>;
  policy: Array<readonly [PolicyKey, PolicyEntry]>;
  endpoints: EndpointInfo[];
  enforcement: ReadonlyMap<number, EndpointEnforcement>;
}

export function endpointFlags(e: EndpointEnforcement | undefined, resolved: boolean): number {
  if (!resolved) return EP_F_INGRESS_ENFORCED | EP_F_EGRESS_ENFORCED;
  return (e?.ingress ? EP_F_INGRESS_ENFORCED : 0) | (e?.egress ? EP_F_EGRESS_ENFORCED : 0);
}

export function computeDesired(inputs: DesiredInputs): DesiredState {
  const pods: Array<{ ip: string; identity: number }> = [];
  const localIps = new Set<string>();
  for (const { endpoint, identity } of inputs.endpoints) {
    localIps.add(endpoint.ipv4);
    const id = identity ?? inputs.lastKnown.get(endpoint.ipv4);
    if (id !== undefined && id > 0) pods.push({ ip: endpoint.ipv4, identity: id });
  }
  for (const p of inputs.pods) {
    if (localIps.has(p.ip)) continue; // the endpoint record speaks for it
    const id = p.identity ?? (p.pending ? inputs.lastKnown.get(p.ip) : undefined);
    if (id !== undefined && id > 0) pods.push({ ip: p.ip, identity: id });
  }
  const rows = desiredIpcache({
    pods,
    nodes: inputs.nodes,
    localNode: inputs.localNode,
    apiserverIps: inputs.apiserverIps,
    cidrs: [...inputs.policy.cidrIdentities].map(([cidr, identity]) => ({ cidr, identity })),
  });
  const ipcache = rows.map((r) => {
    const [addr, bits] = r.prefix.split('/');
    return [{ prefixLen: Number(bits), addr: addr! }, { identity: r.identity, tunnelEndpoint: '0.0.0.0', flags: 0 }] as const;
  });
  const ipcacheSources = new Map(rows.map((r) => [r.prefix, r.source]));
  const epIds = new Set(inputs.endpoints.map((e) => e.endpoint.id));
  const enforcement = new Map<number, EndpointEnforcement>();
  const endpoints: EndpointInfo[] = inputs.endpoints.map(({ endpoint, identity }) => {
    const resolved = identity !== undefined && identity > 0;
    const e = inputs.policy.enforcement.get(endpoint.id);
    enforcement.set(endpoint.id, resolved ? { epId: endpoint.id, ingress: e?.ingress ?? false, egress: e?.egress ?? false } : { epId: endpoint.id, ingress: true, egress: true });
    return {
      ifindex: endpoint.ifindex,
      identity: resolved ? identity : 0,
      ipv4: endpoint.ipv4,
      epId: endpoint.id,
      flags: endpointFlags(e, resolved),
      mac: endpoint.mac,
      nodeMac: endpoint.nodeMac,
    };
  });
  // Entries of endpoints that are not (or no longer) local are never written.
  const policy = inputs.policy.entries.filter(([k]) => epIds.has(k.epId));
  return { ipcache, ipcacheSources, policy, endpoints, enforcement };
}
