/**
 * What the API shows: pure conversions from agent state and map dumps to the
 * view types of ts/api/types.ts.
 */
import type { CtView, EndpointView, IdentityView, IpcacheView, PolicyEntryView } from '../api/types.js';
import type { CtEntry, CtKey, IpcacheEntry, IpcacheKey, PolicyEntry, PolicyKey } from '../datapath/codecs.js';
import type { Endpoint } from '../endpoint/endpoint.js';
import type { SecurityLabels } from '../identity/labels.js';
import { RESERVED_IDENTITIES } from '../identity/reserved.js';
import type { EndpointEnforcement } from './desired.js';

const PROTO_NAMES: Record<number, string> = { 1: 'ICMP', 6: 'TCP', 17: 'UDP', 132: 'SCTP' };
export const protoName = (p: number): string => PROTO_NAMES[p] ?? `proto-${p}`;

export function labelList(labels: SecurityLabels | undefined): string[] {
  if (!labels) return [];
  return Object.entries(labels)
    .map(([k, v]) => (v === '' ? k : `${k}=${v}`))
    .sort();
}

export function endpointView(ep: Endpoint, enforcement: EndpointEnforcement | undefined, labels: SecurityLabels | undefined): EndpointView {
  return { ...ep, policyEnforcement: { ingress: enforcement?.ingress ?? false, egress: enforcement?.egress ?? false }, labels: labelList(labels) };
}

export function identityViews(cluster: ReadonlyArray<{ id: number; labels: SecurityLabels }>, cidrs: ReadonlyMap<string, number>, endpoints: readonly Endpoint[]): IdentityView[] {
  const users = new Map<number, number>();
  for (const ep of endpoints) users.set(ep.identity, (users.get(ep.identity) ?? 0) + 1);
  const out: IdentityView[] = RESERVED_IDENTITIES.map((r) => ({ id: r.id, labels: [`reserved:${r.name}`], kind: 'reserved' as const, endpoints: users.get(r.id) ?? 0 }));
  for (const c of cluster) out.push({ id: c.id, labels: labelList(c.labels), kind: 'cluster', endpoints: users.get(c.id) ?? 0 });
  for (const [cidr, id] of cidrs) out.push({ id, labels: [`cidr:${cidr}`], kind: 'cidr', endpoints: 0 });
  return out.sort((a, b) => a.id - b.id);
}

export function ipcacheViews(dump: ReadonlyArray<readonly [IpcacheKey, IpcacheEntry]>, sources: ReadonlyMap<string, string>): IpcacheView[] {
  return dump
    .map(([k, v]) => {
      const prefix = `${k.addr}/${k.prefixLen}`;
      return { prefix, identity: v.identity, source: sources.get(prefix) ?? 'unknown (not desired: being removed)' };
    })
    .sort((a, b) => a.prefix.localeCompare(b.prefix, undefined, { numeric: true }));
}

export function ctState(key: CtKey, e: CtEntry): string {
  if (key.proto !== 6) return e.flags & 1 ? 'established' : 'new';
  if (e.flags & 6) return 'closing';
  return e.flags & 1 ? 'established' : 'syn-sent';
}

export function ctFlags(e: CtEntry): string[] {
  const out: string[] = [];
  if (e.flags & 1) out.push('seen-reply');
  if (e.flags & 2) out.push('fwd-closing');
  if (e.flags & 4) out.push('rev-closing');
  if (e.flags & 8) out.push(`proxy-redirect:${e.proxyPort}`);
  return out;
}

export function ctViews(dump: ReadonlyArray<readonly [CtKey, CtEntry]>, nowSeconds: number): CtView[] {
  return dump.map(([k, e]) => {
    const ports = k.proto === 1 ? '' : ':';
    return {
      proto: protoName(k.proto),
      direction: k.direction === 2 ? 'OUT' : 'IN',
      src: ports ? `${k.saddr}:${k.sport}` : `${k.saddr} id=${k.sport}`,
      dst: ports ? `${k.daddr}:${k.dport}` : `${k.daddr}`,
      expiresInSeconds: e.expires - nowSeconds,
      state: ctState(k, e),
      rxPackets: e.revPackets.toString(),
      rxBytes: e.revBytes.toString(),
      txPackets: e.fwdPackets.toString(),
      txBytes: e.fwdBytes.toString(),
      flags: ctFlags(e),
      srcIdentity: e.srcIdentity,
      endpoint: e.epId,
    };
  });
}

/** "ANY", "TCP/ANY", "TCP/80", "TCP/1024-2047" from a policy key's prefix length. */
export function policyPort(k: PolicyKey): string {
  if (k.prefixLen <= 64) return 'ANY';
  const proto = protoName(k.proto);
  if (k.prefixLen <= 80) return `${proto}/ANY`;
  if (k.prefixLen >= 96) return `${proto}/${k.dport}`;
  const span = 2 ** (96 - k.prefixLen);
  return `${proto}/${k.dport}-${k.dport + span - 1}`;
}

const ACTIONS: Record<number, PolicyEntryView['action']> = { 1: 'allow', 2: 'deny', 3: 'redirect' };

export function policyViews(dump: ReadonlyArray<readonly [PolicyKey, PolicyEntry]>, epId: number): PolicyEntryView[] {
  return dump
    .filter(([k]) => k.epId === epId)
    .map(([k, v]) => ({
      direction: k.direction === 1 ? ('ingress' as const) : ('egress' as const),
      identity: k.identity,
      port: policyPort(k),
      action: ACTIONS[v.action] ?? 'deny',
      proxyPort: v.proxyPort ?? 0,
      cookie: v.cookie ?? 0,
    }))
    .sort((a, b) => a.direction.localeCompare(b.direction) || a.identity - b.identity || a.port.localeCompare(b.port));
}
