/**
 * The addon's batch map calls, CT garbage collection and flow stream on real pinned
 * maps: every map of bpf_lxc is created and pinned under a throw-away pin directory
 * (nothing is attached), written, read, deleted and collected through one crossing per
 * batch; errors name the map, the operation and the errno. Flow events are real ring
 * buffer records written by the fixture program ebpf/test_flow_events.c.
 *
 * Needs root and BPF. Without them these tests fail with an explanation.
 */
import test, { type ExecutionContext } from 'ava';
import { rmSync } from 'node:fs';
import * as native from '../../index.js';
import { isDatapathError, type DatapathError } from '../../ts/datapath/addon.js';
import {
  compareLayout,
  endpointInfoCodec,
  MAP_CODECS,
  packAll,
  policyKeyCodec,
  type CtEntry,
  type CtKey,
  type PolicyKey,
} from '../../ts/datapath/codecs.js';
import { expandFlows, FlowStream, decodeFlowEvents } from '../../ts/datapath/flows.js';
import {
  ctGc,
  ctMap,
  endpointsByIfindex,
  endpointsByIp,
  ipcacheMap,
  monotonicSeconds,
  policyMap,
  readMetrics,
  upsertEndpoints,
} from '../../ts/datapath/maps.js';

function requireKernel(): void {
  if (process.platform !== 'linux') throw new Error('kernel tests need Linux');
  if (process.getuid?.() !== 0) throw new Error('kernel tests need root (BPF, bpffs); run `sudo npx ava __test__/kernel/`');
}

let seq = 0;
/** A fresh pin directory with every bpf_lxc map pinned; removed after the test. */
async function pinned(t: ExecutionContext, options: { ctEntries?: number } = {}): Promise<string> {
  requireKernel();
  const pinDir = `/sys/fs/bpf/membrane-test-${process.pid}-batch${seq++}`;
  t.teardown(() => rmSync(pinDir, { recursive: true, force: true }));
  const maps = await native.testOnlyPinDatapathMaps({ pinDir, ...options });
  t.true(maps.includes('mbr_policy') && maps.includes('mbr_policy_exact') && maps.includes('mbr_ct_tcp') && maps.includes('mbr_events'), maps.join(','));
  return pinDir;
}

test.serial('codecs match the layouts of the Rust mirrors (and so the C structs)', (t) => {
  const layouts = native.mapLayouts();
  for (const [name, codecs] of Object.entries(MAP_CODECS)) {
    const layout = layouts.find((l) => l.name === name);
    if (layout === undefined) return t.fail(`no native layout for ${name}`);
    t.deepEqual(compareLayout(codecs.key, layout.key), [], `${name} key`);
    t.deepEqual(compareLayout(codecs.value, layout.value), [], `${name} value`);
  }
});

