/**
 * The local endpoints of this node: created by the CNI plugin's ADD through the
 * agent API, deleted by its DEL, persisted so that a restarted agent knows them.
 *
 * Creating an endpoint never opens a window without policy: the endpoint is
 * added to the desired state first (its ipcache entry, policy entries and
 * enforcement flags; an endpoint whose identity is not known yet denies
 * everything), the pipeline writes that into the maps, and only then are the
 * programs attached to its host-side veth. The API answers after the attach.
 */
import { existsSync, readFileSync } from 'node:fs';
import type { EndpointCreateRequest, EndpointDeleteResult } from '../api/types.js';
import { attachEndpoint, detachEndpoint, listEndpointAttachments, type EndpointSpec } from '../datapath/lxc.js';
import { podRefProblems, type Ipam } from '../ipam/ipam.js';
import type { Logger } from '../log/logger.js';
import { endpointProblems, nextEndpointId, type Endpoint } from './endpoint.js';
import type { EndpointStore } from './store.js';

export class EndpointError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'EndpointError';
  }
}

export interface EndpointManagerDeps {
  store: EndpointStore;
  ipam: Ipam;
  datapath: { pinDir: string; bpffsRoot?: string };
  log: Logger;
  /** Waits (bounded) for the identity of a pod ("namespace/name"); undefined if it did not resolve. */
  resolveIdentity: (pod: string) => Promise<number | undefined>;
  /** Applies the desired state (which reads `list()`) and resolves when the maps hold it. */
  sync: () => Promise<void>;
  /** The datapath entry the latest desired state has for an endpoint id. */
  specOf: (id: number) => EndpointSpec | undefined;
  now?: () => Date;
}

const key = (containerId: string, ifname: string) => `${containerId}/${ifname}`;

/** The ifindex of a host interface, or undefined when it does not exist. */
export function hostIfindex(name: string): number | undefined {
  const path = `/sys/class/net/${name}/ifindex`;
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(name) || !existsSync(path)) return undefined;
  const n = Number(readFileSync(path, 'utf8').trim());
  return Number.isInteger(n) && n > 0 ? n : undefined;
}

export function createRequestProblems(body: unknown): string[] {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return ['the body must be a JSON object (EndpointCreateRequest)'];
  const r = body as Partial<EndpointCreateRequest>;
  // Reuse the record's checks with placeholder values for what the agent assigns.
  const problems = endpointProblems({ ...r, id: 1, identity: 0 } as Partial<Endpoint>).filter((p) => !p.startsWith('pod.'));
  return [...problems, ...podRefProblems(r.pod)];
}

export class EndpointManager {
  private readonly byId = new Map<number, Endpoint>();
  private readonly byKey = new Map<string, number>();
  /** Serialises create/delete of one attachment key. */
  private readonly locks = new Map<string, Promise<unknown>>();

  constructor(private readonly deps: EndpointManagerDeps) {}

  list(): Endpoint[] {
    return [...this.byId.values()].sort((a, b) => a.id - b.id);
  }

  get(containerId: string, ifname: string): Endpoint | undefined {
    const id = this.byKey.get(key(containerId, ifname));
    return id === undefined ? undefined : this.byId.get(id);
  }

  byEndpointId(id: number): Endpoint | undefined {
    return this.byId.get(id);
  }

  /**
   * Loads the persisted endpoints and checks them against the kernel: an
   * endpoint whose host interface is gone (its pod went away while the agent
   * was down) is removed and its address released; attachments that no
   * endpoint owns are detached.
   */
  async restore(): Promise<{ restored: number; removed: number; detachedOrphans: number; attached: Set<number> }> {
    const { endpoints } = this.deps.store.load();
    let removed = 0;
    for (const ep of endpoints) {
      const ifindex = hostIfindex(ep.hostIface);
      if (ifindex !== ep.ifindex) {
        this.deps.store.remove(ep.id);
        this.deps.ipam.release(ep.containerId, ep.ifname, 'its host interface is gone (pod deleted while the agent was down)');
        this.deps.log.info({ endpoint: ep.id, pod: `${ep.pod.namespace}/${ep.pod.name}`, hostIface: ep.hostIface }, 'endpoint removed: its interface is gone');
        removed++;
        continue;
      }
      this.remember(ep);
    }
    let detachedOrphans = 0;
    const known = new Set(this.list().map((e) => e.ifindex));
    const attachments = await listEndpointAttachments(this.deps.datapath);
    const attached = new Set(attachments.filter((a) => known.has(a.ifindex) && a.attachments.length >= 2).map((a) => a.ifindex));
    for (const a of attachments) {
      if (!known.has(a.ifindex) && a.attachments.length > 0) {
        await detachEndpoint({ ...this.deps.datapath, ifindex: a.ifindex });
        this.deps.log.warn({ ifindex: a.ifindex, iface: a.iface }, 'detached the datapath from an interface no endpoint owns');
        detachedOrphans++;
      }
    }
    return { restored: this.byId.size, removed, detachedOrphans, attached };
  }

