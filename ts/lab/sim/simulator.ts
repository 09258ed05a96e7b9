/**
 * The lab's node simulator: it plays kubelet and the container runtime for one
 * Node, with network namespaces instead of containers.
 *
 *   unscheduled pod        -> Binding to our node (there is no scheduler)
 *   pod bound to our node  -> netns mbr-sim-<uid>, CNI ADD exactly as a runtime
 *                             calls it, status (podIP, Running, Ready), and one
 *                             server process inside the netns for its ports
 *   pod being deleted      -> stop the server, CNI DEL, delete the netns, then
 *                             remove the object (delete with grace 0, as kubelet does)
 *   pod gone (forced)      -> the same teardown
 *   hostNetwork pod        -> no netns, no CNI, no server (it would listen on the host):
 *                             Running with the node's address, as kubelet reports it
 *
 * Operations on one pod run one at a time, in order; different pods run in
 * parallel up to a limit. Every pod the simulator realizes is recorded in a file
 * under stateDir before anything is created, so a simulator that was killed is
 * cleaned up by the next start (and by `lab down`, see sweepSimulatedPods).
 * A failed CNI ADD leaves the pod Pending (ContainerCreating, the error as the
 * message) and is retried with backoff while the pod exists.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ApiException, CoreV1Api, PatchStrategy, setHeaderOptions, type KubeConfig, type V1Pod } from '@kubernetes/client-node';
import type { Subscription } from 'rxjs';
import { invokeCni, pluginConfig, type Conflist, type CniResult } from '../../cni/invoke.js';
import { KubeConnection } from '../../k8s/connection.js';
import { createInformers, type InformerSet } from '../../k8s/informers.js';
import { HttpsTransport } from '../../k8s/transport.js';
import type { Logger } from '../../log/logger.js';
import { isOurs, readProcStat, stopProcess, type ProcessRecord } from '../proc.js';
import { bindingFor, cniArgs, pendingStatus, podAction, podIPFromResult, podPorts, runningStatus, sandboxId } from './pods.js';
import { netnsPath, netnsScriptCommand, simNetnsName } from './scripts.js';
import { run } from '../netns.js';

export const POD_IFNAME = 'eth0';

export interface SimulatorOptions {
  kc: KubeConfig;
  nodeName: string;
  log: Logger;
  /** The plugin binary (membrane-cni) and the conflist it is called with. */
  cniPlugin: string;
  conflist: Conflist;
  /** Fields set in every plugin's configuration (e.g. agentSocket, logFile of the lab's agent). */
  pluginOverrides?: Record<string, unknown>;
  /** Per-pod records (what to undo). */
  stateDir: string;
  /** Where the pod servers' stderr goes. */
  serverLog: string;
  /** The Node's address, reported as status.hostIP. */
  hostIP: string;
  /** Pods set up or torn down at the same time. */
  parallelism?: number;
  /** How long a pod server may take to listen. */
  serverStartMs?: number;
}

/** What was created for one pod, persisted before it is created. */
export interface SimPodRecord {
  uid: string;
  namespace: string;
  name: string;
  netns: string;
  containerId: string;
  cniArgs: Record<string, string>;
  /** Plugin configurations exactly as ADD got them (DEL gets the same, with prevResult). */
  pluginConfigs: Record<string, unknown>[];
  addResult?: CniResult;
  podIP?: string;
  server?: ProcessRecord;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

class Semaphore {
  private waiting: (() => void)[] = [];
  private active = 0;
  constructor(private readonly limit: number) {}
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.limit) await new Promise<void>((r) => this.waiting.push(r));
    this.active++;
    try {
      return await fn();
    } finally {
      this.active--;
      this.waiting.shift()?.();
    }
  }
}

// ---------------------------------------------------------------------------
// Records

function recordPath(stateDir: string, uid: string): string {
  return join(stateDir, `${uid}.json`);
}