test.serial('policy, ipcache and endpoints: batch update, lookup, dump, delete round-trip', async (t) => {
  const pinDir = await pinned(t);
  const policy = policyMap(pinDir);
  const keys: PolicyKey[] = Array.from({ length: 5000 }, (_, i) => ({ prefixLen: 96, epId: 1 + (i % 50), direction: 1 + (i % 2), identity: 1000 + Math.floor(i / 100), proto: 6, dport: 1 + i }));
  const written = await policy.updateMany(keys, keys.map((_, i) => ({ action: 1, cookie: i })));
  t.is(written.written, 5000);
  const dumped = await policy.dump();
  t.is(dumped.length, 5000);
  const byPort = new Map(dumped.map(([k, v]) => [k.dport, v.cookie]));
  t.is(byPort.get(1234), 1233);
  const looked = await policy.lookup([keys[7]!, { ...keys[7]!, identity: 999_999 }]);
  t.is(looked[0]?.cookie, 7);
  t.is(looked[1], undefined);
  const del = await policy.delete([...keys.slice(0, 100), { ...keys[0]!, epId: 999 }]);
  t.deepEqual([del.deleted, del.missing], [100, 1]);
  t.is((await policy.dump()).length, 4900);

  const ipcache = ipcacheMap(pinDir);
  await ipcache.update([
    [{ prefixLen: 8, addr: '10.0.0.0' }, { identity: 2 }],
    [{ prefixLen: 32, addr: '10.1.2.3' }, { identity: 5001, tunnelEndpoint: '192.168.1.2' }],
  ]);
  const [exact, covered] = await ipcache.lookup([{ prefixLen: 32, addr: '10.1.2.3' }, { prefixLen: 32, addr: '10.9.9.9' }]);
  t.like(exact, { identity: 5001, tunnelEndpoint: '192.168.1.2' });
  t.is(covered?.identity, 2, 'lookups are longest-prefix matches, as the datapath sees them');
  t.deepEqual((await ipcache.dump()).map(([k]) => `${k.addr}/${k.prefixLen}`).sort(), ['10.0.0.0/8', '10.1.2.3/32']);

  const eps = [1, 2, 3].map((i) => ({ ifindex: 100 + i, identity: 2000 + i, ipv4: `10.250.0.${i}`, epId: i, flags: 3, mac: `02:00:00:00:00:0${i}`, nodeMac: 'ee:ee:ee:ee:ee:ee' }));
  t.is(await upsertEndpoints(pinDir, eps), 3);
  t.deepEqual((await endpointsByIfindex(pinDir).lookup([102]))[0], eps[1]);
  t.deepEqual((await endpointsByIp(pinDir).lookup(['10.250.0.3']))[0], eps[2]);
  t.is((await endpointsByIp(pinDir).delete(['10.250.0.1', '10.250.0.9'])).missing, 1);
});

test.serial('policy pair: runs and lone entries of either kind reach their map with their own values', async (t) => {
  const pinDir = await pinned(t);
  const policy = policyMap(pinDir);
  // Runs longer and shorter than the copy threshold, in both maps, interleaved.
  const lens = [96, 96, 96, 96, 96, 96, 96, 88, 96, 88, 88, 88, 88, 88, 88, 96, 96, 88, 96];
  const keys: PolicyKey[] = lens.map((prefixLen, i) => ({ prefixLen, epId: 7, direction: 1, identity: 500 + i, proto: 6, dport: prefixLen === 96 ? 1000 + i : 0x4000 }));
  const w = await policy.updateMany(keys, keys.map((_, i) => ({ action: 1, cookie: 9000 + i })));
  t.is(w.written, keys.length);
  const cookieOf = (entries: Array<[PolicyKey, { cookie: number }]>): Map<number, number> => new Map(entries.map(([key, v]) => [key.identity, v.cookie]));
  const exact = cookieOf(await policy.exact.dump());
  const trie = cookieOf(await policy.trie.dump());
  lens.forEach((len, i) => t.is((len === 96 ? exact : trie).get(500 + i), 9000 + i, `entry ${i} (prefixLen ${len})`));
  t.is(exact.size + trie.size, keys.length);
});