  /** Attaches datapath programs to restored endpoints that lost them (`attached`: what restore() found whole; never detaches). */
  async reattachMissing(attached: ReadonlySet<number>): Promise<number> {
    let n = 0;
    for (const ep of this.list()) {
      if (attached.has(ep.ifindex)) continue;
      const spec = this.deps.specOf(ep.id);
      if (!spec) continue;
      await attachEndpoint({ ...this.deps.datapath, iface: ep.hostIface, endpoint: spec });
      n++;
    }
    return n;
  }

  create(req: EndpointCreateRequest): Promise<Endpoint> {
    const problems = createRequestProblems(req);
    if (problems.length > 0) return Promise.reject(new EndpointError(400, 'invalid_endpoint', problems.join('; ')));
    return this.serialised(key(req.containerId, req.ifname), () => this.createLocked(req));
  }

  private async createLocked(req: EndpointCreateRequest): Promise<Endpoint> {
    const { ipam, log } = this.deps;
    const allocation = ipam.get(req.containerId, req.ifname);
    if (!allocation) throw new EndpointError(409, 'no_allocation', `no address is allocated to ${req.containerId}/${req.ifname}: POST /v1/ipam/allocations first`);
    if (allocation.ipv4 !== req.ipv4) throw new EndpointError(409, 'address_mismatch', `${req.containerId}/${req.ifname} was allocated ${allocation.ipv4}, not ${req.ipv4}`);
    const ifindex = hostIfindex(req.hostIface);
    if (ifindex === undefined) throw new EndpointError(400, 'no_such_interface', `host interface ${req.hostIface} does not exist`);
    if (ifindex !== req.ifindex) throw new EndpointError(400, 'ifindex_mismatch', `host interface ${req.hostIface} has ifindex ${ifindex}, not ${req.ifindex}`);

    const existing = this.get(req.containerId, req.ifname);
    if (existing && existing.ifindex === req.ifindex && existing.state === 'ready') return existing;
    if (existing) await this.forget(existing, 'replaced by a new ADD of the same attachment', false);

    const pod = `${req.pod.namespace}/${req.pod.name}`;
    const identity = await this.deps.resolveIdentity(pod);
    // The id is taken after the last await before remember(): concurrent creates
    // (other attachments) would otherwise pick the same free id.
    const id = nextEndpointId(this.byId.keys());
    if (id === undefined) throw new EndpointError(503, 'endpoints_exhausted', 'all 65535 endpoint ids are in use on this node');
    const ep: Endpoint = {
      id,
      containerId: req.containerId,
      netns: req.netns,
      ifname: req.ifname,
      hostIface: req.hostIface,
      ifindex: req.ifindex,
      ipv4: req.ipv4,
      mac: req.mac,
      nodeMac: req.nodeMac,
      pod: { namespace: req.pod.namespace, name: req.pod.name, ...(req.pod.uid ? { uid: req.pod.uid } : {}) },
      identity: identity ?? 0,
      state: identity === undefined ? 'waiting-for-identity' : 'regenerating',
      createdAt: (this.deps.now?.() ?? new Date()).toISOString(),
    };
    this.remember(ep);
    const t0 = performance.now();
    let syncMs = 0;
    try {
      this.deps.store.save(ep);
      await this.deps.sync();
      syncMs = performance.now() - t0;
      const spec = this.deps.specOf(id);
      if (!spec) throw new Error(`the desired state has no entry for endpoint ${id}`);
      await attachEndpoint({ ...this.deps.datapath, iface: ep.hostIface, endpoint: spec });
    } catch (err) {
      await this.forget(ep, 'creation failed', false);
      throw err;
    }
    if (ep.state === 'regenerating') ep.state = 'ready';
    this.deps.store.save(ep);
    const attachMs = performance.now() - t0 - syncMs;
    log.info({ endpoint: id, pod, containerId: ep.containerId, ipv4: ep.ipv4, hostIface: ep.hostIface, identity: ep.identity, state: ep.state, syncMs: Math.round(syncMs), attachMs: Math.round(attachMs) }, 'endpoint created');
    return ep;
  }

