/**
 * Packed C structs of the datapath's maps, as TypeScript codecs.
 *
 * The addon's batch calls take and return `Buffer`s of packed structs (one call moves
 * thousands of entries). These codecs write and read them: little-endian host order
 * for ordinary fields, network order for addresses and ports (as the C side has them,
 * see ebpf/README.md), explicit zero padding. Each codec lists its fields so a test can
 * compare it with the Rust mirrors (`mapLayouts()` of the addon), which the BTF layout
 * check in turn keeps equal to the C structs: a drift fails a test, not a node.
 *
 * Pure: no addon, no I/O.
 */
import { endianness } from 'node:os';

if (endianness() !== 'LE') {
  throw new Error('Membrane supports little-endian hosts only (the datapath structs are host order)');
}

export interface FieldLayout {
  readonly name: string;
  readonly offset: number;
  readonly size: number;
}

/** A fixed-size C struct (or scalar) codec. */
export interface StructCodec<T> {
  /** C type name, e.g. `policy_key`. */
  readonly cName: string;
  /** Size in bytes. */
  readonly size: number;
  /** Members in declaration order (empty for scalars). */
  readonly fields: readonly FieldLayout[];
  /** Writes `value` at `offset`; the bytes must be zero beforehand (padding). */
  write(view: DataView, offset: number, value: T): void;
  /** Reads the value at `offset`. */
  read(view: DataView, offset: number): T;
}

// ---- IPv4 / MAC helpers ---------------------------------------------------------------

/** An IPv4 address as dotted text or as its 32-bit value (a.b.c.d = a<<24 | ...). */
export type Ipv4 = string | number;

/** The 32-bit value of an IPv4 address; throws on malformed text. */
export function ipv4ToNumber(addr: Ipv4): number {
  if (typeof addr === 'number') {
    if (!Number.isInteger(addr) || addr < 0 || addr > 0xffffffff) throw new RangeError(`invalid IPv4 address ${addr}`);
    return addr;
  }
  let value = 0;
  let part = 0;
  let digits = 0;
  let dots = 0;
  for (let i = 0; i < addr.length; i++) {
    const c = addr.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || dots === 3) throw new RangeError(`invalid IPv4 address ${JSON.stringify(addr)}`);
      value = value * 256 + part;
      part = 0;
      digits = 0;
      dots++;
    } else if (c >= 48 && c <= 57 && digits < 3) {
      part = part * 10 + (c - 48);
      digits++;
      if (part > 255) throw new RangeError(`invalid IPv4 address ${JSON.stringify(addr)}`);
    } else {
      throw new RangeError(`invalid IPv4 address ${JSON.stringify(addr)}`);
    }
  }
  if (dots !== 3 || digits === 0) throw new RangeError(`invalid IPv4 address ${JSON.stringify(addr)}`);
  return value * 256 + part;
}

/** Dotted text of a 32-bit IPv4 value. */
export function ipv4ToString(value: number): string {
  return `${value >>> 24}.${(value >>> 16) & 255}.${(value >>> 8) & 255}.${value & 255}`;
}

function writeIpv4(view: DataView, offset: number, addr: Ipv4): void {
  view.setUint32(offset, ipv4ToNumber(addr), false); // network order
}

function readIpv4(view: DataView, offset: number): string {
  return ipv4ToString(view.getUint32(offset, false));
}

function writeMac(view: DataView, offset: number, mac: string | undefined): void {
  if (mac === undefined || mac === '') return;
  const parts = mac.split(':');
  if (parts.length !== 6) throw new RangeError(`invalid MAC address ${JSON.stringify(mac)}`);
  parts.forEach((p, i) => {
    const b = Number.parseInt(p, 16);
    if (!/^[0-9a-fA-F]{1,2}$/.test(p) || Number.isNaN(b)) throw new RangeError(`invalid MAC address ${JSON.stringify(mac)}`);
    view.setUint8(offset + i, b);
  });
}

