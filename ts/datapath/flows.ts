/**
 * Flows from the datapath, in the shape of `hubble observe -o json` (`flow` objects:
 * proto field names, enum names as strings, RFC3339Nano times, default values omitted).
 *
 * The addon decodes ring-buffer records in Rust (validation, byte order, the
 * monotonic-to-wall-clock conversion, Hubble numbering) and hands over a batch as one
 * Buffer of fixed 64-byte records (`CompactFlow` in crates/datapath/src/flows.rs).
 * `expandFlows` turns such a batch into plain objects; `readFlowView` reads single
 * fields without building objects (filters, counters).
 */
import * as native from '../../index.js';
import type { FlowBatch } from '../../index.js';
import { toDatapathError } from './addon.js';
import { ipv4ToString } from './codecs.js';

export type { FlowBatch, FlowReaderStats } from '../../index.js';

/** Bytes per compact record. */
export const FLOW_RECORD_SIZE = 64;

export type Verdict = 'VERDICT_UNKNOWN' | 'FORWARDED' | 'DROPPED' | 'ERROR' | 'AUDIT' | 'REDIRECTED' | 'TRACED' | 'TRANSLATED';
export type TrafficDirection = 'TRAFFIC_DIRECTION_UNKNOWN' | 'INGRESS' | 'EGRESS';
export type TraceReason = 'TRACE_REASON_UNKNOWN' | 'NEW' | 'ESTABLISHED' | 'REPLY' | 'RELATED';
export type TcpFlagName = 'FIN' | 'SYN' | 'RST' | 'PSH' | 'ACK' | 'URG' | 'ECE' | 'CWR';

const VERDICTS: Verdict[] = ['VERDICT_UNKNOWN', 'FORWARDED', 'DROPPED', 'ERROR', 'AUDIT', 'REDIRECTED', 'TRACED', 'TRANSLATED'];
const DIRECTIONS: TrafficDirection[] = ['TRAFFIC_DIRECTION_UNKNOWN', 'INGRESS', 'EGRESS'];
const TRACE_REASONS: TraceReason[] = ['TRACE_REASON_UNKNOWN', 'NEW', 'ESTABLISHED', 'REPLY', 'RELATED'];
const TCP_FLAGS: Array<[number, TcpFlagName]> = [
  [0x01, 'FIN'],
  [0x02, 'SYN'],
  [0x04, 'RST'],
  [0x08, 'PSH'],
  [0x10, 'ACK'],
  [0x20, 'URG'],
  [0x40, 'ECE'],
  [0x80, 'CWR'],
];

/** Hubble DropReason names by number. */
export const DROP_REASONS: Readonly<Record<number, string>> = {
  130: 'INVALID_SOURCE_MAC',
  131: 'INVALID_DESTINATION_MAC',
  132: 'INVALID_SOURCE_IP',
  133: 'POLICY_DENIED',
  134: 'INVALID_PACKET_DROPPED',
  135: 'CT_TRUNCATED_OR_INVALID_HEADER',
  136: 'CT_MISSING_TCP_ACK_FLAG',
  137: 'CT_UNKNOWN_L4_PROTOCOL',
  138: 'CT_CANNOT_CREATE_ENTRY_FROM_PACKET',
  139: 'UNSUPPORTED_L3_PROTOCOL',
  140: 'MISSED_TAIL_CALL',
  141: 'ERROR_WRITING_TO_PACKET',
  142: 'UNKNOWN_L4_PROTOCOL',
  143: 'UNKNOWN_ICMPV4_CODE',
  144: 'UNKNOWN_ICMPV4_TYPE',
  145: 'UNKNOWN_ICMPV6_CODE',
  146: 'UNKNOWN_ICMPV6_TYPE',
  147: 'ERROR_RETRIEVING_TUNNEL_KEY',
  148: 'ERROR_RETRIEVING_TUNNEL_OPTIONS',
  149: 'INVALID_GENEVE_OPTION',
  150: 'UNKNOWN_L3_TARGET_ADDRESS',
  151: 'STALE_OR_UNROUTABLE_IP',
  152: 'NO_MATCHING_LOCAL_CONTAINER_FOUND',
  153: 'ERROR_WHILE_CORRECTING_L3_CHECKSUM',
  154: 'ERROR_WHILE_CORRECTING_L4_CHECKSUM',
  155: 'CT_MAP_INSERTION_FAILED',
  156: 'INVALID_IPV6_EXTENSION_HEADER',
  157: 'IP_FRAGMENTATION_NOT_SUPPORTED',
  158: 'SERVICE_BACKEND_NOT_FOUND',
  181: 'POLICY_DENY',
};

