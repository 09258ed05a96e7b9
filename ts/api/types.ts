/**
 * The agent API's resources: what the agent answers and the CLI prints. One
 * place, so that the server, the CLI and tests agree.
 *
 *   GET  /v1/healthz                  -> Healthz (200 when the agent can serve pods, else 503 not_ready)
 *   GET  /v1/status                   -> StatusResponse
 *   GET  /v1/endpoints                -> EndpointView[]
 *
 * The CNI plugin's side (see crates/cni). ADD is: allocate an address, wire the
 * pod (veth, /32, link-local gateway), register the endpoint; the agent attaches
 * the datapath with the endpoint's policy before POST /v1/endpoints answers. A
 * failed ADD releases the address. DEL deletes the endpoint (which also releases
 * its address) and is idempotent. Keys: containerId + ifname.
 *   POST   /v1/ipam/allocations       IpamAllocateRequest -> IpamAllocation (idempotent per key)
 *   DELETE /v1/ipam/allocations/:containerId/:ifname -> { released: boolean }
 *   POST   /v1/endpoints              EndpointCreateRequest -> EndpointView
 *   GET    /v1/endpoints/:containerId/:ifname -> EndpointView (404 not_found)
 *   DELETE /v1/endpoints/:containerId/:ifname -> EndpointDeleteResult (200 also when unknown)
 *   POST   /v1/cni/gc                 CniGcRequest -> CniGcResult
 *
 *   GET  /v1/identities               -> IdentityView[]
 *   GET  /v1/bpf/ipcache              -> IpcacheView[]
 *   GET  /v1/bpf/ct                   -> CtView[]
 *   GET  /v1/bpf/policy/:endpoint     -> PolicyEntryView[]
 */
import type { Endpoint } from '../endpoint/endpoint.js';
import type { ReconcilerStats } from '../reconcile/reconciler.js';

/** Errors come back as { error: { code, message, details? } } with a 4xx/5xx status. */
export interface ApiErrorBody {
  error: { code: string; message: string; details?: unknown };
}

export interface Healthz {
  ok: boolean;
  /** What is not ready yet, when ok is false. */
  detail?: string;
}

/** The pod a CNI request is for (CNI_ARGS K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID). */
export interface PodRef {
  namespace: string;
  name: string;
  uid?: string;
}

export interface IpamAllocateRequest {
  containerId: string;
  ifname: string;
  pod: PodRef;
}

/** The link-local gateway every pod routes through (a static neighbour entry on both sides). */
export const POD_GATEWAY = '169.254.1.1';

export interface IpamAllocation {
  containerId: string;
  ifname: string;
  pod: PodRef;
  /** From the node's podCIDR, e.g. "10.244.0.17". */
  ipv4: string;
  /** Always 32: the pod owns one address and routes everything via the gateway. */
  prefixLength: 32;
  gateway: typeof POD_GATEWAY;
  podCIDR: string;
  allocatedAt: string;
}

/**
 * What the CNI plugin knows after wiring the pod (the fields as in Endpoint:
 * netns = CNI_NETNS, host-side veth name and ifindex, the allocated address, both
 * MACs); the agent adds the id, identity and state.
 */
export type EndpointCreateRequest = Pick<Endpoint, 'containerId' | 'netns' | 'ifname' | 'hostIface' | 'ifindex' | 'ipv4' | 'mac' | 'nodeMac'> & { pod: PodRef };

export interface EndpointDeleteResult {
  /** Whether an endpoint was known (and is now detached and forgotten). */
  removed: boolean;
  /** Whether an address was released. */
  released: boolean;
}

export interface CniGcRequest {
  /** The attachments the runtime still has (CNI GC cni.dev/valid-attachments); everything else is removed. */
  valid: Array<{ containerId: string; ifname: string }>;
}

export interface CniGcResult {
  removedEndpoints: number;
  releasedAddresses: number;
}

export interface MapFill {
  name: string;
  entries: number;
  maxEntries: number;
}

export interface StatusResponse {
  agent: { version: string; node: string; pid: number; uptimeSeconds: number; memory?: { rssMB: number; heapUsedMB: number } };
  datapath: { ok: boolean; pinDir: string; detail: string; maps: MapFill[] };
  kubernetes: { ok: boolean; server: string; synced: Record<string, boolean>; detail: string };
  endpoints: { total: number; ready: number };
  identities: { total: number; cluster: number; reserved: number };
  reconcilers: ReconcilerStats[];
  /** How the last start went: what was adopted, and how many map writes the first pass needed. */
  startup?: { datapath: 'loaded' | 'adopted' | 'upgraded'; endpointsRestored: number; endpointsRemoved: number; firstPassWrites: number; readyMs: number };
  /** Policies imported, and their problems (a malformed policy is skipped, failing closed). */
  policy?: { policies: number; problems: Array<{ policy: string; field: string; message: string; severity: 'error' | 'warning' }> };
}

export interface EndpointView extends Endpoint {
  policyEnforcement: { ingress: boolean; egress: boolean };
  labels: string[];
}

export interface IdentityView {
  id: number;
  labels: string[];
  kind: 'reserved' | 'cluster' | 'cidr';
  /** Local endpoints using it. */
  endpoints: number;
}

export interface IpcacheView {
  prefix: string;
  identity: number;
  source: string;
}

export interface CtView {
  proto: string;
  direction: 'IN' | 'OUT';
  src: string;
  dst: string;
  expiresInSeconds: number;
  state: string;
  rxPackets: string;
  rxBytes: string;
  txPackets: string;
  txBytes: string;
  flags: string[];
  srcIdentity: number;
  endpoint: number;
}

export interface PolicyEntryView {
  direction: 'ingress' | 'egress';
  identity: number;
  /** "TCP/80", "TCP/1000-2000", "ANY" */
  port: string;
  action: 'allow' | 'deny' | 'redirect';
  proxyPort: number;
  cookie: number;
}
