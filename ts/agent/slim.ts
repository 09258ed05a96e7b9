/**
 * What the agent keeps of each watched object: the fields its pure functions
 * read, nothing else (managedFields, annotations, container specs and most of
 * the status are dropped before an object is stored). At 5000 pods this is the
 * difference between a few MB and tens of MB of heap.
 */
import type { KubeObject } from '../k8s/types.js';
import type { AgentResource } from './agent.js';

type Obj = KubeObject & { spec?: Record<string, unknown>; status?: Record<string, unknown> };

function slimMetadata(o: KubeObject): KubeObject['metadata'] {
  const m = o.metadata ?? {};
  const out: NonNullable<KubeObject['metadata']> = {};
  for (const k of ['name', 'namespace', 'uid', 'resourceVersion', 'generation', 'labels', 'deletionTimestamp', 'creationTimestamp'] as const) {
    if (m[k] !== undefined) (out as Record<string, unknown>)[k] = m[k];
  }
  return out;
}

function pick(from: Record<string, unknown> | undefined, keys: readonly string[]): Record<string, unknown> | undefined {
  if (!from) return undefined;
  const out: Record<string, unknown> = {};
  for (const k of keys) if (from[k] !== undefined) out[k] = from[k];
  return out;
}

export function slimPod(o: KubeObject): KubeObject {
  const p = o as Obj;
  return { apiVersion: p.apiVersion, kind: p.kind, metadata: slimMetadata(p), spec: pick(p.spec, ['nodeName', 'hostNetwork', 'serviceAccountName']), status: pick(p.status, ['podIP', 'podIPs', 'phase']) } as KubeObject;
}

export function slimNamespace(o: KubeObject): KubeObject {
  return { apiVersion: o.apiVersion, kind: o.kind, metadata: slimMetadata(o) } as KubeObject;
}

export function slimNode(o: KubeObject): KubeObject {
  const n = o as Obj;
  return { apiVersion: n.apiVersion, kind: n.kind, metadata: slimMetadata(n), spec: pick(n.spec, ['podCIDR', 'podCIDRs']), status: pick(n.status, ['addresses']) } as KubeObject;
}

/** Policies and identities are read whole; only the server's bookkeeping goes. */
export function withoutManagedFields(o: KubeObject): KubeObject {
  if (!o.metadata?.managedFields && !o.metadata?.annotations?.['kubectl.kubernetes.io/last-applied-configuration']) return o;
  const metadata = { ...o.metadata };
  delete metadata.managedFields;
  if (metadata.annotations?.['kubectl.kubernetes.io/last-applied-configuration']) {
    const { ['kubectl.kubernetes.io/last-applied-configuration']: _dropped, ...rest } = metadata.annotations;
    metadata.annotations = rest;
  }
  return { ...o, metadata };
}

export const AGENT_TRANSFORMS: Record<AgentResource, (o: KubeObject) => KubeObject> = {
  pods: slimPod,
  namespaces: slimNamespace,
  nodes: slimNode,
  networkpolicies: withoutManagedFields,
  ciliumnetworkpolicies: withoutManagedFields,
  ciliumclusterwidenetworkpolicies: withoutManagedFields,
  membraneidentities: withoutManagedFields,
};
