/**
 * Batch access to the datapath's pinned maps from TypeScript.
 *
 * One call moves a whole batch: entries are packed into one Buffer by the codecs of
 * ./codecs.ts and handed to the addon, which writes them with BPF_MAP_UPDATE_BATCH
 * (falling back to per-entry syscalls where a map type refuses batches) on a
 * thread-pool thread. Failures reject with a DatapathError naming the map (`object`),
 * the operation (`op`) and the errno (`code`, `errno`); a batch that failed part way
 * also says how many entries were `done` of `total`.
 */
import * as native from '../../index.js';
import type { CtGcReport, MapTarget } from '../../index.js';
import { toDatapathError } from './addon.js';
import {
  MAP_CODECS,
  metricsIndexCodec,
  metricsValueCodec,
  packAll,
  policyEntryCodec,
  policyKeyCodec,
  unpackAll,
  type CtEntry,
  type CtKey,
  type DatapathMapName,
  type EndpointInfo,
  type IpcacheEntry,
  type IpcacheKey,
  type MetricsKey,
  type PolicyEntry,
  type PolicyKey,
  type StructCodec,
} from './codecs.js';

export type { CtGcReport, CtGcTableReport, CtGcProtoReport, MapLayoutInfo } from '../../index.js';

async function call<T>(run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (err) {
    throw toDatapathError(err);
  }
}

/** `BPF_ANY`, `BPF_NOEXIST`, `BPF_EXIST`. */
export type UpdateMode = 'any' | 'create' | 'replace';
const UPDATE_FLAGS: Record<UpdateMode, number> = { any: 0, create: 1, replace: 2 };

export interface WriteResult {
  written: number;
  /** Time the Rust side spent in the kernel calls, ns. */
  elapsedNs: number;
}

export interface DeleteResult {
  deleted: number;
  /** Keys that were not in the map. */
  missing: number;
  elapsedNs: number;
}

/**
 * Typed batch access to one logical map of the datapath: a PinnedMap, or the policy
 * pair (PolicyMaps). What the reconcilers, the API and the benchmarks use.
 */
export interface TypedMap<K, V> {
  readonly name: string;
  readonly keyCodec: StructCodec<K>;
  readonly valueCodec: StructCodec<V>;
  update(entries: ReadonlyArray<readonly [K, V]>, mode?: UpdateMode): Promise<WriteResult>;
  updateMany(keys: readonly K[], values: readonly V[], mode?: UpdateMode): Promise<WriteResult>;
  updatePacked(keys: Buffer, values: Buffer, mode?: UpdateMode): Promise<WriteResult>;
  delete(keys: readonly K[]): Promise<DeleteResult>;
  deletePacked(keys: Buffer): Promise<DeleteResult>;
  lookup(keys: readonly K[]): Promise<Array<V | undefined>>;
  dump(): Promise<Array<[K, V]>>;
  dumpPacked(): Promise<native.MapDumpResult>;
}

/** A pinned map of the datapath with typed batch operations. */
export class PinnedMap<K, V> implements TypedMap<K, V> {
  readonly target: MapTarget;

  constructor(
    pinDir: string,
    readonly name: string,
    readonly keyCodec: StructCodec<K>,
    readonly valueCodec: StructCodec<V>,
    bpffsRoot?: string,
  ) {
    this.target = bpffsRoot === undefined ? { pinDir, map: name } : { pinDir, map: name, bpffsRoot };
  }

  /** Writes entries (packed, then one crossing). */
  update(entries: ReadonlyArray<readonly [K, V]>, mode: UpdateMode = 'any'): Promise<WriteResult> {
    const keys = packAll(this.keyCodec, entries.map((e) => e[0]));
    const values = packAll(this.valueCodec, entries.map((e) => e[1]));
    return this.updatePacked(keys, values, mode);
  }

  /** Writes parallel arrays of keys and values. */
  updateMany(keys: readonly K[], values: readonly V[], mode: UpdateMode = 'any'): Promise<WriteResult> {
    if (keys.length !== values.length) {
      return Promise.reject(new RangeError(`map ${this.name}: ${keys.length} keys but ${values.length} values`));
    }
    return this.updatePacked(packAll(this.keyCodec, keys), packAll(this.valueCodec, values), mode);
  }

