import test from 'ava';
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../../ts/log/logger.js';
import { endpointProblems, nextEndpointId, type Endpoint } from '../../ts/endpoint/endpoint.js';
import { EndpointStore } from '../../ts/endpoint/store.js';
import { desiredIpcache } from '../../ts/ipcache/desired.js';

const log = createLogger({ component: 'test', level: 'silent' });

const ep = (over: Partial<Endpoint> = {}): Endpoint => ({
  id: 7,
  containerId: 'c0ffee',
  netns: '/var/run/netns/pod-a',
  ifname: 'eth0',
  hostIface: 'lxc1234',
  ifindex: 42,
  ipv4: '10.244.0.5',
  mac: '02:00:00:00:00:01',
  nodeMac: '02:00:00:00:00:02',
  pod: { namespace: 'default', name: 'frontend-1' },
  identity: 300,
  state: 'ready',
  createdAt: '2026-11-23T00:00:00.000Z',
  ...over,
});

test('a valid endpoint has no problems', (t) => {
  t.deepEqual(endpointProblems(ep()), []);
});

const malformed: Array<[string, Partial<Endpoint>, RegExp]> = [
  ['id 0', { id: 0 }, /id must be/],
  ['id too large', { id: 70000 }, /id must be/],
  ['relative netns', { netns: 'netns/a' }, /netns/],
  ['long ifname', { ifname: 'a-very-long-interface' }, /ifname/],
  ['bad ip', { ipv4: '10.0.0.256' }, /ipv4/],
  ['leading zero ip', { ipv4: '10.0.0.01' }, /ipv4/],
  ['upper-case mac', { mac: '02:AA:00:00:00:01' }, /mac/],
  ['namespace not a DNS label', { pod: { namespace: 'Default', name: 'x' } }, /pod\.namespace/],
  ['negative identity', { identity: -1 }, /identity/],
];
for (const [name, over, re] of malformed) {
  test(`endpoint problems are named: ${name}`, (t) => {
    t.regex(endpointProblems(ep(over)).join('\n'), re);
  });
}

test('endpoint ids: lowest free, none when full', (t) => {
  t.is(nextEndpointId([]), 1);
  t.is(nextEndpointId([1, 2, 4]), 3);
  t.is(nextEndpointId(Array.from({ length: 65535 }, (_, i) => i + 1)), undefined);
});

test('the store round-trips endpoints and moves corrupt files aside', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'membrane-state-'));
  const store = new EndpointStore(dir, log);
  store.save(ep());
  store.save(ep({ id: 8, ipv4: '10.244.0.6' }));
  writeFileSync(join(store.dir, '9.json'), '{"id": 9, "truncat');
  writeFileSync(join(store.dir, '10.json'), JSON.stringify(ep({ id: 11 })));
  writeFileSync(join(store.dir, '12.json.tmp-123'), 'half');
  const loaded = store.load();
  t.deepEqual(loaded.endpoints.map((e) => e.id), [7, 8]);
  t.deepEqual(loaded.rejected.map((r) => r.file).sort(), ['10.json', '9.json']);
  t.true(readdirSync(store.dir).includes('9.json.corrupt'));
  t.false(readdirSync(store.dir).some((f) => f.includes('.tmp-')));
  store.remove(7);
  t.deepEqual(store.load().endpoints.map((e) => e.id), [8]);
});

test('the store refuses to persist an invalid endpoint', (t) => {
  const store = new EndpointStore(mkdtempSync(join(tmpdir(), 'membrane-state-')), log);
  t.throws(() => store.save(ep({ ipv4: 'nope' })), { message: /refusing to persist endpoint 7: ipv4/ });
});

test('desired ipcache: pods, local node = host, remote nodes, apiserver, CIDRs', (t) => {
  const entries = desiredIpcache({
    pods: [
      { ip: '10.244.0.5', identity: 300 },
      { ip: '10.244.1.9', identity: 301 },
      { ip: '10.244.0.6', identity: 0 }, // not resolved yet: left out
    ],
    nodes: [
      { name: 'node-a', ips: ['192.0.2.10'] },
      { name: 'node-b', ips: ['192.0.2.11'] },
    ],
    localNode: 'node-a',
    apiserverIps: ['192.0.2.10', '192.0.2.20'],
    cidrs: [{ cidr: '203.0.113.0/24', identity: 16777217 }],
  });
  t.deepEqual(
    entries.map((e) => [e.prefix, e.identity, e.source]),
    [
      ['10.244.0.5/32', 300, 'pod'],
      ['10.244.1.9/32', 301, 'pod'],
      ['192.0.2.10/32', 1, 'node'],
      ['192.0.2.11/32', 6, 'node'],
      ['192.0.2.20/32', 7, 'kube-apiserver'],
      ['203.0.113.0/24', 16777217, 'cidr'],
    ],
  );
});

test('desired ipcache: a hostNetwork pod does not take over its node address', (t) => {
  const entries = desiredIpcache({
    pods: [{ ip: '192.0.2.11', identity: 400 }],
    nodes: [{ name: 'node-b', ips: ['192.0.2.11'] }],
    localNode: 'node-a',
    apiserverIps: [],
  });
  t.deepEqual(entries.map((e) => [e.prefix, e.identity]), [['192.0.2.11/32', 6]]);
});
