/**
 * The agent API's resources: what the agent answers and the CLI prints. One
 * place, so that the server, the CLI and tests agree.
 *
 *   GET  /v1/healthz                  -> { ok: true }
 *   GET  /v1/status                   -> StatusResponse
 *   GET  /v1/endpoints                -> EndpointView[]
 *   POST /v1/endpoints                -> EndpointView          (the CNI plugin's ADD)
 *   DELETE /v1/endpoints/:containerId/:ifname                  (the CNI plugin's DEL)
 *   GET  /v1/identities               -> IdentityView[]
 *   GET  /v1/bpf/ipcache              -> IpcacheView[]
 *   GET  /v1/bpf/ct                   -> CtView[]
 *   GET  /v1/bpf/policy/:endpoint     -> PolicyEntryView[]
 */
import type { Endpoint } from '../endpoint/endpoint.js';
import type { ReconcilerStats } from '../reconcile/reconciler.js';

export interface MapFill {
  name: string;
  entries: number;
  maxEntries: number;
}

export interface StatusResponse {
  agent: { version: string; node: string; pid: number; uptimeSeconds: number };
  datapath: { ok: boolean; pinDir: string; detail: string; maps: MapFill[] };
  kubernetes: { ok: boolean; server: string; synced: Record<string, boolean>; detail: string };
  endpoints: { total: number; ready: number };
  identities: { total: number; cluster: number; reserved: number };
  reconcilers: ReconcilerStats[];
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
