/**
 * A local endpoint: one pod network interface on this node, as the CNI plugin
 * registered it and the agent tracks it. Pure data and pure checks.
 */
export type EndpointState = 'waiting-for-identity' | 'regenerating' | 'ready' | 'disconnecting';

export interface Endpoint {
  /** 1..65535: the key of the endpoint's policy entries in the datapath. */
  id: number;
  containerId: string;
  /** Path of the pod's network namespace. */
  netns: string;
  /** Interface name inside the pod (CNI_IFNAME). */
  ifname: string;
  /** Host-side veth name and index. */
  hostIface: string;
  ifindex: number;
  ipv4: string;
  /** Pod-side and host-side MACs, aa:bb:cc:dd:ee:ff. */
  mac: string;
  nodeMac: string;
  pod: { namespace: string; name: string; uid?: string };
  /** Security identity; 0 until resolved (the endpoint then drops everything: default deny). */
  identity: number;
  state: EndpointState;
  createdAt: string;
}

export const MAX_ENDPOINT_ID = 65535;

const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

export function isIPv4(value: string): boolean {
  const parts = value.split('.');
  return parts.length === 4 && parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255 && String(Number(p)) === p);
}

/** Every problem with an endpoint record, named by field; empty when valid. */
export function endpointProblems(ep: Partial<Endpoint>): string[] {
  const problems: string[] = [];
  const need = (cond: boolean, msg: string) => {
    if (!cond) problems.push(msg);
  };
  need(Number.isInteger(ep.id) && (ep.id ?? 0) >= 1 && (ep.id ?? 0) <= MAX_ENDPOINT_ID, `id must be an integer 1..${MAX_ENDPOINT_ID}`);
  need(typeof ep.containerId === 'string' && ep.containerId.length > 0 && ep.containerId.length <= 256, 'containerId must be a non-empty string (<= 256 chars)');
  need(typeof ep.netns === 'string' && ep.netns.startsWith('/'), 'netns must be an absolute path');
  need(typeof ep.ifname === 'string' && IFNAME.test(ep.ifname), 'ifname must be a Linux interface name (1-15 chars)');
  need(typeof ep.hostIface === 'string' && IFNAME.test(ep.hostIface), 'hostIface must be a Linux interface name (1-15 chars)');
  need(Number.isInteger(ep.ifindex) && (ep.ifindex ?? 0) > 0, 'ifindex must be a positive integer');
  need(typeof ep.ipv4 === 'string' && isIPv4(ep.ipv4), 'ipv4 must be a dotted IPv4 address');
  need(typeof ep.mac === 'string' && MAC.test(ep.mac), 'mac must be aa:bb:cc:dd:ee:ff (lower case)');
  need(typeof ep.nodeMac === 'string' && MAC.test(ep.nodeMac), 'nodeMac must be aa:bb:cc:dd:ee:ff (lower case)');
  need(typeof ep.pod?.namespace === 'string' && DNS_LABEL.test(ep.pod.namespace), 'pod.namespace must be a DNS label');
  need(typeof ep.pod?.name === 'string' && DNS_SUBDOMAIN.test(ep.pod.name), 'pod.name must be a DNS subdomain');
  need(Number.isInteger(ep.identity) && (ep.identity ?? -1) >= 0, 'identity must be a non-negative integer');
  return problems;
}

/** The lowest endpoint id not in use, or undefined when all 65535 are taken. */
export function nextEndpointId(used: Iterable<number>): number | undefined {
  const taken = new Set(used);
  for (let id = 1; id <= MAX_ENDPOINT_ID; id++) if (!taken.has(id)) return id;
  return undefined;
}
