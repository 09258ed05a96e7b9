/**
 * compilePolicy: parsed policies + the local endpoints + every known identity -> the entries of
 * the datapath's policy map for each local endpoint, and whether each direction is enforced.
 * Pure and synchronous; the agent's reconciler diffs the result against the pinned map.
 *
 * Semantics (see also parse.ts for how each API's fields become rules):
 *
 * Enforcement. An endpoint is enforced in a direction when a rule that selects it puts that
 * direction into default deny (NetworkPolicy: its policyTypes; Cilium: an ingress/ingressDeny
 * (egress/egressDeny) section, even an empty one, unless enableDefaultDeny says false). An
 * endpoint no rule enforces is not enforced: everything passes, as Kubernetes does for pods no
 * policy selects, and no entries are written for it. A direction that only has deny entries
 * from rules without default deny is enforced with an "allow every peer, every port" entry
 * (identity 0, prefixLen 64, cookie 0) so that the denies take effect and nothing else changes.
 *
 * Host. With `allowFromHost` (default true), an ingress-enforced endpoint accepts everything
 * from the local host (identity 1, prefixLen 64, cookie 0), as Kubernetes requires for
 * kubelet probes; an explicit deny of the host still wins.
 *
 * Peers. A selector peer becomes the cluster identities whose labels match (and the reserved
 * identities when the selector names a reserved label); "every peer" is identity 0; entities
 * are their reserved identities ("cluster" = every known identity plus host, remote-node,
 * init, health, unmanaged, kube-apiserver, ingress; "world" = 2 and 9; "all" = identity 0).
 * Every CIDR identity is also part of the world: a peer list holding 2 or 9 (the world entity,
 * a selector on reserved:world) holds every CIDR identity too, so naming 1.1.1.1/32 in one
 * policy does not take 1.1.1.1 out of another policy's "world". A
 * CIDR peer is the CIDR identity of that CIDR and of every policy CIDR inside it, except the
 * except-CIDRs and every policy CIDR inside those; a /0 also stands for world (2 and 9),
 * which is what the ipcache gives an address no CIDR covers. A CIDR with no identity in
 * `cidrIdentities` is a problem: for an allow it allows nothing (an except without one drops
 * the whole peer, since its addresses would carry the outer identity); for a deny the
 * missing part cannot be denied and the problem is an error.
 *
 * L4. Every protocol and port is prefixLen 64 (proto 0, port 0); every port of one protocol
 * is prefixLen 80; a port range is its minimal aligned prefixes (portRangePrefixes); ICMP
 * matches the ICMP type in the port field.
 *
 * Combination. Entries are deduplicated; on one key a deny beats an allow, and among equal
 * actions the lowest cookie is kept (so the result does not depend on input order). The
 * datapath looks up the peer identity and identity 0 and lets any deny win across the two,
 * but within one identity the LPM trie returns only the most specific entry, so a deny that
 * covers a more specific allow of the same identity is also written at that allow's key.
 *
 * Cost. Subjects are selected through a label index of the endpoints, peers through a label
 * index of the identities, both cached by selector. Policies are applied in cookie order, so
 * a rule application that repeats an earlier one (same resolved peers, ports and action on the
 * same endpoint) cannot change anything and is skipped.
 *
 * Output. Every input endpoint appears once, sorted by id; entries are sorted by direction,
 * identity, protocol, port and prefix length.
 */
import { TRAFFIC_EGRESS, TRAFFIC_INGRESS, POLICY_ALLOW, POLICY_DENY, type PolicyEntry, type PolicyKey } from '../datapath/codecs.js';
import { ReservedId } from '../identity/reserved.js';
import type { SecurityLabels } from '../identity/labels.js';
import { cidrContains, parseCidr, type Cidr } from './cidr.js';
import { CLUSTER_ENTITY_RESERVED } from './parse.js';
import { PREFIX_ANY_PORT, PREFIX_ANY_PROTO, portRangePrefixes } from './ports.js';
import { IdentitySelectorCache } from './selector.js';
import type { ParsedPolicy, PeerMatch, PolicyProblem, PortMatch, TrafficRule } from './types.js';

