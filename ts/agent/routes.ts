/**
 * The agent API's routes (see ts/api/types.ts for the contract): thin handlers
 * that validate input, call the agent's parts and convert to views.
 */
import { ApiError, type Route } from '../api/server.js';
import type { CniGcRequest, EndpointCreateRequest, Healthz, IpamAllocateRequest, MapFill, StatusResponse } from '../api/types.js';
import { ctMap, monotonicSeconds, policyMap } from '../datapath/maps.js';
import { ipcacheMap } from '../datapath/maps.js';
import { EndpointError } from '../endpoint/manager.js';
import { RESERVED_IDENTITIES } from '../identity/reserved.js';
import { IpamError } from '../ipam/ipam.js';
import type { Agent } from './agent.js';
import { agentVersion } from './agent.js';
import { ctViews, endpointView, identityViews, ipcacheViews, policyViews } from './views.js';

const IPAM_STATUS: Record<IpamError['code'], number> = { exhausted: 503, no_pod_cidr: 503, invalid_request: 400, state_corrupt: 500 };

function translate(err: unknown): never {
  if (err instanceof EndpointError) throw new ApiError(err.status, err.code, err.message);
  if (err instanceof IpamError) throw new ApiError(IPAM_STATUS[err.code], err.code, err.message);
  throw err;
}

function requireReady(agent: Agent): void {
  if (!agent.ready) throw new ApiError(503, 'not_ready', 'the agent is starting (syncing with Kubernetes and the datapath); retry shortly');
}

function validGcRequest(body: unknown): CniGcRequest {
  const b = body as Partial<CniGcRequest> | undefined;
  if (!b || !Array.isArray(b.valid) || !b.valid.every((v) => typeof v?.containerId === 'string' && typeof v?.ifname === 'string')) {
    throw new ApiError(400, 'invalid_gc_request', 'the body must be {"valid": [{"containerId": string, "ifname": string}, ...]}');
  }
  return b as CniGcRequest;
}

function memoryMB(): { rssMB: number; heapUsedMB: number } {
  const m = process.memoryUsage();
  return { rssMB: Math.round(m.rss / 2 ** 20), heapUsedMB: Math.round(m.heapUsed / 2 ** 20) };
}

export function healthz(agent: Agent): Healthz {
  if (agent.ready) return { ok: true };
  return { ok: false, detail: 'starting: waiting for the Kubernetes informers and the first datapath sync' };
}

export function status(agent: Agent): StatusResponse {
  const reconcilers = agent.pipeline?.stats() ?? [];
  const entries = new Map(reconcilers.map((r) => [r.map, r.entries]));
  const maps: MapFill[] = (agent.datapath?.maps ?? [])
    .filter((m) => entries.has(m.name))
    .map((m) => ({ name: m.name, entries: entries.get(m.name) ?? 0, maxEntries: m.maxEntries }));
  const health = agent.informers.health();
  const synced: Record<string, boolean> = {};
  for (const h of health) synced[h.resource] = h.synced;
  const cluster = agent.identities.allocator.list();
  const eps = agent.endpoints.list();
  const cfg = agent.kc.getCurrentCluster();
  const unhealthy = health.filter((h) => !h.synced || h.lastError);
  return {
    agent: { version: agentVersion, node: agent.nodeName, pid: process.pid, uptimeSeconds: Math.round((Date.now() - agent.startedAt) / 1000), memory: memoryMB() },
    datapath: {
      ok: agent.datapath !== undefined,
      pinDir: agent.pinDir,
      detail: agent.datapath ? `bpf_lxc ${agent.datapath.buildId} (${agent.datapath.outcome})` : 'not opened yet',
      maps,
    },
    kubernetes: {
      ok: unhealthy.length === 0,
      server: cfg?.server ?? '',
      synced,
      detail: unhealthy.map((h) => `${h.resource}: ${h.lastError ?? 'not synced'}`).join('; '),
    },
    endpoints: { total: eps.length, ready: eps.filter((e) => e.state === 'ready').length },
    identities: { total: RESERVED_IDENTITIES.length + cluster.length + agent.policy.cidrIdentities().size, cluster: cluster.length, reserved: RESERVED_IDENTITIES.length },
    reconcilers,
    ...(agent.startup ? { startup: agent.startup } : {}),
    policy: {
      policies: agent.policy.policies,
      problems: agent.policy.problems.map((p) => ({ policy: `${p.policy.kind} ${p.policy.namespace ? `${p.policy.namespace}/` : ''}${p.policy.name}`, field: p.field, message: p.message, severity: p.severity })),
    },
  };
}

