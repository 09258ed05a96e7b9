/**
 * MembraneIdentity objects <-> identities. Pure.
 *
 * An object is usable only if all of these hold; otherwise it is "malformed":
 * logged, never handed out, never garbage-collected (we do not delete what we
 * do not understand), but its number still counts as taken.
 *   - the name is a decimal number within the cluster range 256..65535;
 *   - spec.securityLabels is a non-empty map of valid security labels without
 *     "reserved:" ones (reserved identities are never allocated);
 *   - metadata.labels["membrane.io/labels-hash"] equals the hash of those labels.
 */
import type { MembraneIdentity } from '../k8s/types.js';
import { canonicalLabels, hashCanonical, securityLabelsProblem, sortLabels, type SecurityLabels } from './labels.js';
import { hasReservedLabels, isClusterIdentity, MAX_CLUSTER_IDENTITY, MIN_CLUSTER_IDENTITY } from './reserved.js';

export const IDENTITY_GROUP = 'membrane.io';
export const IDENTITY_VERSION = 'v1alpha1';
export const IDENTITY_PLURAL = 'membraneidentities';
export const IDENTITY_KIND = 'MembraneIdentity';
export const LABELS_HASH_LABEL = 'membrane.io/labels-hash';
export const MANAGED_BY_LABEL = 'app.kubernetes.io/managed-by';
export const MANAGED_BY = 'membrane';

/** A cluster identity as the allocator knows it. */
export interface Identity {
  id: number;
  labels: SecurityLabels;
  /** canonicalLabels(labels). */
  canonical: string;
  /** hashCanonical(canonical). */
  hash: string;
}

/** What the allocator and the garbage collector need from one object. */
export interface IdentityRecord {
  identity: Identity;
  resourceVersion: string;
  /** ms since epoch: status.lastUsed, else metadata.creationTimestamp, else undefined. */
  lastUsed: number | undefined;
  nodes: readonly string[];
}

export type ParsedIdentity = { ok: true; record: IdentityRecord } | { ok: false; id: number | undefined; reason: string };

export function identityFromLabels(id: number, labels: SecurityLabels): Identity {
  const sorted = sortLabels(labels);
  const canonical = canonicalLabels(sorted);
  return { id, labels: sorted, canonical, hash: hashCanonical(canonical) };
}

/** The number an object name stands for, or undefined. */
export function parseIdentityName(name: string | undefined): number | undefined {
  if (name === undefined || !/^[1-9][0-9]{0,9}$/.test(name)) return undefined;
  return Number(name);
}

function time(s: unknown): number | undefined {
  if (typeof s === 'string') {
    const t = Date.parse(s);
    return Number.isNaN(t) ? undefined : t;
  }
  if (s instanceof Date) return s.getTime();
  return undefined;
}

export function parseIdentityObject(obj: MembraneIdentity): ParsedIdentity {
  const name = obj.metadata?.name;
  const id = parseIdentityName(name);
  if (id === undefined) return { ok: false, id: undefined, reason: `the name ${JSON.stringify(name)} is not a number` };
  if (!isClusterIdentity(id)) return { ok: false, id, reason: `${id} is outside the cluster identity range ${MIN_CLUSTER_IDENTITY}-${MAX_CLUSTER_IDENTITY}` };
  const raw = obj.spec?.securityLabels;
  const problem = securityLabelsProblem(raw);
  if (problem) return { ok: false, id, reason: problem };
  const labels = raw as SecurityLabels;
  if (hasReservedLabels(labels)) return { ok: false, id, reason: 'reserved: labels belong to reserved identities, never to a cluster identity' };
  const identity = identityFromLabels(id, labels);
  const hashLabel = obj.metadata?.labels?.[LABELS_HASH_LABEL];
  if (hashLabel === undefined) return { ok: false, id, reason: `the ${LABELS_HASH_LABEL} label is missing` };
  if (hashLabel !== identity.hash) return { ok: false, id, reason: `the ${LABELS_HASH_LABEL} label ${hashLabel} does not match its labels (hash ${identity.hash})` };
  const status = obj.status ?? {};
  const lastUsed = time(status.lastUsed) ?? time(obj.metadata?.creationTimestamp);
  const nodes = Array.isArray(status.nodes) ? status.nodes.filter((n): n is string => typeof n === 'string') : [];
  return { ok: true, record: { identity, resourceVersion: obj.metadata?.resourceVersion ?? '', lastUsed, nodes } };
}

/** The object that claims `identity.id` for its labels. */
export function identityObject(identity: Identity): MembraneIdentity {
  return {
    apiVersion: `${IDENTITY_GROUP}/${IDENTITY_VERSION}`,
    kind: IDENTITY_KIND,
    metadata: {
      name: String(identity.id),
      labels: { [LABELS_HASH_LABEL]: identity.hash, [MANAGED_BY_LABEL]: MANAGED_BY },
    },
    spec: { securityLabels: { ...identity.labels } },
  };
}

/** status.nodes with `node` added (inUse) or removed, sorted. */
export function nodesWith(nodes: readonly string[], node: string, inUse: boolean): string[] {
  const set = new Set(nodes);
  if (inUse) set.add(node);
  else set.delete(node);
  return [...set].sort();
}