/** The Hubble name of a drop reason number. */
export function dropReasonName(reason: number): string {
  return DROP_REASONS[reason] ?? 'DROP_REASON_UNKNOWN';
}

export type FlowL4 =
  | { TCP: { source_port: number; destination_port: number; flags?: Partial<Record<TcpFlagName, true>> } }
  | { UDP: { source_port: number; destination_port: number } }
  | { ICMPv4: { type?: number; code?: number } };

export interface FlowEndpoint {
  /** Local endpoint id (omitted when not local). */
  ID?: number;
  identity?: number;
}

/** A flow as `hubble observe -o json` prints it (the `flow` object). */
export interface HubbleFlow {
  time: string;
  verdict: Verdict;
  /** Deprecated numeric drop reason, kept by Hubble for compatibility. */
  drop_reason?: number;
  drop_reason_desc?: string;
  IP: { source: string; destination: string; ipVersion: 'IPv4' };
  l4?: FlowL4;
  source: FlowEndpoint;
  destination: FlowEndpoint;
  Type: 'L3_L4';
  node_name?: string;
  event_type: { type: number; sub_type?: number };
  traffic_direction?: TrafficDirection;
  trace_observation_point?: 'FROM_ENDPOINT' | 'TO_ENDPOINT';
  trace_reason?: TraceReason;
  is_reply: boolean;
  interface?: { index: number };
  proxy_port?: number;
  /** Not in Hubble's schema: the cookie of the policy entry that decided. */
  policy_cookie?: number;
  Summary: string;
}

// RFC3339 with nanoseconds; the second part is cached (flows of a batch share it).
let cachedSecond = -1;
let cachedPrefix = '';
function rfc3339Nano(seconds: number, nanos: number): string {
  if (seconds !== cachedSecond) {
    cachedSecond = seconds;
    cachedPrefix = new Date(seconds * 1000).toISOString().slice(0, 19);
  }
  return `${cachedPrefix}.${String(nanos).padStart(9, '0')}Z`;
}

function tcpFlagsObject(bits: number): Partial<Record<TcpFlagName, true>> | undefined {
  if (bits === 0) return undefined;
  const out: Partial<Record<TcpFlagName, true>> = {};
  for (const [bit, name] of TCP_FLAGS) if (bits & bit) out[name] = true;
  return out;
}

function tcpFlagsSummary(bits: number): string {
  const names: string[] = [];
  for (const [bit, name] of TCP_FLAGS) if (bits & bit) names.push(name);
  return `TCP Flags: ${names.join(', ')}`;
}

