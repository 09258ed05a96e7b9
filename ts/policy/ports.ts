/**
 * Ports and protocols of policy entries.
 *
 * The datapath's policy map is an LPM trie over {ep_id, direction, identity, proto, dport}
 * (96 bits after the prefix length; see ebpf/README.md "Policy"): prefixLen 64 matches every
 * protocol and port of a peer, 80 every port of one protocol, 80 + n the ports sharing their
 * first n bits, 96 one port. A port range is therefore written as the minimal list of
 * aligned blocks that cover it exactly (at most 30), never one entry per port.
 */

export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_SCTP = 132;

/** Prefix lengths of the policy key. */
export const PREFIX_ANY_PROTO = 64;
export const PREFIX_ANY_PORT = 80;
export const PREFIX_EXACT_PORT = 96;

export const MAX_PORT = 65535;

/** A block of ports: `prefixLen` (80..96) and the first port of the block. */
export interface PortPrefix {
  prefixLen: number;
  port: number;
}

function isPort(n: number): boolean {
  return Number.isInteger(n) && n >= 0 && n <= MAX_PORT;
}

/**
 * The minimal aligned prefixes covering the ports low..high (inclusive), in ascending port
 * order. 0..65535 is one prefix of length 80 (every port). Throws a RangeError when the
 * bounds are not ports or low > high.
 */
export function portRangePrefixes(low: number, high: number): PortPrefix[] {
  if (!isPort(low) || !isPort(high)) throw new RangeError(`port range ${low}-${high}: ports must be integers in 0..65535`);
  if (low > high) throw new RangeError(`port range ${low}-${high}: the first port is above the last`);
  const out: PortPrefix[] = [];
  let start = low;
  while (start <= high) {
    // The largest block aligned at `start` (a power of two dividing it) that stays within the range.
    let size = start === 0 ? 1 << 16 : start & -start;
    while (start + size - 1 > high) size >>>= 1;
    out.push({ prefixLen: PREFIX_ANY_PORT + 16 - Math.log2(size), port: start });
    start += size;
  }
  return out;
}

/** True when the block `outer` contains every port of the block `inner` (same protocol). */
export function portPrefixCovers(outer: PortPrefix, inner: PortPrefix): boolean {
  if (outer.prefixLen > inner.prefixLen) return false;
  const bits = outer.prefixLen - PREFIX_ANY_PORT;
  if (bits <= 0) return true;
  const shift = 16 - bits;
  return outer.port >>> shift === inner.port >>> shift;
}

/** Protocols a policy may name (upper case, as written in both APIs). */
const PROTOCOL_NUMBERS: ReadonlyMap<string, number> = new Map([
  ['TCP', IPPROTO_TCP],
  ['UDP', IPPROTO_UDP],
  ['SCTP', IPPROTO_SCTP],
]);

/** The IP protocol number of "TCP" | "UDP" | "SCTP", or undefined. */
export function protocolNumber(name: string): number | undefined {
  return PROTOCOL_NUMBERS.get(name);
}

/** The protocols "ANY" stands for when a port is given (a wildcard protocol needs a wildcard port). */
export const ANY_PROTOCOL_WITH_PORT: readonly number[] = [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP];

export function protocolName(proto: number): string {
  for (const [name, n] of PROTOCOL_NUMBERS) if (n === proto) return name;
  if (proto === IPPROTO_ICMP) return 'ICMP';
  return String(proto);
}

/** ICMPv4 type names accepted in CiliumNetworkPolicy `icmps[].fields[].type`. */
export const ICMPV4_TYPES: ReadonlyMap<string, number> = new Map([
  ['EchoReply', 0],
  ['DestinationUnreachable', 3],
  ['Redirect', 5],
  ['EchoRequest', 8],
  ['RouterAdvertisement', 9],
  ['RouterSelection', 10],
  ['TimeExceeded', 11],
  ['ParameterProblem', 12],
  ['Timestamp', 13],
  ['TimestampReply', 14],
  ['Photuris', 40],
  ['ExtendedEchoRequest', 42],
  ['ExtendedEchoReply', 43],
]);