function readMac(view: DataView, offset: number): string {
  const out: string[] = [];
  for (let i = 0; i < 6; i++) out.push(view.getUint8(offset + i).toString(16).padStart(2, '0'));
  return out.join(':');
}

function u8(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xff) throw new RangeError(`${name} must be an integer in 0..255, got ${v}`);
  return v;
}

function u16(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new RangeError(`${name} must be an integer in 0..65535, got ${v}`);
  return v;
}

function u32(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new RangeError(`${name} must be an integer in 0..2^32-1, got ${v}`);
  return v;
}

const f = (name: string, offset: number, size: number): FieldLayout => ({ name, offset, size });

// ---- scalars ------------------------------------------------------------------------------

/** `__u32` keys (ifindex, config index). */
export const u32Codec: StructCodec<number> = {
  cName: '__u32',
  size: 4,
  fields: [],
  write: (view, o, v) => view.setUint32(o, u32('key', v), true),
  read: (view, o) => view.getUint32(o, true),
};

/** An IPv4 address stored as `__u32` in network order (key of `mbr_ep_ip`). */
export const ipv4KeyCodec: StructCodec<string> = {
  cName: '__u32',
  size: 4,
  fields: [],
  write: (view, o, v) => writeIpv4(view, o, v),
  read: (view, o) => readIpv4(view, o),
};

// ---- endpoint.h ---------------------------------------------------------------------------

/** `struct endpoint_info` (32 bytes). */
export interface EndpointInfo {
  ifindex: number;
  identity: number;
  ipv4: Ipv4;
  epId: number;
  /** EP_F_INGRESS_ENFORCED 1 | EP_F_EGRESS_ENFORCED 2 | EP_F_AUDIT 4. */
  flags: number;
  mac?: string;
  nodeMac?: string;
}

export const endpointInfoCodec: StructCodec<EndpointInfo> = {
  cName: 'endpoint_info',
  size: 32,
  fields: [f('ifindex', 0, 4), f('identity', 4, 4), f('ipv4', 8, 4), f('ep_id', 12, 2), f('flags', 14, 2), f('mac', 16, 6), f('node_mac', 22, 6), f('reserved', 28, 4)],
  write(view, o, v) {
    view.setUint32(o, u32('ifindex', v.ifindex), true);
    view.setUint32(o + 4, u32('identity', v.identity), true);
    writeIpv4(view, o + 8, v.ipv4);
    view.setUint16(o + 12, u16('epId', v.epId), true);
    view.setUint16(o + 14, u16('flags', v.flags), true);
    writeMac(view, o + 16, v.mac);
    writeMac(view, o + 22, v.nodeMac);
  },
  read: (view, o) => ({
    ifindex: view.getUint32(o, true),
    identity: view.getUint32(o + 4, true),
    ipv4: readIpv4(view, o + 8),
    epId: view.getUint16(o + 12, true),
    flags: view.getUint16(o + 14, true),
    mac: readMac(view, o + 16),
    nodeMac: readMac(view, o + 22),
  }),
};

// ---- ipcache.h ----------------------------------------------------------------------------

/** `struct ipcache_key` (8 bytes): an IPv4 prefix. */
export interface IpcacheKey {
  /** 0..32. */
  prefixLen: number;
  addr: Ipv4;
}

export const ipcacheKeyCodec: StructCodec<IpcacheKey> = {
  cName: 'ipcache_key',
  size: 8,
  fields: [f('prefixlen', 0, 4), f('addr', 4, 4)],
  write(view, o, v) {
    if (!Number.isInteger(v.prefixLen) || v.prefixLen < 0 || v.prefixLen > 32) throw new RangeError(`ipcache prefixLen must be 0..32, got ${v.prefixLen}`);
    view.setUint32(o, v.prefixLen, true);
    writeIpv4(view, o + 4, v.addr);
  },
  read: (view, o) => ({ prefixLen: view.getUint32(o, true), addr: readIpv4(view, o + 4) }),
};