test.serial('policy pair: a mixed batch lands by prefix length, dumps merge, deletes remove both copies', async (t) => {
  const pinDir = await pinned(t);
  const policy = policyMap(pinDir);
  const k = (prefixLen: number, dport: number, proto = 6): PolicyKey => ({ prefixLen, epId: 3, direction: 2, identity: 42, proto, dport });
  const exactKeys = [k(96, 80), k(96, 443), k(96, 8, 1)];
  const trieKeys = [k(64, 0, 0), k(80, 0, 17), k(86, 1024), k(95, 2000)];
  const mixed = [trieKeys[0]!, exactKeys[0]!, trieKeys[1]!, exactKeys[1]!, trieKeys[2]!, exactKeys[2]!, trieKeys[3]!];
  const w = await policy.updateMany(mixed, mixed.map((key) => ({ action: 1, cookie: key.dport + key.prefixLen })));
  t.is(w.written, mixed.length);
  const ids = (entries: Array<[PolicyKey, unknown]>): string[] => entries.map(([key]) => `${key.prefixLen}/${key.proto}/${key.dport}`).sort();
  t.deepEqual(ids(await policy.exact.dump()), ids(exactKeys.map((key) => [key, 0])));
  t.deepEqual(ids(await policy.trie.dump()), ids(trieKeys.map((key) => [key, 0])));
  t.deepEqual(ids(await policy.dump()), ids(mixed.map((key) => [key, 0])));
  // Lookups see what the datapath sees: a full key inside a trie prefix finds the prefix.
  const [hit, inPrefix, none] = await policy.lookup([k(96, 443), k(96, 1030), k(96, 5000)]);
  t.is(hit?.cookie, 443 + 96);
  t.is(inPrefix?.cookie, 1024 + 86);
  t.is(none?.cookie, 64, 'the any-protocol entry covers every port');

  // A full key left in the trie by an older build: shadowed in dumps by the hash's entry.
  await policy.trie.update([[exactKeys[0]!, { action: 2, cookie: 1 }], [k(96, 9999), { action: 1, cookie: 2 }]]);
  const dumped = await policy.dump();
  t.is(dumped.length, mixed.length + 1);
  t.is(dumped.find(([key]) => key.prefixLen === 96 && key.dport === 80)?.[1].cookie, 80 + 96, 'the hash wins');
  t.is(dumped.find(([key]) => key.dport === 9999)?.[1].cookie, 2);
  // Deleting through the pair removes both copies; each key counts once.
  const del = await policy.delete([exactKeys[0]!, k(96, 9999), trieKeys[2]!, k(96, 7)]);
  t.deepEqual([del.deleted, del.missing], [3, 1]);
  t.is((await policy.trie.dump()).filter(([key]) => key.prefixLen === 96).length, 0);
  t.deepEqual(ids(await policy.dump()), ids([...exactKeys.slice(1), trieKeys[0]!, trieKeys[1]!, trieKeys[3]!].map((key) => [key, 0])));
});

test.serial('errors name the map, the operation and the errno; partial batches say how far they got', async (t) => {
  const pinDir = await pinned(t);
  // A policy key with a prefix beyond the trie's 96 bits, packed by hand.
  const good: PolicyKey = { prefixLen: 96, epId: 1, direction: 2, identity: 7, proto: 6, dport: 80 };
  const keys = Buffer.concat([packAll(policyKeyCodec, [good, { ...good, dport: 81 }]), packAll(policyKeyCodec, [{ ...good, dport: 82 }])]);
  keys.writeUInt32LE(200, 32); // third key: prefixlen 200
  const values = Buffer.alloc(3 * 8, 1);
  // The policy pair refuses the batch before writing anything...
  const policy = policyMap(pinDir);
  const refused = await t.throwsAsync(policy.updatePacked(keys, values));
  t.true(refused instanceof RangeError, String(refused));
  t.regex(refused?.message ?? '', /key 2 has prefixLen 200/);
  t.deepEqual(await policy.dump(), []);
  // ... while the addon writes what it can into one map and says how far it got.
  const trieKeys = Buffer.from(keys);
  for (let i = 0; i < 2; i++) trieKeys.writeUInt32LE(80, i * 16); // valid trie keys (any port)...
  for (let i = 0; i < 2; i++) trieKeys.writeUInt16BE(0, i * 16 + 14); // ... with no port bits
  const err = await t.throwsAsync<DatapathError>(policy.trie.updatePacked(trieKeys, values));
  t.true(isDatapathError(err, 'EINVAL'), String(err));
  t.is(err?.errno, 22);
  t.regex(err?.op ?? '', /update/);
  t.is(err?.object, 'map mbr_policy');
  t.is(err?.done, 2);
  t.is(err?.total, 3);
  t.regex(err?.message ?? '', /after 2 of 3 entries/);

  const short = await t.throwsAsync<DatapathError>(native.mapUpdate({ pinDir, map: 'mbr_policy' }, Buffer.alloc(16), Buffer.alloc(5)).catch((e: unknown) => { throw e; }));
  t.regex(short?.message ?? '', /value bytes/);

  const unknown = await t.throwsAsync(policyMap(pinDir).dumpPacked().then(() => native.mapDump({ pinDir, map: 'mbr_nosuch' })));
  t.regex(unknown?.message ?? '', /not a datapath map/);

  const notPinned = await t.throwsAsync<DatapathError>(policyMap(`${pinDir}-missing`).dump());
  t.true(isDatapathError(notPinned, 'ENOENT'), String(notPinned));
  t.regex(notPinned?.message ?? '', /mbr_policy/);
});

