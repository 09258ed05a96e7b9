/**
 * Benchmark groups of the datapath for `npm run bench`:
 *
 * - `datapath`: the Rust measurements (crates/datapath/examples/bench_json.rs, the same
 *   code as the criterion benches): batch vs per-entry map operations, CT GC vs a plain
 *   scan, ns/packet of bpf_lxc's paths vs the empty program (BPF_PROG_TEST_RUN).
 * - `datapath-addon`: what TypeScript sees through the addon: batch writes of plain
 *   objects (packed by the codecs, one crossing) against the Rust-side rate of the same
 *   call, and flows decoded in Rust and delivered (then expanded into Hubble objects).
 *
 * Both need root and BPF. Maps live under a throw-away pin directory, removed after.
 */
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as native from '../../index.js';
import type { BenchContext, BenchGroup } from '../bench/groups.js';
import { result, type BenchResult } from '../bench/results.js';
import { ctEntryCodec, ctKeyCodec, ipcacheEntryCodec, ipcacheKeyCodec, packAll, policyEntryCodec, policyKeyCodec, type CtEntry, type CtKey, type IpcacheEntry, type IpcacheKey, type PolicyEntry, type PolicyKey, type StructCodec } from './codecs.js';
import { expandFlows, FlowCursor } from './flows.js';
import { ctMap, ipcacheMap, policyMap, type TypedMap } from './maps.js';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

function requireRoot(): void {
  if (process.getuid?.() !== 0) throw new Error('the datapath benchmarks need root (BPF maps, BPF_PROG_TEST_RUN)');
}

/** Runs the Rust bench runner and returns its records. */
function runRustBenches(ctx: BenchContext, groups: string[]): BenchResult[] {
  requireRoot();
  const args = ['ts/setup/with-cache.sh', 'cargo', 'run', '--release', '-q', '-p', 'membrane-datapath', '--example', 'bench_json', '--', ...groups];
  ctx.log.info({ args: args.slice(1).join(' ') }, 'running the Rust datapath benchmarks');
  const child = spawnSync('bash', args, { cwd: repoRoot, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, timeout: 15 * 60_000 });
  for (const line of child.stderr.split('\n')) if (line.startsWith('bench_json:')) ctx.log.info(line);
  if (child.status !== 0 && child.stdout.trim() === '') {
    throw new Error(`bench_json exited ${child.status ?? child.signal}: ${child.stderr.slice(-2000)}`);
  }
  const records = JSON.parse(child.stdout) as Array<Omit<BenchResult, 'ratio'> & { ratio: number | null }>;
  if (child.status !== 0) ctx.log.warn({ status: child.status }, 'some Rust benchmarks failed; their results are missing');
  return records.map(({ ratio: _ratio, ...r }) => result(r));
}

function ctContent(n: number, now: number): { keys: CtKey[]; values: CtEntry[] } {
  const keys: CtKey[] = new Array(n);
  const values: CtEntry[] = new Array(n);
  for (let i = 0; i < n; i++) {
    keys[i] = { saddr: 10 * 2 ** 24 + i, daddr: 172 * 2 ** 24 + 16 * 2 ** 16 + (i % 251), sport: 1024 + (i % 60000), dport: 443, proto: 6, direction: 2 };
    values[i] = { fwdPackets: 10n, fwdBytes: 1500n, revPackets: 9n, revBytes: 9000n, expires: now + 3600, created: now, lastReport: now, srcIdentity: 1000 + (i % 300), dstIdentity: 2000, epId: 1 + (i % 100), revNatIndex: 0, fwdTcpFlags: 0x1a, revTcpFlags: 0x1a, flags: 1, proxyPort: 0 };
  }
  return { keys, values };
}

function policyContent(n: number): { keys: PolicyKey[]; values: PolicyEntry[] } {
  const keys: PolicyKey[] = new Array(n);
  const values: PolicyEntry[] = new Array(n);
  for (let i = 0; i < n; i++) {
    keys[i] = { prefixLen: 96, epId: 1 + (i % 1000), direction: 1 + (i % 2), identity: 10_000 + Math.floor(i / 1000), proto: 6, dport: 1 + (i % 60_000) };
    values[i] = { action: 1, cookie: i };
  }
  return { keys, values };
}