function writeRecord(stateDir: string, rec: SimPodRecord): void {
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const path = recordPath(stateDir, rec.uid);
  writeFileSync(`${path}.tmp`, JSON.stringify(rec, null, 2) + '\n', { mode: 0o600 });
  renameSync(`${path}.tmp`, path);
}

export function readRecords(stateDir: string, log?: Logger): SimPodRecord[] {
  let files: string[];
  try {
    files = readdirSync(stateDir).filter((f) => f.endsWith('.json'));
  } catch {
    return [];
  }
  const out: SimPodRecord[] = [];
  for (const f of files) {
    try {
      out.push(JSON.parse(readFileSync(join(stateDir, f), 'utf8')) as SimPodRecord);
    } catch (err) {
      log?.warn({ file: join(stateDir, f), err: (err as Error).message }, 'unreadable simulator record; moved aside');
      renameSync(join(stateDir, f), join(stateDir, `${f}.corrupt`));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// Teardown, shared with `lab down`

function netnsExists(name: string): boolean {
  return existsSync(netnsPath(name));
}

/**
 * Undoes one record: server stopped (by its pid and start time), CNI DEL with
 * the ADD's configuration and result, netns deleted, record removed. DEL is
 * retried a few times; if it keeps failing the record stays (and the error is thrown).
 */
export async function teardownRecord(rec: SimPodRecord, cniPlugin: string, stateDir: string, log: Logger): Promise<void> {
  if (rec.server) await stopProcess(rec.server, 3000);
  let lastError = '';
  for (let attempt = 1; attempt <= 3; attempt++) {
    lastError = '';
    for (const config of [...rec.pluginConfigs].reverse()) {
      const withPrev = rec.addResult ? { ...config, prevResult: rec.addResult } : config;
      try {
        const out = await invokeCni(cniPlugin, {
          command: 'DEL',
          containerId: rec.containerId,
          netns: netnsPath(rec.netns),
          ifname: POD_IFNAME,
          args: rec.cniArgs,
          config: withPrev,
          timeoutMs: 30_000,
        });
        if (!out.ok) lastError = `CNI DEL failed: code ${out.error.code} ${out.error.msg}${out.error.details ? ` (${out.error.details})` : ''}`;
      } catch (err) {
        lastError = (err as Error).message;
      }
    }
    if (!lastError) break;
    log.warn({ pod: `${rec.namespace}/${rec.name}`, attempt, err: lastError }, 'CNI DEL failed; retrying');
    await sleep(250 * attempt);
  }
  if (lastError) throw new Error(`${rec.namespace}/${rec.name}: ${lastError}; its record stays in ${recordPath(stateDir, rec.uid)} so that lab down can try again`);
  if (netnsExists(rec.netns)) run('ip', ['netns', 'del', rec.netns]);
  rmSync(recordPath(stateDir, rec.uid), { force: true });
}

/** Tears down every recorded pod (a simulator that was killed); returns what was removed and what failed. */
export async function sweepSimulatedPods(stateDir: string, cniPlugin: string, log: Logger): Promise<{ removed: string[]; failed: string[] }> {
  const removed: string[] = [];
  const failed: string[] = [];
  for (const rec of readRecords(stateDir, log)) {
    try {
      await teardownRecord(rec, cniPlugin, stateDir, log);
      removed.push(`${rec.namespace}/${rec.name}`);
    } catch (err) {
      failed.push((err as Error).message);
    }
  }
  return { removed, failed };
}

// ---------------------------------------------------------------------------
// The simulator

export class NodeSimulator {
  private readonly connection: KubeConnection;
  private readonly core: CoreV1Api;
  private readonly informers: InformerSet<'pods'>;
  private readonly log: Logger;
  private readonly limit: Semaphore;
  /** Latest object per uid (undefined once deleted). */
  private readonly latest = new Map<string, V1Pod | undefined>();
  private readonly realized = new Map<string, SimPodRecord>();
  /** Per-pod chain of operations. */
  private readonly queues = new Map<string, Promise<void>>();
  private readonly retries = new Map<string, { attempt: number; timer: NodeJS.Timeout }>();
  private sub: Subscription | undefined;
  private stopping = false;

  constructor(private readonly o: SimulatorOptions) {
    this.log = o.log.child({ part: 'node-simulator', node: o.nodeName });
    this.connection = new KubeConnection(o.kc);
    this.core = this.connection.apiClient(CoreV1Api);
    this.informers = createInformers(new HttpsTransport(o.kc, { connection: this.connection }), { log: this.log, resources: ['pods'] });
    this.limit = new Semaphore(o.parallelism ?? 8);
  }

  /** Cleans up what a previous run left, starts watching, resolves once the initial list is handled. */
  async start(signal?: AbortSignal): Promise<void> {
    const leftovers = await sweepSimulatedPods(this.o.stateDir, this.o.cniPlugin, this.log);
    if (leftovers.removed.length) this.log.info({ pods: leftovers.removed }, 'tore down pods a previous simulator left behind; they are set up again');
    if (leftovers.failed.length) this.log.error({ errors: leftovers.failed }, 'could not tear down some pods a previous simulator left behind');
    const pods = this.informers.get('pods');
    this.sub = pods.state$.subscribe((e) => {
      const uid = e.object.metadata?.uid;
      if (!uid) return;
      this.latest.set(uid, e.type === 'delete' ? undefined : e.object);
      this.enqueue(uid);
    });
    this.sub.add(this.informers.start());
    await this.informers.whenSynced(signal);
    this.log.info({ pods: pods.size }, 'watching pods');
  }

  /** Pods with a network now. */
  realizedPods(): SimPodRecord[] {
    return [...this.realized.values()];
  }

  /** Stops watching and tears down every pod it realized. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.sub?.unsubscribe();
    await this.informers.stop();
    for (const r of this.retries.values()) clearTimeout(r.timer);
    this.retries.clear();
    await Promise.allSettled([...this.queues.values()]);
    const errors: string[] = [];
    await Promise.all(
      [...this.realized.values()].map((rec) =>
        this.limit.run(async () => {
          try {
            await teardownRecord(rec, this.o.cniPlugin, this.o.stateDir, this.log);
            this.realized.delete(rec.uid);
          } catch (err) {
            errors.push((err as Error).message);
          }
        }),
      ),
    );
    this.connection.close();
    if (errors.length) throw new Error(`could not tear down every pod:\n  ${errors.join('\n  ')}`);
  }

  private enqueue(uid: string): void {
    if (this.stopping) return;
    const prev = this.queues.get(uid) ?? Promise.resolve();
    const next = prev
      .then(() => this.sync(uid))
      .catch((err: unknown) => this.log.error({ uid, err: (err as Error).message }, 'pod sync failed'))
      .finally(() => {
        if (this.queues.get(uid) === next) this.queues.delete(uid);
      });
    this.queues.set(uid, next);
  }

  private async sync(uid: string): Promise<void> {
    if (this.stopping) return;
    const pod = this.latest.get(uid);
    const rec = this.realized.get(uid);
    if (!pod) {
      this.latest.delete(uid);
      this.cancelRetry(uid);
      if (rec) await this.teardown(rec, 'the pod was deleted');
      return;
    }
    const action = podAction(pod, this.o.nodeName);
    const ref = `${pod.metadata?.namespace}/${pod.metadata?.name}`;
    switch (action) {
      case 'ignore':
        return;
      case 'bind':
        await this.bind(pod, ref);
        return;
      case 'finalize':
        this.cancelRetry(uid);
        if (rec) await this.teardown(rec, 'the pod is being deleted');
        if (pod.metadata?.deletionTimestamp) await this.removeObject(pod, ref);
        return;
      case 'realize':
        if (pod.spec?.hostNetwork) {
          // Like kubelet: no sandbox network, no CNI; the pod has the node's address.
          if (pod.status?.podIP !== this.o.hostIP || pod.status?.phase !== 'Running') await this.writeStatus(pod, runningStatus(pod, this.o.hostIP, this.o.hostIP, new Date()), ref);
          return;
        }
        if (!rec) await this.realize(pod, ref);
        else if (pod.status?.podIP !== rec.podIP || pod.status?.phase !== 'Running') await this.writeStatus(pod, runningStatus(pod, rec.podIP!, this.o.hostIP, new Date()), ref);
        return;
    }
  }

  private async bind(pod: V1Pod, ref: string): Promise<void> {
    try {
      await this.core.createNamespacedBinding({ namespace: pod.metadata!.namespace!, body: bindingFor(pod, this.o.nodeName) });
      this.log.debug({ pod: ref }, 'bound the pod to this node');
    } catch (err) {
      // 409: bound meanwhile; 404: deleted meanwhile. The watch brings what happened.
      if (err instanceof ApiException && (err.code === 409 || err.code === 404)) return;
      throw err;
    }
  }

  private async realize(pod: V1Pod, ref: string): Promise<void> {
    const uid = pod.metadata!.uid!;
    const started = Date.now();
    const rec: SimPodRecord = {
      uid,
      namespace: pod.metadata!.namespace!,
      name: pod.metadata!.name!,
      netns: simNetnsName(uid),
      containerId: sandboxId(uid),
      cniArgs: cniArgs(pod),
      pluginConfigs: this.o.conflist.plugins.map((_p, i) => pluginConfig(this.o.conflist, i, this.o.pluginOverrides ?? {})),
    };
    const outcome = await this.limit.run(async () => {
      writeRecord(this.o.stateDir, rec);
      if (netnsExists(rec.netns)) run('ip', ['netns', 'del', rec.netns]);
      run('ip', ['netns', 'add', rec.netns]);
      // CNI ADD, plugin by plugin, each given the previous one's result (as libcni does).
      let prevResult: CniResult | undefined;
      for (const config of rec.pluginConfigs) {
        const out = await invokeCni(this.o.cniPlugin, {
          command: 'ADD',
          containerId: rec.containerId,
          netns: netnsPath(rec.netns),
          ifname: POD_IFNAME,
          args: rec.cniArgs,
          config: prevResult ? { ...config, prevResult } : config,
          timeoutMs: 60_000,
        });
        if (!out.ok) return { ok: false as const, error: `CNI ADD failed: code ${out.error.code} ${out.error.msg}${out.error.details ? ` (${out.error.details})` : ''}` };
        prevResult = out.output as CniResult;
      }
      rec.addResult = prevResult;
      rec.podIP = podIPFromResult(prevResult!);
      writeRecord(this.o.stateDir, rec);
      const ports = podPorts(pod);
      if (ports.length) {
        rec.server = await this.startServer(rec, ports);
        writeRecord(this.o.stateDir, rec);
      }
      return { ok: true as const };
    }).catch((err: unknown) => ({ ok: false as const, error: (err as Error).message }));

    if (!outcome.ok) {
      // A failed ADD leaves nothing in the kernel (the plugin's contract); undo our part.
      await this.teardown(rec, 'the set-up failed').catch((err: unknown) => this.log.error({ pod: ref, err: (err as Error).message }, 'cleaning up a failed set-up failed'));
      await this.writeStatus(pod, pendingStatus(pod, 'NetworkNotReady', outcome.error, new Date()), ref).catch(() => undefined);
      this.scheduleRetry(uid, ref, outcome.error);
      return;
    }
    this.cancelRetry(uid);
    this.realized.set(uid, rec);
    await this.writeStatus(pod, runningStatus(pod, rec.podIP!, this.o.hostIP, new Date()), ref);
    this.log.info({ pod: ref, podIP: rec.podIP, netns: rec.netns, ports: podPorts(pod), ms: Date.now() - started }, 'pod is running');
  }

  private scheduleRetry(uid: string, ref: string, error: string): void {
    const attempt = (this.retries.get(uid)?.attempt ?? 0) + 1;
    const delay = Math.min(10_000, 250 * 2 ** (attempt - 1));
    this.log.warn({ pod: ref, attempt, retryInMs: delay, err: error }, 'could not set up the pod network; will retry');
    const timer = setTimeout(() => this.enqueue(uid), delay);
    this.retries.set(uid, { attempt, timer });
  }

  private cancelRetry(uid: string): void {
    const r = this.retries.get(uid);
    if (r) clearTimeout(r.timer);
    this.retries.delete(uid);
  }

  /** Starts the pod's server inside its netns and waits until it listens. */
  private async startServer(rec: SimPodRecord, ports: number[]): Promise<ProcessRecord> {
    const { cmd, args, cwd } = netnsScriptCommand(rec.netns, 'pod-server', JSON.stringify({ namespace: rec.namespace, name: rec.name, ports }));
    const errFd = openSync(this.o.serverLog, 'a', 0o600);
    try {
      const child = spawn(cmd, args, { cwd, detached: true, stdio: ['ignore', 'pipe', errFd] });
      const pid = child.pid;
      if (pid === undefined) throw new Error(`cannot start the server of ${rec.namespace}/${rec.name}`);
      const record: ProcessRecord = { pid, startTime: readProcStat(pid)?.startTime ?? -1, binary: cmd };
      await new Promise<void>((resolve, reject) => {
        let out = '';
        const timer = setTimeout(() => {
          child.kill('SIGKILL');
          reject(new Error(`the server of ${rec.namespace}/${rec.name} did not listen within ${this.o.serverStartMs ?? 30_000} ms; see ${this.o.serverLog}`));
        }, this.o.serverStartMs ?? 30_000);
        child.stdout!.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.includes('"ready":true')) {
            clearTimeout(timer);
            resolve();
          }
        });
        child.once('exit', (code) => {
          clearTimeout(timer);
          reject(new Error(`the server of ${rec.namespace}/${rec.name} exited (${code}) before it listened; see ${this.o.serverLog}`));
        });
        child.once('error', (err) => {
          clearTimeout(timer);
          reject(err);
        });
      });
      child.stdout!.destroy();
      child.removeAllListeners('exit');
      child.unref();
      return record;
    } finally {
      closeSync(errFd);
    }
  }

  private async teardown(rec: SimPodRecord, why: string): Promise<void> {
    await this.limit.run(() => teardownRecord(rec, this.o.cniPlugin, this.o.stateDir, this.log));
    this.realized.delete(rec.uid);
    this.log.info({ pod: `${rec.namespace}/${rec.name}`, podIP: rec.podIP, why }, 'pod torn down');
  }

  /** What kubelet does once a deleted pod's containers are gone: delete it for good, this uid only. */
  private async removeObject(pod: V1Pod, ref: string): Promise<void> {
    try {
      await this.core.deleteNamespacedPod({ name: pod.metadata!.name!, namespace: pod.metadata!.namespace!, gracePeriodSeconds: 0, body: { gracePeriodSeconds: 0, preconditions: { uid: pod.metadata!.uid! } } });
    } catch (err) {
      if (err instanceof ApiException && (err.code === 404 || err.code === 409)) return;
      throw err;
    }
    this.log.debug({ pod: ref }, 'removed the deleted pod');
  }

  private async writeStatus(pod: V1Pod, status: object, ref: string): Promise<void> {
    try {
      await this.core.patchNamespacedPodStatus(
        { name: pod.metadata!.name!, namespace: pod.metadata!.namespace!, body: { metadata: { uid: pod.metadata!.uid }, status } },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      );
    } catch (err) {
      if (err instanceof ApiException && (err.code === 404 || err.code === 409)) return;
      throw new Error(`cannot write the status of ${ref}: ${(err as Error).message}`);
    }
  }
}

/** True while the record's server process is the one we started. */
export function serverAlive(rec: SimPodRecord): boolean {
  return rec.server !== undefined && isOurs(rec.server);
}