test.serial('large batches are written by several threads: contents match, a failure says how much was written', async (t) => {
  const pinDir = await pinned(t);
  const valueSize = endpointInfoCodec.size;
  /** `n` endpoint entries keyed by ifindex 1..n, each value stamped with its ifindex. */
  const entries = (n: number): { keys: Buffer; values: Buffer } => {
    const keys = Buffer.alloc(n * 4);
    const values = Buffer.alloc(n * valueSize);
    for (let i = 0; i < n; i++) {
      keys.writeUInt32LE(i + 1, i * 4);
      values.writeUInt32LE(i + 1, i * valueSize);
    }
    return { keys, values };
  };
  const byIfindex = endpointsByIfindex(pinDir);
  const dumpedKeys = async (): Promise<Set<number>> => {
    const d = await byIfindex.dumpPacked();
    const keys = new Set<number>();
    for (let i = 0; i < d.count; i++) {
      const k = d.keys.readUInt32LE(i * 4);
      t.is(d.values.readUInt32LE(i * d.valueStride), k, `value of ${k}`);
      keys.add(k);
    }
    t.is(keys.size, d.count, 'no key twice');
    return keys;
  };

  // Above the threshold (8k entries): split over threads, same contents.
  const ok = entries(40_000);
  t.is((await byIfindex.updatePacked(ok.keys, ok.values)).written, 40_000);
  const keys = await dumpedKeys();
  t.is(keys.size, 40_000);
  t.true([...keys].every((k) => k >= 1 && k <= 40_000));
  t.is((await byIfindex.deletePacked(ok.keys)).deleted, 40_000);

  // mbr_ep_ifindex holds 65536 entries (BPF_F_NO_PREALLOC): 100k fail with E2BIG.
  const tooMany = entries(100_000);
  const err = await t.throwsAsync<DatapathError>(byIfindex.updatePacked(tooMany.keys, tooMany.values));
  t.true(isDatapathError(err, 'E2BIG'), String(err));
  t.regex(err?.op ?? '', /update/);
  t.is(err?.object, 'map mbr_ep_ifindex');
  t.is(err?.total, 100_000);
  const done = err?.done ?? -1;
  const written = err?.written ?? -1;
  t.true(done >= 0 && written >= done, `done ${done}, written ${written}`);
  t.regex(err?.message ?? '', new RegExp(`after ${done} of 100000 entries`));
  const after = await dumpedKeys();
  t.is(after.size, written, 'written is what the map holds');
  for (let k = 1; k <= done; k++) if (!after.has(k)) return t.fail(`entry ${k} of the written prefix is missing`);
});

test.serial('conntrack: batch insert and dump, GC deletes expired entries only', async (t) => {
  const pinDir = await pinned(t, { ctEntries: 65536 });
  const now = monotonicSeconds();
  const tcp = ctMap(pinDir, 'tcp');
  const any = ctMap(pinDir, 'any');
  const entry = (expires: number): CtEntry => ({
    fwdPackets: 1n, fwdBytes: 60n, revPackets: 0n, revBytes: 0n, expires, created: now - 100, lastReport: 0,
    srcIdentity: 1, dstIdentity: 2, epId: 1, revNatIndex: 0, fwdTcpFlags: 2, revTcpFlags: 0, flags: 0, proxyPort: 0,
  });
  const keys = (n: number, proto: number): CtKey[] =>
    Array.from({ length: n }, (_, i) => ({ saddr: `10.0.${i >> 8}.${i & 255}`, daddr: '10.1.0.1', sport: 1024 + i, dport: 80, proto, direction: 2 }));
  const tcpKeys = keys(3000, 6);
  const udpKeys = keys(1000, 17);
  await tcp.updateMany(tcpKeys, tcpKeys.map((_, i) => entry(i % 3 === 0 ? now - 10 : now + 600)));
  await any.updateMany(udpKeys, udpKeys.map((_, i) => entry(i % 2 === 0 ? now - 10 : now + 600)));
  t.is((await tcp.dump()).length, 3000);

  const report = await ctGc(pinDir);
  t.log(JSON.stringify(report));
  t.is(report.scanned, 4000);
  t.is(report.deleted, 1000 + 500);
  t.like(report.tables.find((x) => x.table === 'tcp'), { scanned: 3000, expired: 1000, deleted: 1000 });
  t.like(report.byProto.find((p) => p.proto === 17), { name: 'UDP', scanned: 1000, deleted: 500 });
  t.true(report.durationMs >= 0);
  t.true((await tcp.dump()).every(([, e]) => e.expires >= now));
  t.is((await any.dump()).length, 500);
  t.deepEqual(await readMetrics(pinDir), [], 'metrics map is empty but readable (per-CPU dump)');
});