/** `struct ipcache_entry` (12 bytes). */
export interface IpcacheEntry {
  identity: number;
  /** Node hosting the prefix; 0.0.0.0 = local or routed natively. */
  tunnelEndpoint?: Ipv4;
  flags?: number;
}

export const ipcacheEntryCodec: StructCodec<IpcacheEntry> = {
  cName: 'ipcache_entry',
  size: 12,
  fields: [f('identity', 0, 4), f('tunnel_endpoint', 4, 4), f('flags', 8, 1), f('pad', 9, 3)],
  write(view, o, v) {
    view.setUint32(o, u32('identity', v.identity), true);
    if (v.tunnelEndpoint !== undefined) writeIpv4(view, o + 4, v.tunnelEndpoint);
    view.setUint8(o + 8, u8('flags', v.flags ?? 0));
  },
  read: (view, o) => ({ identity: view.getUint32(o, true), tunnelEndpoint: readIpv4(view, o + 4), flags: view.getUint8(o + 8) }),
};

// ---- policy.h -----------------------------------------------------------------------------

/** Traffic direction numbers (Hubble TrafficDirection). */
export const TRAFFIC_INGRESS = 1;
export const TRAFFIC_EGRESS = 2;

/** `struct policy_key` (16 bytes). The LPM runs over the 96 bits after prefixLen. */
export interface PolicyKey {
  /** 64: any protocol and port; 80: any port; 96: exact port; 80+n: first n bits of the port. */
  prefixLen: number;
  epId: number;
  /** 1 ingress, 2 egress. */
  direction: number;
  /** Peer identity; 0 = any peer. */
  identity: number;
  /** IP protocol; for ICMP the port holds the ICMP type. */
  proto: number;
  /** Destination port, host order. */
  dport: number;
}

export const policyKeyCodec: StructCodec<PolicyKey> = {
  cName: 'policy_key',
  size: 16,
  fields: [f('prefixlen', 0, 4), f('ep_id', 4, 2), f('direction', 6, 1), f('pad0', 7, 1), f('identity', 8, 4), f('proto', 12, 1), f('pad1', 13, 1), f('dport', 14, 2)],
  write(view, o, v) {
    if (!Number.isInteger(v.prefixLen) || v.prefixLen < 64 || v.prefixLen > 96) throw new RangeError(`policy prefixLen must be 64..96, got ${v.prefixLen}`);
    view.setUint32(o, v.prefixLen, true);
    view.setUint16(o + 4, u16('epId', v.epId), true);
    view.setUint8(o + 6, u8('direction', v.direction));
    view.setUint32(o + 8, u32('identity', v.identity), true);
    view.setUint8(o + 12, u8('proto', v.proto));
    view.setUint16(o + 14, u16('dport', v.dport), false);
  },
  read: (view, o) => ({
    prefixLen: view.getUint32(o, true),
    epId: view.getUint16(o + 4, true),
    direction: view.getUint8(o + 6),
    identity: view.getUint32(o + 8, true),
    proto: view.getUint8(o + 12),
    dport: view.getUint16(o + 14, false),
  }),
};

/** Policy actions. */
export const POLICY_ALLOW = 1;
export const POLICY_DENY = 2;
export const POLICY_REDIRECT = 3;

/** `struct policy_entry` (8 bytes). */
export interface PolicyEntry {
  /** 1 allow, 2 deny, 3 redirect. */
  action: number;
  flags?: number;
  /** Proxy port for a redirect, host order. */
  proxyPort?: number;
  /** Rule id chosen by the agent, reported in flow events. */
  cookie?: number;
}

