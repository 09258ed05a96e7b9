/**
 * IPAM of one node: pod addresses from the node's podCIDR (its Node object),
 * persisted in <stateDir>/ipam.json so that a restarted agent never hands out an
 * address twice. Keyed by the CNI attachment (containerId + ifname): asking
 * again for the same attachment returns the same address.
 *
 * Every change is written to disk (temporary file + rename) before it is
 * answered. Allocations outside the current podCIDR (the Node was re-created
 * with another range) are kept until released: their pods still use them.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { POD_GATEWAY, type IpamAllocateRequest, type IpamAllocation, type PodRef } from '../api/types.js';
import type { Logger } from '../log/logger.js';
import { addressPool, nextFreeAddress, poolSize, type AddressPool } from './pool.js';

export class IpamError extends Error {
  constructor(
    readonly code: 'exhausted' | 'no_pod_cidr' | 'invalid_request' | 'state_corrupt',
    message: string,
  ) {
    super(message);
    this.name = 'IpamError';
  }
}

interface IpamFile {
  version: 1;
  podCIDR: string;
  /** The address handed out last; the next scan starts after it. */
  cursor?: string;
  allocations: IpamAllocation[];
}

export const attachmentKey = (containerId: string, ifname: string): string => `${containerId}/${ifname}`;

const CONTAINER_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,255}$/;
const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

/** Every problem with an allocation request, by field; empty when valid. */
export function allocateRequestProblems(body: unknown): string[] {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return ['the body must be a JSON object {containerId, ifname, pod: {namespace, name}}'];
  const r = body as Partial<IpamAllocateRequest>;
  const problems: string[] = [];
  if (typeof r.containerId !== 'string' || !CONTAINER_ID.test(r.containerId)) problems.push('containerId must be 1-256 characters of [A-Za-z0-9_.-], starting with an alphanumeric');
  if (typeof r.ifname !== 'string' || !IFNAME.test(r.ifname)) problems.push('ifname must be a Linux interface name (1-15 characters of [A-Za-z0-9_.-])');
  problems.push(...podRefProblems(r.pod));
  return problems;
}

export function podRefProblems(pod: unknown): string[] {
  if (typeof pod !== 'object' || pod === null) return ['pod must be an object {namespace, name, uid?}'];
  const p = pod as Partial<PodRef>;
  const problems: string[] = [];
  if (typeof p.namespace !== 'string' || !DNS_LABEL.test(p.namespace)) problems.push('pod.namespace must be a DNS label');
  if (typeof p.name !== 'string' || !DNS_SUBDOMAIN.test(p.name)) problems.push('pod.name must be a DNS subdomain');
  if (p.uid !== undefined && (typeof p.uid !== 'string' || p.uid.length > 128)) problems.push('pod.uid must be a string of at most 128 characters');
  return problems;
}

export class Ipam {
  private readonly path: string;
  private pool: AddressPool | undefined;
  private cursor: string | undefined;
  private readonly byKey = new Map<string, IpamAllocation>();
  private readonly byIp = new Map<string, IpamAllocation>();

  constructor(
    stateDir: string,
    private readonly log: Logger,
    private readonly now: () => Date = () => new Date(),
  ) {
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    this.path = join(stateDir, 'ipam.json');
    this.load();
  }

  /** The pod range, from the Node object. Existing allocations are kept. */
  setPodCidr(cidr: string): void {
    if (this.pool?.cidr === cidr) return;
    const previous = this.pool?.cidr;
    this.pool = addressPool(cidr);
    const outside = [...this.byKey.values()].filter((a) => a.podCIDR !== cidr).length;
    this.log.info({ podCIDR: cidr, previous, addresses: poolSize(this.pool), allocations: this.byKey.size, outsideRange: outside }, 'IPAM pod range set');
    this.persist();
  }

  podCidr(): string | undefined {
    return this.pool?.cidr;
  }

