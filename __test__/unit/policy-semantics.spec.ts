/**
 * The compiled map, read the way the datapath reads it, means what the policies say.
 *
 * A model of the datapath's lookup (ebpf/README.md "Policy": longest-prefix match within the
 * peer identity and within identity 0; any deny wins, then an allow, else drop when the
 * direction is enforced) is run over the compiled entries for many packets, and compared with
 * the verdict computed directly from the parsed rules. Policies are random (seeded), mixing
 * allows and denies, selectors and entities, every-port, single-port, range and ICMP matches,
 * so the covering-deny copies and the prefix splits are exercised where they matter. CIDR
 * policies are checked the same way through a model of the ipcache (an address carries the
 * identity of the longest policy CIDR covering it, else world).
 * The synthetic cluster of the benchmark is compiled too, checking structural invariants.
 */
import test from 'ava';
import { packAll, policyEntryCodec, policyKeyCodec, type PolicyEntry, type PolicyKey } from '../../ts/datapath/codecs.js';
import type { SecurityLabels } from '../../ts/identity/labels.js';
import { RESERVED_IDENTITIES } from '../../ts/identity/reserved.js';
import { compileInputsFor, syntheticCluster } from '../../ts/policy/bench.js';
import { CLUSTER_ENTITY_RESERVED } from '../../ts/policy/parse.js';
import { assignCidrIdentities, compilePolicy, parsePolicy, policyCidrs, type EndpointPolicy, type ParsedPolicy, type PeerMatch, type PolicyEndpoint, type PortMatch } from '../../ts/policy/index.js';
import { labelView, namesReserved, selectorMatches } from '../../ts/policy/selector.js';

