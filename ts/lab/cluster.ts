/**
 * What `lab up` does through the Kubernetes API once the control plane answers:
 * apply the CRDs from deploy/crds/ and wait until they are Established, register
 * the simulated Node, wait for the controllers to work.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { cpus, release, totalmem } from 'node:os';
import { join } from 'node:path';
import { ApiException, ApiextensionsV1Api, CoreV1Api, CustomObjectsApi, loadAllYaml, type KubeConfig, type V1CustomResourceDefinition, type V1Node } from '@kubernetes/client-node';

export class ClusterSetupError extends Error {
  override name = 'ClusterSetupError';
}

export const FIELD_MANAGER = 'membrane-lab';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function isApiError(err: unknown, code?: number): err is ApiException<unknown> {
  return err instanceof ApiException && (code === undefined || err.code === code);
}

/** The message the apiserver gave (Status.message), or the error text. */
export function apiErrorMessage(err: unknown): string {
  if (err instanceof ApiException) {
    const body = typeof err.body === 'string' ? safeJson(err.body) : err.body;
    const msg = (body as { message?: string } | undefined)?.message;
    return `HTTP ${err.code}${msg ? `: ${msg}` : ''}`;
  }
  return (err as Error).message;
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return { message: text };
  }
}

export interface CrdDocument {
  file: string;
  crd: V1CustomResourceDefinition;
}

/**
 * Every CustomResourceDefinition in the YAML files of a directory, as client-node
 * models. (client-node serializes by its model's field names, so a plain parsed
 * object would lose keys such as x-kubernetes-validations on the way out;
 * loadAllYaml maps them.)
 */
export function readCrdFiles(dir: string): CrdDocument[] {
  const out: CrdDocument[] = [];
  for (const file of readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort()) {
    const path = join(dir, file);
    let objs: unknown[];
    try {
      objs = loadAllYaml(readFileSync(path, 'utf8'));
    } catch (err) {
      throw new ClusterSetupError(`${path}: ${(err as Error).message}`);
    }
    for (const obj of objs as (V1CustomResourceDefinition | null)[]) {
      if (!obj) continue;
      if (obj.kind !== 'CustomResourceDefinition') throw new ClusterSetupError(`${path}: expected kind CustomResourceDefinition, found ${obj.kind}`);
      out.push({ file: path, crd: obj });
    }
  }
  return out;
}

export interface CrdState {
  name: string;
  established: boolean;
}

/** Creates or replaces each CRD, then waits until all are Established. */
export async function applyCrds(kc: KubeConfig, docs: CrdDocument[], timeoutMs = 60_000, signal?: AbortSignal): Promise<CrdState[]> {
  const api = kc.makeApiClient(ApiextensionsV1Api);
  for (const { file, crd } of docs) {
    const name = crd.metadata?.name ?? '(unnamed)';
    try {
      await api.createCustomResourceDefinition({ body: crd, fieldManager: FIELD_MANAGER });
    } catch (err) {
      if (!isApiError(err, 409)) throw new ClusterSetupError(`the apiserver refused the CRD ${name} from ${file}: ${apiErrorMessage(err)}`);
      const current = await api.readCustomResourceDefinition({ name });
      const body = { ...crd, metadata: { ...crd.metadata, resourceVersion: current.metadata?.resourceVersion } };
      try {
        await api.replaceCustomResourceDefinition({ name, body, fieldManager: FIELD_MANAGER });
      } catch (err2) {
        throw new ClusterSetupError(`the apiserver refused the update of CRD ${name} from ${file}: ${apiErrorMessage(err2)}`);
      }
    }
  }
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const states = await crdStates(kc, docs.map((d) => d.crd.metadata?.name ?? ''));
    // Established is not enough: the apiserver answers 429 "storage is (re)initializing"
    // for a moment after it; wait until every resource can actually be listed.
    if (states.every((s) => s.established) && (await allServed(kc, docs))) return states;
    if (signal?.aborted) throw new ClusterSetupError('interrupted while waiting for the CRDs');
    if (Date.now() > deadline) {
      throw new ClusterSetupError(`CRDs not Established after ${timeoutMs / 1000}s: ${states.filter((s) => !s.established).map((s) => s.name).join(', ')}`);
    }
    await sleep(250);
  }
}

/** True when a list of every CRD's resources succeeds. */
async function allServed(kc: KubeConfig, docs: CrdDocument[]): Promise<boolean> {
  const api = kc.makeApiClient(CustomObjectsApi);
  for (const { crd } of docs) {
    const version = crd.spec.versions.find((v) => v.storage)?.name ?? crd.spec.versions[0]?.name ?? 'v1';
    try {
      await api.listClusterCustomObject({ group: crd.spec.group, version, plural: crd.spec.names.plural, limit: 1 });
    } catch (err) {
      if (isApiError(err, 429) || isApiError(err, 404) || isApiError(err, 503)) return false;
      throw err;
    }
  }
  return true;
}

export async function crdStates(kc: KubeConfig, names: string[]): Promise<CrdState[]> {
  const api = kc.makeApiClient(ApiextensionsV1Api);
  return Promise.all(
    names.map(async (name) => {
      try {
        const crd = await api.readCustomResourceDefinition({ name });
        const established = (crd.status?.conditions ?? []).some((c) => c.type === 'Established' && c.status === 'True');
        return { name, established };
      } catch (err) {
        if (isApiError(err, 404)) return { name, established: false };
        throw err;
      }
    }),
  );
}

export interface NodeSpec {
  name: string;
  podCIDR: string;
  kubernetesVersion: string;
}

