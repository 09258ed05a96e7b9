/**
 * compilePolicy, table by table: the Kubernetes NetworkPolicy documentation examples, the
 * Cilium policy examples (L3 by labels, entities, CIDRs with except, port ranges, deny over
 * allow), enforcement and fail-closed rules, CIDR identities, selector semantics, and
 * deterministic output.
 */
import test from 'ava';
import type { SecurityLabels } from '../../ts/identity/labels.js';
import { assignCidrIdentities, compilePolicy, parsePolicy, policyCidrs, type CompileInputs, type EndpointPolicy, type ParsedPolicy, type PolicyEndpoint } from '../../ts/policy/index.js';

// ---- a small cluster -----------------------------------------------------------------------------

function pod(ns: string, labels: Record<string, string>, nsLabels: Record<string, string> = {}): SecurityLabels {
  const out: Record<string, string> = { 'k8s:io.kubernetes.pod.namespace': ns, 'k8s:io.cilium.k8s.policy.cluster': 'default' };
  for (const [k, v] of Object.entries(labels)) out[`k8s:${k}`] = v;
  for (const [k, v] of Object.entries({ 'kubernetes.io/metadata.name': ns, ...nsLabels })) out[`k8s:io.cilium.k8s.namespace.labels.${k}`] = v;
  return out;
}

const ID = { frontend: 1000, db: 1001, myprojectWeb: 1002, prodDb: 1003, backend: 1004, monitoring: 1005 } as const;

const IDENTITIES = new Map<number, SecurityLabels>([
  [ID.frontend, pod('default', { role: 'frontend' })],
  [ID.db, pod('default', { role: 'db' })],
  [ID.myprojectWeb, pod('myproject', { role: 'web' }, { project: 'myproject' })],
  [ID.prodDb, pod('prod', { role: 'db' }, { env: 'prod' })],
  [ID.backend, pod('default', { role: 'backend', tier: 'api' })],
  [ID.monitoring, pod('monitoring', { app: 'prometheus' }, { team: 'ops' })],
]);

const EP = { db: 10, frontend: 11, prodDb: 12, backend: 13 } as const;

const ENDPOINTS: PolicyEndpoint[] = [
  { id: EP.db, identity: ID.db, labels: IDENTITIES.get(ID.db)! },
  { id: EP.frontend, identity: ID.frontend, labels: IDENTITIES.get(ID.frontend)! },
  { id: EP.prodDb, identity: ID.prodDb, labels: IDENTITIES.get(ID.prodDb)! },
  { id: EP.backend, identity: ID.backend, labels: IDENTITIES.get(ID.backend)! },
];

function parse(obj: unknown): ParsedPolicy {
  const r = parsePolicy(obj);
  if (!r.ok) throw new Error(`policy does not parse: ${JSON.stringify(r.problems)}`);
  return r.policy;
}

function compile(objs: unknown[], extra: Partial<CompileInputs> = {}) {
  const policies = objs.map(parse);
  const cidrIdentities = extra.cidrIdentities ?? assignCidrIdentities(policyCidrs(policies), new Map());
  return { ...compilePolicy({ policies, endpoints: ENDPOINTS, identities: IDENTITIES, cidrIdentities, allowFromHost: false, ...extra }), cidrIdentities, policies };
}

const PROTO: Record<number, string> = { 0: 'any', 1: 'icmp', 6: 'tcp', 17: 'udp', 132: 'sctp' };
const ACTION: Record<number, string> = { 1: 'allow', 2: 'deny', 3: 'redirect' };

/** "in 1000 tcp/6379/96 allow": direction, peer identity, proto/port/prefixLen, action. */
function lines(ep: EndpointPolicy | undefined): string[] {
  if (!ep) throw new Error('no such endpoint in the result');
  return ep.entries.map(([k, v]) => `${k.direction === 1 ? 'in' : 'out'} ${k.identity} ${PROTO[k.proto] ?? k.proto}/${k.dport}/${k.prefixLen} ${ACTION[v.action]}`);
}

function ep(result: { endpoints: EndpointPolicy[] }, id: number): EndpointPolicy {
  const e = result.endpoints.find((x) => x.epId === id);
  if (!e) throw new Error(`endpoint ${id} missing`);
  return e;
}