test.serial('flow stream: real ring-buffer records, decoded in Rust, expanded into Hubble flows', async (t) => {
  requireKernel();
  const pinDir = `/sys/fs/bpf/membrane-test-${process.pid}-flows`;
  t.teardown(() => rmSync(pinDir, { recursive: true, force: true }));
  const base = { source: '10.0.1.116', destination: '10.0.1.117', sourcePort: 38160, destinationPort: 8080 };
  // Creates and pins mbr_events first (the fixture loads against the pin directory).
  t.is(await native.testOnlyEmitFlowEvents(pinDir, [{ ...base, eventType: 1, verdict: 2, dropReason: 133, direction: 2, srcIdentity: 1100, count: 3 }]), 3);
  const stream = FlowStream.open(pinDir);
  t.teardown(() => stream.close());
  await native.testOnlyEmitFlowEvents(pinDir, [
    { ...base, eventType: 4, verdict: 1, ctStatus: 2, direction: 1, tcpFlags: 0x12 },
    { ...base, eventType: 9, verdict: 1 }, // not in the contract: skipped and counted
  ]);
  const flows = await stream.read(100, 2000, 'node-a');
  t.is(flows.length, 4);
  t.like(flows[0], {
    verdict: 'DROPPED',
    drop_reason: 133,
    drop_reason_desc: 'POLICY_DENIED',
    IP: { source: '10.0.1.116', destination: '10.0.1.117', ipVersion: 'IPv4' },
    l4: { TCP: { source_port: 38160, destination_port: 8080, flags: { SYN: true } } },
    source: { ID: 11, identity: 1100 },
    traffic_direction: 'EGRESS',
    event_type: { type: 1, sub_type: 133 },
    is_reply: false,
    node_name: 'node-a',
  });
  t.like(flows[3], { verdict: 'FORWARDED', is_reply: true, trace_reason: 'REPLY', trace_observation_point: 'TO_ENDPOINT' });
  const age = Date.now() - Date.parse(flows[0]!.time);
  t.true(age >= 0 && age < 60_000, `wall-clock time ${flows[0]!.time}`);
  t.like(stream.stats(), { decoded: 4, malformed: 1 });

  // Nothing buffered: the timeout elapses with an empty batch.
  const started = Date.now();
  t.deepEqual(await stream.read(10, 100), []);
  t.true(Date.now() - started >= 90);

  // Closed readers reject with EBADF.
  stream.close();
  const closed = await t.throwsAsync(stream.read(1, 10));
  t.true(isDatapathError(closed, 'EBADF'), String(closed));
});

test.serial('synthetic records decode through the same decoder', async (t) => {
  const raw = native.testOnlySyntheticFlowEvents(10_000, 3);
  t.is(raw.length, 10_000 * 64);
  const batch = await decodeFlowEvents(raw);
  t.is(batch.count, 10_000);
  t.is(batch.malformed, 0);
  const flows = expandFlows(batch);
  t.is(flows.length, 10_000);
  t.true(flows.some((f) => f.drop_reason_desc === 'POLICY_DENY'));
  const junk = await decodeFlowEvents(Buffer.concat([raw.subarray(0, 64), Buffer.alloc(10)]));
  t.deepEqual([junk.count, junk.malformed], [1, 1]);
});
