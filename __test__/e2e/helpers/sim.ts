/**
 * Helpers for e2e tests of the lab's node simulator: what the kernel has
 * (simulated pods' netns, host-side links by their CNI alias), direct probes from
 * inside a pod's netns, and the lab's own agent API.
 */
import { execFileSync, spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { callAgent } from '../../../ts/api/client.js';
import type { IpamAllocation } from '../../../ts/api/types.js';
import { labLayout } from '../../../ts/lab/layout.js';
import { nodeLayout } from '../../../ts/lab/node.js';
import type { ProbeAttempt, ProbeRequest } from '../../../ts/lab/sim/probe-client.js';
import { netnsScriptCommand, SIM_NETNS_PREFIX, simNetnsName } from '../../../ts/lab/sim/scripts.js';
import { sandboxId } from '../../../ts/lab/sim/pods.js';

/** Names of the simulated pods' network namespaces that exist now. */
export function simNetnsNames(): string[] {
  try {
    return readdirSync('/var/run/netns').filter((n) => n.startsWith(SIM_NETNS_PREFIX));
  } catch {
    return [];
  }
}

export const netnsOfPod = (uid: string): string => simNetnsName(uid);

interface IpLink {
  ifname: string;
  ifalias?: string;
}

/** Host-side links the CNI plugin made for this pod (their alias names the sandbox id). */
export function hostLinksOfPod(uid: string): string[] {
  const links = JSON.parse(execFileSync('ip', ['-j', 'link', 'show'], { encoding: 'utf8' })) as IpLink[];
  const id = sandboxId(uid);
  return links.filter((l) => l.ifalias?.includes(id)).map((l) => l.ifname);
}

/** Runs the lab's probe client inside a pod's netns, as `lab probe` does, without the CLI. */
export function probeFromNetns(netns: string, req: ProbeRequest): Promise<ProbeAttempt> {
  const { cmd, args, cwd } = netnsScriptCommand(netns, 'probe-client', JSON.stringify(req));
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      try {
        resolve(JSON.parse(out.trim()) as ProbeAttempt);
      } catch {
        reject(new Error(`probe in ${netns} exited ${code}: ${err || out}`));
      }
    });
  });
}

/** The lab agent's IPAM allocations. */
export function labAllocations(labDir: string): Promise<IpamAllocation[]> {
  return callAgent<IpamAllocation[]>({ socketPath: nodeLayout(labLayout(labDir)).agentSocket, method: 'GET', path: '/v1/ipam/allocations' });
}

/** Runs fn over items, at most `width` at a time. */
export async function inBatches<T, R>(items: T[], width: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i]!);
      }
    }),
  );
  return out;
}