/** Expands record `i` of a batch. */
export function expandFlow(view: DataView, i: number, nodeName?: string): HubbleFlow {
  const o = i * FLOW_RECORD_SIZE;
  const seconds = view.getUint32(o, true);
  const nanos = view.getUint32(o + 4, true);
  const sport = view.getUint16(o + 16, true);
  const dport = view.getUint16(o + 18, true);
  const srcEp = view.getUint16(o + 32, true);
  const dstEp = view.getUint16(o + 34, true);
  const eventType = view.getUint8(o + 40);
  const verdict = view.getUint8(o + 41);
  const dropReason = view.getUint8(o + 42);
  const proto = view.getUint8(o + 43);
  const tcpFlags = view.getUint8(o + 44);
  const direction = view.getUint8(o + 45);
  const traceReason = view.getUint8(o + 46);
  const proxyPort = view.getUint16(o + 48, true);
  const point = view.getUint8(o + 56);
  const cookie = view.getUint32(o + 52, true);
  const srcIdentity = view.getUint32(o + 20, true);
  const dstIdentity = view.getUint32(o + 24, true);

  let l4: FlowL4 | undefined;
  let summary: string;
  if (proto === 6) {
    const flags = tcpFlagsObject(tcpFlags);
    l4 = { TCP: flags === undefined ? { source_port: sport, destination_port: dport } : { source_port: sport, destination_port: dport, flags } };
    summary = tcpFlagsSummary(tcpFlags);
  } else if (proto === 17) {
    l4 = { UDP: { source_port: sport, destination_port: dport } };
    summary = 'UDP';
  } else if (proto === 1) {
    const type = view.getUint8(o + 50);
    const code = view.getUint8(o + 51);
    l4 = { ICMPv4: type === 0 && code === 0 ? {} : code === 0 ? { type } : { type, code } };
    summary = `ICMPv4 type ${type} code ${code}`;
  } else {
    summary = `IP protocol ${proto}`;
  }

  const flow: HubbleFlow = {
    time: rfc3339Nano(seconds, nanos),
    verdict: VERDICTS[verdict] ?? 'VERDICT_UNKNOWN',
    IP: { source: ipv4ToString(view.getUint32(o + 8, true)), destination: ipv4ToString(view.getUint32(o + 12, true)), ipVersion: 'IPv4' },
    source: srcEp === 0 ? { identity: srcIdentity } : { ID: srcEp, identity: srcIdentity },
    destination: dstEp === 0 ? { identity: dstIdentity } : { ID: dstEp, identity: dstIdentity },
    Type: 'L3_L4',
    event_type: { type: eventType },
    is_reply: (view.getUint8(o + 47) & 1) !== 0,
    interface: { index: view.getUint32(o + 28, true) },
    Summary: summary,
  };
  if (l4 !== undefined) flow.l4 = l4;
  if (dropReason !== 0) {
    flow.drop_reason = dropReason;
    flow.drop_reason_desc = dropReasonName(dropReason);
  }
  // Monitor sub types: the drop reason for drops, the observation point for traces
  // (Cilium's TraceFromLxc 5 / TraceToLxc 0).
  if (eventType === 1 && dropReason !== 0) flow.event_type.sub_type = dropReason;
  else if (eventType === 4 && point === 5) flow.event_type.sub_type = 5;
  if (direction !== 0) flow.traffic_direction = DIRECTIONS[direction] ?? 'TRAFFIC_DIRECTION_UNKNOWN';
  if (eventType === 4 && (point === 5 || point === 101)) flow.trace_observation_point = point === 5 ? 'FROM_ENDPOINT' : 'TO_ENDPOINT';
  if (traceReason !== 0) flow.trace_reason = TRACE_REASONS[traceReason] ?? 'TRACE_REASON_UNKNOWN';
  if (proxyPort !== 0) flow.proxy_port = proxyPort;
  if (cookie !== 0) flow.policy_cookie = cookie;
  if (nodeName !== undefined) flow.node_name = nodeName;
  return flow;
}

/** Every flow of a batch as Hubble-shaped objects. */
export function expandFlows(batch: Pick<FlowBatch, 'count' | 'records'>, nodeName?: string): HubbleFlow[] {
  const view = new DataView(batch.records.buffer, batch.records.byteOffset, batch.records.byteLength);
  const n = Math.min(batch.count, Math.floor(batch.records.byteLength / FLOW_RECORD_SIZE));
  const out = new Array<HubbleFlow>(n);
  for (let i = 0; i < n; i++) out[i] = expandFlow(view, i, nodeName);
  return out;
}

/**
 * A movable view over the records of a batch, for filters, counters and metrics that
 * read a few fields of every flow: no object is built per flow (`expandFlow` builds
 * the Hubble-shaped object for the flows that are kept).
 */
export class FlowCursor {
  private readonly view: DataView;
  private o = 0;
  /** Flows in the batch. */
  readonly count: number;

  constructor(batch: Pick<FlowBatch, 'count' | 'records'>) {
    this.view = new DataView(batch.records.buffer, batch.records.byteOffset, batch.records.byteLength);
    this.count = Math.min(batch.count, Math.floor(batch.records.byteLength / FLOW_RECORD_SIZE));
  }

  /** Moves to flow `i` (0-based) and returns the cursor. */
  at(i: number): this {
    this.o = i * FLOW_RECORD_SIZE;
    return this;
  }

