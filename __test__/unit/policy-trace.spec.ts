/**
 * tracePolicy (the datapath's reading of one endpoint's compiled entries) and
 * policiesByCookie (naming the policy behind an entry's cookie).
 */
import test from 'ava';
import type { PolicyEntry, PolicyKey } from '../../ts/datapath/codecs.js';
import { compilePolicy, parsePolicy, policiesByCookie, policyCookie, tracePolicy, type EndpointPolicy, type ParsedPolicy, type TraceQuery, type TraceVerdict } from '../../ts/policy/index.js';

const entry = (direction: number, identity: number, proto: number, dport: number, prefixLen: number, action: number, cookie = 7): readonly [PolicyKey, PolicyEntry] => [{ prefixLen, epId: 1, direction, identity, proto, dport }, { action, cookie }];

const EP: EndpointPolicy = {
  epId: 1,
  ingressEnforced: true,
  egressEnforced: false,
  entries: [
    entry(1, 0, 6, 0, 80, 1), // any peer: every TCP port
    entry(1, 300, 6, 22, 96, 2), // 300: not ssh
    entry(1, 301, 0, 0, 64, 1), // 301: everything
    entry(1, 0, 6, 23, 96, 2), // nobody: telnet
    entry(1, 302, 17, 7936, 88, 3), // 302: udp 7936-8191 to a proxy
  ],
};

const cases: Array<[string, TraceQuery, TraceVerdict, number | undefined]> = [
  ['not enforced direction passes', { direction: 2, identity: 300, proto: 6, port: 22 }, 'not-enforced', undefined],
  ['allow of any peer', { direction: 1, identity: 999, proto: 6, port: 443 }, 'allowed', undefined],
  ['peer-specific deny beats the any-peer allow', { direction: 1, identity: 300, proto: 6, port: 22 }, 'denied', 181],
  ['any-peer deny beats a peer allow of everything', { direction: 1, identity: 301, proto: 6, port: 23 }, 'denied', 181],
  ['peer allow of everything covers UDP', { direction: 1, identity: 301, proto: 17, port: 53 }, 'allowed', undefined],
  ['nothing matches: default deny', { direction: 1, identity: 999, proto: 17, port: 53 }, 'default-denied', 133],
  ['redirect inside its prefix', { direction: 1, identity: 302, proto: 17, port: 8191 }, 'redirected', undefined],
  ['outside the prefix: default deny', { direction: 1, identity: 302, proto: 17, port: 8192 }, 'default-denied', 133],
];

for (const [what, q, verdict, reason] of cases) {
  test(`trace: ${what}`, (t) => {
    const r = tracePolicy(EP, q);
    t.is(r.verdict, verdict);
    t.is(r.dropReason, reason);
  });
}

test('trace names the deciding entries and refuses malformed queries', (t) => {
  const r = tracePolicy(EP, { direction: 1, identity: 300, proto: 6, port: 22 });
  t.deepEqual(r.decidedBy, EP.entries[1]);
  t.deepEqual(r.peerMatch, EP.entries[1]);
  t.deepEqual(r.anyMatch, EP.entries[0]);
  t.throws(() => tracePolicy(EP, { direction: 3 as 1, identity: 1, proto: 6, port: 1 }), { message: /direction/ });
  t.throws(() => tracePolicy(EP, { direction: 1, identity: 1, proto: 6, port: 70000 }), { message: /port/ });
  t.throws(() => tracePolicy(EP, { direction: 1, identity: 1, proto: 300, port: 1 }), { message: /proto/ });
});

test('trace over a compiled policy: the deny policy is named by its cookie', (t) => {
  const parse = (o: unknown): ParsedPolicy => {
    const r = parsePolicy(o);
    if (!r.ok) throw new Error(JSON.stringify(r.problems));
    return r.policy;
  };
  const policies = [
    parse({ kind: 'CiliumNetworkPolicy', metadata: { name: 'allow-all', namespace: 'd' }, spec: { endpointSelector: {}, ingress: [{ fromEntities: ['all'] }] } }),
    parse({ kind: 'CiliumNetworkPolicy', metadata: { name: 'no-ssh', namespace: 'd' }, spec: { endpointSelector: {}, ingressDeny: [{ toPorts: [{ ports: [{ port: '22', protocol: 'TCP' }] }] }] } }),
  ];
  const labels = { 'k8s:app': 'x', 'k8s:io.kubernetes.pod.namespace': 'd' };
  const out = compilePolicy({ policies, endpoints: [{ id: 5, identity: 500, labels }], identities: new Map([[500, labels]]), cidrIdentities: new Map() });
  const r = tracePolicy(out.endpoints[0]!, { direction: 1, identity: 500, proto: 6, port: 22 });
  t.is(r.verdict, 'denied');
  const names = policiesByCookie(policies);
  t.deepEqual(names.get(r.decidedBy![1].cookie!), [{ kind: 'CiliumNetworkPolicy', namespace: 'd', name: 'no-ssh' }]);
  const ok = tracePolicy(out.endpoints[0]!, { direction: 1, identity: 500, proto: 6, port: 80 });
  t.is(ok.verdict, 'allowed');
  t.is(ok.decidedBy![1].cookie, policyCookie({ kind: 'CiliumNetworkPolicy', namespace: 'd', name: 'allow-all' }));
});
