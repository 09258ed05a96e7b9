/**
 * parsePolicy: normalisation of the three kinds, and every kind of malformed input reported
 * with the policy and the field path, fail-closed partial policies, and warnings for what is
 * not supported yet.
 */
import test from 'ava';
import { parsePolicy, type ParsedPolicy, type PolicyKind, type PolicyProblem } from '../../ts/policy/index.js';

const np = (spec: unknown, meta: Record<string, unknown> = { name: 'p', namespace: 'default' }) => ({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: meta, spec });
const cnp = (spec: unknown, meta: Record<string, unknown> = { name: 'c', namespace: 'default' }) => ({ apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: meta, spec });
const ccnp = (spec: unknown) => ({ apiVersion: 'cilium.io/v2', kind: 'CiliumClusterwideNetworkPolicy', metadata: { name: 'cc' }, spec });

function problemsOf(obj: unknown): PolicyProblem[] {
  const r = parsePolicy(obj);
  return r.ok ? r.warnings : r.problems;
}

function parsed(obj: unknown): ParsedPolicy {
  const r = parsePolicy(obj);
  if (!r.ok) throw new Error(`unexpected problems: ${JSON.stringify(r.problems)}`);
  return r.policy;
}

// ---- malformed input: [what, object, field, message] ------------------------------------------

