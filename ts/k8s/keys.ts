/**
 * Resource keys: "namespace/name" for namespaced objects, "name" for
 * cluster-scoped ones. The one way objects are named in stores, maps and logs.
 */
import type { KubeObject } from './types.js';

export class ResourceKeyError extends Error {
  override name = 'ResourceKeyError';
}

export function resourceKey(obj: KubeObject): string {
  const name = obj.metadata?.name;
  if (!name) throw new ResourceKeyError(`object of kind ${obj.kind ?? '(unknown)'} has no metadata.name`);
  const ns = obj.metadata?.namespace;
  return ns ? `${ns}/${name}` : name;
}

/** Like resourceKey, but undefined instead of throwing for an object without a name. */
export function tryResourceKey(obj: KubeObject | null | undefined): string | undefined {
  const name = obj?.metadata?.name;
  if (!name) return undefined;
  const ns = obj?.metadata?.namespace;
  return ns ? `${ns}/${name}` : name;
}

export function keyOf(namespace: string | undefined, name: string): string {
  return namespace ? `${namespace}/${name}` : name;
}

export function parseResourceKey(key: string): { namespace?: string; name: string } {
  const parts = key.split('/');
  if (parts.length === 1 && parts[0]) return { name: parts[0] };
  if (parts.length === 2 && parts[0] && parts[1]) return { namespace: parts[0], name: parts[1] };
  throw new ResourceKeyError(`${JSON.stringify(key)} is not a resource key (name or namespace/name)`);
}
