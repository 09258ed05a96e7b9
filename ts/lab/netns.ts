/**
 * Two network namespaces joined through the host, for the kernel tests and the
 * demo (until the CNI plugin and node simulator wire real pods), the way a CNI
 * plugin wires pods: each namespace gets a veth whose host side stays in the root
 * namespace, a /32 address from 10.250.0.0/16, a default route via a link-local
 * gateway (169.254.1.1) with a static neighbour entry, and the host routes each /32
 * to its veth. Forwarding is enabled only on the two host-side veths (per-device
 * sysctl), never globally.
 *
 * Names carry the test process's pid so that concurrent runs do not collide.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';

export interface Pod {
  /** Network namespace name. */
  netns: string;
  /** Host-side veth name (root namespace). */
  hostIface: string;
  /** Address inside the namespace (on its eth0). */
  ip: string;
}

export interface TwoPods {
  a: Pod;
  b: Pod;
  /** Removes namespaces and host veths; safe to call more than once. */
  destroy(): void;
}

const GATEWAY = '169.254.1.1';

export function run(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${e.stderr ?? ''}${e.stdout ?? ''}${e.message}`);
  }
}

function tryRun(cmd: string, args: string[]): void {
  try {
    execFileSync(cmd, args, { stdio: 'ignore' });
  } catch {
    // best effort during cleanup
  }
}

function mac(iface: string, netns?: string): string {
  const path = `/sys/class/net/${iface}/address`;
  if (netns === undefined) return readFileSync(path, 'utf8').trim();
  return run('ip', ['netns', 'exec', netns, 'cat', path]).trim();
}

/**
 * Creates pods a and b. `tag` (a letter or two) keeps several pairs of one process
 * apart. On any failure the partial setup is removed before rethrowing.
 */
export function createTwoPods(tag: string): TwoPods {
  const pid = process.pid;
  const subnet = pid % 200;
  const tagIndex = tag.charCodeAt(0) % 50;
  const pods = (['a', 'b'] as const).map((side, i) => ({
    netns: `mbr-t${pid}-${tag}${side}`,
    hostIface: `mbt${pid}${tag}${side}`.slice(0, 15),
    ip: `10.250.${subnet}.${tagIndex * 4 + i + 1}`,
  }));
  const [a, b] = pods as [Pod, Pod];
  const destroy = (): void => {
    for (const pod of [a, b]) {
      tryRun('ip', ['link', 'del', pod.hostIface]);
      tryRun('ip', ['netns', 'del', pod.netns]);
    }
  };
  try {
    destroy();
    for (const pod of [a, b]) {
      run('ip', ['netns', 'add', pod.netns]);
      run('ip', ['link', 'add', pod.hostIface, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', pod.netns]);
      writeFileSync(`/proc/sys/net/ipv6/conf/${pod.hostIface}/disable_ipv6`, '1');
      writeFileSync(`/proc/sys/net/ipv4/conf/${pod.hostIface}/forwarding`, '1');
      run('ip', ['link', 'set', pod.hostIface, 'up']);
      const inNs = (...args: string[]): string => run('ip', ['netns', 'exec', pod.netns, ...args]);
      inNs('sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1');
      inNs('ip', 'link', 'set', 'lo', 'up');
      inNs('ip', 'addr', 'add', `${pod.ip}/32`, 'dev', 'eth0');
      inNs('ip', 'link', 'set', 'eth0', 'up');
      inNs('ip', 'route', 'add', GATEWAY, 'dev', 'eth0', 'scope', 'link');
      inNs('ip', 'route', 'add', 'default', 'via', GATEWAY, 'dev', 'eth0');
      inNs('ip', 'neigh', 'replace', GATEWAY, 'lladdr', mac(pod.hostIface), 'dev', 'eth0', 'nud', 'permanent');
      run('ip', ['route', 'replace', `${pod.ip}/32`, 'dev', pod.hostIface, 'scope', 'link']);
      run('ip', ['neigh', 'replace', pod.ip, 'lladdr', mac('eth0', pod.netns), 'dev', pod.hostIface, 'nud', 'permanent']);
    }
  } catch (err) {
    destroy();
    throw err;
  }
  return { a, b, destroy };
}

/** Pings `to` from inside `from`'s namespace; throws if any reply is missing. */
export function ping(from: Pod, to: Pod, count: number): void {
  run('ip', ['netns', 'exec', from.netns, 'ping', '-c', String(count), '-i', '0.2', '-W', '2', '-q', to.ip]);
}