export interface PolicyEndpoint {
  /** Endpoint id in the datapath (1..65535). */
  id: number;
  /** The endpoint's own identity (not needed to compile; kept for callers and tracing). */
  identity: number;
  /** Its security labels: what policy subjects select on. */
  labels: SecurityLabels;
}

export interface CompileInputs {
  policies: readonly ParsedPolicy[];
  /** The local endpoints of this node. */
  endpoints: readonly PolicyEndpoint[];
  /** Every known cluster identity (256..65535) with its labels. */
  identities: ReadonlyMap<number, SecurityLabels>;
  /** Policy CIDR -> its CIDR identity (assignCidrIdentities of policyCidrs). */
  cidrIdentities: ReadonlyMap<string, number>;
  /** Accept everything from the local host on ingress-enforced endpoints (default true). */
  allowFromHost?: boolean;
}

export interface EndpointPolicy {
  epId: number;
  ingressEnforced: boolean;
  egressEnforced: boolean;
  entries: Array<readonly [PolicyKey, PolicyEntry]>;
}

export interface CompileResult {
  endpoints: EndpointPolicy[];
  problems: PolicyProblem[];
}

/** An L4 part of a key: prefixLen, proto and port packed into one number (30 bits). */
type L4Code = number;

function l4Code(prefixLen: number, proto: number, port: number): L4Code {
  return proto * 0x400000 + port * 64 + (prefixLen - PREFIX_ANY_PROTO);
}

function l4Decode(code: L4Code): { prefixLen: number; proto: number; port: number } {
  return { prefixLen: (code % 64) + PREFIX_ANY_PROTO, port: Math.floor(code / 64) % 0x10000, proto: Math.floor(code / 0x400000) };
}

/** True when the key `outer` matches every packet `inner` matches (same identity and direction). */
function l4Covers(outer: L4Code, inner: L4Code): boolean {
  const o = l4Decode(outer);
  const i = l4Decode(inner);
  if (o.prefixLen > i.prefixLen) return false;
  if (o.prefixLen === PREFIX_ANY_PROTO) return true;
  if (o.proto !== i.proto) return false;
  const bits = o.prefixLen - PREFIX_ANY_PORT;
  if (bits === 0) return true;
  const shift = 16 - bits;
  return o.port >>> shift === i.port >>> shift;
}

/** An action and a cookie packed into one number (cookie * 4 + action): no allocation per entry. */
type Verdict = number;

function verdict(action: number, cookie: number): Verdict {
  return cookie * 4 + action;
}

function actionOf(v: Verdict): number {
  return v % 4;
}

function cookieOf(v: Verdict): number {
  return Math.floor(v / 4);
}

/** direction (1, 2) -> identity -> L4 code -> verdict. */
type Table = [Map<number, Map<L4Code, Verdict>>, Map<number, Map<L4Code, Verdict>>];

interface EndpointState {
  ep: PolicyEndpoint;
  defaultDeny: [boolean, boolean];
  table: Table;
  hasDeny: [boolean, boolean];
  /** Rule applications already done (see applyTrafficRule). */
  applied: Set<string>;
}

function put(state: EndpointState, dirIndex: 0 | 1, identity: number, code: L4Code, action: number, cookie: number): void {
  const byId = state.table[dirIndex];
  let byL4 = byId.get(identity);
  if (!byL4) byId.set(identity, (byL4 = new Map()));
  const cur = byL4.get(code);
  if (action === POLICY_DENY) state.hasDeny[dirIndex] = true;
  if (cur === undefined || (action === POLICY_DENY && actionOf(cur) !== POLICY_DENY) || (action === actionOf(cur) && cookie < cookieOf(cur))) {
    byL4.set(code, verdict(action, cookie));
  }
}

