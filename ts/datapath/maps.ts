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

/** A pinned map of the datapath with typed batch operations. */
export class PinnedMap<K, V> {
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

/** `mbr_policy`. */
export const policyMap = (pinDir: string, bpffsRoot?: string): PinnedMap<PolicyKey, PolicyEntry> => typed(pinDir, 'mbr_policy', bpffsRoot);
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