const np = (name: string, spec: unknown, namespace = 'default') => ({ kind: 'NetworkPolicy', metadata: { name, namespace }, spec });
const cnp = (name: string, spec: unknown, namespace = 'default') => ({ kind: 'CiliumNetworkPolicy', metadata: { name, namespace }, spec });
const ccnp = (name: string, spec: unknown) => ({ kind: 'CiliumClusterwideNetworkPolicy', metadata: { name }, spec });

// ---- Kubernetes NetworkPolicy documentation examples ---------------------------------------------

test('k8s docs "test-network-policy": ipBlock with except, namespaceSelector, podSelector, egress to a CIDR', (t) => {
  const r = compile([
    np('test-network-policy', {
      podSelector: { matchLabels: { role: 'db' } },
      policyTypes: ['Ingress', 'Egress'],
      ingress: [
        {
          from: [{ ipBlock: { cidr: '172.17.0.0/16', except: ['172.17.1.0/24'] } }, { namespaceSelector: { matchLabels: { project: 'myproject' } } }, { podSelector: { matchLabels: { role: 'frontend' } } }],
          ports: [{ protocol: 'TCP', port: 6379 }],
        },
      ],
      egress: [{ to: [{ ipBlock: { cidr: '10.0.0.0/24' } }], ports: [{ protocol: 'TCP', port: 5978 }] }],
    }),
  ]);
  const cidr = (c: string) => r.cidrIdentities.get(c)!;
  t.deepEqual(lines(ep(r, EP.db)), [
    `in ${ID.frontend} tcp/6379/96 allow`,
    `in ${ID.myprojectWeb} tcp/6379/96 allow`,
    `in ${cidr('172.17.0.0/16')} tcp/6379/96 allow`,
    `out ${cidr('10.0.0.0/24')} tcp/5978/96 allow`,
  ]);
  t.true(ep(r, EP.db).ingressEnforced && ep(r, EP.db).egressEnforced);
  t.false(lines(ep(r, EP.db)).some((l) => l.includes(String(cidr('172.17.1.0/24')))), 'the except CIDR is not allowed');
  // Pods of other namespaces with role=db are not selected by a policy of "default".
  t.deepEqual(ep(r, EP.prodDb), { epId: EP.prodDb, ingressEnforced: false, egressEnforced: false, entries: [] });
  t.deepEqual(r.problems, []);
});

test('k8s docs "default-deny-ingress": every pod of the namespace enforced, nothing allowed; egress untouched', (t) => {
  const r = compile([np('default-deny-ingress', { podSelector: {}, policyTypes: ['Ingress'] })]);
  for (const id of [EP.db, EP.frontend, EP.backend]) t.deepEqual(ep(r, id), { epId: id, ingressEnforced: true, egressEnforced: false, entries: [] });
  t.false(ep(r, EP.prodDb).ingressEnforced);
});

test('k8s docs "allow-all-ingress": an empty rule allows every peer on every port', (t) => {
  const r = compile([np('allow-all-ingress', { podSelector: {}, ingress: [{}], policyTypes: ['Ingress'] })]);
  t.deepEqual(lines(ep(r, EP.db)), ['in 0 any/0/64 allow']);
});

test('k8s docs "default-deny-all": both directions enforced', (t) => {
  const r = compile([np('default-deny-all', { podSelector: {}, policyTypes: ['Ingress', 'Egress'] })]);
  t.like(ep(r, EP.frontend), { ingressEnforced: true, egressEnforced: true, entries: [] });
});

test('k8s docs endPort example: 32000-32768 becomes aligned prefixes', (t) => {
  const r = compile([
    np('multi-port-egress', { podSelector: { matchLabels: { role: 'db' } }, policyTypes: ['Egress'], egress: [{ to: [{ ipBlock: { cidr: '10.0.0.0/24' } }], ports: [{ protocol: 'TCP', port: 32000, endPort: 32768 }] }] }),
  ]);
  const id = r.cidrIdentities.get('10.0.0.0/24')!;
  // 32000..32255 (256 ports: prefixLen 88), 32256..32767 (512 ports: 87), 32768 (96).
  t.deepEqual(lines(ep(r, EP.db)), [`out ${id} tcp/32000/88 allow`, `out ${id} tcp/32256/87 allow`, `out ${id} tcp/32768/96 allow`]);
});