export function agentRoutes(agent: Agent): Route[] {
  const dp = () => ({ pinDir: agent.pinDir, bpffsRoot: agent.bpffsRoot });
  const view = (ep: ReturnType<Agent['endpoints']['list']>[number]) =>
    endpointView(ep, agent.lastDesired?.enforcement.get(ep.id), agent.identities.allocator.lookup(ep.identity)?.labels ?? agent.identities.pods.get(`${ep.pod.namespace}/${ep.pod.name}`)?.labels);
  return [
    {
      method: 'GET',
      path: '/v1/healthz',
      handler: () => {
        const h = healthz(agent);
        if (!h.ok) throw new ApiError(503, 'not_ready', h.detail ?? 'not ready');
        return h;
      },
    },
    { method: 'GET', path: '/v1/status', handler: () => status(agent) },
    { method: 'GET', path: '/v1/endpoints', handler: () => agent.endpoints.list().map(view) },
    {
      method: 'GET',
      path: '/v1/endpoints/:containerId/:ifname',
      handler: ({ params }) => {
        const ep = agent.endpoints.get(params['containerId']!, params['ifname']!);
        if (!ep) throw new ApiError(404, 'not_found', `no endpoint for ${params['containerId']}/${params['ifname']}`);
        return view(ep);
      },
    },
    {
      method: 'POST',
      path: '/v1/endpoints',
      handler: async ({ body }) => {
        requireReady(agent);
        try {
          return view(await agent.endpoints.create(body as EndpointCreateRequest));
        } catch (err) {
          translate(err);
        }
      },
    },
    {
      method: 'DELETE',
      path: '/v1/endpoints/:containerId/:ifname',
      handler: async ({ params }) => {
        requireReady(agent);
        return agent.endpoints.delete(params['containerId']!, params['ifname']!);
      },
    },
    {
      method: 'POST',
      path: '/v1/ipam/allocations',
      handler: ({ body }) => {
        requireReady(agent);
        try {
          return agent.ipam.allocate(body as IpamAllocateRequest);
        } catch (err) {
          translate(err);
        }
      },
    },
    { method: 'GET', path: '/v1/ipam/allocations', handler: () => agent.ipam.list() },
    {
      method: 'DELETE',
      path: '/v1/ipam/allocations/:containerId/:ifname',
      handler: ({ params }) => {
        const ep = agent.endpoints.get(params['containerId']!, params['ifname']!);
        if (ep) throw new ApiError(409, 'endpoint_exists', `endpoint ${ep.id} uses this address: DELETE /v1/endpoints/${params['containerId']}/${params['ifname']} instead`);
        return { released: agent.ipam.release(params['containerId']!, params['ifname']!, 'released by the CNI plugin') };
      },
    },
    {
      method: 'POST',
      path: '/v1/cni/gc',
      handler: async ({ body }) => {
        requireReady(agent);
        return agent.endpoints.gc(validGcRequest(body).valid);
      },
    },
    { method: 'GET', path: '/v1/identities', handler: () => identityViews(agent.identities.allocator.list(), agent.policy.cidrIdentities(), agent.endpoints.list()) },
    {
      method: 'GET',
      path: '/v1/bpf/ipcache',
      handler: async () => ipcacheViews(await ipcacheMap(agent.pinDir, agent.bpffsRoot).dump(), agent.lastDesired?.ipcacheSources ?? new Map()),
    },
    {
      method: 'GET',
      path: '/v1/bpf/ct',
      handler: async () => {
        const now = monotonicSeconds();
        const [tcp, any] = await Promise.all([ctMap(dp().pinDir, 'tcp', dp().bpffsRoot).dump(), ctMap(dp().pinDir, 'any', dp().bpffsRoot).dump()]);
        return ctViews([...tcp, ...any], now);
      },
    },
    {
      method: 'GET',
      path: '/v1/bpf/policy/:endpoint',
      handler: async ({ params }) => {
        const id = Number(params['endpoint']);
        if (!Number.isInteger(id) || id < 1 || id > 65535) throw new ApiError(400, 'invalid_endpoint_id', `endpoint must be an id 1..65535, got ${JSON.stringify(params['endpoint'])}`);
        if (!agent.endpoints.byEndpointId(id)) throw new ApiError(404, 'not_found', `no local endpoint ${id}; see membrane endpoint list`);
        return policyViews(await policyMap(agent.pinDir, agent.bpffsRoot).dump(), id);
      },
    },
  ];
}
