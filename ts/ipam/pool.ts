/**
 * Address arithmetic of a node's pod range, pure. The pool hands out every
 * address of the podCIDR except its network and broadcast addresses (a /31 or
 * /32 has none to spare and is refused). Allocation scans forward from a cursor
 * (the address after the last one handed out), so a released address is reused
 * only after the rest of the range has been used: a stale client that still
 * talks to an old pod address is unlikely to reach a new pod.
 */
import { formatIpv4, parseIpv4, parsePrefix } from '../lab/cidr.js';

export interface AddressPool {
  cidr: string;
  /** First and last assignable address, as numbers. */
  first: number;
  last: number;
}

export function addressPool(cidr: string): AddressPool {
  const { network, bits } = parsePrefix(cidr);
  if (bits > 30) throw new RangeError(`podCIDR ${cidr} is too small for pods: use a /30 or larger (a /24 per node is usual)`);
  return { cidr, first: network + 1, last: network + 2 ** (32 - bits) - 2 };
}

export function poolSize(pool: AddressPool): number {
  return pool.last - pool.first + 1;
}

export function poolContains(pool: AddressPool, ip: string): boolean {
  let n: number;
  try {
    n = parseIpv4(ip);
  } catch {
    return false;
  }
  return n >= pool.first && n <= pool.last;
}

/**
 * The next free address after `cursor` (an address, or undefined to start at the
 * beginning), wrapping around once; undefined when every address is in `used`.
 */
export function nextFreeAddress(pool: AddressPool, used: ReadonlySet<string>, cursor?: string): string | undefined {
  const size = poolSize(pool);
  let start = pool.first;
  if (cursor !== undefined && poolContains(pool, cursor)) start = parseIpv4(cursor) + 1;
  for (let i = 0; i < size; i++) {
    let n = start + i;
    if (n > pool.last) n -= size;
    const ip = formatIpv4(n);
    if (!used.has(ip)) return ip;
  }
  return undefined;
}
