/**
 * Policy CIDRs and their stable local CIDR identities.
 */
import test from 'ava';
import { assignCidrIdentitiesInRange } from '../../ts/policy/cidr-identities.js';
import { assignCidrIdentities, FIRST_CIDR_IDENTITY, parsePolicy, policyCidrs, type ParsedPolicy } from '../../ts/policy/index.js';

function parse(obj: unknown): ParsedPolicy {
  const r = parsePolicy(obj);
  if (!r.ok) throw new Error(JSON.stringify(r.problems));
  return r.policy;
}

test('policyCidrs: every CIDR and except CIDR of every kind of peer, normalised, deduplicated, sorted; /0 left out', (t) => {
  const policies = [
    parse({ kind: 'NetworkPolicy', metadata: { name: 'a', namespace: 'd' }, spec: { podSelector: {}, ingress: [{ from: [{ ipBlock: { cidr: '172.17.0.0/16', except: ['172.17.1.0/24'] } }] }] } }),
    parse({
      kind: 'CiliumNetworkPolicy',
      metadata: { name: 'b', namespace: 'd' },
      spec: { endpointSelector: {}, egress: [{ toCIDR: ['10.0.0.5/8', '10.0.0.0/8'] }, { toCIDRSet: [{ cidr: '0.0.0.0/0', except: ['192.168.0.0/16'] }] }], ingressDeny: [{ fromCIDR: ['1.2.3.4/32'] }] },
    }),
  ];
  t.deepEqual(policyCidrs(policies), ['1.2.3.4/32', '10.0.0.0/8', '172.17.0.0/16', '172.17.1.0/24', '192.168.0.0/16']);
  t.deepEqual(policyCidrs([]), []);
});

test('policyCidrs sorts by address, then shorter prefix first', (t) => {
  const p = parse({ kind: 'CiliumClusterwideNetworkPolicy', metadata: { name: 'x' }, spec: { endpointSelector: {}, egress: [{ toCIDR: ['10.0.0.0/16', '9.255.0.0/16', '10.0.0.0/8', '10.0.0.0/24'] }] } });
  t.deepEqual(policyCidrs([p]), ['9.255.0.0/16', '10.0.0.0/8', '10.0.0.0/16', '10.0.0.0/24']);
});

test('fresh assignment numbers CIDRs in order from 16777217 (1<<24 | 1)', (t) => {
  t.is(FIRST_CIDR_IDENTITY, 16777217);
  const ids = assignCidrIdentities(['10.0.0.0/8', '1.1.1.1/32'], new Map());
  t.deepEqual([...ids], [['1.1.1.1/32', 16777217], ['10.0.0.0/8', 16777218]]);
});

test('CIDRs still present keep their numbers; new ones take never-used numbers before freed ones', (t) => {
  const first = assignCidrIdentities(['10.0.0.0/8', '10.1.0.0/16', '192.168.0.0/16'], new Map());
  // 10.1.0.0/16 goes away, 172.16.0.0/12 arrives: it must not take 10.1.0.0/16's number.
  const second = assignCidrIdentities(['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16'], first);
  t.is(second.get('10.0.0.0/8'), first.get('10.0.0.0/8'));
  t.is(second.get('192.168.0.0/16'), first.get('192.168.0.0/16'));
  t.is(second.get('172.16.0.0/12'), 16777220);
  t.false([...second.values()].includes(first.get('10.1.0.0/16')!));
  // Same input again: nothing moves.
  t.deepEqual(assignCidrIdentities(['192.168.0.0/16', '10.0.0.0/8', '172.16.0.0/12'], second), second);
  // Numbers are unique.
  t.is(new Set(second.values()).size, second.size);
});

test('a freed number is reused only when no never-used number is left', (t) => {
  const first = 100;
  const last = 103;
  const previous = new Map([
    ['10.0.0.0/8', 100],
    ['11.0.0.0/8', 101],
  ]);
  // 10.0.0.0/8 is freed (100); 102 and 103 were never used and go first.
  const next = assignCidrIdentitiesInRange(['11.0.0.0/8', '12.0.0.0/8', '13.0.0.0/8'], previous, first, last);
  t.deepEqual([...next], [
    ['11.0.0.0/8', 101],
    ['12.0.0.0/8', 102],
    ['13.0.0.0/8', 103],
  ]);
  // One more CIDR: only the freed 100 is left.
  const full = assignCidrIdentitiesInRange(['11.0.0.0/8', '12.0.0.0/8', '13.0.0.0/8', '14.0.0.0/8'], previous, first, last);
  t.is(full.get('14.0.0.0/8'), 100);
  t.throws(() => assignCidrIdentitiesInRange(['11.0.0.0/8', '12.0.0.0/8', '13.0.0.0/8', '14.0.0.0/8', '15.0.0.0/8'], previous, first, last), { message: /exhausted/ });
});

test('inputs are normalised and malformed ones refused', (t) => {
  const ids = assignCidrIdentities(['10.1.2.3/8', '10.0.0.0/8'], new Map());
  t.deepEqual([...ids.keys()], ['10.0.0.0/8']);
  t.throws(() => assignCidrIdentities(['10.0.0.0/33'], new Map()), { instanceOf: RangeError, message: /prefix length/ });
  t.throws(() => assignCidrIdentities([], new Map([['10.0.0.0/8', 5]])), { instanceOf: RangeError, message: /outside the local CIDR range/ });
  t.throws(
    () =>
      assignCidrIdentities(
        [],
        new Map([
          ['10.0.0.0/8', FIRST_CIDR_IDENTITY],
          ['11.0.0.0/8', FIRST_CIDR_IDENTITY],
        ]),
      ),
    { message: /appears twice/ },
  );
});