const malformed: Array<[string, unknown, string, RegExp]> = [
  ['not an object', 'hello', '', /must be an object/],
  ['an array', [], '', /must be an object/],
  ['unknown kind', { kind: 'Pod', metadata: { name: 'x', namespace: 'd' }, spec: {} }, 'kind', /unknown policy kind/],
  ['missing metadata', { kind: 'NetworkPolicy', spec: { podSelector: {} } }, 'metadata', /must be an object/],
  ['missing name', np({ podSelector: {} }, { namespace: 'default' }), 'metadata.name', /required/],
  ['bad name', np({ podSelector: {} }, { name: 'Bad_Name', namespace: 'default' }), 'metadata.name', /DNS subdomain/],
  ['missing namespace', np({ podSelector: {} }, { name: 'p' }), 'metadata.namespace', /required/],
  ['missing spec', { kind: 'NetworkPolicy', metadata: { name: 'p', namespace: 'd' } }, 'spec', /must be an object/],
  ['missing podSelector', np({ ingress: [] }), 'spec.podSelector', /required/],
  ['bad selector operator', np({ podSelector: { matchExpressions: [{ key: 'app', operator: 'Equals', values: ['x'] }] } }), 'spec.podSelector.matchExpressions[0].operator', /unknown operator "Equals"/],
  ['In without values', np({ podSelector: { matchExpressions: [{ key: 'app', operator: 'In' }] } }), 'spec.podSelector.matchExpressions[0].values', /at least one value/],
  ['Exists with values', np({ podSelector: { matchExpressions: [{ key: 'app', operator: 'Exists', values: ['a'] }] } }), 'spec.podSelector.matchExpressions[0].values', /takes no values/],
  ['bad label key', np({ podSelector: { matchLabels: { 'bad key': 'x' } } }), 'spec.podSelector.matchLabels["bad key"]', /invalid name/],
  ['bad label value', np({ podSelector: { matchLabels: { app: 'a b' } } }), 'spec.podSelector.matchLabels["app"]', /invalid/],
  ['unknown selector field', np({ podSelector: { matchLabel: { app: 'x' } } }), 'spec.podSelector.matchLabel', /unknown selector field/],
  ['bad policy type', np({ podSelector: {}, policyTypes: ['Inbound'] }), 'spec.policyTypes[0]', /unknown policy type/],
  ['ingress not a list', np({ podSelector: {}, ingress: {} }), 'spec.ingress', /must be a list/],
  ['port out of range', np({ podSelector: {}, ingress: [{ ports: [{ port: 80 }, { port: 70000 }] }] }), 'spec.ingress[0].ports[1].port', /1\.\.65535/],
  ['port zero', np({ podSelector: {}, ingress: [{ ports: [{ port: 0 }] }] }), 'spec.ingress[0].ports[0].port', /1\.\.65535/],
  ['endPort below port', np({ podSelector: {}, ingress: [{ ports: [{ port: 80 }, { port: 32000, endPort: 31000 }] }] }), 'spec.ingress[0].ports[1].endPort', /below port 32000/],
  ['endPort without port', np({ podSelector: {}, ingress: [{ ports: [{ endPort: 90 }] }] }), 'spec.ingress[0].ports[0].endPort', /needs a numeric port/],
  ['endPort with a named port', np({ podSelector: {}, ingress: [{ ports: [{ port: 'http', endPort: 90 }] }] }), 'spec.ingress[0].ports[0].endPort', /named port/],
  ['unknown protocol', np({ podSelector: {}, egress: [{ ports: [{ protocol: 'ICMP', port: 8 }] }] }), 'spec.egress[0].ports[0].protocol', /unknown protocol "ICMP": use TCP, UDP or SCTP/],
  ['bad CIDR', np({ podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.300/8' } }] }] }), 'spec.ingress[0].from[0].ipBlock.cidr', /invalid IPv4 address/],
  ['CIDR without length', np({ podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.1' } }] }] }), 'spec.ingress[0].from[0].ipBlock.cidr', /a\.b\.c\.d\/n/],
  ['except outside cidr', np({ podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/16', except: ['10.1.0.0/24'] } }] }] }), 'spec.ingress[0].from[0].ipBlock.except[0]', /not inside 10\.0\.0\.0\/16/],
  ['ipBlock with podSelector', np({ podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.0.0.0/8' }, podSelector: {} }] }] }), 'spec.ingress[0].from[0]', /cannot be combined/],
  ['empty peer', np({ podSelector: {}, ingress: [{ from: [{}] }] }), 'spec.ingress[0].from[0]', /needs podSelector, namespaceSelector or ipBlock/],
  ['unknown rule field', np({ podSelector: {}, ingress: [{ form: [] }] }), 'spec.ingress[0].form', /unknown field "form"/],
  ['CNP without selector', cnp({ ingress: [{}] }), 'spec.endpointSelector', /required/],
  ['CNP without spec', { kind: 'CiliumNetworkPolicy', metadata: { name: 'c', namespace: 'd' } }, 'spec', /needs spec \(one rule\) or specs/],
  ['CNP unknown entity', cnp({ endpointSelector: {}, ingress: [{ fromEntities: ['world', 'internet'] }] }), 'spec.ingress[0].fromEntities[1]', /unknown entity "internet"/],
  ['CNP bad selector source', cnp({ endpointSelector: { matchLabels: { 'K8S:app': 'x' } }, ingress: [] }), 'spec.endpointSelector.matchLabels["K8S:app"]', /invalid source/],
  ['CNP unknown protocol', cnp({ endpointSelector: {}, egress: [{ toPorts: [{ ports: [{ port: '53', protocol: 'DNS' }] }] }] }), 'spec.egress[0].toPorts[0].ports[0].protocol', /unknown protocol "DNS"/],
  ['CNP port out of range', cnp({ endpointSelector: {}, egress: [{ toPorts: [{ ports: [{ port: '65536' }] }] }] }), 'spec.egress[0].toPorts[0].ports[0].port', /not a port/],
  ['CNP endPort below port', cnp({ endpointSelector: {}, ingress: [{ toPorts: [{ ports: [{ port: '8080', endPort: 80, protocol: 'TCP' }] }] }] }), 'spec.ingress[0].toPorts[0].ports[0].endPort', /below port 8080/],
  ['CNP bad CIDR', cnp({ endpointSelector: {}, egress: [{ toCIDR: ['10.0.0.0/40'] }] }), 'spec.egress[0].toCIDR[0]', /prefix length/],
  ['CNP bad except', cnp({ endpointSelector: {}, egress: [{ toCIDRSet: [{ cidr: '10.0.0.0/8', except: ['192.168.0.0/16'] }] }] }), 'spec.egress[0].toCIDRSet[0].except[0]', /not inside/],
  ['CNP ICMP type out of range', cnp({ endpointSelector: {}, ingress: [{ icmps: [{ fields: [{ type: 300 }] }] }] }), 'spec.ingress[0].icmps[0].fields[0].type', /0\.\.255/],
  ['CNP unknown rule field', cnp({ endpointSelector: {}, ingress: [{ fromEndpoint: [{}] }] }), 'spec.ingress[0].fromEndpoint', /unknown ingress rule field/],
  ['CNP L7 in a deny', cnp({ endpointSelector: {}, ingressDeny: [{ toPorts: [{ ports: [{ port: '80' }], rules: { http: [{ method: 'GET' }] } }] }] }), 'spec.ingressDeny[0].toPorts[0].rules', /not allowed in a deny/],
  ['CNP FQDN in a deny', cnp({ endpointSelector: {}, egressDeny: [{ toFQDNs: [{ matchName: 'x.com' }] }] }), 'spec.egressDeny[0].toFQDNs', /cannot leave it out/],
  ['CNP named port in a deny', cnp({ endpointSelector: {}, egressDeny: [{ toPorts: [{ ports: [{ port: 'http' }] }] }] }), 'spec.egressDeny[0].toPorts[0].ports[0].port', /named port/],
  ['CNP specs not a list', { kind: 'CiliumNetworkPolicy', metadata: { name: 'c', namespace: 'd' }, specs: {} }, 'specs', /must be a list/],
  ['CNP nodeSelector', cnp({ nodeSelector: {}, ingress: [] }), 'spec.nodeSelector', /only allowed in a CiliumClusterwideNetworkPolicy/],
  ['CNP enableDefaultDeny not boolean', cnp({ endpointSelector: {}, ingress: [], enableDefaultDeny: { ingress: 'no' } }), 'spec.enableDefaultDeny.ingress', /true or false/],
];

for (const [what, obj, field, message] of malformed) {
  test(`malformed: ${what} -> an error at "${field}"`, (t) => {
    const r = parsePolicy(obj);
    t.false(r.ok);
    if (r.ok) return;
    const hit = r.problems.find((p) => p.field === field && p.severity === 'error');
    t.truthy(hit, `expected an error at ${field}, got ${JSON.stringify(r.problems)}`);
    t.regex(hit!.message, message);
  });
}

test('problems name the policy they are about', (t) => {
  const r = parsePolicy(np({ podSelector: {}, ingress: [{ ports: [{ port: 70000 }] }] }, { name: 'web', namespace: 'shop' }));
  t.false(r.ok);
  if (r.ok) return;
  t.deepEqual(r.problems[0]!.policy, { kind: 'NetworkPolicy', namespace: 'shop', name: 'web' });
});

test('list items without kind take the expected kind; a different kind is refused', (t) => {
  const item = { metadata: { name: 'c', namespace: 'd' }, spec: { endpointSelector: {}, ingress: [] } };
  const r = parsePolicy(item, 'CiliumNetworkPolicy');
  t.true(r.ok);
  t.is(r.ok && r.policy.source.kind, 'CiliumNetworkPolicy');
  t.deepEqual(r.ok && r.warnings, []);
  const wrong = parsePolicy({ ...item, kind: 'NetworkPolicy' }, 'CiliumNetworkPolicy');
  t.false(wrong.ok);
  t.regex(!wrong.ok ? wrong.problems[0]!.message : '', /a CiliumNetworkPolicy was expected/);
});

const shapes: Array<[string, unknown, PolicyKind]> = [
  ['podSelector', { metadata: { name: 'n', namespace: 'd' }, spec: { podSelector: {} } }, 'NetworkPolicy'],
  ['endpointSelector with a namespace', { metadata: { name: 'c', namespace: 'd' }, spec: { endpointSelector: {}, ingress: [] } }, 'CiliumNetworkPolicy'],
  ['specs without a namespace', { metadata: { name: 'cc' }, specs: [{ endpointSelector: {}, egress: [] }] }, 'CiliumClusterwideNetworkPolicy'],
];

for (const [what, obj, kind] of shapes) {
  test(`an object without kind and no expected kind is read by its shape (${what}) with a warning`, (t) => {
    const r = parsePolicy(obj);
    t.true(r.ok);
    if (!r.ok) return;
    t.is(r.policy.source.kind, kind);
    t.like(r.warnings[0], { field: 'kind', severity: 'warning' });
    t.regex(r.warnings[0]!.message, /pass the kind you watched/);
  });
}

test('an object without kind whose shape does not tell is refused', (t) => {
  const r = parsePolicy({ metadata: { name: 'x', namespace: 'd' }, spec: { ingress: [] } });
  t.false(r.ok);
  t.like(!r.ok && r.problems[0], { field: 'kind', severity: 'error' });
});

test('a policy with errors keeps its subjects and directions but no traffic (fail closed)', (t) => {
  const r = parsePolicy(np({ podSelector: { matchLabels: { app: 'db' } }, policyTypes: ['Ingress', 'Egress'], ingress: [{ ports: [{ port: 80 }, { port: 99999 }] }], egress: [{}] }));
  t.false(r.ok);
  if (r.ok) return;
  t.truthy(r.partial);
  t.false(r.partial!.complete);
  t.is(r.partial!.rules.length, 1);
  t.deepEqual(r.partial!.rules[0]!.defaultDeny, { ingress: true, egress: true });
  t.deepEqual(r.partial!.rules[0]!.traffic, []);
});

test('a policy whose endpoint selector does not parse has no partial (skipped)', (t) => {
  const r = parsePolicy(cnp({ endpointSelector: { matchExpressions: [{ key: 'app', operator: 'Like' }] }, ingress: [{}] }));
  t.false(r.ok);
  t.is(!r.ok && r.partial, undefined);
});

test('a multi-rule CNP with one bad selector keeps the rules whose selectors parsed, without traffic', (t) => {
  const r = parsePolicy({
    kind: 'CiliumNetworkPolicy',
    metadata: { name: 'c', namespace: 'd' },
    specs: [
      { endpointSelector: { matchLabels: { app: 'a' } }, egress: [{ toEntities: ['world'] }] },
      { endpointSelector: { matchExpressions: [{ key: 'x', operator: 'Nope' }] }, ingress: [] },
    ],
  });
  t.false(r.ok);
  if (r.ok) return;
  t.is(r.partial?.rules.length, 1);
  t.deepEqual(r.partial?.rules[0]?.defaultDeny, { ingress: false, egress: true });
  t.deepEqual(r.partial?.rules[0]?.traffic, []);
  t.true(r.problems.some((p) => p.field === 'specs[1].endpointSelector.matchExpressions[0].operator'));
});

// ---- normalisation and defaults ---------------------------------------------------------------

test('NetworkPolicy policyTypes default to Ingress, plus Egress when egress has rules', (t) => {
  t.deepEqual(parsed(np({ podSelector: {} })).rules[0]!.defaultDeny, { ingress: true, egress: false });
  t.deepEqual(parsed(np({ podSelector: {}, egress: [{}] })).rules[0]!.defaultDeny, { ingress: true, egress: true });
  t.deepEqual(parsed(np({ podSelector: {}, policyTypes: ['Egress'] })).rules[0]!.defaultDeny, { ingress: false, egress: true });
});

test('NetworkPolicy rules of a direction missing from policyTypes are ignored with a warning', (t) => {
  const r = parsePolicy(np({ podSelector: {}, policyTypes: ['Egress'], ingress: [{}] }));
  t.true(r.ok);
  if (!r.ok) return;
  t.is(r.policy.rules[0]!.traffic.length, 0);
  t.is(r.warnings[0]!.field, 'spec.ingress');
});

test('NetworkPolicy subject and same-namespace peers are confined to the namespace; namespaceSelector {} is every namespace', (t) => {
  const p = parsed(np({ podSelector: { matchLabels: { app: 'db' } }, ingress: [{ from: [{ podSelector: { matchLabels: { app: 'web' } } }, { namespaceSelector: {} }] }] }, { name: 'p', namespace: 'shop' }));
  const rule = p.rules[0]!;
  t.true(rule.subject.requirements.some((r) => r.key === 'io.kubernetes.pod.namespace' && r.values[0] === 'shop'));
  const [pod, ns] = rule.traffic[0]!.peers;
  t.deepEqual(pod, {
    kind: 'selector',
    selector: {
      requirements: [
        { source: 'k8s', key: 'app', operator: 'In', values: ['web'] },
        { source: 'k8s', key: 'io.kubernetes.pod.namespace', operator: 'In', values: ['shop'] },
      ].sort((a, b) => (a.key < b.key ? -1 : 1)),
    },
  });
  t.deepEqual(ns, { kind: 'selector', selector: { requirements: [{ source: 'k8s', key: 'io.kubernetes.pod.namespace', operator: 'Exists', values: [] }] } });
});

test('NetworkPolicy ports: TCP by default, ranges with endPort, no ports = every protocol and port', (t) => {
  const p = parsed(np({ podSelector: {}, ingress: [{ ports: [{ port: 53, protocol: 'UDP' }, { port: 32000, endPort: 32768 }, { protocol: 'SCTP' }] }, {}] }));
  t.deepEqual(p.rules[0]!.traffic[0]!.ports, [
    { proto: 17, low: 53, high: 53 },
    { proto: 6, low: 32000, high: 32768 },
    { proto: 132, low: 0, high: 65535 },
  ]);
  t.deepEqual(p.rules[0]!.traffic[1]!.ports, [{ proto: null, low: 0, high: 65535 }]);
  t.deepEqual(p.rules[0]!.traffic[1]!.peers, [{ kind: 'any' }]);
});

test('named ports are a warning and allow nothing (the rule never widens to every port)', (t) => {
  const r = parsePolicy(np({ podSelector: {}, ingress: [{ ports: [{ port: 'http' }] }, { ports: [{ port: 'metrics' }, { port: 9090 }] }] }));
  t.true(r.ok);
  if (!r.ok) return;
  t.deepEqual(r.warnings.map((w) => w.field), ['spec.ingress[0].ports[0].port', 'spec.ingress[1].ports[0].port']);
  t.true(r.warnings.every((w) => w.severity === 'warning' && /named port/.test(w.message)));
  t.deepEqual(r.policy.rules[0]!.traffic[0]!.ports, []);
  t.deepEqual(r.policy.rules[0]!.traffic[1]!.ports, [{ proto: 6, low: 9090, high: 9090 }]);
});

test('ipBlock CIDRs with host bits are normalised with a warning', (t) => {
  const r = parsePolicy(np({ podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '10.1.2.3/16', except: ['10.1.2.0/24'] } }] }] }));
  t.true(r.ok);
  if (!r.ok) return;
  t.deepEqual(r.policy.rules[0]!.traffic[0]!.peers, [{ kind: 'cidr', cidr: '10.1.0.0/16', except: ['10.1.2.0/24'] }]);
  t.is(r.warnings[0]!.field, 'spec.ingress[0].from[0].ipBlock.cidr');
});

test('IPv6 ipBlocks are a warning and left out of the allow', (t) => {
  const r = parsePolicy(np({ podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '2001:db8::/64' } }] }] }));
  t.true(r.ok);
  if (!r.ok) return;
  t.deepEqual(r.policy.rules[0]!.traffic[0]!.peers, []);
  t.regex(r.warnings[0]!.message, /IPv6/);
});

test('CNP: subject always in the namespace; peers too unless they name the namespace or a reserved label', (t) => {
  const p = parsed(
    cnp({
      endpointSelector: { matchLabels: { app: 'db' } },
      ingress: [{ fromEndpoints: [{ matchLabels: { 'k8s:app': 'web' } }, { matchLabels: { 'k8s:io.kubernetes.pod.namespace': 'other', app: 'x' } }, { matchLabels: { 'reserved:host': '' } }, {}] }],
    }),
  );
  const ns = (sel: { requirements: readonly { key: string; values: readonly string[] }[] }) => sel.requirements.filter((r) => r.key === 'io.kubernetes.pod.namespace').map((r) => r.values.join());
  t.deepEqual(ns(p.rules[0]!.subject), ['default']);
  const peers = p.rules[0]!.traffic[0]!.peers.map((x) => (x.kind === 'selector' ? ns(x.selector) : null));
  t.deepEqual(peers, [['default'], ['other'], [], ['default']]);
  const any = p.rules[0]!.subject.requirements.find((r) => r.key === 'app');
  t.is(any?.source, null, 'a key without source matches any source');
});

test('CCNP selectors are not confined to a namespace', (t) => {
  const p = parsed(ccnp({ endpointSelector: {}, ingress: [{ fromEndpoints: [{ matchLabels: { app: 'web' } }] }] }));
  t.deepEqual(p.rules[0]!.subject.requirements, []);
  t.is(p.source.namespace, undefined);
  const peer = p.rules[0]!.traffic[0]!.peers[0]!;
  t.true(peer.kind === 'selector' && peer.selector.requirements.length === 1);
});

test('CNP sections: empty ones enforce; `- {}` allows nothing; toPorts alone is every peer; empty fromEndpoints selects nothing', (t) => {
  const p = parsed(cnp({ endpointSelector: {}, ingress: [{}, { toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }] }] }, { fromEndpoints: [] }], egress: [] }));
  const rule = p.rules[0]!;
  t.deepEqual(rule.defaultDeny, { ingress: true, egress: true });
  t.deepEqual(rule.traffic.map((x) => x.peers), [[], [{ kind: 'any' }], []]);
});

