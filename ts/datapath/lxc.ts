/**
 * The endpoint datapath (ebpf/bpf_lxc.c) of a node, for the agent: load it once per
 * pin directory (later starts adopt it, a new build upgrades it in place), attach it
 * to the host-side veths of endpoints, detach them, list them. A thin typed face of
 * the addon (crates/node/src/lxc.rs over crates/datapath/src/lxc.rs); failures reject
 * with a `DatapathError` (bad input: code `EINVAL`, `object` naming the field, e.g.
 * `endpoint.mac`).
 *
 * Each call opens the pinned datapath (about 2 ms once adopted) and closes it again,
 * so `openDatapath` must have run once for the pin directory before the others.
 * Write an endpoint's ipcache and policy entries (ts/datapath/maps.ts) before
 * attaching it: an enforcing endpoint drops everything until its policy allows it.
 */
import * as native from '../../index.js';
import type {
  AttachEndpointOptions,
  DatapathTarget,
  DetachEndpointOptions,
  DetachEndpointResult,
  EndpointAttachmentInfo,
  EndpointAttachResult,
  OpenDatapathOptions,
  OpenDatapathResult,
  PurgeDatapathResult,
} from '../../index.js';
import { toDatapathError } from './addon.js';

export type {
  AttachEndpointOptions,
  DatapathMapInfo,
  DatapathMapSizes,
  DatapathTarget,
  DetachEndpointOptions,
  DetachEndpointResult,
  EndpointAttachmentInfo,
  EndpointAttachResult,
  EndpointEntry,
  EndpointSpec,
  OpenDatapathOptions,
  OpenDatapathResult,
  PurgeDatapathResult,
} from '../../index.js';

/** What `openDatapath` found and did. */
export type LoadOutcome = OpenDatapathResult['outcome'];

/** `EndpointSpec.flags`: ingress policy applies (otherwise everything is allowed in). */
export const EP_F_INGRESS_ENFORCED = 0x1;
/** `EndpointSpec.flags`: egress policy applies. */
export const EP_F_EGRESS_ENFORCED = 0x2;
/** `EndpointSpec.flags`: would-be drops are reported as AUDIT and passed. */
export const EP_F_AUDIT = 0x4;

async function call<T>(run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (err) {
    throw toDatapathError(err);
  }
}

/**
 * Loads the endpoint datapath into `options.pinDir` and pins programs and maps
 * (`'loaded'`), adopts it when this build is pinned there (`'adopted'`: nothing
 * loaded, flushed or re-attached), or upgrades another build in place (`'upgraded'`).
 */
export function openDatapath(options: OpenDatapathOptions): Promise<OpenDatapathResult> {
  return call(() => native.openDatapath(options));
}

/**
 * Writes `options.endpoint` into the endpoint maps, then attaches both endpoint
 * programs to `options.iface` (whose ifindex must be `endpoint.ifindex`). Idempotent.
 */
export function attachEndpoint(options: AttachEndpointOptions): Promise<EndpointAttachResult[]> {
  return call(() => native.attachEndpoint(options));
}

/** Detaches the endpoint programs from `options.ifindex`, then removes its endpoint entries. Idempotent. */
export function detachEndpoint(options: DetachEndpointOptions): Promise<DetachEndpointResult> {
  return call(() => native.detachEndpoint(options));
}

/** Every interface with the endpoint datapath attached, with its endpoint entry. */
export function listEndpointAttachments(target: DatapathTarget): Promise<EndpointAttachmentInfo[]> {
  return call(() => native.listEndpointAttachments(target));
}

/**
 * Removes the endpoint datapath from `target.pinDir` entirely (attachments, programs,
 * every map). For uninstall and tests; never part of a restart or an upgrade.
 */
export function purgeDatapath(target: DatapathTarget): Promise<PurgeDatapathResult> {
  return call(() => native.purgeDatapath(target));
}
