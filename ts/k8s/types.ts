/**
 * Object shapes of the custom resources Membrane watches. Core kinds use the
 * client-node model interfaces (V1Pod, ...).
 *
 * Every object an informer hands out is the JSON the apiserver sent, not a
 * client-node model instance: timestamps are RFC 3339 strings even where the
 * client-node interface says Date, and unknown fields are kept (a CRD's spec is
 * passed on verbatim).
 */
import type { V1ObjectMeta } from '@kubernetes/client-node';

/** Anything with Kubernetes object metadata. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: V1ObjectMeta;
}

/**
 * cilium.io/v2 CiliumNetworkPolicy as users write it: `spec` (one rule) and/or
 * `specs` (several). The rule schema is the policy engine's business; here it
 * is carried verbatim.
 */
export interface CiliumNetworkPolicy extends KubeObject {
  spec?: Record<string, unknown>;
  specs?: Record<string, unknown>[];
  status?: Record<string, unknown>;
}

/** cilium.io/v2 CiliumClusterwideNetworkPolicy: the cluster-scoped CiliumNetworkPolicy. */
export type CiliumClusterwideNetworkPolicy = CiliumNetworkPolicy;

/** membrane.io/v1alpha1 MembraneIdentity: name = the numeric identity. See deploy/crds/. */
export interface MembraneIdentity extends KubeObject {
  spec?: {
    /** Source-prefixed labels, e.g. "k8s:app": "frontend". Immutable. */
    securityLabels?: Record<string, string>;
  };
  status?: MembraneIdentityStatus;
}

export interface MembraneIdentityStatus {
  /** RFC 3339: when an agent last confirmed an endpoint with this identity. */
  lastUsed?: string;
  /** Nodes that have endpoints with this identity. */
  nodes?: string[];
}