/** Wildcard and port-prefix keys (prefixLen 64, 80..95): the entries the trie holds. */
function policyTrieContent(n: number): { keys: PolicyKey[]; values: PolicyEntry[] } {
  const keys: PolicyKey[] = new Array(n);
  const values: PolicyEntry[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const bits = i % 17;
    const key = { epId: 1 + (i % 1000), direction: 1 + (i % 2), identity: 10_000 + i };
    keys[i] = bits === 16 ? { ...key, prefixLen: 64, proto: 0, dport: 0 } : { ...key, prefixLen: 80 + bits, proto: 6, dport: ((i * 40_503) & 0xffff) & ((0xffff << (16 - bits)) & 0xffff) };
    values[i] = { action: 1, cookie: i };
  }
  return { keys, values };
}

function ipcacheContent(n: number): { keys: IpcacheKey[]; values: IpcacheEntry[] } {
  const keys: IpcacheKey[] = new Array(n);
  const values: IpcacheEntry[] = new Array(n);
  for (let i = 0; i < n; i++) {
    keys[i] = { prefixLen: 32, addr: 100 * 2 ** 24 + 64 * 2 ** 16 + i * 4 };
    values[i] = { identity: 50_000 + (i % 5000) };
  }
  return { keys, values };
}

/** Writes `keys`/`values` as plain objects through the addon; entries/s vs the Rust side. */
async function writeBench<K, V>(name: string, map: TypedMap<K, V>, kc: StructCodec<K>, vc: StructCodec<V>, keys: K[], values: V[]): Promise<BenchResult[]> {
  const n = keys.length;
  const t0 = process.hrtime.bigint();
  const packedKeys = packAll(kc, keys);
  const packedValues = packAll(vc, values);
  const t1 = process.hrtime.bigint();
  const w = await map.updatePacked(packedKeys, packedValues);
  const t2 = process.hrtime.bigint();
  if (w.written !== n) throw new Error(`${name}: wrote ${w.written} of ${n}`);
  const total = Number(t2 - t0);
  const crossing = Number(t2 - t1);
  const rustRate = (n / w.elapsedNs) * 1e9;
  const d0 = process.hrtime.bigint();
  const del = await map.deletePacked(packedKeys);
  const d1 = process.hrtime.bigint();
  if (del.deleted !== n) throw new Error(`${name}: deleted ${del.deleted} of ${n}`);
  return [
    result({ bench: `datapath-addon/write/${name}/${n}/objects`, metric: 'entries_per_s', value: (n / total) * 1e9, unit: 'entries/s', baseline: rustRate, target: '>= 1e6/s' }),
    result({ bench: `datapath-addon/write/${name}/${n}/packed`, metric: 'entries_per_s', value: (n / crossing) * 1e9, unit: 'entries/s', baseline: rustRate }),
    result({ bench: `datapath-addon/delete/${name}/${n}/packed`, metric: 'entries_per_s', value: (n / Number(d1 - d0)) * 1e9, unit: 'entries/s', baseline: (n / del.elapsedNs) * 1e9 }),
  ];
}