function l4Codes(ports: readonly PortMatch[]): L4Code[] {
  const out = new Set<L4Code>();
  for (const pm of ports) {
    if (pm.proto === null) out.add(l4Code(PREFIX_ANY_PROTO, 0, 0));
    else for (const pp of portRangePrefixes(pm.low, pm.high)) out.add(l4Code(pp.prefixLen, pm.proto, pp.port));
  }
  return [...out];
}

const ANY_PEER_IDS: readonly number[] = Object.freeze([0]);

/** Resolves peers to identities, with caches shared by every rule of one compilation. */
class PeerResolver {
  private readonly selectors: IdentitySelectorCache;
  private readonly cidrs: Array<{ cidr: Cidr; text: string; id: number }>;
  private readonly cidrCache = new Map<string, { ids: readonly number[]; missing: string[]; missingExcept: string[] }>();
  private readonly clusterIds: readonly number[];
  private readonly worldCache = new Map<readonly number[], readonly number[]>();

  constructor(identities: ReadonlyMap<number, SecurityLabels>, cidrIdentities: ReadonlyMap<string, number>) {
    this.selectors = new IdentitySelectorCache(identities);
    this.cidrs = [];
    for (const [text, id] of cidrIdentities) {
      const p = parseCidr(text);
      if (!p.ok) throw new RangeError(`cidrIdentities: ${p.reason}`);
      this.cidrs.push({ cidr: p.cidr, text: p.text, id });
    }
    this.clusterIds = [...new Set([...identities.keys(), ...CLUSTER_ENTITY_RESERVED])];
  }

  /**
   * Addresses outside the cluster are the world, whether or not a policy CIDR covers them and
   * gives them a CIDR identity: a list that holds world (2 or 9) also holds every CIDR identity.
   * Cached by list, so equal inputs give the same array.
   */
  private withCidrsIfWorld(ids: readonly number[]): readonly number[] {
    if (this.cidrs.length === 0 || !(ids.includes(ReservedId.world) || ids.includes(ReservedId.worldIPv4))) return ids;
    let out = this.worldCache.get(ids);
    if (!out) {
      out = [...new Set([...ids, ...this.cidrs.map((c) => c.id)])].sort((a, b) => a - b);
      this.worldCache.set(ids, out);
    }
    return out;
  }

  private hasIdentity(text: string): boolean {
    return this.cidrs.some((c) => c.text === text);
  }

  cidr(peer: { cidr: string; except: readonly string[] }): { ids: readonly number[]; missing: string[]; missingExcept: string[] } {
    const key = `${peer.cidr}|${peer.except.join(',')}`;
    const hit = this.cidrCache.get(key);
    if (hit) return hit;
    const outer = parseCidr(peer.cidr);
    if (!outer.ok) throw new RangeError(`policy CIDR ${peer.cidr}: ${outer.reason}`);
    const excepts = peer.except.map((e) => {
      const p = parseCidr(e);
      if (!p.ok) throw new RangeError(`policy except CIDR ${e}: ${p.reason}`);
      return p.cidr;
    });
    const ids = new Set<number>();
    for (const c of this.cidrs) {
      if (!cidrContains(outer.cidr, c.cidr)) continue;
      if (excepts.some((e) => cidrContains(e, c.cidr))) continue;
      ids.add(c.id);
    }
    if (outer.cidr.prefixLen === 0) {
      ids.add(ReservedId.world);
      ids.add(ReservedId.worldIPv4);
    }
    const missing = outer.cidr.prefixLen === 0 || this.hasIdentity(outer.text) ? [] : [outer.text];
    const missingExcept = peer.except.filter((e) => !this.hasIdentity(e));
    const result = { ids: [...ids].sort((a, b) => a - b), missing, missingExcept };
    this.cidrCache.set(key, result);
    return result;
  }

