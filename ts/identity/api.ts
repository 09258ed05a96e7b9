/**
 * The allocator's writes and point reads of MembraneIdentity objects: the I/O
 * edge, behind an interface so the allocator can be tested with a fake. The
 * real one goes through client-node's CustomObjectsApi (raw JSON bodies, so no
 * field is dropped by model serialization).
 */
import { ApiException, CustomObjectsApi, type KubeConfig } from '@kubernetes/client-node';
import { KubeConnection } from '../k8s/connection.js';
import type { MembraneIdentity } from '../k8s/types.js';
import { IDENTITY_GROUP, IDENTITY_PLURAL, IDENTITY_VERSION, LABELS_HASH_LABEL } from './object.js';

export type DeleteOutcome = 'deleted' | 'conflict' | 'gone';

export interface IdentityApi {
  /** Creates the object; rejects with an error whose statusCodeOf is 409 if the name exists. */
  create(obj: MembraneIdentity): Promise<MembraneIdentity>;
  /** The object, or undefined if there is none. */
  get(name: string): Promise<MembraneIdentity | undefined>;
  /** Objects carrying membrane.io/labels-hash=<hash> (a consistent read). */
  listByHash(hash: string): Promise<MembraneIdentity[]>;
  /** PUT status with obj.metadata.resourceVersion as precondition: 409 if it changed, 404 if gone. */
  replaceStatus(obj: MembraneIdentity): Promise<MembraneIdentity>;
  /** DELETE only if the object still has this resourceVersion. */
  deleteIfUnchanged(name: string, resourceVersion: string): Promise<DeleteOutcome>;
}

/** HTTP status of a failed API call (client-node ApiException or anything with a numeric code). */
export function statusCodeOf(err: unknown): number | undefined {
  if (err instanceof ApiException) return err.code;
  const e = err as { code?: unknown; statusCode?: unknown } | null;
  if (e && typeof e.code === 'number') return e.code;
  if (e && typeof e.statusCode === 'number') return e.statusCode;
  return undefined;
}

/** A short, readable description of a failed API call. */
export function describeApiError(err: unknown): string {
  if (err instanceof ApiException) {
    let message = '';
    try {
      const body = (typeof err.body === 'string' ? JSON.parse(err.body) : err.body) as { message?: string } | undefined;
      message = body?.message ?? '';
    } catch {
      message = String(err.body).slice(0, 300);
    }
    return `HTTP ${err.code}${message ? `: ${message}` : ''}`;
  }
  return (err as Error)?.message ?? String(err);
}

export class KubeIdentityApi implements IdentityApi {
  private readonly custom: CustomObjectsApi;
  private readonly base = { group: IDENTITY_GROUP, version: IDENTITY_VERSION, plural: IDENTITY_PLURAL };

  /** Pass a KubeConnection to share keep-alive connections with other clients of the same kubeconfig. */
  constructor(kc: KubeConfig, connection: KubeConnection = new KubeConnection(kc)) {
    this.custom = connection.apiClient(CustomObjectsApi);
  }

  async create(obj: MembraneIdentity): Promise<MembraneIdentity> {
    return (await this.custom.createClusterCustomObject({ ...this.base, body: obj })) as MembraneIdentity;
  }

  async get(name: string): Promise<MembraneIdentity | undefined> {
    try {
      return (await this.custom.getClusterCustomObject({ ...this.base, name })) as MembraneIdentity;
    } catch (err) {
      if (statusCodeOf(err) === 404) return undefined;
      throw err;
    }
  }

  async listByHash(hash: string): Promise<MembraneIdentity[]> {
    const list = (await this.custom.listClusterCustomObject({ ...this.base, labelSelector: `${LABELS_HASH_LABEL}=${hash}` })) as { items?: MembraneIdentity[] };
    return list.items ?? [];
  }

  async replaceStatus(obj: MembraneIdentity): Promise<MembraneIdentity> {
    const name = obj.metadata?.name;
    if (!name) throw new Error('replaceStatus: the object has no name');
    return (await this.custom.replaceClusterCustomObjectStatus({ ...this.base, name, body: obj })) as MembraneIdentity;
  }

  async deleteIfUnchanged(name: string, resourceVersion: string): Promise<DeleteOutcome> {
    try {
      await this.custom.deleteClusterCustomObject({ ...this.base, name, body: { preconditions: { resourceVersion } } });
      return 'deleted';
    } catch (err) {
      const code = statusCodeOf(err);
      if (code === 409) return 'conflict';
      if (code === 404) return 'gone';
      throw err;
    }
  }
}