async function addonBenches(ctx: BenchContext): Promise<BenchResult[]> {
  requireRoot();
  const pinDir = `/sys/fs/bpf/membrane-bench-${process.pid}`;
  const out: BenchResult[] = [];
  try {
    await native.testOnlyPinDatapathMaps({ pinDir, ctEntries: 1_300_000, policyEntries: 131_072 });
    const now = native.monotonicSeconds();
    ctx.log.info('addon batch writes: CT 1M, ipcache 500k, policy 100k exact + 100k prefixes');
    const ct = ctContent(1_000_000, now);
    out.push(...(await writeBench('ct-lru-hash', ctMap(pinDir, 'tcp'), ctKeyCodec, ctEntryCodec, ct.keys, ct.values)));
    const ipc = ipcacheContent(500_000);
    out.push(...(await writeBench('ipcache-lpm-trie', ipcacheMap(pinDir), ipcacheKeyCodec, ipcacheEntryCodec, ipc.keys, ipc.values)));
    // Through the policy pair, as the agent writes: exact ports land in the hash,
    // wildcards and port prefixes in the trie.
    const pol = policyContent(100_000);
    out.push(...(await writeBench('policy-exact-hash', policyMap(pinDir), policyKeyCodec, policyEntryCodec, pol.keys, pol.values)));
    const polTrie = policyTrieContent(100_000);
    out.push(...(await writeBench('policy-lpm-trie', policyMap(pinDir), policyKeyCodec, policyEntryCodec, polTrie.keys, polTrie.values)));
    // A compiled policy's shape: 500 synthetic policies compile to 88% exact-port
    // entries and 12% wildcards/port prefixes (ts/policy/bench.ts), written as one batch.
    // Interleaved as a compiler emits them (an endpoint's wildcards next to its ports).
    const mixExact = policyContent(88_000);
    const mixTrie = policyTrieContent(12_000);
    const mixKeys: PolicyKey[] = [];
    const mixValues: PolicyEntry[] = [];
    for (let i = 0, t = 0; i < mixExact.keys.length; i++) {
      mixKeys.push(mixExact.keys[i] as PolicyKey);
      mixValues.push(mixExact.values[i] as PolicyEntry);
      if (i % 22 === 21 && t < mixTrie.keys.length) {
        for (let k = 0; k < 3 && t < mixTrie.keys.length; k++, t++) {
          mixKeys.push(mixTrie.keys[t] as PolicyKey);
          mixValues.push(mixTrie.values[t] as PolicyEntry);
        }
      }
    }
    out.push(...(await writeBench('policy-pair-compiled-mix', policyMap(pinDir), policyKeyCodec, policyEntryCodec, mixKeys, mixValues)));

    ctx.log.info('flows: 1M synthetic flow_event records decoded in Rust, delivered, expanded');
    const total = 1_000_000;
    const chunk = 65_536;
    const raw = native.testOnlySyntheticFlowEvents(total, 7);
    let decodeNs = 0;
    let delivered = 0n;
    let expandNs = 0n;
    let cursorNs = 0n;
    let flows = 0;
    let drops = 0;
    for (let off = 0; off < total; off += chunk) {
      const n = Math.min(chunk, total - off);
      const t0 = process.hrtime.bigint();
      const batch = await native.decodeFlowEvents(raw.subarray(off * 64, (off + n) * 64));
      const t1 = process.hrtime.bigint();
      // Every flow read through the cursor (what filters and counters do).
      const cursor = new FlowCursor(batch);
      for (let i = 0; i < cursor.count; i++) if (cursor.at(i).verdictCode === 2 && cursor.sourceIdentity > 0) drops++;
      const t2 = process.hrtime.bigint();
      const expanded = expandFlows(batch);
      const t3 = process.hrtime.bigint();
      decodeNs += batch.decodeNs;
      delivered += t1 - t0;
      cursorNs += t2 - t1;
      expandNs += t3 - t2;
      flows += expanded.length;
    }
    if (drops === 0) throw new Error('no drop among the synthetic flows');
    if (flows !== total) throw new Error(`expanded ${flows} of ${total} flows`);
    const deliveredRate = (total / Number(delivered)) * 1e9;
    out.push(result({ bench: 'datapath-addon/flows/decoded-delivered', metric: 'flows_per_s', value: deliveredRate, unit: 'flows/s', baseline: (total / decodeNs) * 1e9, target: '>= 1e6/s' }));
    out.push(result({ bench: 'datapath-addon/flows/decoded-delivered-cursor', metric: 'flows_per_s', value: (total / Number(delivered + cursorNs)) * 1e9, unit: 'flows/s', baseline: deliveredRate, target: '>= 1e6/s' }));
    out.push(result({ bench: 'datapath-addon/flows/decoded-delivered-expanded', metric: 'flows_per_s', value: (total / Number(delivered + expandNs)) * 1e9, unit: 'flows/s', baseline: deliveredRate, target: '>= 1e6/s' }));
  } finally {
    rmSync(pinDir, { recursive: true, force: true });
  }
  return out;
}

export const DATAPATH_BENCH_GROUPS: BenchGroup[] = [
  {
    name: 'datapath',
    description: 'Rust: batch vs per-entry map ops (CT LRU hash, policy exact hash and LPM trie, 10k..1M), CT GC of 1M entries, ns/packet of bpf_lxc vs the empty program',
    run: async (ctx) => runRustBenches(ctx, []),
  },
  {
    name: 'datapath-addon',
    description: 'TypeScript through the addon: batch writes of plain objects (entries/s vs the Rust side), flows decoded and delivered (flows/s)',
    run: addonBenches,
  },
];
