/**
 * Port range prefixes (the TS twin of crates/datapath maps::policy::port_range_prefixes),
 * IPv4 CIDR parsing and containment, and policy cookies.
 */
import test from 'ava';
import { cidrContains, cidrOf, parseCidr } from '../../ts/policy/cidr.js';
import { policyCookie } from '../../ts/policy/cookie.js';
import { portPrefixCovers, portRangePrefixes, type PortPrefix } from '../../ts/policy/ports.js';

function portsOf(prefixes: PortPrefix[]): number[] {
  const out: number[] = [];
  for (const p of prefixes) {
    const size = 2 ** (96 - p.prefixLen);
    assertAligned(p);
    for (let port = p.port; port < p.port + size; port++) out.push(port);
  }
  return out;
}

function assertAligned(p: PortPrefix): void {
  const size = 2 ** (96 - p.prefixLen);
  if (p.port % size !== 0) throw new Error(`prefix ${p.prefixLen}/${p.port} is not aligned`);
}

const table: Array<[number, number, Array<[number, number]>]> = [
  [0, 65535, [[80, 0]]],
  [1, 1, [[96, 1]]],
  [80, 80, [[96, 80]]],
  [0, 0, [[96, 0]]],
  [65535, 65535, [[96, 65535]]],
  [32768, 65535, [[81, 32768]]],
  [1000, 2000, [[93, 1000], [92, 1008], [87, 1024], [88, 1536], [89, 1792], [90, 1920], [92, 1984], [96, 2000]]],
  [8080, 8081, [[95, 8080]]],
  [7, 9, [[96, 7], [95, 8]]],
];

for (const [low, high, expected] of table) {
  test(`port range ${low}-${high} is the same minimal prefixes as the Rust side`, (t) => {
    t.deepEqual(
      portRangePrefixes(low, high).map((p) => [p.prefixLen, p.port]),
      expected,
    );
  });
}

test('the worst cases need 16 and 30 prefixes', (t) => {
  t.is(portRangePrefixes(1, 65535).length, 16);
  t.is(portRangePrefixes(0, 65534).length, 16);
  t.is(portRangePrefixes(1, 65534).length, 30);
});

test('prefixes cover exactly the range, aligned, in ascending order', (t) => {
  for (const [low, high] of [
    [0, 65535],
    [1, 1],
    [1000, 2000],
    [1, 65534],
    [443, 8443],
    [65534, 65535],
    [7, 9],
    [3, 1027],
    [30000, 32767],
  ] as const) {
    const prefixes = portRangePrefixes(low, high);
    const covered = portsOf(prefixes);
    t.is(covered.length, high - low + 1, `${low}-${high}`);
    t.is(covered[0], low);
    t.is(covered.at(-1), high);
    t.true(covered.every((p, i) => i === 0 || p === covered[i - 1]! + 1), `${low}-${high} has gaps or overlaps`);
  }
});

test('malformed port ranges are refused with the reason', (t) => {
  t.throws(() => portRangePrefixes(2, 1), { instanceOf: RangeError, message: /first port is above the last/ });
  t.throws(() => portRangePrefixes(-1, 5), { instanceOf: RangeError, message: /0\.\.65535/ });
  t.throws(() => portRangePrefixes(1, 65536), { instanceOf: RangeError });
  t.throws(() => portRangePrefixes(1.5, 3), { instanceOf: RangeError });
});

test('a port prefix covers the ports below it and nothing else', (t) => {
  t.true(portPrefixCovers({ prefixLen: 80, port: 0 }, { prefixLen: 96, port: 443 }));
  t.true(portPrefixCovers({ prefixLen: 88, port: 1536 }, { prefixLen: 96, port: 1791 }));
  t.false(portPrefixCovers({ prefixLen: 88, port: 1536 }, { prefixLen: 96, port: 1792 }));
  t.false(portPrefixCovers({ prefixLen: 96, port: 80 }, { prefixLen: 88, port: 0 }));
});

test('CIDRs parse, normalise host bits, and refuse junk and IPv6 with a reason', (t) => {
  const ok = parseCidr('10.1.2.3/8');
  t.true(ok.ok && ok.text === '10.0.0.0/8' && ok.hadHostBits);
  const exact = parseCidr('192.168.1.0/24');
  t.true(exact.ok && !exact.hadHostBits);
  for (const bad of ['10.0.0.0', '10.0.0.0/33', '10.0.0/8', 'x/8', '10.0.0.0/-1', '10.0.0.0/', '']) {
    const r = parseCidr(bad);
    t.false(r.ok, bad);
    t.false(!r.ok && r.ipv6, bad);
  }
  const v6 = parseCidr('2001:db8::/32');
  t.true(!v6.ok && v6.ipv6 && /IPv4 only/.test(v6.reason));
});

test('CIDR containment', (t) => {
  t.true(cidrContains(cidrOf('10.0.0.0/8'), cidrOf('10.1.0.0/16')));
  t.true(cidrContains(cidrOf('10.0.0.0/8'), cidrOf('10.0.0.0/8')));
  t.false(cidrContains(cidrOf('10.1.0.0/16'), cidrOf('10.0.0.0/8')));
  t.false(cidrContains(cidrOf('10.0.0.0/8'), cidrOf('11.0.0.0/16')));
  t.true(cidrContains(cidrOf('0.0.0.0/0'), cidrOf('255.255.255.255/32')));
});

test('policy cookies are stable FNV-1a of kind/namespace/name and tell policies apart', (t) => {
  // FNV-1a 32 of "NetworkPolicy/default/np", computed independently.
  const fnv = (s: string) => {
    let h = 0x811c9dc5;
    for (const b of Buffer.from(s)) h = Math.imul(h ^ b, 0x01000193) >>> 0;
    return h;
  };
  t.is(policyCookie({ kind: 'NetworkPolicy', namespace: 'default', name: 'np' }), fnv('NetworkPolicy/default/np'));
  t.is(policyCookie({ kind: 'CiliumClusterwideNetworkPolicy', name: 'x' }), fnv('CiliumClusterwideNetworkPolicy//x'));
  const a = policyCookie({ kind: 'NetworkPolicy', namespace: 'a', name: 'p' });
  const b = policyCookie({ kind: 'CiliumNetworkPolicy', namespace: 'a', name: 'p' });
  const c = policyCookie({ kind: 'NetworkPolicy', namespace: 'b', name: 'p' });
  t.is(new Set([a, b, c]).size, 3);
  t.true(a > 0 && a <= 0xffffffff && Number.isInteger(a));
});