  delete(containerId: string, ifname: string): Promise<EndpointDeleteResult> {
    return this.serialised(key(containerId, ifname), async () => {
      const ep = this.get(containerId, ifname);
      if (ep) await this.forget(ep, 'deleted', true);
      const released = this.deps.ipam.release(containerId, ifname, ep ? 'endpoint deleted' : 'CNI DEL without an endpoint');
      return { removed: ep !== undefined, released };
    });
  }

  /** Keeps only the attachments the runtime lists; the rest are deleted and their addresses released. */
  async gc(valid: ReadonlyArray<{ containerId: string; ifname: string }>): Promise<{ removedEndpoints: number; releasedAddresses: number }> {
    const keep = new Set(valid.map((v) => key(v.containerId, v.ifname)));
    let removedEndpoints = 0;
    let releasedAddresses = 0;
    for (const ep of this.list()) {
      if (keep.has(key(ep.containerId, ep.ifname))) continue;
      const r = await this.delete(ep.containerId, ep.ifname);
      if (r.removed) removedEndpoints++;
      if (r.released) releasedAddresses++;
    }
    for (const a of this.deps.ipam.list()) {
      if (keep.has(key(a.containerId, a.ifname))) continue;
      if (this.deps.ipam.release(a.containerId, a.ifname, 'CNI GC: not a valid attachment')) releasedAddresses++;
    }
    return { removedEndpoints, releasedAddresses };
  }

  /** Records a (re)resolved identity of an endpoint's pod; true when it changed. */
  setIdentity(id: number, identity: number | undefined): boolean {
    const ep = this.byId.get(id);
    if (!ep) return false;
    const next = identity ?? 0;
    const state = next > 0 ? 'ready' : 'waiting-for-identity';
    if (ep.identity === next && ep.state === state) return false;
    this.deps.log.info({ endpoint: id, pod: `${ep.pod.namespace}/${ep.pod.name}`, identity: next, previous: ep.identity }, 'endpoint identity changed');
    ep.identity = next;
    if (ep.state !== 'regenerating' && ep.state !== 'disconnecting') ep.state = state;
    this.deps.store.save(ep);
    return true;
  }

  private remember(ep: Endpoint): void {
    this.byId.set(ep.id, ep);
    this.byKey.set(key(ep.containerId, ep.ifname), ep.id);
  }

  private async forget(ep: Endpoint, reason: string, log: boolean): Promise<void> {
    ep.state = 'disconnecting';
    try {
      await detachEndpoint({ ...this.deps.datapath, ifindex: ep.ifindex });
    } catch (err) {
      this.deps.log.warn({ endpoint: ep.id, err, ifindex: ep.ifindex }, 'detaching the endpoint failed (its interface may be gone); forgetting it anyway');
    }
    this.byId.delete(ep.id);
    this.byKey.delete(key(ep.containerId, ep.ifname));
    this.deps.store.remove(ep.id);
    await this.deps.sync();
    if (log) this.deps.log.info({ endpoint: ep.id, pod: `${ep.pod.namespace}/${ep.pod.name}`, containerId: ep.containerId, ipv4: ep.ipv4, reason }, 'endpoint removed');
  }

  private serialised<T>(k: string, run: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(k) ?? Promise.resolve();
    const next = previous.then(run, run);
    const settled = next.then(
      () => undefined,
      () => undefined,
    );
    this.locks.set(k, settled);
    void settled.then(() => {
      if (this.locks.get(k) === settled) this.locks.delete(k);
    });
    return next;
  }
}