  /** The identities of one peer (0 = any) and the problems found resolving it. */
  resolve(peer: PeerMatch, action: 'allow' | 'deny', report: (severity: 'error' | 'warning', message: string) => void): readonly number[] {
    switch (peer.kind) {
      case 'any':
        return ANY_PEER_IDS;
      case 'identities':
        return this.withCidrsIfWorld(peer.ids);
      case 'entityCluster':
        return this.clusterIds;
      case 'selector':
        return this.withCidrsIfWorld(this.selectors.select(peer.selector));
      case 'cidr': {
        const r = this.cidr(peer);
        if (action === 'allow') {
          if (r.missingExcept.length > 0) {
            report('error', `except CIDR(s) ${r.missingExcept.join(', ')} of ${peer.cidr} have no CIDR identity yet, so their addresses cannot be told apart: the peer allows nothing until they have one`);
            return [];
          }
          if (r.missing.length > 0) report('warning', `CIDR ${peer.cidr} has no CIDR identity yet: it allows only the policy CIDRs inside it until it has one`);
        } else {
          if (r.missing.length > 0) report('error', `CIDR ${peer.cidr} has no CIDR identity yet: addresses outside the policy CIDRs inside it are not denied until it has one`);
          if (r.missingExcept.length > 0) report('warning', `except CIDR(s) ${r.missingExcept.join(', ')} of ${peer.cidr} have no CIDR identity yet: they are denied with it until they have one`);
        }
        return r.ids;
      }
    }
  }
}

function compareKeys(a: PolicyKey, b: PolicyKey): number {
  return a.direction - b.direction || a.identity - b.identity || a.proto - b.proto || a.dport - b.dport || a.prefixLen - b.prefixLen;
}

/** Writes each covering deny into the more specific allow keys of the same identity. */
function propagateDenies(byL4: Map<L4Code, Verdict>): void {
  const denies: Array<[L4Code, Verdict]> = [];
  for (const [code, v] of byL4) if (actionOf(v) === POLICY_DENY) denies.push([code, v]);
  if (denies.length === 0) return;
  // Most specific first: an allow takes the verdict the trie would have returned without it.
  denies.sort((a, b) => l4Decode(b[0]).prefixLen - l4Decode(a[0]).prefixLen || a[0] - b[0]);
  for (const [code, v] of byL4) {
    if (actionOf(v) === POLICY_DENY) continue;
    for (const [dcode, dv] of denies) {
      if (l4Covers(dcode, code)) {
        byL4.set(code, dv);
        break;
      }
    }
  }
}

export function compilePolicy(inputs: CompileInputs): CompileResult {
  const problems: PolicyProblem[] = [];
  const resolver = new PeerResolver(inputs.identities, inputs.cidrIdentities);
  const allowFromHost = inputs.allowFromHost ?? true;
  const listIds = new Map<readonly number[], number>();
  const ctx: CompileContext = {
    resolver,
    listId(ids) {
      let n = listIds.get(ids);
      if (n === undefined) listIds.set(ids, (n = listIds.size));
      return n;
    },
  };

  const states: EndpointState[] = [];
  const seen = new Set<number>();
  for (const ep of inputs.endpoints) {
    if (!Number.isInteger(ep.id) || ep.id < 1 || ep.id > 0xffff) throw new RangeError(`endpoint id ${ep.id} is not in 1..65535`);
    if (seen.has(ep.id)) throw new RangeError(`endpoint id ${ep.id} appears twice in the compile inputs`);
    seen.add(ep.id);
    states.push({ ep, defaultDeny: [false, false], table: [new Map(), new Map()], hasDeny: [false, false], applied: new Set() });
  }
  states.sort((a, b) => a.ep.id - b.ep.id);
  const stateById = new Map(states.map((s) => [s.ep.id, s]));
  const subjectIndex = new IdentitySelectorCache(new Map(states.map((s) => [s.ep.id, s.ep.labels])), false);

  const policies = [...inputs.policies].sort((a, b) => a.cookie - b.cookie);
  for (const policy of policies) {
    for (const rule of policy.rules) {
      const subjects = subjectIndex.select(rule.subject).map((id) => stateById.get(id)!);
      if (subjects.length === 0) continue;
      for (const s of subjects) {
        if (rule.defaultDeny.ingress) s.defaultDeny[0] = true;
        if (rule.defaultDeny.egress) s.defaultDeny[1] = true;
      }
      for (const tr of rule.traffic) applyTrafficRule(tr, policy, subjects, ctx, problems);
    }
  }

  const endpoints: EndpointPolicy[] = states.map((s) => finish(s, allowFromHost));
  return { endpoints, problems };
}

