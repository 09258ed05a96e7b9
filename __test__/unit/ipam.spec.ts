import test from 'ava';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Ipam, IpamError, allocateRequestProblems } from '../../ts/ipam/ipam.js';
import { addressPool, nextFreeAddress, poolSize } from '../../ts/ipam/pool.js';
import { createLogger } from '../../ts/log/logger.js';

const log = createLogger({ component: 'test', level: 'silent' });
const req = (containerId: string, name = containerId) => ({ containerId, ifname: 'eth0', pod: { namespace: 'default', name } });
const dir = () => mkdtempSync(join(tmpdir(), 'mbr-ipam-'));

test('a pool spans the podCIDR without its network and broadcast addresses', (t) => {
  const p = addressPool('10.244.3.0/24');
  t.is(poolSize(p), 254);
  t.is(nextFreeAddress(p, new Set()), '10.244.3.1');
  t.is(nextFreeAddress(p, new Set(['10.244.3.1'])), '10.244.3.2');
  t.is(nextFreeAddress(p, new Set(), '10.244.3.254'), '10.244.3.1', 'wraps around after the last address');
  t.is(nextFreeAddress(addressPool('10.0.0.0/30'), new Set(['10.0.0.1', '10.0.0.2'])), undefined);
});

test('pools refuse ranges that are not CIDRs or too small for pods', (t) => {
  t.throws(() => addressPool('10.244.3.1/24'), { message: /host bits set/ });
  t.throws(() => addressPool('10.244.3.0/31'), { message: /too small/ });
  t.throws(() => addressPool('not-a-cidr'), { message: /not an IPv4 CIDR/ });
});

test('allocation is idempotent per attachment, unique per address, and reuses freed addresses last', (t) => {
  const ipam = new Ipam(dir(), log);
  ipam.setPodCidr('10.244.0.0/29'); // .1 - .6
  const a = ipam.allocate(req('a'));
  t.is(a.ipv4, '10.244.0.1');
  t.is(a.prefixLength, 32);
  t.is(a.gateway, '169.254.1.1');
  t.deepEqual(ipam.allocate(req('a')), a, 'asking again returns the same address');
  const b = ipam.allocate(req('b'));
  t.is(b.ipv4, '10.244.0.2');
  t.true(ipam.release('a', 'eth0', 'test'));
  t.false(ipam.release('a', 'eth0', 'test'), 'releasing twice is harmless');
  t.is(ipam.allocate(req('c')).ipv4, '10.244.0.3', 'the freed .1 is not handed out next');
});

test('an exhausted range and a node without podCIDR give errors that say what to do', (t) => {
  const ipam = new Ipam(dir(), log);
  const noCidr = t.throws(() => ipam.allocate(req('x')), { instanceOf: IpamError });
  t.is(noCidr.code, 'no_pod_cidr');
  t.regex(noCidr.message, /spec\.podCIDR/);
  ipam.setPodCidr('10.0.0.0/30');
  ipam.allocate(req('a'));
  ipam.allocate(req('b'));
  const full = t.throws(() => ipam.allocate(req('c')), { instanceOf: IpamError });
  t.is(full.code, 'exhausted');
});

test('allocations survive a restart: a new Ipam on the same state dir never hands an address out twice', (t) => {
  const d = dir();
  const first = new Ipam(d, log);
  first.setPodCidr('10.244.0.0/24');
  const used = [first.allocate(req('a')).ipv4, first.allocate(req('b')).ipv4];
  const second = new Ipam(d, log);
  t.is(second.podCidr(), '10.244.0.0/24');
  t.deepEqual(second.list().map((a) => a.ipv4), used);
  t.false(used.includes(second.allocate(req('c')).ipv4));
});

test('an unreadable state file stops the agent with advice instead of risking duplicate addresses', (t) => {
  const d = dir();
  writeFileSync(join(d, 'ipam.json'), '{"version": 1, "allocations": [');
  const err = t.throws(() => new Ipam(d, log), { instanceOf: IpamError });
  t.is(err.code, 'state_corrupt');
  t.regex(err.message, /fix or move the file aside/);
  t.is(readFileSync(join(d, 'ipam.json'), 'utf8'), '{"version": 1, "allocations": [', 'the file is left for the operator');
});

test('malformed allocation requests name every bad field', (t) => {
  t.deepEqual(allocateRequestProblems(req('abc')), []);
  t.regex(allocateRequestProblems(null).join(), /JSON object/);
  const p = allocateRequestProblems({ containerId: '', ifname: 'a-very-long-interface-name', pod: { namespace: 'Bad_NS', name: '' } });
  t.is(p.length, 4, p.join('\n'));
  t.regex(p.join('\n'), /containerId/);
  t.regex(p.join('\n'), /ifname/);
  t.regex(p.join('\n'), /pod\.namespace/);
  t.regex(p.join('\n'), /pod\.name/);
});