test('k8s: namespaceSelector AND podSelector in one peer vs. two peers (OR)', (t) => {
  const and = compile([np('and', { podSelector: { matchLabels: { role: 'db' } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'ops' } }, podSelector: { matchLabels: { app: 'prometheus' } } }] }] })]);
  t.deepEqual(lines(ep(and, EP.db)), [`in ${ID.monitoring} any/0/64 allow`]);
  const andMiss = compile([np('and', { podSelector: { matchLabels: { role: 'db' } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'ops' } }, podSelector: { matchLabels: { role: 'frontend' } } }] }] })]);
  t.deepEqual(lines(ep(andMiss, EP.db)), []);
  const or = compile([np('or', { podSelector: { matchLabels: { role: 'db' } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'ops' } } }, { podSelector: { matchLabels: { role: 'frontend' } } }] }] })]);
  t.deepEqual(lines(ep(or, EP.db)), [`in ${ID.frontend} any/0/64 allow`, `in ${ID.monitoring} any/0/64 allow`]);
});

test('k8s: namespaceSelector {} is every namespace; podSelector {} alone is the own namespace', (t) => {
  const all = compile([np('all-ns', { podSelector: { matchLabels: { role: 'db' } }, ingress: [{ from: [{ namespaceSelector: {} }] }] })]);
  t.deepEqual(lines(ep(all, EP.db)).map((l) => Number(l.split(' ')[1])), [...IDENTITIES.keys()].sort());
  const own = compile([np('own-ns', { podSelector: { matchLabels: { role: 'db' } }, ingress: [{ from: [{ podSelector: {} }] }] })]);
  t.deepEqual(lines(ep(own, EP.db)).map((l) => Number(l.split(' ')[1])), [ID.frontend, ID.db, ID.backend]);
});

test('k8s: a named port allows nothing but the endpoint stays enforced (fail closed)', (t) => {
  const r = compile([np('named', { podSelector: { matchLabels: { role: 'db' } }, ingress: [{ ports: [{ port: 'postgres' }] }] })]);
  t.like(ep(r, EP.db), { ingressEnforced: true, entries: [] });
});

test('the local host is allowed into ingress-enforced endpoints unless turned off or explicitly denied', (t) => {
  const policies = [parse(np('deny', { podSelector: { matchLabels: { role: 'db' } }, policyTypes: ['Ingress', 'Egress'] }))];
  const base = { policies, endpoints: ENDPOINTS, identities: IDENTITIES, cidrIdentities: new Map<string, number>() };
  t.deepEqual(lines(ep(compilePolicy(base), EP.db)), ['in 1 any/0/64 allow']);
  t.deepEqual(lines(ep(compilePolicy({ ...base, allowFromHost: false }), EP.db)), []);
  const denyHost = parse(cnp('no-host', { endpointSelector: { matchLabels: { role: 'db' } }, ingressDeny: [{ fromEntities: ['host'] }] }));
  t.deepEqual(lines(ep(compilePolicy({ ...base, policies: [...policies, denyHost] }), EP.db)), ['in 1 any/0/64 deny']);
});

// ---- Cilium examples ----------------------------------------------------------------------------

test('cilium L3 fromEndpoints: same namespace only unless the namespace is named', (t) => {
  const r = compile([
    cnp('l3-rule', { endpointSelector: { matchLabels: { role: 'db' } }, ingress: [{ fromEndpoints: [{ matchLabels: { role: 'frontend' } }] }] }),
    cnp('l3-rule', { endpointSelector: { matchLabels: { role: 'db' } }, ingress: [{ fromEndpoints: [{ matchLabels: { 'k8s:io.kubernetes.pod.namespace': 'myproject' } }] }] }, 'prod'),
  ]);
  t.deepEqual(lines(ep(r, EP.db)), [`in ${ID.frontend} any/0/64 allow`]);
  t.deepEqual(lines(ep(r, EP.prodDb)), [`in ${ID.myprojectWeb} any/0/64 allow`]);
  t.false(ep(r, EP.frontend).ingressEnforced);
});