/** mulberry32: a small seeded PRNG so failures reproduce. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const APPS = ['a', 'b', 'c', 'd'];
const NS = 'ns1';
const identities = new Map<number, SecurityLabels>(
  APPS.map((app, i) => [300 + i, { 'k8s:app': app, 'k8s:io.kubernetes.pod.namespace': NS }] as const),
);
const endpoints: PolicyEndpoint[] = APPS.map((_app, i) => ({ id: 1 + i, identity: 300 + i, labels: identities.get(300 + i)! }));

function randomPorts(r: () => number): unknown[] | undefined {
  const n = Math.floor(r() * 3);
  if (n === 0) return undefined;
  const ports: unknown[] = [];
  for (let i = 0; i < n; i++) {
    const kind = r();
    const protocol = r() < 0.5 ? 'TCP' : r() < 0.7 ? 'UDP' : 'ANY';
    if (kind < 0.2) ports.push({ port: '0', protocol: protocol === 'ANY' ? 'TCP' : protocol });
    else if (kind < 0.6) ports.push({ port: String(Math.floor(r() * 64) + 60), protocol });
    else {
      const low = Math.floor(r() * 64) + 60;
      ports.push({ port: String(low), endPort: low + Math.floor(r() * 40), protocol });
    }
  }
  return [{ ports }];
}

function randomPeers(r: () => number, dir: 'from' | 'to'): Record<string, unknown> {
  const x = r();
  if (x < 0.45) return { [`${dir}Endpoints`]: [{ matchLabels: { app: APPS[Math.floor(r() * APPS.length)]! } }] };
  if (x < 0.6) return { [`${dir}Endpoints`]: [{}] };
  if (x < 0.75) return { [`${dir}Entities`]: [['world', 'host', 'all', 'cluster'][Math.floor(r() * 4)]!] };
  if (x < 0.85) return { [`${dir}Endpoints`]: [{ matchExpressions: [{ key: 'app', operator: 'NotIn', values: [APPS[Math.floor(r() * APPS.length)]!] }] }] };
  return {};
}

function randomRule(r: () => number, dir: 'from' | 'to'): Record<string, unknown> {
  const rule: Record<string, unknown> = { ...randomPeers(r, dir) };
  const ports = randomPorts(r);
  if (ports) rule.toPorts = ports;
  if (r() < 0.15) rule.icmps = [{ fields: [{ type: r() < 0.5 ? 8 : 0 }] }];
  return rule;
}

function randomPolicy(r: () => number, n: number): unknown {
  const spec: Record<string, unknown> = { endpointSelector: r() < 0.3 ? {} : { matchLabels: { app: APPS[Math.floor(r() * APPS.length)]! } } };
  for (const [key, dir] of [['ingress', 'from'], ['ingressDeny', 'from'], ['egress', 'to'], ['egressDeny', 'to']] as const) {
    if (r() < (key.endsWith('Deny') ? 0.35 : 0.6)) {
      const count = Math.floor(r() * 3);
      spec[key] = Array.from({ length: count }, () => randomRule(r, dir));
    }
  }
  if (r() < 0.15) spec.enableDefaultDeny = { ingress: r() < 0.5, egress: r() < 0.5 };
  return { kind: 'CiliumNetworkPolicy', metadata: { name: `p${n}`, namespace: NS }, spec };
}

// ---- the datapath model --------------------------------------------------------------------------

function keyMatches(k: PolicyKey, proto: number, port: number): boolean {
  if (k.prefixLen === 64) return true;
  if (k.proto !== proto) return false;
  const shift = 96 - k.prefixLen;
  return Math.floor(port / 2 ** shift) === Math.floor(k.dport / 2 ** shift);
}

function lpm(entries: ReadonlyArray<readonly [PolicyKey, PolicyEntry]>, dir: number, identity: number, proto: number, port: number): number | undefined {
  let best: readonly [PolicyKey, PolicyEntry] | undefined;
  for (const e of entries) {
    const k = e[0];
    if (k.direction !== dir || k.identity !== identity || !keyMatches(k, proto, port)) continue;
    if (!best || k.prefixLen > best[0].prefixLen) best = e;
  }
  return best?.[1].action;
}

function datapathVerdict(ep: EndpointPolicy, dir: 1 | 2, peer: number, proto: number, port: number): 'allow' | 'deny' | 'drop' {
  const enforced = dir === 1 ? ep.ingressEnforced : ep.egressEnforced;
  if (!enforced) return 'allow';
  const a = lpm(ep.entries, dir, peer, proto, port);
  const b = lpm(ep.entries, dir, 0, proto, port);
  if (a === 2 || b === 2) return 'deny';
  if (a === 1 || b === 1) return 'allow';
  return 'drop';
}

// ---- the intended meaning, straight from the parsed rules ------------------------------------------

const reservedLabels = new Map(RESERVED_IDENTITIES.map((x) => [x.id, x.labels]));

function peerMatches(p: PeerMatch, peer: number): boolean {
  switch (p.kind) {
    case 'any':
      return true;
    case 'identities':
      return p.ids.includes(peer);
    case 'entityCluster':
      return identities.has(peer) || CLUSTER_ENTITY_RESERVED.includes(peer);
    case 'selector': {
      const labels = identities.get(peer) ?? (namesReserved(p.selector) ? reservedLabels.get(peer) : undefined);
      return labels !== undefined && selectorMatches(labelView(labels), p.selector);
    }
    case 'cidr':
      throw new Error('no CIDR peers in this test');
  }
}

function portMatches(pm: PortMatch, proto: number, port: number): boolean {
  if (pm.proto === null) return true;
  return pm.proto === proto && port >= pm.low && port <= pm.high;
}

function intendedVerdict(policies: readonly ParsedPolicy[], ep: PolicyEndpoint, dir: 1 | 2, peer: number, proto: number, port: number): 'allow' | 'deny' | 'drop' {
  let enforced = false;
  let allowed = false;
  let denied = false;
  const view = labelView(ep.labels);
  for (const p of policies) {
    for (const rule of p.rules) {
      if (!selectorMatches(view, rule.subject)) continue;
      if (dir === 1 ? rule.defaultDeny.ingress : rule.defaultDeny.egress) enforced = true;
      for (const tr of rule.traffic) {
        if (tr.direction !== dir) continue;
        if (!tr.peers.some((x) => peerMatches(x, peer)) || !tr.ports.some((x) => portMatches(x, proto, port))) continue;
        if (tr.action === 'deny') denied = true;
        else allowed = true;
      }
    }
  }
  if (denied) return 'deny';
  if (!enforced || allowed) return 'allow';
  return 'drop';
}

test('random policies: the datapath reading of the compiled map equals the rules, packet by packet', (t) => {
  const peers = [0, ...identities.keys(), 1, 2, 9, 6];
  let checked = 0;
  for (let seed = 1; seed <= 60; seed++) {
    const r = rng(seed);
    const policies: ParsedPolicy[] = [];
    const count = 1 + Math.floor(r() * 5);
    for (let i = 0; i < count; i++) {
      const res = parsePolicy(randomPolicy(r, i));
      if (!res.ok) throw new Error(`seed ${seed}: generated policy does not parse: ${JSON.stringify(res.problems)}`);
      policies.push(res.policy);
    }
    const out = compilePolicy({ policies, endpoints, identities, cidrIdentities: new Map(), allowFromHost: false });
    t.deepEqual(out.problems, []);
    for (const ep of endpoints) {
      const compiled = out.endpoints.find((e) => e.epId === ep.id)!;
      for (const dir of [1, 2] as const) {
        for (const peer of peers.slice(1)) {
          for (const [proto, ports] of [[6, [0, 59, 60, 61, 63, 64, 80, 95, 96, 100, 123, 124, 127, 128, 163, 65535]], [17, [60, 64, 100, 127, 200]], [1, [0, 8, 3]], [132, [64, 80]]] as const) {
            for (const port of ports) {
              const want = intendedVerdict(policies, ep, dir, peer, proto, port);
              const got = datapathVerdict(compiled, dir, peer, proto, port);
              if (want !== got) {
                t.fail(`seed ${seed}: ep ${ep.id} dir ${dir} peer ${peer} proto ${proto} port ${port}: rules say ${want}, map says ${got}\n${JSON.stringify(policies.map((p) => p.rules), null, 1)}`);
                return;
              }
              checked++;
            }
          }
        }
      }
    }
  }
  t.true(checked > 50_000, `checked ${checked} packets`);
});

// ---- CIDRs: the ipcache model ------------------------------------------------------------------

/** Nested and disjoint blocks, so excepts, containment and longest-prefix all matter. */
const CIDR_POOL = ['0.0.0.0/0', '10.0.0.0/8', '10.1.0.0/16', '10.1.2.0/24', '10.1.2.128/25', '10.1.3.0/24', '10.2.0.0/16', '192.168.0.0/16', '192.168.1.0/24', '1.1.1.1/32'];
const ADDRESSES = ['10.1.2.200', '10.1.2.5', '10.1.3.7', '10.1.4.1', '10.2.9.9', '10.9.9.9', '192.168.1.1', '192.168.2.2', '1.1.1.1', '8.8.8.8', '172.16.0.1'];

