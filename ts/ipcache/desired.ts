/**
 * The desired ipcache: which identity every known address of the cluster has.
 * Pure: from pods, nodes and the apiserver's addresses to prefix -> identity.
 * Anything not listed is the world (identity 2) in the datapath.
 */
import { ReservedId } from '../identity/reserved.js';

export interface IpcacheEntry {
  /** "10.244.0.5/32" */
  prefix: string;
  identity: number;
  /** Where the entry comes from, for `bpf ipcache list` and debugging. */
  source: 'pod' | 'node' | 'kube-apiserver' | 'cidr';
}

export interface PodAddress {
  ip: string;
  identity: number;
}

export interface NodeAddresses {
  name: string;
  ips: string[];
}

export interface IpcacheInputs {
  /** Pods with an IP and a resolved identity (identity 0 = not yet known: left out). */
  pods: Iterable<PodAddress>;
  nodes: Iterable<NodeAddresses>;
  /** This agent's node name: its addresses are `host`, the others `remote-node`. */
  localNode: string;
  /** Addresses the apiserver answers on. */
  apiserverIps: Iterable<string>;
  /** CIDRs that policies name, each with its CIDR identity. */
  cidrs?: Iterable<{ cidr: string; identity: number }>;
}

/**
 * Precedence when two sources claim one address: host > kube-apiserver > node >
 * pod > cidr (a pod using hostNetwork shares its node's address and must not
 * turn the host into a pod identity).
 */
const RANK: Record<IpcacheEntry['source'], number> = { cidr: 0, pod: 1, node: 2, 'kube-apiserver': 3 };

export function desiredIpcache(inputs: IpcacheInputs): IpcacheEntry[] {
  const out = new Map<string, IpcacheEntry>();
  const put = (entry: IpcacheEntry, rank: number) => {
    const current = out.get(entry.prefix);
    if (current === undefined || rank > rankOf(current)) out.set(entry.prefix, entry);
  };
  const rankOf = (e: IpcacheEntry) => (e.identity === ReservedId.host ? 4 : RANK[e.source]);
  for (const c of inputs.cidrs ?? []) put({ prefix: c.cidr, identity: c.identity, source: 'cidr' }, RANK.cidr);
  for (const p of inputs.pods) {
    if (p.identity > 0) put({ prefix: `${p.ip}/32`, identity: p.identity, source: 'pod' }, RANK.pod);
  }
  for (const n of inputs.nodes) {
    const local = n.name === inputs.localNode;
    const identity = local ? ReservedId.host : ReservedId.remoteNode;
    for (const ip of n.ips) put({ prefix: `${ip}/32`, identity, source: 'node' }, local ? 4 : RANK.node);
  }
  for (const ip of inputs.apiserverIps) {
    // The host's own address keeps `host` even when the apiserver listens there.
    put({ prefix: `${ip}/32`, identity: ReservedId.kubeApiserver, source: 'kube-apiserver' }, RANK['kube-apiserver']);
  }
  return [...out.values()].sort((a, b) => (a.prefix < b.prefix ? -1 : a.prefix > b.prefix ? 1 : 0));
}