/**
 * Registers the simulated node. No kubelet runs here: the Node says so in its
 * Ready condition, and the node-lifecycle controller is off so nothing marks it
 * unreachable. The node simulator (a later piece of work) realizes its pods.
 */
export async function registerNode(kc: KubeConfig, spec: NodeSpec): Promise<V1Node> {
  const core = kc.makeApiClient(CoreV1Api);
  const labels = {
    'kubernetes.io/hostname': spec.name,
    'kubernetes.io/os': 'linux',
    'kubernetes.io/arch': process.arch === 'x64' ? 'amd64' : process.arch,
    'membrane.io/lab-node': 'true',
  };
  let node: V1Node;
  try {
    node = await core.createNode({
      body: { apiVersion: 'v1', kind: 'Node', metadata: { name: spec.name, labels }, spec: { podCIDR: spec.podCIDR, podCIDRs: [spec.podCIDR] } },
      fieldManager: FIELD_MANAGER,
    });
  } catch (err) {
    if (!isApiError(err, 409)) throw new ClusterSetupError(`cannot register the node ${spec.name}: ${apiErrorMessage(err)}`);
    node = await core.readNode({ name: spec.name });
  }
  const now = new Date();
  const cond = (type: string, status: string, reason: string, message: string) => ({ type, status, reason, message, lastHeartbeatTime: now, lastTransitionTime: now });
  const resources = { cpu: String(cpus().length), memory: `${Math.floor(totalmem() / 1024)}Ki`, pods: '110', 'ephemeral-storage': '10Gi' };
  const status: V1Node['status'] = {
    conditions: [
      cond('MemoryPressure', 'False', 'MembraneLabSimulated', 'simulated node: no memory pressure is reported'),
      cond('DiskPressure', 'False', 'MembraneLabSimulated', 'simulated node: no disk pressure is reported'),
      cond('PIDPressure', 'False', 'MembraneLabSimulated', 'simulated node: no PID pressure is reported'),
      cond('Ready', 'True', 'MembraneLabSimulated', 'simulated by membrane lab: no kubelet; pods bound to this node are realized by the lab node simulator'),
    ],
    addresses: [
      { type: 'InternalIP', address: '127.0.0.1' },
      { type: 'Hostname', address: spec.name },
    ],
    capacity: resources,
    allocatable: resources,
    nodeInfo: {
      machineID: readOr('/etc/machine-id'),
      systemUUID: '',
      bootID: readOr('/proc/sys/kernel/random/boot_id'),
      kernelVersion: release(),
      osImage: osImage(),
      containerRuntimeVersion: 'membrane-lab://simulated',
      kubeletVersion: spec.kubernetesVersion,
      kubeProxyVersion: '',
      operatingSystem: 'linux',
      architecture: labels['kubernetes.io/arch'],
    },
  };
  // The controller-manager writes to a new Node too (annotations, taints); each
  // update re-reads the latest version and retries on a conflict.
  node = await onLatestNode(core, spec.name, 'set the status of', async (latest) =>
    core.replaceNodeStatus({ name: spec.name, body: { ...latest, status }, fieldManager: FIELD_MANAGER }),
  );
  // Admission (TaintNodesByCondition) gives every new Node the not-ready taint; the
  // node-lifecycle controller would lift it once Ready, but it is off in the lab.
  node = await onLatestNode(core, spec.name, `lift the ${NOT_READY_TAINT} taint of`, async (latest) => {
    const taints = latest.spec?.taints ?? [];
    const kept = taints.filter((t) => t.key !== NOT_READY_TAINT);
    if (kept.length === taints.length) return latest;
    return core.replaceNode({ name: spec.name, body: { ...latest, spec: { ...latest.spec, taints: kept } }, fieldManager: FIELD_MANAGER });
  });
  return node;
}

/** Reads the node and applies `update` to it, again on a 409 conflict (up to 10 times). */
async function onLatestNode(core: CoreV1Api, name: string, what: string, update: (latest: V1Node) => Promise<V1Node>): Promise<V1Node> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await update(await core.readNode({ name }));
    } catch (err) {
      if (isApiError(err, 409) && attempt < 10) {
        await sleep(50 * attempt);
        continue;
      }
      throw new ClusterSetupError(`cannot ${what} node ${name}: ${apiErrorMessage(err)}`);
    }
  }
}

const NOT_READY_TAINT = 'node.kubernetes.io/not-ready';

function readOr(path: string): string {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return '';
  }
}

function osImage(): string {
  const m = /^PRETTY_NAME="?([^"\n]*)"?$/m.exec(readOr('/etc/os-release'));
  return m?.[1] ?? 'Linux';
}

/**
 * Waits for the default ServiceAccount of the default namespace: the
 * controller-manager's serviceaccount controller made it, so controllers run and
 * Pods can be created (the ServiceAccount admission plugin needs it).
 */
export async function waitForDefaultServiceAccount(kc: KubeConfig, timeoutMs: number, signal?: AbortSignal, alive?: () => void): Promise<void> {
  const core = kc.makeApiClient(CoreV1Api);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    alive?.();
    try {
      await core.readNamespacedServiceAccount({ name: 'default', namespace: 'default' });
      return;
    } catch (err) {
      if (!isApiError(err, 404)) throw err;
    }
    if (signal?.aborted) throw new ClusterSetupError('interrupted while waiting for the controllers');
    if (Date.now() > deadline) throw new ClusterSetupError(`the controller-manager did not create the default ServiceAccount within ${timeoutMs / 1000}s`);
    await sleep(250);
  }
}