test('CNP enableDefaultDeny false: the section adds rules without enforcing', (t) => {
  const p = parsed(cnp({ endpointSelector: {}, ingressDeny: [{ fromEntities: ['world'] }], enableDefaultDeny: { ingress: false } }));
  t.deepEqual(p.rules[0]!.defaultDeny, { ingress: false, egress: false });
  t.is(p.rules[0]!.traffic[0]!.action, 'deny');
});

test('CNP toPorts: ANY with a port is TCP+UDP+SCTP; port 0 is every port; ICMP port is the type; icmps by number and name', (t) => {
  const p = parsed(
    cnp({
      endpointSelector: {},
      egress: [
        { toPorts: [{ ports: [{ port: '53' }] }] },
        { toPorts: [{ ports: [{ port: '0', protocol: 'ANY' }] }] },
        { toPorts: [{ ports: [{ port: '0', protocol: 'UDP' }, { port: 8, protocol: 'ICMP' }] }] },
        { icmps: [{ fields: [{ type: 8 }, { type: 'EchoReply', family: 'IPv4' }, { type: 'EchoRequest', family: 'IPv6' }] }] },
      ],
    }),
  );
  const ports = p.rules[0]!.traffic.map((x) => x.ports);
  t.deepEqual(ports[0], [6, 17, 132].map((proto) => ({ proto, low: 53, high: 53 })));
  t.deepEqual(ports[1], [{ proto: null, low: 0, high: 65535 }]);
  t.deepEqual(ports[2], [{ proto: 17, low: 0, high: 65535 }, { proto: 1, low: 8, high: 8 }]);
  t.deepEqual(ports[3], [{ proto: 1, low: 8, high: 8 }, { proto: 1, low: 0, high: 0 }]);
});

