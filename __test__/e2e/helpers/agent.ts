/**
 * Helpers for e2e tests of the agent: run `membrane agent` as a real process
 * (so it can be killed with -9), and wire pods the way the CNI plugin does
 * (netns + veth + /32 + link-local gateway) through the agent's own API.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { agentSocketOf, startAgentProcess, stopAgentProcess, type AgentProcessSettings } from '../../../ts/agent/process.js';
import { callAgent } from '../../../ts/api/client.js';
import type { EndpointView, IpamAllocation, StatusResponse } from '../../../ts/api/types.js';
import { REPO } from './lab.js';

export type AgentSettings = AgentProcessSettings;

export const socketOf = agentSocketOf;
export { startAgentProcess, stopAgentProcess };

export function agentStatus(s: AgentSettings): Promise<StatusResponse> {
  return callAgent<StatusResponse>({ socketPath: socketOf(s), method: 'GET', path: '/v1/status' });
}

export interface WiredPod {
  namespace: string;
  name: string;
  netns: string;
  hostIface: string;
  ip: string;
  containerId: string;
  endpoint: EndpointView;
}

const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
const macOf = (iface: string, netns?: string) => (netns ? sh('ip', ['netns', 'exec', netns, 'cat', `/sys/class/net/${iface}/address`]) : sh('cat', [`/sys/class/net/${iface}/address`]));

/** What the CNI plugin does for ADD, done by hand: allocate, wire, register. */
export async function wirePod(s: AgentSettings, pod: { namespace: string; name: string; netns: string; hostIface: string }): Promise<WiredPod> {
  const socketPath = socketOf(s);
  const containerId = `test-${pod.netns}`;
  const alloc = await callAgent<IpamAllocation>({ socketPath, method: 'POST', path: '/v1/ipam/allocations', body: { containerId, ifname: 'eth0', pod: { namespace: pod.namespace, name: pod.name } } });
  const ip = alloc.ipv4;
  sh('ip', ['netns', 'add', pod.netns]);
  sh('ip', ['link', 'add', pod.hostIface, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', pod.netns]);
  sh('sysctl', ['-qw', `net.ipv6.conf.${pod.hostIface}.disable_ipv6=1`]);
  sh('sysctl', ['-qw', `net.ipv4.conf.${pod.hostIface}.forwarding=1`]);
  sh('ip', ['link', 'set', pod.hostIface, 'up']);
  const inNs = (...args: string[]) => sh('ip', ['netns', 'exec', pod.netns, ...args]);
  inNs('sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1');
  inNs('ip', 'link', 'set', 'lo', 'up');
  inNs('ip', 'addr', 'add', `${ip}/32`, 'dev', 'eth0');
  inNs('ip', 'link', 'set', 'eth0', 'up');
  inNs('ip', 'route', 'add', alloc.gateway, 'dev', 'eth0', 'scope', 'link');
  inNs('ip', 'route', 'add', 'default', 'via', alloc.gateway, 'dev', 'eth0');
  inNs('ip', 'neigh', 'replace', alloc.gateway, 'lladdr', macOf(pod.hostIface), 'dev', 'eth0', 'nud', 'permanent');
  sh('ip', ['route', 'replace', `${ip}/32`, 'dev', pod.hostIface, 'scope', 'link']);
  sh('ip', ['neigh', 'replace', ip, 'lladdr', macOf('eth0', pod.netns), 'dev', pod.hostIface, 'nud', 'permanent']);
  const ifindex = Number(sh('cat', [`/sys/class/net/${pod.hostIface}/ifindex`]));
  const endpoint = await callAgent<EndpointView>({
    socketPath,
    method: 'POST',
    path: '/v1/endpoints',
    body: { containerId, netns: `/var/run/netns/${pod.netns}`, ifname: 'eth0', hostIface: pod.hostIface, ifindex, ipv4: ip, mac: macOf('eth0', pod.netns), nodeMac: macOf(pod.hostIface), pod: { namespace: pod.namespace, name: pod.name } },
  });
  return { ...pod, ip, containerId, endpoint };
}

/** What the CNI plugin does for DEL; tolerant of what is already gone. */
export async function unwirePod(s: AgentSettings, pod: Pick<WiredPod, 'netns' | 'hostIface' | 'containerId'>): Promise<void> {
  try {
    await callAgent({ socketPath: socketOf(s), method: 'DELETE', path: `/v1/endpoints/${pod.containerId}/eth0` });
  } catch {
    // the agent may be down in a failed test; the links go anyway
  }
  removeNetns(pod);
}

export function removeNetns(pod: Pick<WiredPod, 'netns' | 'hostIface'>): void {
  try {
    execFileSync('ip', ['link', 'del', pod.hostIface], { stdio: 'ignore' });
  } catch {
    /* already gone */
  }
  try {
    execFileSync('ip', ['netns', 'del', pod.netns], { stdio: 'ignore' });
  } catch {
    /* already gone */
  }
}

/** Runs a fixture script inside a pod's netns. */
export function runInPod(netns: string, script: string, args: string[]): ChildProcess {
  return spawn('ip', ['netns', 'exec', netns, process.execPath, join(REPO, '__test__', 'e2e', 'fixtures', script), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
}

export function collect(child: ChildProcess): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Waits until a child printed `line` on stdout. */
export function waitForLine(child: ChildProcess, line: string, timeoutMs = 10_000): Promise<void> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`no "${line}" within ${timeoutMs} ms`)), timeoutMs);
    child.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      if (buf.includes(line)) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}