  /** Writes already packed keys and values (the fastest path). */
  updatePacked(keys: Buffer, values: Buffer, mode: UpdateMode = 'any'): Promise<WriteResult> {
    return call(() => native.mapUpdate(this.target, keys, values, UPDATE_FLAGS[mode]));
  }

  /** Deletes keys; absent keys are counted, not errors. */
  delete(keys: readonly K[]): Promise<DeleteResult> {
    return this.deletePacked(packAll(this.keyCodec, keys));
  }

  /** Deletes already packed keys. */
  deletePacked(keys: Buffer): Promise<DeleteResult> {
    return call(() => native.mapDelete(this.target, keys));
  }

  /** Looks up keys (on LPM tries: longest-prefix match capped at the key's prefix length). */
  async lookup(keys: readonly K[]): Promise<Array<V | undefined>> {
    const r = await call(() => native.mapLookup(this.target, packAll(this.keyCodec, keys)));
    const view = new DataView(r.values.buffer, r.values.byteOffset, r.values.byteLength);
    return keys.map((_, i) => (r.found[i] === 1 ? this.valueCodec.read(view, i * r.valueStride) : undefined));
  }

  /** Every entry. */
  async dump(): Promise<Array<[K, V]>> {
    const r = await call(() => native.mapDump(this.target));
    const keys = unpackAll(this.keyCodec, r.keys, r.count, r.keySize);
    const values = unpackAll(this.valueCodec, r.values, r.count, r.valueStride);
    return keys.map((k, i) => [k, values[i] as V]);
  }

  /** Every entry, still packed. */
  dumpPacked(): Promise<native.MapDumpResult> {
    return call(() => native.mapDump(this.target));
  }
}

type KeyOf<N extends DatapathMapName> = (typeof MAP_CODECS)[N]['key'] extends StructCodec<infer K> ? K : never;
type ValueOf<N extends DatapathMapName> = (typeof MAP_CODECS)[N]['value'] extends StructCodec<infer V> ? V : never;

function typed<N extends DatapathMapName>(pinDir: string, name: N, bpffsRoot?: string): PinnedMap<KeyOf<N>, ValueOf<N>> {
  const c = MAP_CODECS[name] as unknown as { key: StructCodec<KeyOf<N>>; value: StructCodec<ValueOf<N>> };
  return new PinnedMap(pinDir, name, c.key, c.value, bpffsRoot);
}

/** prefixLen of a full-length policy key: an exact port, kept in `mbr_policy_exact`. */
export const POLICY_PREFIX_FULL = 96;
const POLICY_KEY_SIZE = policyKeyCodec.size;
const POLICY_VALUE_SIZE = policyEntryCodec.size;

/** The packed policy key at index `i` as a string (for set membership). */
const packedKeyId = (keys: Buffer, i: number): string => keys.toString('latin1', i * POLICY_KEY_SIZE, (i + 1) * POLICY_KEY_SIZE);
const packedPrefixLen = (keys: Buffer, i: number): number => keys.readUInt32LE(i * POLICY_KEY_SIZE);

/** Indexes of the `n` packed policy keys: full length (the hash's) and shorter (the trie's). */
function byPrefixLength(keys: Buffer, n: number): { exact: number[]; shorter: number[] } {
  const exact: number[] = [];
  const shorter: number[] = [];
  for (let i = 0; i < n; i++) (packedPrefixLen(keys, i) === POLICY_PREFIX_FULL ? exact : shorter).push(i);
  return { exact, shorter };
}

/** The entries at `indexes` of packed parallel arrays. */
function pick(buf: Buffer, size: number, indexes: readonly number[]): Buffer {
  const out = Buffer.allocUnsafe(indexes.length * size);
  // Runs of consecutive entries move with one copy; a lone entry byte by byte,
  // which for 8- and 16-byte entries costs less than a Buffer.copy call.
  const at = (k: number): number => indexes[k] as number;
  let j = 0;
  while (j < indexes.length) {
    let end = j + 1;
    while (end < indexes.length && at(end) === at(end - 1) + 1) end++;
    const from = at(j) * size;
    if (end - j > 4) {
      buf.copy(out, j * size, from, at(end - 1) * size + size);
    } else {
      const bytes = (end - j) * size;
      for (let b = 0, o = j * size; b < bytes; b++) out[o + b] = buf[from + b] as number;
    }
    j = end;
  }
  return out;
}

