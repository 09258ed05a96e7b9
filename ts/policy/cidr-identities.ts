/**
 * CIDR identities: each CIDR a policy names gets a node-local numeric identity, which the
 * agent writes into the ipcache for that prefix and the compiler allows or denies. An address
 * then carries the identity of the longest policy CIDR that contains it (or of a pod, or the
 * world identity when nothing covers it), so "10.0.0.0/8 except 10.1.0.0/16" is the identity
 * of 10.0.0.0/8 (and of policy CIDRs inside it) without that of 10.1.0.0/16.
 *
 * Numbers are in the local scope, as Cilium numbers its local identities: 1<<24 | n,
 * n = 1, 2, ... (16777217 upwards). The whole space 0.0.0.0/0 gets none: it is the world
 * identity, which the ipcache already gives every address it has no entry for.
 */
import { cidrOf, compareCidrs, formatCidr, parseCidr } from './cidr.js';
import type { ParsedPolicy } from './types.js';

export const LOCAL_IDENTITY_SCOPE = 1 << 24;
export const FIRST_CIDR_IDENTITY = LOCAL_IDENTITY_SCOPE + 1;
export const LAST_CIDR_IDENTITY = LOCAL_IDENTITY_SCOPE + 0xffffff;

/**
 * Every IPv4 CIDR the policies name (allow and deny peers, ipBlocks, CIDR sets and their
 * except CIDRs), normalised (host bits zero), deduplicated and sorted by address then prefix
 * length. 0.0.0.0/0 is left out (it is the world identity).
 */
export function policyCidrs(policies: readonly ParsedPolicy[]): string[] {
  const out = new Set<string>();
  const add = (text: string) => {
    const p = parseCidr(text);
    if (p.ok && p.cidr.prefixLen > 0) out.add(p.text);
  };
  for (const policy of policies) {
    for (const rule of policy.rules) {
      for (const tr of rule.traffic) {
        for (const peer of tr.peers) {
          if (peer.kind !== 'cidr') continue;
          add(peer.cidr);
          for (const e of peer.except) add(e);
        }
      }
    }
  }
  return [...out].map(cidrOf).sort(compareCidrs).map(formatCidr);
}

/**
 * Stable CIDR identities for `cidrs`. A CIDR still present keeps its number from `previous`;
 * a new CIDR takes the lowest number never used in `previous`, and only when those run out a
 * number `previous` had for a CIDR that is gone (so a freed number, which may still sit in
 * conntrack entries and flow logs, is reused last). Throws a RangeError for a malformed CIDR,
 * a duplicate number in `previous`, or when the 2^24 - 1 local numbers are exhausted.
 */
export function assignCidrIdentities(cidrs: readonly string[], previous: ReadonlyMap<string, number>): Map<string, number> {
  return assignCidrIdentitiesInRange(cidrs, previous, FIRST_CIDR_IDENTITY, LAST_CIDR_IDENTITY);
}

/** assignCidrIdentities over the numbers first..last (a small range makes exhaustion testable). */
export function assignCidrIdentitiesInRange(cidrs: readonly string[], previous: ReadonlyMap<string, number>, first: number, last: number): Map<string, number> {
  const wanted = [...new Set(cidrs.map((c) => {
    const p = parseCidr(c);
    if (!p.ok) throw new RangeError(`assignCidrIdentities: ${p.reason}`);
    return p.text;
  }))].map(cidrOf).sort(compareCidrs).map(formatCidr);
  const wantedSet = new Set(wanted);

  const prevByCidr = new Map<string, number>();
  const usedBefore = new Set<number>();
  for (const [text, id] of previous) {
    if (!Number.isInteger(id) || id < first || id > last) throw new RangeError(`assignCidrIdentities: ${text} has identity ${id}, outside the local CIDR range ${first}..${last}`);
    if (usedBefore.has(id)) throw new RangeError(`assignCidrIdentities: identity ${id} appears twice in the previous assignment`);
    usedBefore.add(id);
    const p = parseCidr(text);
    if (p.ok) prevByCidr.set(p.text, id);
  }

  const out = new Map<string, number>();
  const taken = new Set<number>();
  const freed: number[] = [];
  for (const [text, id] of prevByCidr) {
    if (wantedSet.has(text)) {
      out.set(text, id);
      taken.add(id);
    } else freed.push(id);
  }
  freed.sort((a, b) => a - b);

  let next = first;
  let freedIndex = 0;
  const take = (): number => {
    while (next <= last && (usedBefore.has(next) || taken.has(next))) next++;
    if (next <= last) return next++;
    while (freedIndex < freed.length) {
      const id = freed[freedIndex++]!;
      if (!taken.has(id)) return id;
    }
    throw new RangeError(`assignCidrIdentities: the local identity space (${last - first + 1} CIDR identities) is exhausted`);
  };
  for (const text of wanted) {
    if (out.has(text)) continue;
    const id = take();
    taken.add(id);
    out.set(text, id);
  }
  return new Map([...out].sort((a, b) => compareCidrs(cidrOf(a[0]), cidrOf(b[0]))));
}