export const policyEntryCodec: StructCodec<PolicyEntry> = {
  cName: 'policy_entry',
  size: 8,
  fields: [f('action', 0, 1), f('flags', 1, 1), f('proxy_port', 2, 2), f('cookie', 4, 4)],
  write(view, o, v) {
    view.setUint8(o, u8('action', v.action));
    view.setUint8(o + 1, u8('flags', v.flags ?? 0));
    view.setUint16(o + 2, u16('proxyPort', v.proxyPort ?? 0), false);
    view.setUint32(o + 4, u32('cookie', v.cookie ?? 0), true);
  },
  read: (view, o) => ({ action: view.getUint8(o), flags: view.getUint8(o + 1), proxyPort: view.getUint16(o + 2, false), cookie: view.getUint32(o + 4, true) }),
};

// ---- conntrack.h --------------------------------------------------------------------------

/** `struct ct_key` (16 bytes): the tuple of a connection's first packet. */
export interface CtKey {
  saddr: Ipv4;
  daddr: Ipv4;
  /** Host order; ICMP echo: the echo id. */
  sport: number;
  dport: number;
  proto: number;
  /** 2: created at an endpoint's egress ("OUT"), 1: at its ingress ("IN"). */
  direction: number;
}

export const ctKeyCodec: StructCodec<CtKey> = {
  cName: 'ct_key',
  size: 16,
  fields: [f('saddr', 0, 4), f('daddr', 4, 4), f('sport', 8, 2), f('dport', 10, 2), f('proto', 12, 1), f('direction', 13, 1), f('pad', 14, 2)],
  write(view, o, v) {
    writeIpv4(view, o, v.saddr);
    writeIpv4(view, o + 4, v.daddr);
    view.setUint16(o + 8, u16('sport', v.sport), false);
    view.setUint16(o + 10, u16('dport', v.dport), false);
    view.setUint8(o + 12, u8('proto', v.proto));
    view.setUint8(o + 13, u8('direction', v.direction));
  },
  read: (view, o) => ({
    saddr: readIpv4(view, o),
    daddr: readIpv4(view, o + 4),
    sport: view.getUint16(o + 8, false),
    dport: view.getUint16(o + 10, false),
    proto: view.getUint8(o + 12),
    direction: view.getUint8(o + 13),
  }),
};

/** `struct ct_entry` (64 bytes). Times are CLOCK_MONOTONIC seconds. */
export interface CtEntry {
  fwdPackets: bigint;
  fwdBytes: bigint;
  revPackets: bigint;
  revBytes: bigint;
  expires: number;
  created: number;
  lastReport: number;
  srcIdentity: number;
  dstIdentity: number;
  epId: number;
  revNatIndex: number;
  fwdTcpFlags: number;
  revTcpFlags: number;
  /** CT_F_SEEN_REPLY 1 | FWD_CLOSING 2 | REV_CLOSING 4 | PROXY_REDIRECT 8. */
  flags: number;
  /** Host order. */
  proxyPort: number;
}