/**
 * The policy as the datapath reads it: `mbr_policy_exact` (hash, full-length keys:
 * exact ports) in front of `mbr_policy` (LPM trie, every shorter prefix); see
 * ebpf/README.md, "Policy". Writes go to the map the key's prefixLen selects;
 * deleting a full-length key also deletes it from the trie, where a build without the
 * hash may have left it (the datapath reads it only while the hash has no entry for
 * that key); reads merge both maps, the hash's entry winning on a duplicate key.
 */
export class PolicyMaps implements TypedMap<PolicyKey, PolicyEntry> {
  readonly name = 'mbr_policy_exact+mbr_policy';
  readonly keyCodec = policyKeyCodec;
  readonly valueCodec = policyEntryCodec;
  readonly exact: PinnedMap<PolicyKey, PolicyEntry>;
  readonly trie: PinnedMap<PolicyKey, PolicyEntry>;

  constructor(pinDir: string, bpffsRoot?: string) {
    this.exact = typed(pinDir, 'mbr_policy_exact', bpffsRoot);
    this.trie = typed(pinDir, 'mbr_policy', bpffsRoot);
  }

  update(entries: ReadonlyArray<readonly [PolicyKey, PolicyEntry]>, mode: UpdateMode = 'any'): Promise<WriteResult> {
    try {
      return this.updatePacked(packAll(this.keyCodec, entries.map((e) => e[0])), packAll(this.valueCodec, entries.map((e) => e[1])), mode);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  updateMany(keys: readonly PolicyKey[], values: readonly PolicyEntry[], mode: UpdateMode = 'any'): Promise<WriteResult> {
    if (keys.length !== values.length) {
      return Promise.reject(new RangeError(`map ${this.name}: ${keys.length} keys but ${values.length} values`));
    }
    try {
      return this.updatePacked(packAll(this.keyCodec, keys), packAll(this.valueCodec, values), mode);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Splits the batch by prefixLen; every key is checked before anything is written. */
  async updatePacked(keys: Buffer, values: Buffer, mode: UpdateMode = 'any'): Promise<WriteResult> {
    const n = keys.byteLength / POLICY_KEY_SIZE;
    if (!Number.isInteger(n) || values.byteLength !== n * POLICY_VALUE_SIZE) {
      throw new RangeError(`map ${this.name}: ${keys.byteLength} key bytes and ${values.byteLength} value bytes are not whole ${POLICY_KEY_SIZE}/${POLICY_VALUE_SIZE}-byte entries of one count`);
    }
    for (let i = 0; i < n; i++) {
      const len = packedPrefixLen(keys, i);
      if (len < 64 || len > POLICY_PREFIX_FULL) throw new RangeError(`map ${this.name}: key ${i} has prefixLen ${len}, not 64..${POLICY_PREFIX_FULL}`);
    }
    const { exact, shorter } = byPrefixLength(keys, n);
    const parts: Array<[PinnedMap<PolicyKey, PolicyEntry>, number[]]> = [
      [this.exact, exact],
      [this.trie, shorter],
    ];
    let written = 0;
    let elapsedNs = 0;
    for (const [map, indexes] of parts) {
      if (indexes.length === 0) continue;
      const whole = indexes.length === n;
      const r = await map.updatePacked(whole ? keys : pick(keys, POLICY_KEY_SIZE, indexes), whole ? values : pick(values, POLICY_VALUE_SIZE, indexes), mode);
      written += r.written;
      elapsedNs += r.elapsedNs;
    }
    return { written, elapsedNs };
  }

  delete(keys: readonly PolicyKey[]): Promise<DeleteResult> {
    try {
      return this.deletePacked(packAll(this.keyCodec, keys));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * Full-length keys from the hash, and from the trie those it holds; shorter keys
   * from the trie. A key counts as deleted when either map held it.
   */
  async deletePacked(keys: Buffer): Promise<DeleteResult> {
    const n = keys.byteLength / POLICY_KEY_SIZE;
    if (!Number.isInteger(n)) throw new RangeError(`map ${this.name}: ${keys.byteLength} key bytes are not whole ${POLICY_KEY_SIZE}-byte keys`);
    const { exact, shorter } = byPrefixLength(keys, n);
    let deleted = 0;
    let missing = 0;
    let elapsedNs = 0;
    const add = (r: DeleteResult): void => {
      deleted += r.deleted;
      missing += r.missing;
      elapsedNs += r.elapsedNs;
    };
    if (exact.length > 0) {
      // Full-length keys in the trie (left by an older build): few or none, so the
      // trie is read rather than sent every key.
      const fullInTrie = new Set<string>();
      const t = await this.trie.dumpPacked();
      elapsedNs += t.elapsedNs;
      for (let i = 0; i < t.count; i++) if (packedPrefixLen(t.keys, i) === POLICY_PREFIX_FULL) fullInTrie.add(packedKeyId(t.keys, i));
      const stale = exact.filter((i) => fullInTrie.has(packedKeyId(keys, i)));
      const rest = exact.filter((i) => !fullInTrie.has(packedKeyId(keys, i)));
      if (rest.length > 0) add(await this.exact.deletePacked(rest.length === n ? keys : pick(keys, POLICY_KEY_SIZE, rest)));
      if (stale.length > 0) {
        // Held by the trie, so deleted whatever the hash held.
        const staleKeys = pick(keys, POLICY_KEY_SIZE, stale);
        elapsedNs += (await this.exact.deletePacked(staleKeys)).elapsedNs;
        add(await this.trie.deletePacked(staleKeys));
      }
    }
    if (shorter.length > 0) add(await this.trie.deletePacked(shorter.length === n ? keys : pick(keys, POLICY_KEY_SIZE, shorter)));
    return { deleted, missing, elapsedNs };
  }

  /** What the datapath would find for each key: for a full-length key its exact entry, else the trie's longest prefix. */
  async lookup(keys: readonly PolicyKey[]): Promise<Array<PolicyEntry | undefined>> {
    const out = new Array<PolicyEntry | undefined>(keys.length);
    const exactIdx = keys.flatMap((k, i) => (k.prefixLen === POLICY_PREFIX_FULL ? [i] : []));
    if (exactIdx.length > 0) {
      const found = await this.exact.lookup(exactIdx.map((i) => keys[i] as PolicyKey));
      exactIdx.forEach((i, j) => (out[i] = found[j]));
    }
    const trieIdx = keys.flatMap((_, i) => (out[i] === undefined ? [i] : []));
    if (trieIdx.length > 0) {
      const found = await this.trie.lookup(trieIdx.map((i) => keys[i] as PolicyKey));
      trieIdx.forEach((i, j) => (out[i] = found[j]));
    }
    return out;
  }

  async dump(): Promise<Array<[PolicyKey, PolicyEntry]>> {
    const r = await this.dumpPacked();
    const keys = unpackAll(this.keyCodec, r.keys, r.count, r.keySize);
    const values = unpackAll(this.valueCodec, r.values, r.count, r.valueStride);
    return keys.map((k, i) => [k, values[i] as PolicyEntry]);
  }

  /** Both maps' entries, packed: the hash's, then the trie's whose key the hash does not hold. */
  async dumpPacked(): Promise<native.MapDumpResult> {
    const e = await this.exact.dumpPacked();
    const t = await this.trie.dumpPacked();
    const inHash = new Set<string>();
    for (let i = 0; i < e.count; i++) inHash.add(packedKeyId(e.keys, i));
    const keep: number[] = [];
    for (let i = 0; i < t.count; i++) if (!inHash.has(packedKeyId(t.keys, i))) keep.push(i);
    return {
      keys: Buffer.concat([e.keys.subarray(0, e.count * POLICY_KEY_SIZE), pick(t.keys, t.keySize, keep)]),
      values: Buffer.concat([e.values.subarray(0, e.count * e.valueStride), pick(t.values, t.valueStride, keep)]),
      count: e.count + keep.length,
      keySize: POLICY_KEY_SIZE,
      valueStride: e.valueStride,
      elapsedNs: e.elapsedNs + t.elapsedNs,
    };
  }
}

/** The policy: `mbr_policy_exact` in front of `mbr_policy` (PolicyMaps). */
export const policyMap = (pinDir: string, bpffsRoot?: string): PolicyMaps => new PolicyMaps(pinDir, bpffsRoot);
/** `mbr_ipcache`. */
export const ipcacheMap = (pinDir: string, bpffsRoot?: string): PinnedMap<IpcacheKey, IpcacheEntry> => typed(pinDir, 'mbr_ipcache', bpffsRoot);
/** `mbr_ep_ifindex`: ifindex -> endpoint. */
export const endpointsByIfindex = (pinDir: string, bpffsRoot?: string): PinnedMap<number, EndpointInfo> => typed(pinDir, 'mbr_ep_ifindex', bpffsRoot);
/** `mbr_ep_ip`: IPv4 -> endpoint. */
export const endpointsByIp = (pinDir: string, bpffsRoot?: string): PinnedMap<string, EndpointInfo> => typed(pinDir, 'mbr_ep_ip', bpffsRoot);
/** `mbr_ct_tcp` or `mbr_ct_any`. */
export const ctMap = (pinDir: string, table: 'tcp' | 'any', bpffsRoot?: string): PinnedMap<CtKey, CtEntry> =>
  typed(pinDir, table === 'tcp' ? 'mbr_ct_tcp' : 'mbr_ct_any', bpffsRoot);

/** Writes endpoints into both endpoint maps (by ifindex and by IP). */
export async function upsertEndpoints(pinDir: string, endpoints: readonly EndpointInfo[], bpffsRoot?: string): Promise<number> {
  await endpointsByIfindex(pinDir, bpffsRoot).updateMany(endpoints.map((e) => e.ifindex), endpoints);
  const r = await endpointsByIp(pinDir, bpffsRoot).updateMany(endpoints.map((e) => String(e.ipv4)), endpoints);
  return r.written;
}

/** The metrics that counted something, summed over CPUs. */
export async function readMetrics(pinDir: string, bpffsRoot?: string): Promise<Array<MetricsKey & { packets: bigint; bytes: bigint }>> {
  const target: MapTarget = bpffsRoot === undefined ? { pinDir, map: 'mbr_metrics' } : { pinDir, map: 'mbr_metrics', bpffsRoot };
  const r = await call(() => native.mapDump(target));
  const keys = unpackAll(metricsIndexCodec, r.keys, r.count, r.keySize);
  const slot = Math.ceil(metricsValueCodec.size / 8) * 8;
  const cpus = r.valueStride / slot;
  const view = new DataView(r.values.buffer, r.values.byteOffset, r.values.byteLength);
  return keys.map((k, i) => {
    let packets = 0n;
    let bytes = 0n;
    for (let c = 0; c < cpus; c++) {
      const v = metricsValueCodec.read(view, i * r.valueStride + c * slot);
      packets += v.packets;
      bytes += v.bytes;
    }
    return { ...k, packets, bytes };
  }).filter((m) => m.packets !== 0n || m.bytes !== 0n);
}

/**
 * One conntrack garbage collection: deletes entries of both CT tables whose `expires`
 * (CLOCK_MONOTONIC seconds) is before `now` (default: now). Entries refreshed by the
 * datapath during the pass are kept.
 */
export function ctGc(pinDir: string, options: { now?: number; bpffsRoot?: string } = {}): Promise<CtGcReport> {
  return call(() => native.ctGc({ pinDir, ...options }));
}

/** CLOCK_MONOTONIC seconds: the clock of CT `expires`. */
export function monotonicSeconds(): number {
  return native.monotonicSeconds();
}

/** The direction word of `bpf ct list`: OUT (created at egress) or IN. */
export function ctDirectionWord(key: CtKey): 'OUT' | 'IN' | '?' {
  return key.direction === 2 ? 'OUT' : key.direction === 1 ? 'IN' : '?';
}
