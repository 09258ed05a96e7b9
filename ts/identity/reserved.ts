/**
 * Numeric identities: the reserved ones (numbered as Cilium numbers them, so
 * policies and flow output read the same) and the cluster range that the
 * allocator hands out.
 *
 *   0            unknown: not an identity; in policy maps it means "any"
 *   1..10        reserved (host, world, ...), fixed labels "reserved:<name>"
 *   11..255      not allocated by Membrane
 *   256..65535   cluster identities, allocated through MembraneIdentity objects
 */
import { SOURCE_RESERVED, type SecurityLabels } from './labels.js';

export const IDENTITY_UNKNOWN = 0;
export const MIN_CLUSTER_IDENTITY = 256;
export const MAX_CLUSTER_IDENTITY = 65535;

export interface ReservedIdentity {
  id: number;
  name: string;
  labels: SecurityLabels;
}

function reserved(id: number, name: string): ReservedIdentity {
  return Object.freeze({ id, name, labels: Object.freeze({ [`${SOURCE_RESERVED}:${name}`]: '' }) });
}

export const RESERVED_IDENTITIES: readonly ReservedIdentity[] = Object.freeze([
  reserved(1, 'host'),
  reserved(2, 'world'),
  reserved(3, 'unmanaged'),
  reserved(4, 'health'),
  reserved(5, 'init'),
  reserved(6, 'remote-node'),
  reserved(7, 'kube-apiserver'),
  reserved(8, 'ingress'),
  // Dual stack: a "world" rule stands for 2, 9 and 10.
  reserved(9, 'world-ipv4'),
  reserved(10, 'world-ipv6'),
]);

export const ReservedId = {
  host: 1,
  world: 2,
  unmanaged: 3,
  health: 4,
  init: 5,
  remoteNode: 6,
  kubeApiserver: 7,
  ingress: 8,
  worldIPv4: 9,
  worldIPv6: 10,
} as const;

const BY_ID = new Map(RESERVED_IDENTITIES.map((r) => [r.id, r]));
const BY_NAME = new Map(RESERVED_IDENTITIES.map((r) => [r.name, r]));

export function reservedIdentity(id: number): ReservedIdentity | undefined {
  return BY_ID.get(id);
}

export function reservedIdentityByName(name: string): ReservedIdentity | undefined {
  return BY_NAME.get(name);
}

export function isReservedIdentity(id: number): boolean {
  return BY_ID.has(id);
}

export function isClusterIdentity(id: number): boolean {
  return Number.isInteger(id) && id >= MIN_CLUSTER_IDENTITY && id <= MAX_CLUSTER_IDENTITY;
}

/** True if any label has the "reserved:" source: such sets are never allocated, only looked up. */
export function hasReservedLabels(labels: SecurityLabels): boolean {
  return Object.keys(labels).some((k) => k.startsWith(`${SOURCE_RESERVED}:`));
}

/**
 * The reserved identity a label set stands for: exactly one "reserved:<name>"
 * label naming a reserved identity (other labels are allowed only for host, as
 * the host's node labels may ride along). Undefined otherwise.
 */
export function reservedIdentityForLabels(labels: SecurityLabels): ReservedIdentity | undefined {
  const reservedKeys = Object.keys(labels).filter((k) => k.startsWith(`${SOURCE_RESERVED}:`));
  if (reservedKeys.length !== 1) return undefined;
  const r = BY_NAME.get(reservedKeys[0]!.slice(SOURCE_RESERVED.length + 1));
  if (!r) return undefined;
  if (Object.keys(labels).length > 1 && r.id !== ReservedId.host) return undefined;
  return r;
}