  get index(): number {
    return this.o / FLOW_RECORD_SIZE;
  }
  /** Wall-clock seconds since the epoch. */
  get seconds(): number {
    return this.view.getUint32(this.o, true);
  }
  get nanos(): number {
    return this.view.getUint32(this.o + 4, true);
  }
  /** Source IPv4 as a 32-bit number (see `ipv4ToString`). */
  get sourceIp(): number {
    return this.view.getUint32(this.o + 8, true);
  }
  get destinationIp(): number {
    return this.view.getUint32(this.o + 12, true);
  }
  get sourcePort(): number {
    return this.view.getUint16(this.o + 16, true);
  }
  get destinationPort(): number {
    return this.view.getUint16(this.o + 18, true);
  }
  get sourceIdentity(): number {
    return this.view.getUint32(this.o + 20, true);
  }
  get destinationIdentity(): number {
    return this.view.getUint32(this.o + 24, true);
  }
  get ifindex(): number {
    return this.view.getUint32(this.o + 28, true);
  }
  get sourceEndpoint(): number {
    return this.view.getUint16(this.o + 32, true);
  }
  get destinationEndpoint(): number {
    return this.view.getUint16(this.o + 34, true);
  }
  get packetLength(): number {
    return this.view.getUint32(this.o + 36, true);
  }
  /** 1 drop, 4 trace, 5 policy verdict. */
  get eventType(): number {
    return this.view.getUint8(this.o + 40);
  }
  /** Hubble Verdict number. */
  get verdictCode(): number {
    return this.view.getUint8(this.o + 41);
  }
  get verdict(): Verdict {
    return VERDICTS[this.verdictCode] ?? 'VERDICT_UNKNOWN';
  }
  get dropReason(): number {
    return this.view.getUint8(this.o + 42);
  }
  get protocol(): number {
    return this.view.getUint8(this.o + 43);
  }
  get tcpFlags(): number {
    return this.view.getUint8(this.o + 44);
  }
  /** Hubble TrafficDirection number. */
  get directionCode(): number {
    return this.view.getUint8(this.o + 45);
  }
  get isReply(): boolean {
    return (this.view.getUint8(this.o + 47) & 1) !== 0;
  }
  get policyCookie(): number {
    return this.view.getUint32(this.o + 52, true);
  }
  /** The flow under the cursor as a Hubble-shaped object. */
  toHubble(nodeName?: string): HubbleFlow {
    return expandFlow(this.view, this.index, nodeName);
  }
}

/** The `hubble observe -o json` line of a flow. */
export function toHubbleJsonLine(flow: HubbleFlow, nodeName?: string): string {
  return JSON.stringify({ flow, node_name: nodeName ?? flow.node_name, time: flow.time });
}

/** Reads flows of the datapath pinned under a pin directory, in batches. */
export class FlowStream {
  private constructor(private readonly reader: native.FlowReader) {}

  /** Opens the ring buffer pinned under `pinDir`; throws a DatapathError (ENOENT) if none. */
  static open(pinDir: string, bpffsRoot?: string): FlowStream {
    try {
      return new FlowStream(native.FlowReader.open(pinDir, bpffsRoot));
    } catch (err) {
      throw toDatapathError(err);
    }
  }

  /** Up to `max` decoded records, waiting up to `timeoutMs` for the first. */
  async readBatch(max = 4096, timeoutMs = 1000): Promise<FlowBatch> {
    try {
      return await this.reader.read(max, timeoutMs);
    } catch (err) {
      throw toDatapathError(err);
    }
  }

  /** Up to `max` flows as Hubble-shaped objects. */
  async read(max = 4096, timeoutMs = 1000, nodeName?: string): Promise<HubbleFlow[]> {
    return expandFlows(await this.readBatch(max, timeoutMs), nodeName);
  }

  /** Batches of flows until `signal` aborts (checked between reads). */
  async *batches(options: { max?: number; timeoutMs?: number; signal?: AbortSignal; nodeName?: string } = {}): AsyncGenerator<HubbleFlow[]> {
    const { max = 4096, timeoutMs = 250, signal, nodeName } = options;
    while (signal?.aborted !== true) {
      const flows = await this.read(max, timeoutMs, nodeName);
      if (flows.length > 0) yield flows;
    }
  }

  /** Decoded and malformed record counts. */
  stats(): native.FlowReaderStats {
    return this.reader.stats();
  }

  /** Releases the ring buffer. */
  close(): void {
    this.reader.close();
  }
}

/** Decodes raw `struct flow_event` records (e.g. a capture) through the addon's decoder. */
export async function decodeFlowEvents(records: Buffer): Promise<FlowBatch> {
  try {
    return await native.decodeFlowEvents(records);
  } catch (err) {
    throw toDatapathError(err);
  }
}
