/**
 * What the node simulator decides about a Pod and what it writes back, as pure
 * functions of the Pod object (no I/O): the next action, the ports its server
 * serves, the sandbox's container id and CNI_ARGS, the Binding, the status.
 */
import type { V1Binding, V1Pod, V1PodStatus } from '@kubernetes/client-node';
import type { CniResult } from '../../cni/invoke.js';

export type PodAction =
  /** Unscheduled: bind it to our node. */
  | 'bind'
  /** Ours and alive: give it a network and a server (no-op when it has them). */
  | 'realize'
  /** Ours and being deleted: tear down, then remove the object. */
  | 'finalize'
  /** Another node's, or an unscheduled pod already being deleted. */
  | 'ignore';

export function podAction(pod: V1Pod, nodeName: string): PodAction {
  const terminating = pod.metadata?.deletionTimestamp !== undefined && pod.metadata?.deletionTimestamp !== null;
  const bound = pod.spec?.nodeName;
  if (!bound) return terminating ? 'ignore' : 'bind';
  if (bound !== nodeName) return 'ignore';
  if (terminating) return 'finalize';
  // A pod that ran to completion keeps no network (kubelet tears the sandbox down).
  if (pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed') return 'finalize';
  return 'realize';
}

/** Distinct containerPort numbers of the pod's containers, in order. */
export function podPorts(pod: V1Pod): number[] {
  const out: number[] = [];
  for (const c of pod.spec?.containers ?? []) for (const p of c.ports ?? []) if (Number.isInteger(p.containerPort) && p.containerPort > 0 && p.containerPort < 65536 && !out.includes(p.containerPort)) out.push(p.containerPort);
  return out;
}

/** The sandbox id a runtime would pass as CNI_CONTAINERID: 32 hex digits of the pod uid. */
export function sandboxId(uid: string): string {
  return uid.replace(/-/g, '');
}

/** CNI_ARGS as kubelet's CRI runtimes send them. */
export function cniArgs(pod: V1Pod): Record<string, string> {
  const uid = pod.metadata?.uid ?? '';
  return {
    IgnoreUnknown: '1',
    K8S_POD_NAMESPACE: pod.metadata?.namespace ?? '',
    K8S_POD_NAME: pod.metadata?.name ?? '',
    K8S_POD_INFRA_CONTAINER_ID: sandboxId(uid),
    K8S_POD_UID: uid,
  };
}

export function bindingFor(pod: V1Pod, nodeName: string): V1Binding {
  return {
    apiVersion: 'v1',
    kind: 'Binding',
    metadata: { name: pod.metadata?.name ?? '', namespace: pod.metadata?.namespace ?? '', uid: pod.metadata?.uid ?? '' },
    target: { apiVersion: 'v1', kind: 'Node', name: nodeName },
  };
}

/** The pod's IPv4 address from a CNI ADD result (the first IPv4 of the pod's interface). */
export function podIPFromResult(result: CniResult): string {
  for (const ip of result.ips ?? []) {
    const m = /^(\d{1,3}(?:\.\d{1,3}){3})\/\d{1,2}$/.exec(ip.address);
    if (m) return m[1]!;
  }
  throw new Error(`the CNI ADD result has no IPv4 address (ips: ${JSON.stringify(result.ips ?? [])})`);
}

/**
 * The status a kubelet would report for a running pod (a merge patch of
 * .status): phase Running, the pod IP, every container running and ready, the
 * four conditions True. Times are `now` unless the pod already has them.
 */
export function runningStatus(pod: V1Pod, podIP: string, hostIP: string, now: Date): V1PodStatus {
  const stamp = now.toISOString() as unknown as Date;
  const since = (type: string) => (pod.status?.conditions?.find((c) => c.type === type && c.status === 'True')?.lastTransitionTime ?? stamp) as Date;
  const startTime = (pod.status?.startTime ?? stamp) as Date;
  return {
    phase: 'Running',
    hostIP,
    hostIPs: [{ ip: hostIP }],
    podIP,
    podIPs: [{ ip: podIP }],
    startTime,
    conditions: ['PodReadyToStartContainers', 'Initialized', 'Ready', 'ContainersReady', 'PodScheduled'].map((type) => ({ type, status: 'True', lastTransitionTime: since(type) })),
    containerStatuses: (pod.spec?.containers ?? []).map((c) => ({
      name: c.name,
      image: c.image ?? '',
      imageID: '',
      containerID: `membrane-sim://${sandboxId(pod.metadata?.uid ?? '')}-${c.name}`,
      ready: true,
      started: true,
      restartCount: 0,
      state: { running: { startedAt: startTime } },
    })),
  };
}

/** The status of a pod whose network could not be set up (what kubelet shows as ContainerCreating). */
export function pendingStatus(pod: V1Pod, reason: string, message: string, now: Date): V1PodStatus {
  const stamp = now.toISOString() as unknown as Date;
  return {
    phase: 'Pending',
    conditions: [
      { type: 'PodScheduled', status: 'True', lastTransitionTime: stamp },
      { type: 'PodReadyToStartContainers', status: 'False', reason, message, lastTransitionTime: stamp },
      { type: 'Ready', status: 'False', reason, message, lastTransitionTime: stamp },
    ],
    containerStatuses: (pod.spec?.containers ?? []).map((c) => ({
      name: c.name,
      image: c.image ?? '',
      imageID: '',
      ready: false,
      restartCount: 0,
      state: { waiting: { reason: 'ContainerCreating', message } },
    })),
  };
}
