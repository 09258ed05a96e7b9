/** IPv4 prefix arithmetic the lab needs (pure). */

export interface Ipv4Prefix {
  /** Network address as an unsigned 32-bit number. */
  network: number;
  bits: number;
}

export function parseIpv4(addr: string): number {
  const parts = addr.split('.');
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) throw new Error(`${addr} is not an IPv4 address`);
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0);
}

export function formatIpv4(n: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
}

export function parsePrefix(cidr: string): Ipv4Prefix {
  const [addr, bitsText] = cidr.split('/');
  const bits = Number(bitsText);
  if (addr === undefined || bitsText === undefined || !Number.isInteger(bits) || bits < 0 || bits > 32) throw new Error(`${cidr} is not an IPv4 CIDR`);
  const ip = parseIpv4(addr);
  const size = 2 ** (32 - bits);
  const network = ip - (ip % size);
  if (network !== ip) throw new Error(`${cidr} has host bits set; the prefix is ${formatIpv4(network)}/${bits}`);
  return { network, bits };
}

export function prefixContains(outer: string, inner: string): boolean {
  const o = parsePrefix(outer);
  const i = parsePrefix(inner);
  return i.bits >= o.bits && i.network - (i.network % 2 ** (32 - o.bits)) === o.network;
}

export function prefixesOverlap(a: string, b: string): boolean {
  return prefixContains(a, b) || prefixContains(b, a);
}

/** The first usable address of a prefix: the `kubernetes` Service gets it. */
export function firstHost(cidr: string): string {
  const p = parsePrefix(cidr);
  return formatIpv4(p.network + 1);
}
