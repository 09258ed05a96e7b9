/**
 * Reading compiled policy the way the datapath does, for `membrane policy trace` and for
 * naming the policy behind a flow's cookie. Pure.
 *
 * The lookup (ebpf/README.md "Policy"): when the direction is not enforced, everything passes.
 * Otherwise two longest-prefix lookups, one with the peer identity and one with identity 0;
 * any deny drops (DROP_POLICY_DENY 181), else a redirect or an allow passes, else the packet is
 * dropped by default deny (DROP_POLICY_DENIED 133).
 */
import { POLICY_ALLOW, POLICY_DENY, POLICY_REDIRECT, TRAFFIC_INGRESS, type PolicyEntry, type PolicyKey } from '../datapath/codecs.js';
import type { EndpointPolicy } from './compile.js';
import type { ParsedPolicy, PolicySource } from './types.js';

export interface TraceQuery {
  /** 1 ingress (the peer is the source), 2 egress (the peer is the destination). */
  direction: 1 | 2;
  /** The peer's identity (as the ipcache gives it). */
  identity: number;
  /** IP protocol number. */
  proto: number;
  /** Destination port; for ICMP the ICMP type. */
  port: number;
}

export type TraceVerdict = 'not-enforced' | 'allowed' | 'redirected' | 'denied' | 'default-denied';

export interface TraceResult {
  verdict: TraceVerdict;
  /** The entry that decided (absent when not enforced or default-denied). */
  decidedBy?: readonly [PolicyKey, PolicyEntry];
  /** The most specific entries of the two lookups. */
  peerMatch?: readonly [PolicyKey, PolicyEntry];
  anyMatch?: readonly [PolicyKey, PolicyEntry];
  /** The datapath's drop reason for a drop: 181 explicit deny, 133 no allow. */
  dropReason?: number;
}

function keyMatches(k: PolicyKey, proto: number, port: number): boolean {
  if (k.prefixLen === 64) return true;
  if (k.proto !== proto) return false;
  const shift = 96 - k.prefixLen;
  return port >>> shift === k.dport >>> shift;
}

function longestMatch(ep: EndpointPolicy, direction: number, identity: number, proto: number, port: number): readonly [PolicyKey, PolicyEntry] | undefined {
  let best: readonly [PolicyKey, PolicyEntry] | undefined;
  for (const e of ep.entries) {
    const k = e[0];
    if (k.direction !== direction || k.identity !== identity || !keyMatches(k, proto, port)) continue;
    if (!best || k.prefixLen > best[0].prefixLen) best = e;
  }
  return best;
}

/** The verdict the datapath reaches for one new connection of `ep`, and the entries behind it. */
export function tracePolicy(ep: EndpointPolicy, q: TraceQuery): TraceResult {
  if (q.direction !== 1 && q.direction !== 2) throw new RangeError(`direction must be 1 (ingress) or 2 (egress), got ${q.direction}`);
  if (!Number.isInteger(q.port) || q.port < 0 || q.port > 65535) throw new RangeError(`port must be 0..65535, got ${q.port}`);
  if (!Number.isInteger(q.proto) || q.proto < 0 || q.proto > 255) throw new RangeError(`proto must be 0..255, got ${q.proto}`);
  const enforced = q.direction === TRAFFIC_INGRESS ? ep.ingressEnforced : ep.egressEnforced;
  if (!enforced) return { verdict: 'not-enforced' };
  const peerMatch = q.identity === 0 ? undefined : longestMatch(ep, q.direction, q.identity, q.proto, q.port);
  const anyMatch = longestMatch(ep, q.direction, 0, q.proto, q.port);
  const base = { ...(peerMatch ? { peerMatch } : {}), ...(anyMatch ? { anyMatch } : {}) };
  const pick = (action: number) => [peerMatch, anyMatch].find((m) => m?.[1].action === action);
  const deny = pick(POLICY_DENY);
  if (deny) return { ...base, verdict: 'denied', decidedBy: deny, dropReason: 181 };
  const redirect = pick(POLICY_REDIRECT);
  if (redirect) return { ...base, verdict: 'redirected', decidedBy: redirect };
  const allow = pick(POLICY_ALLOW);
  if (allow) return { ...base, verdict: 'allowed', decidedBy: allow };
  return { ...base, verdict: 'default-denied', dropReason: 133 };
}

/**
 * Cookie -> the policy it names (for flow events and traces). Cookie 0 is the compiler's own
 * entries (the host allow, the allow-all under deny-only rules) and is not in the map. Two
 * policies whose names hash to the same cookie are both listed.
 */
export function policiesByCookie(policies: readonly ParsedPolicy[]): Map<number, PolicySource[]> {
  const out = new Map<number, PolicySource[]>();
  for (const p of policies) {
    const list = out.get(p.cookie);
    if (list) {
      if (!list.some((s) => s.kind === p.source.kind && s.namespace === p.source.namespace && s.name === p.source.name)) list.push(p.source);
    } else out.set(p.cookie, [p.source]);
  }
  return out;
}