function ipNum(a: string): number {
  return a.split('.').reduce((n, x) => n * 256 + Number(x), 0);
}

function inCidr(addr: string, cidr: string): boolean {
  const [base, len] = cidr.split('/') as [string, string];
  const size = 2 ** (32 - Number(len));
  return Math.floor(ipNum(addr) / size) === Math.floor(ipNum(base) / size);
}

/** The identity the ipcache gives an address with no pod on it: the longest policy CIDR, else world. */
function ipcacheIdentity(addr: string, cidrIds: ReadonlyMap<string, number>): number {
  let best: [number, number] | undefined;
  for (const [cidr, id] of cidrIds) {
    const len = Number(cidr.split('/')[1]);
    if (inCidr(addr, cidr) && (!best || len > best[0])) best = [len, id];
  }
  return best ? best[1] : 2;
}

function randomCidrPeer(r: () => number): Record<string, unknown> {
  const x = r();
  if (x < 0.15) return { toEntities: ['world'] };
  const cidr = CIDR_POOL[Math.floor(r() * CIDR_POOL.length)]!;
  const inside = CIDR_POOL.filter((c) => c !== cidr && inCidr(c.split('/')[0]!, cidr) && Number(c.split('/')[1]) > Number(cidr.split('/')[1]));
  const except = inside.filter(() => r() < 0.4);
  if (x < 0.3) return { toCIDR: [cidr] };
  return { toCIDRSet: [{ cidr, except }] };
}

function addrMatches(p: PeerMatch, addr: string): boolean {
  switch (p.kind) {
    case 'any':
      return true;
    case 'identities':
      return p.ids.includes(2);
    case 'cidr':
      return inCidr(addr, p.cidr) && !p.except.some((e) => inCidr(addr, e));
    default:
      return false;
  }
}