export const ctEntryCodec: StructCodec<CtEntry> = {
  cName: 'ct_entry',
  size: 64,
  fields: [
    f('fwd_packets', 0, 8), f('fwd_bytes', 8, 8), f('rev_packets', 16, 8), f('rev_bytes', 24, 8),
    f('expires', 32, 4), f('created', 36, 4), f('last_report', 40, 4), f('src_identity', 44, 4), f('dst_identity', 48, 4),
    f('ep_id', 52, 2), f('rev_nat_index', 54, 2), f('fwd_tcp_flags', 56, 1), f('rev_tcp_flags', 57, 1), f('flags', 58, 1),
    f('pad', 59, 1), f('proxy_port', 60, 2), f('pad2', 62, 2),
  ],
  write(view, o, v) {
    view.setBigUint64(o, v.fwdPackets, true);
    view.setBigUint64(o + 8, v.fwdBytes, true);
    view.setBigUint64(o + 16, v.revPackets, true);
    view.setBigUint64(o + 24, v.revBytes, true);
    view.setUint32(o + 32, u32('expires', v.expires), true);
    view.setUint32(o + 36, u32('created', v.created), true);
    view.setUint32(o + 40, u32('lastReport', v.lastReport), true);
    view.setUint32(o + 44, u32('srcIdentity', v.srcIdentity), true);
    view.setUint32(o + 48, u32('dstIdentity', v.dstIdentity), true);
    view.setUint16(o + 52, u16('epId', v.epId), true);
    view.setUint16(o + 54, u16('revNatIndex', v.revNatIndex), true);
    view.setUint8(o + 56, u8('fwdTcpFlags', v.fwdTcpFlags));
    view.setUint8(o + 57, u8('revTcpFlags', v.revTcpFlags));
    view.setUint8(o + 58, u8('flags', v.flags));
    view.setUint16(o + 60, u16('proxyPort', v.proxyPort), false);
  },
  read: (view, o) => ({
    fwdPackets: view.getBigUint64(o, true),
    fwdBytes: view.getBigUint64(o + 8, true),
    revPackets: view.getBigUint64(o + 16, true),
    revBytes: view.getBigUint64(o + 24, true),
    expires: view.getUint32(o + 32, true),
    created: view.getUint32(o + 36, true),
    lastReport: view.getUint32(o + 40, true),
    srcIdentity: view.getUint32(o + 44, true),
    dstIdentity: view.getUint32(o + 48, true),
    epId: view.getUint16(o + 52, true),
    revNatIndex: view.getUint16(o + 54, true),
    fwdTcpFlags: view.getUint8(o + 56),
    revTcpFlags: view.getUint8(o + 57),
    flags: view.getUint8(o + 58),
    proxyPort: view.getUint16(o + 60, false),
  }),
};

// ---- metrics.h / config.h -----------------------------------------------------------------

/** `struct metrics_key` (4 bytes). */
export interface MetricsKey {
  /** 0 forwarded, else a drop reason; 255 = events lost. */
  reason: number;
  /** 0 unknown, 1 ingress, 2 egress. */
  direction: number;
}

export const metricsKeyCodec: StructCodec<MetricsKey> = {
  cName: 'metrics_key',
  size: 4,
  fields: [f('reason', 0, 1), f('direction', 1, 1), f('pad', 2, 2)],
  write(view, o, v) {
    view.setUint8(o, u8('reason', v.reason));
    view.setUint8(o + 1, u8('direction', v.direction));
  },
  read: (view, o) => ({ reason: view.getUint8(o), direction: view.getUint8(o + 1) }),
};

/**
 * The key of `mbr_metrics`, a per-CPU array: the `__u32` index `reason | direction << 8`,
 * which on little-endian hosts is the bytes of `struct metrics_key`.
 */
export const metricsIndexCodec: StructCodec<MetricsKey> = {
  cName: '__u32',
  size: 4,
  fields: [],
  write(view, o, v) {
    view.setUint32(o, u8('reason', v.reason) | (u8('direction', v.direction) << 8), true);
  },
  read(view, o) {
    const index = view.getUint32(o, true);
    return { reason: index & 0xff, direction: index >>> 8 };
  },
};

/** `struct metrics_value` (16 bytes, one per CPU). */
export interface MetricsValue {
  packets: bigint;
  bytes: bigint;
}

export const metricsValueCodec: StructCodec<MetricsValue> = {
  cName: 'metrics_value',
  size: 16,
  fields: [f('packets', 0, 8), f('bytes', 8, 8)],
  write(view, o, v) {
    view.setBigUint64(o, v.packets, true);
    view.setBigUint64(o + 8, v.bytes, true);
  },
  read: (view, o) => ({ packets: view.getBigUint64(o, true), bytes: view.getBigUint64(o + 8, true) }),
};

/** `struct datapath_config` (24 bytes); 0 = the built-in default. */
export interface DatapathConfig {
  ctTcpSynTimeout: number;
  ctTcpEstablishedTimeout: number;
  ctTcpCloseTimeout: number;
  ctNontcpTimeout: number;
  flowReportInterval: number;
  flags: number;
}

