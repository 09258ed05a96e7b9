/**
 * IPv4 CIDRs of policies: parsing, normalising (host bits cleared) and containment.
 * The datapath is IPv4 only; IPv6 CIDRs are recognised so that parse can say so.
 */
import { ipv4ToNumber, ipv4ToString } from '../datapath/codecs.js';

export interface Cidr {
  /** Network address with host bits cleared, as a 32-bit value. */
  addr: number;
  prefixLen: number;
}

export type CidrParse = { ok: true; cidr: Cidr; text: string; hadHostBits: boolean } | { ok: false; ipv6: boolean; reason: string };

function mask(prefixLen: number): number {
  return prefixLen === 0 ? 0 : (0xffffffff << (32 - prefixLen)) >>> 0;
}

/** Parses "a.b.c.d/n" (a bare address is refused: policies write CIDRs). */
export function parseCidr(text: string): CidrParse {
  const slash = text.indexOf('/');
  if (text.includes(':')) return { ok: false, ipv6: true, reason: `${JSON.stringify(text)} is an IPv6 CIDR; the datapath is IPv4 only` };
  if (slash < 0) return { ok: false, ipv6: false, reason: `${JSON.stringify(text)} is not a CIDR: write it as a.b.c.d/n` };
  const lenText = text.slice(slash + 1);
  if (!/^\d{1,2}$/.test(lenText) || Number(lenText) > 32) return { ok: false, ipv6: false, reason: `${JSON.stringify(text)} has an invalid prefix length: 0..32` };
  let addr: number;
  try {
    addr = ipv4ToNumber(text.slice(0, slash));
  } catch {
    return { ok: false, ipv6: false, reason: `${JSON.stringify(text)} has an invalid IPv4 address` };
  }
  const prefixLen = Number(lenText);
  const network = (addr & mask(prefixLen)) >>> 0;
  const cidr = { addr: network, prefixLen };
  return { ok: true, cidr, text: formatCidr(cidr), hadHostBits: network !== addr };
}

export function formatCidr(c: Cidr): string {
  return `${ipv4ToString(c.addr)}/${c.prefixLen}`;
}

/** Parses a CIDR known to be valid (normalised output of parse); throws otherwise. */
export function cidrOf(text: string): Cidr {
  const p = parseCidr(text);
  if (!p.ok) throw new RangeError(p.reason);
  return p.cidr;
}

/** True when `outer` contains every address of `inner` (a CIDR contains itself). */
export function cidrContains(outer: Cidr, inner: Cidr): boolean {
  return outer.prefixLen <= inner.prefixLen && ((inner.addr & mask(outer.prefixLen)) >>> 0) === outer.addr;
}

/** Orders CIDRs by address, then by prefix length (shorter first). */
export function compareCidrs(a: Cidr, b: Cidr): number {
  return a.addr - b.addr || a.prefixLen - b.prefixLen;
}