test('CNP entities become reserved identities; cluster and all are special', (t) => {
  const p = parsed(cnp({ endpointSelector: {}, egress: [{ toEntities: ['world', 'host', 'kube-apiserver', 'cluster', 'all', 'none'] }] }));
  t.deepEqual(p.rules[0]!.traffic[0]!.peers, [
    { kind: 'identities', ids: [2, 9] },
    { kind: 'identities', ids: [1] },
    { kind: 'identities', ids: [7] },
    { kind: 'entityCluster' },
    { kind: 'any' },
  ]);
});

test('L7 rules are a warning; the L4 part is allowed', (t) => {
  const r = parsePolicy(cnp({ endpointSelector: {}, ingress: [{ toPorts: [{ ports: [{ port: '80', protocol: 'TCP' }], rules: { http: [{ method: 'GET', path: '/' }] } }] }] }));
  t.true(r.ok);
  if (!r.ok) return;
  t.is(r.warnings[0]!.field, 'spec.ingress[0].toPorts[0].rules');
  t.regex(r.warnings[0]!.message, /L7 enforcement is not built yet/);
  t.deepEqual(r.policy.rules[0]!.traffic[0]!.ports, [{ proto: 6, low: 80, high: 80 }]);
});

test('unsupported allow peers are left out with a warning, never widened to every peer', (t) => {
  const r = parsePolicy(cnp({ endpointSelector: {}, egress: [{ toFQDNs: [{ matchName: 'example.com' }], toPorts: [{ ports: [{ port: '443' }] }] }, { fromRequires: [] , toRequires: [{}] } as unknown] }));
  t.false(r.ok, 'fromRequires is not an egress field');
  const r2 = parsePolicy(cnp({ endpointSelector: {}, egress: [{ toFQDNs: [{ matchName: 'example.com' }], toPorts: [{ ports: [{ port: '443' }] }] }, { toEndpoints: [{}], toRequires: [{}] }] }));
  t.true(r2.ok);
  if (!r2.ok) return;
  t.is(r2.policy.rules[0]!.traffic.length, 1, 'the toRequires rule is left out');
  t.deepEqual(r2.policy.rules[0]!.traffic[0]!.peers, []);
  t.deepEqual(r2.warnings.map((w) => w.field), ['spec.egress[0].toFQDNs', 'spec.egress[1].toRequires']);
});

