/**
 * The reconcilers' view of the pinned maps: a MapBackend per map, with each
 * key's stable string form and a value equality that compares what the kernel
 * holds (values are normalised through their codec, so a desired value with
 * omitted defaults equals the one read back).
 */
import { endpointsByIfindex, endpointsByIp, ipcacheMap, policyMap, type TypedMap } from '../datapath/maps.js';
import type { EndpointInfo, IpcacheEntry, IpcacheKey, PolicyEntry, PolicyKey, StructCodec } from '../datapath/codecs.js';
import { plainEqual } from '../reconcile/diff.js';
import type { MapBackend } from '../reconcile/reconciler.js';

export interface MapSpec<K, V> {
  backend: MapBackend<K, V>;
  keyId: (key: K) => string;
  equal: (a: V, b: V) => boolean;
  /** The value as the kernel stores it (defaults filled in). */
  normalise: (value: V) => V;
}

/** Round-trips a value through its codec: what a dump would return for it. */
export function normaliser<V>(codec: StructCodec<V>): (value: V) => V {
  const buf = new ArrayBuffer(codec.size);
  const view = new DataView(buf);
  return (value) => {
    new Uint8Array(buf).fill(0);
    codec.write(view, 0, value);
    return codec.read(view, 0);
  };
}

function backendOf<K, V>(map: TypedMap<K, V>): MapBackend<K, V> {
  return {
    name: map.name,
    dump: () => map.dump(),
    update: async (entries) => {
      await map.update(entries);
    },
    delete: async (keys) => {
      await map.delete(keys);
    },
  };
}

function spec<K, V>(map: TypedMap<K, V>, keyId: (k: K) => string): MapSpec<K, V> {
  return { backend: backendOf(map), keyId, equal: plainEqual, normalise: normaliser(map.valueCodec) };
}

export const ipcacheKeyId = (k: IpcacheKey): string => `${k.addr}/${k.prefixLen}`;
export const policyKeyId = (k: PolicyKey): string => `${k.epId}|${k.direction}|${k.identity}|${k.proto}|${k.dport}|${k.prefixLen}`;

export interface DatapathMaps {
  ipcache: MapSpec<IpcacheKey, IpcacheEntry>;
  policy: MapSpec<PolicyKey, PolicyEntry>;
  endpointsByIfindex: MapSpec<number, EndpointInfo>;
  endpointsByIp: MapSpec<string, EndpointInfo>;
}

export function datapathMaps(pinDir: string, bpffsRoot?: string): DatapathMaps {
  return {
    ipcache: spec(ipcacheMap(pinDir, bpffsRoot), ipcacheKeyId),
    policy: spec(policyMap(pinDir, bpffsRoot), policyKeyId),
    endpointsByIfindex: spec(endpointsByIfindex(pinDir, bpffsRoot), (k) => String(k)),
    endpointsByIp: spec(endpointsByIp(pinDir, bpffsRoot), (k) => k),
  };
}