test('cilium: ingress [{}] is default deny; egress untouched', (t) => {
  const r = compile([cnp('deny-ingress', { endpointSelector: {}, ingress: [{}] })]);
  t.like(ep(r, EP.backend), { ingressEnforced: true, egressEnforced: false, entries: [] });
});

test('cilium entities: world = 2 and 9, cluster = every identity plus in-cluster reserved ones, all = any', (t) => {
  const r = compile([cnp('ents', { endpointSelector: { matchLabels: { role: 'db' } }, egress: [{ toEntities: ['world'] }, { toEntities: ['cluster'], toPorts: [{ ports: [{ port: '53', protocol: 'UDP' }] }] }], ingress: [{ fromEntities: ['all'] }] })]);
  const out = lines(ep(r, EP.db));
  t.true(out.includes('in 0 any/0/64 allow'));
  t.true(out.includes('out 2 any/0/64 allow') && out.includes('out 9 any/0/64 allow'));
  const cluster = out.filter((l) => l.includes('udp/53')).map((l) => Number(l.split(' ')[1]));
  t.deepEqual(cluster, [1, 3, 4, 5, 6, 7, 8, ...[...IDENTITIES.keys()].sort()]);
});

test('cilium CIDR with except: the CIDR and policy CIDRs inside it, minus except CIDRs and CIDRs inside those', (t) => {
  const r = compile([
    cnp('cidr-rule', { endpointSelector: { matchLabels: { role: 'frontend' } }, egress: [{ toCIDRSet: [{ cidr: '10.0.0.0/8', except: ['10.96.0.0/12'] }] }, { toCIDR: ['192.168.1.1/32'] }] }),
    cnp('others', { endpointSelector: { matchLabels: { role: 'nothing' } }, egress: [{ toCIDR: ['10.1.0.0/16', '10.96.1.0/24', '11.0.0.0/8'] }] }),
  ]);
  const c = r.cidrIdentities;
  const ids = lines(ep(r, EP.frontend)).map((l) => Number(l.split(' ')[1]));
  t.deepEqual(ids, [c.get('10.0.0.0/8'), c.get('10.1.0.0/16'), c.get('192.168.1.1/32')].map(Number).sort((a, b) => a - b));
  t.false(ids.includes(c.get('10.96.0.0/12')!));
  t.false(ids.includes(c.get('10.96.1.0/24')!));
  t.false(ids.includes(c.get('11.0.0.0/8')!));
});

test('cilium 0.0.0.0/0 is the world plus every policy CIDR (minus excepts)', (t) => {
  const r = compile([cnp('everything-out', { endpointSelector: { matchLabels: { role: 'frontend' } }, egress: [{ toCIDRSet: [{ cidr: '0.0.0.0/0', except: ['10.0.0.0/8'] }] }, { toCIDR: ['1.1.1.1/32'] }] })]);
  const ids = lines(ep(r, EP.frontend)).map((l) => Number(l.split(' ')[1]));
  t.deepEqual(ids, [2, 9, r.cidrIdentities.get('1.1.1.1/32')!]);
  t.false(r.cidrIdentities.has('0.0.0.0/0'));
});

test('the world entity keeps addresses that a policy CIDR gives a CIDR identity', (t) => {
  const r = compile([
    cnp('to-world', { endpointSelector: { matchLabels: { role: 'frontend' } }, egress: [{ toEntities: ['world'] }] }),
    cnp('names-a-cidr', { endpointSelector: { matchLabels: { role: 'db' } }, egress: [{ toCIDR: ['1.1.1.1/32'] }] }),
  ]);
  t.deepEqual(lines(ep(r, EP.frontend)).map((l) => Number(l.split(' ')[1])), [2, 9, r.cidrIdentities.get('1.1.1.1/32')!]);
});

