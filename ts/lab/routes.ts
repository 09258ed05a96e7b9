/**
 * Blackhole routes for the lab's pod and service ranges: a packet for a lab
 * address that the datapath did not handle dies on this host instead of
 * following the default route off the machine. More specific routes (a pod's
 * /32 via its veth) still win.
 */
import { spawnSync } from 'node:child_process';

export class RouteError extends Error {
  override name = 'RouteError';
}

function ip(args: string[]): { ok: boolean; out: string; err: string } {
  const r = spawnSync('ip', args, { encoding: 'utf8', timeout: 10_000 });
  if (r.error) {
    const code = (r.error as NodeJS.ErrnoException).code;
    throw new RouteError(code === 'ENOENT' ? 'the ip command (iproute2) is needed for the lab routes; install it (apt-get install iproute2)' : `ip: ${r.error.message}`);
  }
  return { ok: r.status === 0, out: r.stdout, err: r.stderr.trim() };
}

interface RouteJson {
  type?: string;
  dst?: string;
  dev?: string;
  gateway?: string;
}

/** The route with exactly this destination in the main table, if any. */
export function findRoute(cidr: string): RouteJson | undefined {
  const r = ip(['-j', 'route', 'show', 'table', 'main', 'exact', cidr]);
  if (!r.ok) throw new RouteError(`ip route show exact ${cidr} failed: ${r.err}`);
  const routes = JSON.parse(r.out || '[]') as RouteJson[];
  return routes[0];
}

export function hasBlackhole(cidr: string): boolean {
  return findRoute(cidr)?.type === 'blackhole';
}

/** Adds the blackhole route; returns false when an identical one was already there (not ours then). */
export function addBlackhole(cidr: string): boolean {
  const existing = findRoute(cidr);
  if (existing) {
    if (existing.type === 'blackhole') return false;
    throw new RouteError(
      `a route for ${cidr} already exists (${existing.type ?? 'unicast'}${existing.dev ? ` dev ${existing.dev}` : ''}${existing.gateway ? ` via ${existing.gateway}` : ''}); ` +
        'the lab will not replace it. Pick other lab ranges (lab.clusterCIDR / lab.serviceCIDR) or remove that route.',
    );
  }
  const r = ip(['route', 'add', 'blackhole', cidr]);
  if (!r.ok) {
    const hint = /Operation not permitted/.test(r.err) ? ' (the lab needs root, or CAP_NET_ADMIN, for its routes)' : '';
    throw new RouteError(`ip route add blackhole ${cidr} failed: ${r.err}${hint}`);
  }
  return true;
}

/** Removes the blackhole route if it is there; true when one was removed. */
export function removeBlackhole(cidr: string): boolean {
  if (!hasBlackhole(cidr)) return false;
  const r = ip(['route', 'del', 'blackhole', cidr]);
  if (!r.ok) throw new RouteError(`ip route del blackhole ${cidr} failed: ${r.err}`);
  return true;
}