test('CCNP nodeSelector rules are skipped with a warning', (t) => {
  const r = parsePolicy({ kind: 'CiliumClusterwideNetworkPolicy', metadata: { name: 'h' }, specs: [{ nodeSelector: {}, ingress: [{}] }, { endpointSelector: {}, egress: [] }] });
  t.true(r.ok);
  if (!r.ok) return;
  t.is(r.policy.rules.length, 1);
  t.is(r.warnings[0]!.field, 'specs[0].nodeSelector');
});

test('spec and specs together are all rules of the policy, each with its own field path', (t) => {
  const p = parsed({ kind: 'CiliumNetworkPolicy', metadata: { name: 'c', namespace: 'd' }, spec: { endpointSelector: {}, ingress: [] }, specs: [{ endpointSelector: {}, egress: [] }] });
  t.deepEqual(p.rules.map((r) => r.field), ['spec', 'specs[0]']);
});

test('warnings never make a policy fail; the cookie is the policy cookie', (t) => {
  const problems = problemsOf(np({ podSelector: {}, ingress: [{ ports: [{ port: 'http' }] }] }));
  t.true(problems.every((p) => p.severity === 'warning'));
  const p = parsed(np({ podSelector: {} }));
  t.true(Number.isInteger(p.cookie) && p.cookie > 0);
  t.true(p.complete);
});