const configFields = ['ct_tcp_syn_timeout', 'ct_tcp_established_timeout', 'ct_tcp_close_timeout', 'ct_nontcp_timeout', 'flow_report_interval', 'flags'] as const;
const configProps = ['ctTcpSynTimeout', 'ctTcpEstablishedTimeout', 'ctTcpCloseTimeout', 'ctNontcpTimeout', 'flowReportInterval', 'flags'] as const;

export const datapathConfigCodec: StructCodec<DatapathConfig> = {
  cName: 'datapath_config',
  size: 24,
  fields: configFields.map((name, i) => f(name, i * 4, 4)),
  write(view, o, v) {
    configProps.forEach((p, i) => view.setUint32(o + i * 4, u32(p, v[p]), true));
  },
  read(view, o) {
    const out = {} as DatapathConfig;
    configProps.forEach((p, i) => {
      out[p] = view.getUint32(o + i * 4, true);
    });
    return out;
  },
};

// ---- packing ----------------------------------------------------------------------------

/** Packs `items` into one zeroed Buffer of `codec.size` bytes each. */
export function packAll<T>(codec: StructCodec<T>, items: readonly T[]): Buffer {
  const buf = Buffer.alloc(codec.size * items.length);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const size = codec.size;
  for (let i = 0; i < items.length; i++) codec.write(view, i * size, items[i] as T);
  return buf;
}

/** Reads `count` packed values of `stride` bytes each (stride defaults to the codec's size). */
export function unpackAll<T>(codec: StructCodec<T>, buf: Buffer, count?: number, stride = codec.size): T[] {
  const n = count ?? Math.floor(buf.byteLength / stride);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const out = new Array<T>(n);
  for (let i = 0; i < n; i++) out[i] = codec.read(view, i * stride);
  return out;
}

/** Map name -> key and value codecs, for every datapath map. */
export const MAP_CODECS = {
  mbr_ep_ifindex: { key: u32Codec, value: endpointInfoCodec },
  mbr_ep_ip: { key: ipv4KeyCodec, value: endpointInfoCodec },
  mbr_ipcache: { key: ipcacheKeyCodec, value: ipcacheEntryCodec },
  mbr_policy: { key: policyKeyCodec, value: policyEntryCodec },
  mbr_policy_exact: { key: policyKeyCodec, value: policyEntryCodec },
  mbr_ct_tcp: { key: ctKeyCodec, value: ctEntryCodec },
  mbr_ct_any: { key: ctKeyCodec, value: ctEntryCodec },
  mbr_metrics: { key: metricsIndexCodec, value: metricsValueCodec },
  mbr_config: { key: u32Codec, value: datapathConfigCodec },
} as const;

export type DatapathMapName = keyof typeof MAP_CODECS;

/** Layout of a type as the addon reports it (`mapLayouts()`). */
export interface NativeTypeLayout {
  cName: string;
  size: number;
  fields: ReadonlyArray<{ name: string; offset: number; size: number }>;
}

/**
 * Differences between a codec and the native layout of the same type, as readable
 * lines (empty when they agree).
 */
export function compareLayout(codec: StructCodec<unknown>, native: NativeTypeLayout): string[] {
  const problems: string[] = [];
  if (codec.cName !== native.cName) problems.push(`codec for ${codec.cName} checked against ${native.cName}`);
  if (codec.size !== native.size) problems.push(`${codec.cName}: size ${codec.size}, native ${native.size}`);
  const a = codec.fields.map((x) => `${x.name}@${x.offset}:${x.size}`).join(' ');
  const b = native.fields.map((x) => `${x.name}@${x.offset}:${x.size}`).join(' ');
  if (a !== b) problems.push(`${codec.cName}: fields [${a}], native [${b}]`);
  return problems;
}