test('random CIDR policies: ipcache identity + compiled map equal the rules, address by address', (t) => {
  let checked = 0;
  for (let seed = 1; seed <= 150; seed++) {
    const r = rng(1000 + seed);
    const objs: unknown[] = [];
    const count = 1 + Math.floor(r() * 4);
    for (let i = 0; i < count; i++) {
      const spec: Record<string, unknown> = { endpointSelector: {} };
      if (r() < 0.8) spec.egress = Array.from({ length: 1 + Math.floor(r() * 2) }, () => ({ ...randomCidrPeer(r), ...(r() < 0.3 ? { toPorts: [{ ports: [{ port: '443', protocol: 'TCP' }] }] } : {}) }));
      if (r() < 0.4) spec.egressDeny = [randomCidrPeer(r)];
      objs.push({ kind: 'CiliumNetworkPolicy', metadata: { name: `c${i}`, namespace: NS }, spec });
    }
    const policies = objs.map((o) => {
      const res = parsePolicy(o);
      if (!res.ok) throw new Error(JSON.stringify(res.problems));
      return res.policy;
    });
    const cidrIds = assignCidrIdentities(policyCidrs(policies), new Map());
    const out = compilePolicy({ policies, endpoints: endpoints.slice(0, 1), identities, cidrIdentities: cidrIds, allowFromHost: false });
    t.deepEqual(out.problems, []);
    const compiled = out.endpoints[0]!;
    for (const addr of ADDRESSES) {
      for (const port of [443, 80]) {
        let allowed = false;
        let denied = false;
        let enforced = false;
        for (const p of policies) {
          for (const rule of p.rules) {
            if (rule.defaultDeny.egress) enforced = true;
            for (const tr of rule.traffic) {
              if (!tr.peers.some((x) => addrMatches(x, addr)) || !tr.ports.some((x) => portMatches(x, 6, port))) continue;
              if (tr.action === 'deny') denied = true;
              else allowed = true;
            }
          }
        }
        const want = denied ? 'deny' : !enforced || allowed ? 'allow' : 'drop';
        const got = datapathVerdict(compiled, 2, ipcacheIdentity(addr, cidrIds), 6, port);
        if (want !== got) {
          t.fail(`seed ${seed}: ${addr}:${port}: rules say ${want}, ipcache+map say ${got}\n${JSON.stringify(objs)}\n${JSON.stringify([...cidrIds])}`);
          return;
        }
        checked++;
      }
    }
  }
  t.true(checked > 2000, `checked ${checked}`);
});

test('the synthetic 500-policy cluster compiles cleanly: sorted, unique keys, keys of their own endpoint', (t) => {
  const inputs = compileInputsFor(syntheticCluster(500));
  t.is(inputs.policies.length, 500);
  t.is(inputs.identities.size, 2000);
  const out = compilePolicy(inputs);
  t.deepEqual(out.problems, []);
  t.is(out.endpoints.length, 100);
  let total = 0;
  for (const ep of out.endpoints) {
    const keys = ep.entries.map(([k]) => `${k.direction}/${k.identity}/${k.proto}/${k.dport}/${k.prefixLen}`);
    t.is(new Set(keys).size, keys.length, `endpoint ${ep.epId} has duplicate keys`);
    const outOfOrder = ep.entries.findIndex(([b], i) => {
      if (i === 0) return false;
      const [a] = ep.entries[i - 1]!;
      return (a.direction - b.direction || a.identity - b.identity || a.proto - b.proto || a.dport - b.dport || a.prefixLen - b.prefixLen) >= 0;
    });
    t.is(outOfOrder, -1, `endpoint ${ep.epId} entries out of order`);
    t.true(ep.entries.every(([k]) => k.epId === ep.epId && k.prefixLen >= 64 && k.prefixLen <= 96));
    if (!ep.ingressEnforced) t.false(ep.entries.some(([k]) => k.direction === 1));
    if (!ep.egressEnforced) t.false(ep.entries.some(([k]) => k.direction === 2));
    total += ep.entries.length;
  }
  t.true(total > 1000, `only ${total} entries`);
  const all = out.endpoints.flatMap((e) => e.entries);
  t.is(packAll(policyKeyCodec, all.map(([k]) => k)).length, total * 16, 'every key packs as struct policy_key');
  t.is(packAll(policyEntryCodec, all.map(([, v]) => v)).length, total * 8, 'every entry packs as struct policy_entry');
  t.true(total < 65536, `${total} entries do not fit the policy map`);
  t.deepEqual(compilePolicy({ ...inputs, policies: [...inputs.policies].reverse() }).endpoints, out.endpoints, 'order of policies does not matter');
});