/**
 * Applies one traffic rule to its subject endpoints. Policies are applied in ascending cookie
 * order, so applying the same resolved peer list with the same L4 codes and action to an
 * endpoint a second time cannot change anything (the cookie is not lower): such repeats,
 * common with shared selectors and entities, are skipped.
 */
function applyTrafficRule(tr: TrafficRule, policy: ParsedPolicy, subjects: EndpointState[], ctx: CompileContext, problems: PolicyProblem[]): void {
  const action = tr.action === 'deny' ? POLICY_DENY : POLICY_ALLOW;
  const codes = l4Codes(tr.ports);
  if (codes.length === 0) return;
  const codesKey = codes.join(',');
  const dirIndex = tr.direction === TRAFFIC_INGRESS ? 0 : 1;
  tr.peers.forEach((peer, i) => {
    const report = (severity: 'error' | 'warning', message: string) => problems.push({ policy: policy.source, field: `${tr.field} (peer ${i + 1})`, message, severity });
    const ids = ctx.resolver.resolve(peer, tr.action, report);
    if (ids.length === 0) return;
    const application = `${dirIndex}|${action}|${ctx.listId(ids)}|${codesKey}`;
    for (const s of subjects) {
      if (s.applied.has(application)) continue;
      s.applied.add(application);
      for (const id of ids) for (const code of codes) put(s, dirIndex, id, code, action, policy.cookie);
    }
  });
}

interface CompileContext {
  resolver: PeerResolver;
  /** A number per distinct identity list object (resolved lists are cached and shared). */
  listId(ids: readonly number[]): number;
}

function finish(s: EndpointState, allowFromHost: boolean): EndpointPolicy {
  const entries: Array<readonly [PolicyKey, PolicyEntry]> = [];
  const enforced: [boolean, boolean] = [false, false];
  for (const dirIndex of [0, 1] as const) {
    const defaultDeny = s.defaultDeny[dirIndex];
    if (!defaultDeny && !s.hasDeny[dirIndex]) continue;
    enforced[dirIndex] = true;
    const anyAll = l4Code(PREFIX_ANY_PROTO, 0, 0);
    if (!defaultDeny) put(s, dirIndex, 0, anyAll, POLICY_ALLOW, 0);
    if (dirIndex === 0 && allowFromHost) put(s, dirIndex, ReservedId.host, anyAll, POLICY_ALLOW, 0);
    const direction = dirIndex === 0 ? TRAFFIC_INGRESS : TRAFFIC_EGRESS;
    for (const [identity, byL4] of s.table[dirIndex]) {
      propagateDenies(byL4);
      for (const [code, v] of byL4) {
        const { prefixLen, proto, port } = l4Decode(code);
        entries.push([{ prefixLen, epId: s.ep.id, direction, identity, proto, dport: port }, { action: actionOf(v), cookie: cookieOf(v) }] as const);
      }
    }
  }
  entries.sort((a, b) => compareKeys(a[0], b[0]));
  return { epId: s.ep.id, ingressEnforced: enforced[0], egressEnforced: enforced[1], entries };
}