  allocate(req: IpamAllocateRequest): IpamAllocation {
    const problems = allocateRequestProblems(req);
    if (problems.length > 0) throw new IpamError('invalid_request', problems.join('; '));
    const key = attachmentKey(req.containerId, req.ifname);
    const existing = this.byKey.get(key);
    if (existing) return existing;
    if (!this.pool) throw new IpamError('no_pod_cidr', "this node has no podCIDR yet: set spec.podCIDR on the Node (kube-controller-manager --allocate-node-cidrs does it) and retry");
    const ip = nextFreeAddress(this.pool, new Set(this.byIp.keys()), this.cursor);
    if (ip === undefined) {
      throw new IpamError('exhausted', `every address of ${this.pool.cidr} is allocated (${this.byIp.size}); delete pods on this node or give it a larger podCIDR`);
    }
    const allocation: IpamAllocation = {
      containerId: req.containerId,
      ifname: req.ifname,
      pod: { namespace: req.pod.namespace, name: req.pod.name, ...(req.pod.uid ? { uid: req.pod.uid } : {}) },
      ipv4: ip,
      prefixLength: 32,
      gateway: POD_GATEWAY,
      podCIDR: this.pool.cidr,
      allocatedAt: this.now().toISOString(),
    };
    this.byKey.set(key, allocation);
    this.byIp.set(ip, allocation);
    this.cursor = ip;
    this.persist();
    this.log.info({ pod: `${req.pod.namespace}/${req.pod.name}`, containerId: req.containerId, ifname: req.ifname, ipv4: ip }, 'address allocated');
    return allocation;
  }

  get(containerId: string, ifname: string): IpamAllocation | undefined {
    return this.byKey.get(attachmentKey(containerId, ifname));
  }

  byAddress(ip: string): IpamAllocation | undefined {
    return this.byIp.get(ip);
  }

  list(): IpamAllocation[] {
    return [...this.byKey.values()].sort((a, b) => a.ipv4.localeCompare(b.ipv4, undefined, { numeric: true }));
  }

  /** Releases an attachment's address; false when it had none. */
  release(containerId: string, ifname: string, reason: string): boolean {
    const key = attachmentKey(containerId, ifname);
    const a = this.byKey.get(key);
    if (!a) return false;
    this.byKey.delete(key);
    this.byIp.delete(a.ipv4);
    this.persist();
    this.log.info({ pod: `${a.pod.namespace}/${a.pod.name}`, containerId, ifname, ipv4: a.ipv4, reason }, 'address released');
    return true;
  }

  stats(): { podCIDR: string | null; allocated: number; capacity: number } {
    return { podCIDR: this.pool?.cidr ?? null, allocated: this.byKey.size, capacity: this.pool ? poolSize(this.pool) : 0 };
  }

  private load(): void {
    if (!existsSync(this.path)) return;
    let file: IpamFile;
    try {
      file = JSON.parse(readFileSync(this.path, 'utf8')) as IpamFile;
      if (file.version !== 1 || !Array.isArray(file.allocations)) throw new Error('unknown format (want version 1 with an allocations array)');
    } catch (err) {
      // Refuse to start with an unreadable IPAM state: handing out addresses without
      // knowing which are in use could give two pods one address.
      throw new IpamError('state_corrupt', `cannot read ${this.path}: ${(err as Error).message}; fix or move the file aside (the agent then rebuilds allocations only for new pods: running pods keep their addresses but are not protected against reuse)`);
    }
    for (const a of file.allocations) {
      const problems = allocateRequestProblems(a);
      if (problems.length > 0 || typeof a.ipv4 !== 'string') {
        this.log.error({ allocation: a, problems }, 'IPAM state holds an invalid allocation; keeping its address reserved');
      }
      this.byKey.set(attachmentKey(String(a.containerId), String(a.ifname)), a);
      this.byIp.set(String(a.ipv4), a);
    }
    this.cursor = file.cursor;
    if (file.podCIDR) {
      try {
        this.pool = addressPool(file.podCIDR);
      } catch {
        this.pool = undefined;
      }
    }
    this.log.info({ file: this.path, allocations: this.byKey.size, podCIDR: file.podCIDR }, 'IPAM state loaded');
  }

  private persist(): void {
    const file: IpamFile = { version: 1, podCIDR: this.pool?.cidr ?? '', ...(this.cursor ? { cursor: this.cursor } : {}), allocations: this.list() };
    const tmp = `${this.path}.tmp-${process.pid}`;
    writeFileSync(tmp, JSON.stringify(file, null, 1) + '\n', { mode: 0o600 });
    renameSync(tmp, this.path);
  }
}
