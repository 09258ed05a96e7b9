/**
 * The Kubernetes resources the agent watches, as data: one row per kind, one
 * generic informer for all of them (see informers.ts). Adding a kind is adding a
 * row here and its object type to ResourceTypes.
 */
import type { V1EndpointSlice, V1Namespace, V1NetworkPolicy, V1Node, V1Pod, V1Service } from '@kubernetes/client-node';
import type { CiliumClusterwideNetworkPolicy, CiliumNetworkPolicy, MembraneIdentity } from './types.js';

export interface ResourceKind {
  /** API group; '' is the core group (served under /api, not /apis). */
  group: string;
  version: string;
  /** Lower-case plural, as in the URL path. */
  plural: string;
  kind: string;
  namespaced: boolean;
}

/** What each watched resource's objects look like (the JSON the apiserver sends). */
export interface ResourceTypes {
  pods: V1Pod;
  namespaces: V1Namespace;
  nodes: V1Node;
  services: V1Service;
  endpointslices: V1EndpointSlice;
  networkpolicies: V1NetworkPolicy;
  ciliumnetworkpolicies: CiliumNetworkPolicy;
  ciliumclusterwidenetworkpolicies: CiliumClusterwideNetworkPolicy;
  membraneidentities: MembraneIdentity;
}

export type ResourceName = keyof ResourceTypes;

export const RESOURCE_KINDS: { readonly [N in ResourceName]: Readonly<ResourceKind> } = {
  pods: { group: '', version: 'v1', plural: 'pods', kind: 'Pod', namespaced: true },
  namespaces: { group: '', version: 'v1', plural: 'namespaces', kind: 'Namespace', namespaced: false },
  nodes: { group: '', version: 'v1', plural: 'nodes', kind: 'Node', namespaced: false },
  services: { group: '', version: 'v1', plural: 'services', kind: 'Service', namespaced: true },
  endpointslices: { group: 'discovery.k8s.io', version: 'v1', plural: 'endpointslices', kind: 'EndpointSlice', namespaced: true },
  networkpolicies: { group: 'networking.k8s.io', version: 'v1', plural: 'networkpolicies', kind: 'NetworkPolicy', namespaced: true },
  ciliumnetworkpolicies: { group: 'cilium.io', version: 'v2', plural: 'ciliumnetworkpolicies', kind: 'CiliumNetworkPolicy', namespaced: true },
  ciliumclusterwidenetworkpolicies: {
    group: 'cilium.io',
    version: 'v2',
    plural: 'ciliumclusterwidenetworkpolicies',
    kind: 'CiliumClusterwideNetworkPolicy',
    namespaced: false,
  },
  membraneidentities: { group: 'membrane.io', version: 'v1alpha1', plural: 'membraneidentities', kind: 'MembraneIdentity', namespaced: false },
};

export const RESOURCE_NAMES = Object.keys(RESOURCE_KINDS) as ResourceName[];

export function apiVersionOf(kind: Pick<ResourceKind, 'group' | 'version'>): string {
  return kind.group === '' ? kind.version : `${kind.group}/${kind.version}`;
}

/**
 * The URL path of a collection: all namespaces when `namespace` is absent.
 *   pods                 -> /api/v1/pods
 *   pods in "default"    -> /api/v1/namespaces/default/pods
 *   endpointslices       -> /apis/discovery.k8s.io/v1/endpointslices
 */
export function collectionPath(kind: ResourceKind, namespace?: string): string {
  const root = kind.group === '' ? `/api/${kind.version}` : `/apis/${kind.group}/${kind.version}`;
  if (namespace !== undefined) {
    if (!kind.namespaced) throw new Error(`${kind.plural} are cluster-scoped; they have no namespace (${namespace})`);
    return `${root}/namespaces/${encodeURIComponent(namespace)}/${kind.plural}`;
  }
  return `${root}/${kind.plural}`;
}