test('cilium toPorts ranges, ANY protocol, ICMP types', (t) => {
  const r = compile([
    cnp('ports', {
      endpointSelector: { matchLabels: { role: 'backend' } },
      ingress: [
        { fromEndpoints: [{ matchLabels: { role: 'frontend' } }], toPorts: [{ ports: [{ port: '8080', endPort: 8083, protocol: 'TCP' }, { port: '9000' }] }] },
        { fromEndpoints: [{ matchLabels: { role: 'frontend' } }], icmps: [{ fields: [{ type: 'EchoRequest' }] }] },
      ],
    }),
  ]);
  t.deepEqual(lines(ep(r, EP.backend)), [`in ${ID.frontend} icmp/8/96 allow`, `in ${ID.frontend} tcp/8080/94 allow`, `in ${ID.frontend} tcp/9000/96 allow`, `in ${ID.frontend} udp/9000/96 allow`, `in ${ID.frontend} sctp/9000/96 allow`].sort((a, b) => {
    const key = (l: string) => [['icmp', 1], ['tcp', 6], ['udp', 17], ['sctp', 132]].find(([n]) => l.includes(` ${n}/`))![1] as number;
    return key(a) - key(b) || Number(a.split('/')[1]) - Number(b.split('/')[1]);
  }));
});

test('cilium ingressDeny overrides an allow: deny entries, and the allow-all stays for others', (t) => {
  const r = compile([
    cnp('allow-all', { endpointSelector: { matchLabels: { role: 'db' } }, ingress: [{ fromEntities: ['all'] }] }),
    cnp('deny-frontend-5432', { endpointSelector: { matchLabels: { role: 'db' } }, ingressDeny: [{ fromEndpoints: [{ matchLabels: { role: 'frontend' } }], toPorts: [{ ports: [{ port: '5432', protocol: 'TCP' }] }] }] }),
  ]);
  t.deepEqual(lines(ep(r, EP.db)), ['in 0 any/0/64 allow', `in ${ID.frontend} tcp/5432/96 deny`]);
});

test('a deny covering a more specific allow of the same identity is written into the allow keys', (t) => {
  const r = compile([
    cnp('allow', {
      endpointSelector: { matchLabels: { role: 'db' } },
      ingress: [{ fromEndpoints: [{ matchLabels: { role: 'frontend' } }], toPorts: [{ ports: [{ port: '5000', endPort: 5003, protocol: 'TCP' }, { port: '53', protocol: 'UDP' }] }] }],
    }),
    cnp('deny-tcp', { endpointSelector: { matchLabels: { role: 'db' } }, ingressDeny: [{ fromEndpoints: [{ matchLabels: { role: 'frontend' } }], toPorts: [{ ports: [{ port: '0', protocol: 'TCP' }] }] }] }),
  ]);
  t.deepEqual(lines(ep(r, EP.db)), [`in ${ID.frontend} tcp/0/80 deny`, `in ${ID.frontend} tcp/5000/94 deny`, `in ${ID.frontend} udp/53/96 allow`]);
  const denyCookie = r.policies[1]!.cookie;
  const tcpEntries = ep(r, EP.db).entries.filter(([k]) => k.proto === 6);
  t.true(tcpEntries.every(([, v]) => v.cookie === denyCookie), 'the copied deny names the deny policy');
});

test('a deny of every port of a peer covers all of its allows; a deny of one port splits nothing else', (t) => {
  const r = compile([
    cnp('allow', { endpointSelector: { matchLabels: { role: 'db' } }, ingress: [{ fromEndpoints: [{ matchLabels: { role: 'frontend' } }], toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }, { port: '443', protocol: 'TCP' }] }] }] }),
    cnp('deny-all-from-frontend', { endpointSelector: { matchLabels: { role: 'db' } }, ingressDeny: [{ fromEndpoints: [{ matchLabels: { role: 'frontend' } }] }] }),
  ]);
  t.deepEqual(lines(ep(r, EP.db)), [`in ${ID.frontend} any/0/64 deny`, `in ${ID.frontend} tcp/80/96 deny`, `in ${ID.frontend} tcp/443/96 deny`]);
  const r2 = compile([
    cnp('allow', { endpointSelector: { matchLabels: { role: 'db' } }, ingress: [{ fromEndpoints: [{ matchLabels: { role: 'frontend' } }], toPorts: [{ ports: [{ port: '80', endPort: 81, protocol: 'TCP' }] }] }] }),
    cnp('deny-81', { endpointSelector: { matchLabels: { role: 'db' } }, ingressDeny: [{ fromEndpoints: [{ matchLabels: { role: 'frontend' } }], toPorts: [{ ports: [{ port: '81', protocol: 'TCP' }] }] }] }),
  ]);
  t.deepEqual(lines(ep(r2, EP.db)), [`in ${ID.frontend} tcp/80/95 allow`, `in ${ID.frontend} tcp/81/96 deny`]);
});

test('allow and deny on the same key: the deny wins whatever the order', (t) => {
  const a = np('allow-frontend', { podSelector: { matchLabels: { role: 'db' } }, ingress: [{ from: [{ podSelector: { matchLabels: { role: 'frontend' } } }], ports: [{ port: 5432 }] }] });
  const d = cnp('deny-frontend', { endpointSelector: { matchLabels: { role: 'db' } }, ingressDeny: [{ fromEndpoints: [{ matchLabels: { role: 'frontend' } }], toPorts: [{ ports: [{ port: '5432', protocol: 'TCP' }] }] }] });
  const one = compile([a, d]);
  const two = compile([d, a]);
  t.deepEqual(lines(ep(one, EP.db)), [`in ${ID.frontend} tcp/5432/96 deny`]);
  t.deepEqual(one.endpoints, two.endpoints);
});

test('a deny-only policy without default deny enforces with an allow-all so only the deny bites', (t) => {
  const r = compile([cnp('deny-world', { endpointSelector: { matchLabels: { role: 'db' } }, egressDeny: [{ toEntities: ['world'] }], enableDefaultDeny: { egress: false } })]);
  t.like(ep(r, EP.db), { egressEnforced: true, ingressEnforced: false });
  t.deepEqual(lines(ep(r, EP.db)), ['out 0 any/0/64 allow', 'out 2 any/0/64 deny', 'out 9 any/0/64 deny']);
  const onlyAllow = compile([cnp('allow-no-default', { endpointSelector: { matchLabels: { role: 'db' } }, egress: [{ toEntities: ['world'] }], enableDefaultDeny: { egress: false } })]);
  t.deepEqual(ep(onlyAllow, EP.db), { epId: EP.db, ingressEnforced: false, egressEnforced: false, entries: [] });
});

test('cilium reserved selectors match reserved identities; {} never means the world', (t) => {
  const r = compile([
    cnp('from-host', { endpointSelector: { matchLabels: { role: 'db' } }, ingress: [{ fromEndpoints: [{ matchLabels: { 'reserved:host': '' } }] }] }),
    ccnp('from-everyone-managed', { endpointSelector: { matchLabels: { role: 'backend' } }, ingress: [{ fromEndpoints: [{}] }] }),
  ]);
  t.deepEqual(lines(ep(r, EP.db)), ['in 1 any/0/64 allow']);
  const fromAll = lines(ep(r, EP.backend)).map((l) => Number(l.split(' ')[1]));
  t.deepEqual(fromAll, [...IDENTITIES.keys()].sort());
});

test('CCNP selects across namespaces; "any:" and source-less keys match k8s labels', (t) => {
  const r = compile([ccnp('all-db', { endpointSelector: { matchLabels: { 'any:role': 'db' } }, egress: [{ toEndpoints: [{ matchLabels: { 'k8s:app': 'prometheus' } }] }] })]);
  for (const id of [EP.db, EP.prodDb]) t.deepEqual(lines(ep(r, id)), [`out ${ID.monitoring} any/0/64 allow`]);
  t.false(ep(r, EP.frontend).egressEnforced);
});

test('selector operators: NotIn holds when the label is absent; DoesNotExist; Exists', (t) => {
  const sel = (expr: unknown) => compile([ccnp('x', { endpointSelector: { matchLabels: { role: 'db', 'k8s:io.kubernetes.pod.namespace': 'default' } }, ingress: [{ fromEndpoints: [{ matchExpressions: [expr] }] }] })]);
  const from = (r: ReturnType<typeof compile>) => lines(ep(r, EP.db)).map((l) => Number(l.split(' ')[1]));
  t.deepEqual(from(sel({ key: 'role', operator: 'NotIn', values: ['db', 'frontend'] })), [ID.myprojectWeb, ID.backend, ID.monitoring]);
  t.deepEqual(from(sel({ key: 'tier', operator: 'Exists' })), [ID.backend]);
  t.deepEqual(from(sel({ key: 'role', operator: 'DoesNotExist' })), [ID.monitoring]);
  t.deepEqual(from(sel({ key: 'k8s:io.kubernetes.pod.namespace', operator: 'In', values: ['prod', 'monitoring'] })), [ID.prodDb, ID.monitoring]);
});

test('a policy with errors applied as its partial: enforced, nothing allowed by it', (t) => {
  const r = parsePolicy(np('broken', { podSelector: { matchLabels: { role: 'db' } }, ingress: [{ from: [{ ipBlock: { cidr: 'nope' } }] }] }));
  t.false(r.ok);
  if (r.ok) return;
  const out = compilePolicy({ policies: [r.partial!], endpoints: ENDPOINTS, identities: IDENTITIES, cidrIdentities: new Map(), allowFromHost: false });
  t.like(ep(out, EP.db), { ingressEnforced: true, egressEnforced: false, entries: [] });
  t.like(ep(out, EP.frontend), { ingressEnforced: false });
});

test('CIDRs without a CIDR identity are reported; an allow never falls back to something wider', (t) => {
  const allow = compile([cnp('c', { endpointSelector: { matchLabels: { role: 'db' } }, egress: [{ toCIDRSet: [{ cidr: '10.0.0.0/8', except: ['10.1.0.0/16'] }] }] })], { cidrIdentities: new Map([['10.0.0.0/8', 16777300]]) });
  t.deepEqual(lines(ep(allow, EP.db)), []);
  t.like(allow.problems[0], { severity: 'error', field: 'spec.egress[0] (peer 1)' });
  t.regex(allow.problems[0]!.message, /10\.1\.0\.0\/16/);
  const deny = compile([cnp('d', { endpointSelector: { matchLabels: { role: 'db' } }, egressDeny: [{ toCIDR: ['10.0.0.0/8'] }] })], { cidrIdentities: new Map() });
  t.like(deny.problems[0], { severity: 'error' });
  t.regex(deny.problems[0]!.message, /not denied/);
});

test('output is sorted, deduplicated and independent of input order', (t) => {
  const objs = [
    np('a', { podSelector: {}, ingress: [{ from: [{ podSelector: { matchLabels: { role: 'frontend' } } }], ports: [{ port: 80 }] }] }),
    np('b', { podSelector: {}, ingress: [{ from: [{ podSelector: { matchLabels: { role: 'frontend' } } }], ports: [{ port: 80 }, { port: 80 }] }] }),
    cnp('c', { endpointSelector: {}, egress: [{ toEntities: ['world', 'world'] }] }),
  ];
  const one = compile(objs);
  const two = compile([...objs].reverse());
  t.deepEqual(one.endpoints, two.endpoints);
  t.deepEqual(one.endpoints.map((e) => e.epId), [10, 11, 12, 13]);
  const db = ep(one, EP.db);
  t.deepEqual(lines(db), [`in ${ID.frontend} tcp/80/96 allow`, 'out 2 any/0/64 allow', 'out 9 any/0/64 allow']);
  const cookies = new Set(one.policies.slice(0, 2).map((p) => p.cookie));
  t.true(cookies.has(db.entries[0]![1].cookie!), 'one of the two policies names the shared entry');
  t.is(db.entries[0]![1].cookie, Math.min(...cookies));
});

test('bad compile inputs are refused with the reason', (t) => {
  const base = { policies: [], identities: IDENTITIES, cidrIdentities: new Map<string, number>() };
  t.throws(() => compilePolicy({ ...base, endpoints: [{ id: 0, identity: 1, labels: {} }] }), { message: /endpoint id 0/ });
  t.throws(() => compilePolicy({ ...base, endpoints: [ENDPOINTS[0]!, ENDPOINTS[0]!] }), { message: /appears twice/ });
  t.throws(() => compilePolicy({ ...base, endpoints: [], cidrIdentities: new Map([['10.0.0.0/40', 16777217]]) }), { message: /cidrIdentities/ });
});
