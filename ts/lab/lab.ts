/**
 * The lab cluster: `up`, `down` and `status` as functions returning plain values
 * (the CLI prints them; tests and the demo call them too).
 *
 * up:   build (or find cached) binaries -> check ports -> PKI -> etcd ->
 *       kube-apiserver -> admin kubeconfig -> kube-controller-manager ->
 *       blackhole routes -> CRDs (Established) -> Node -> controllers working ->
 *       the node: membrane agent (ready) -> node simulator (watching pods).
 *       Every process and route is written to state.json the moment it exists,
 *       so a failed or interrupted `up` (and a later `down`) can undo exactly it.
 * down: stops what state.json says we started (pid + start time; the node
 *       simulator first, which tears its pods down), removes the routes we
 *       added and the runtime state; keeps logs/ (unless purge).
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import type { KubeConfig } from '@kubernetes/client-node';
import { CoreV1Api } from '@kubernetes/client-node';
import type { LabConfig, MembraneConfig } from '../config/config.js';
import type { Logger } from '../log/logger.js';
import { ensureLabBinaries, type LabBinaries, type PinnedVersions } from './build.js';
import { firstHost, parsePrefix, prefixContains, prefixesOverlap } from './cidr.js';
import { applyCrds, crdStates, readCrdFiles, registerNode, waitForDefaultServiceAccount, isApiError } from './cluster.js';
import { httpsGet, httpsJson, type TlsFiles } from './https.js';
import { kubeConfigFromFile } from './kube.js';
import { writeKubeconfig } from './kubeconfig.js';
import { COMPONENTS, labLayout, type ComponentName, type LabLayout } from './layout.js';
import { acquireLock, LockBusyError, type Lock } from './lock.js';
import { createPki, type LabPki } from './pki.js';
import { checkPorts, type PortClaim } from './ports.js';
import { isOurs, readProcStat, spawnDetached, stopProcess, tailFile, type ProcessRecord, type StopResult } from './proc.js';
import { crdsDir } from './repo.js';
import { addBlackhole, hasBlackhole, removeBlackhole } from './routes.js';
import { cniPluginPath, requirePlugin } from '../cni/invoke.js';
import { NODE_PROCESSES, nodeLayout, nodeProcessStatus, startNode, stopNode, type NodeProcessName, type NodeProcessRecord, type NodeProcessStatus } from './node.js';

export class LabError extends Error {
  override name = 'LabError';
}

/** A component exited (or never became healthy) while the lab was starting. */
export class ComponentFailedError extends LabError {
  constructor(
    readonly component: ComponentName,
    readonly logFile: string,
    what: string,
  ) {
    super(`${component} ${what}; its log is ${logFile}. Last lines:\n${indent(tailFile(logFile, 20))}`);
  }
}

function indent(text: string): string {
  return text
    .split('\n')
    .map((l) => '  ' + l)
    .join('\n');
}

// ---------------------------------------------------------------------------
// State

export interface ComponentRecord extends ProcessRecord {
  name: ComponentName;
  endpoint: string;
  log: string;
  args: string[];
  startedAt: string;
}

export interface RouteRecord {
  cidr: string;
  purpose: 'pods' | 'services';
}

export interface LabState {
  version: 1;
  phase: 'starting' | 'up';
  dir: string;
  createdAt: string;
  upAt?: string;
  /** The lab settings this lab was started with; down and status use these, not today's config. */
  settings: LabConfig;
  binaries?: { key: string; dir: string; versions: PinnedVersions };
  components: Partial<Record<ComponentName, ComponentRecord>>;
  /** Routes this lab added (and so removes); pre-existing identical routes are not listed. */
  routes: RouteRecord[];
  node?: string;
  /** The node's processes (agent, simulator), started after the control plane. */
  nodeProcesses?: Partial<Record<NodeProcessName, NodeProcessRecord>>;
  /** The CNI plugin binary the simulator calls (DEL of leftover pods uses it too). */
  cniPlugin?: string;
}

export function readState(layout: LabLayout): LabState | undefined {
  let text: string;
  try {
    text = readFileSync(layout.state, 'utf8');
  } catch {
    return undefined;
  }
  try {
    const s = JSON.parse(text) as LabState;
    if (s.version !== 1) throw new Error(`unknown version ${String(s.version)}`);
    return s;
  } catch (err) {
    throw new LabError(`${layout.state} is not a lab state file this version understands (${(err as Error).message}); stop what it lists by hand, then remove it`);
  }
}

function writeState(layout: LabLayout, state: LabState): void {
  const tmp = `${layout.state}.tmp`;
  writeFileSync(tmp, JSON.stringify(state, null, 2) + '\n', { mode: 0o600 });
  renameSync(tmp, layout.state);
}

// ---------------------------------------------------------------------------
// Configuration checks

export function validateLabSettings(lab: LabConfig): void {
  for (const [key, cidr] of [
    ['lab.clusterCIDR', lab.clusterCIDR],
    ['lab.podCIDR', lab.podCIDR],
    ['lab.serviceCIDR', lab.serviceCIDR],
  ] as const) {
    try {
      parsePrefix(cidr);
    } catch (err) {
      throw new LabError(`${key}: ${(err as Error).message}`);
    }
  }
  if (!prefixContains(lab.clusterCIDR, lab.podCIDR)) throw new LabError(`lab.podCIDR ${lab.podCIDR} is not inside lab.clusterCIDR ${lab.clusterCIDR}`);
  if (prefixesOverlap(lab.clusterCIDR, lab.serviceCIDR)) throw new LabError(`lab.serviceCIDR ${lab.serviceCIDR} overlaps lab.clusterCIDR ${lab.clusterCIDR}`);
  if (parsePrefix(lab.serviceCIDR).bits < 12) throw new LabError(`lab.serviceCIDR ${lab.serviceCIDR} is too large for kube-apiserver (at most a /12)`);
  if (lab.dir === '/' || !lab.dir.startsWith('/')) throw new LabError(`lab.dir ${lab.dir} must be an absolute directory of its own`);
}

function portClaims(lab: LabConfig): PortClaim[] {
  return [
    { port: lab.etcdClientPort, component: 'etcd (client port)', key: 'lab.etcdClientPort' },
    { port: lab.etcdPeerPort, component: 'etcd (peer port)', key: 'lab.etcdPeerPort' },
    { port: lab.apiserverPort, component: 'kube-apiserver', key: 'lab.apiserverPort' },
    { port: lab.controllerManagerPort, component: 'kube-controller-manager', key: 'lab.controllerManagerPort' },
  ];
}

function endpointOf(name: ComponentName, lab: LabConfig): string {
  switch (name) {
    case 'etcd':
      return `https://127.0.0.1:${lab.etcdClientPort}`;
    case 'kube-apiserver':
      return `https://127.0.0.1:${lab.apiserverPort}`;
    case 'kube-controller-manager':
      return `https://127.0.0.1:${lab.controllerManagerPort}`;
  }
}

// ---------------------------------------------------------------------------
// Component command lines

const SERVICE_ACCOUNT_ISSUER = 'https://kubernetes.default.svc.cluster.local';

function etcdArgs(lab: LabConfig, l: LabLayout, pki: LabPki): string[] {
  const client = `https://127.0.0.1:${lab.etcdClientPort}`;
  const peer = `https://127.0.0.1:${lab.etcdPeerPort}`;
  return [
    '--name=membrane-lab',
    `--data-dir=${l.etcdData}`,
    `--listen-client-urls=${client}`,
    `--advertise-client-urls=${client}`,
    `--listen-peer-urls=${peer}`,
    `--initial-advertise-peer-urls=${peer}`,
    `--initial-cluster=membrane-lab=${peer}`,
    '--initial-cluster-state=new',
    '--initial-cluster-token=membrane-lab',
    `--cert-file=${pki.etcdServer.cert}`,
    `--key-file=${pki.etcdServer.key}`,
    `--trusted-ca-file=${pki.etcdCa.cert}`,
    '--client-cert-auth=true',
    `--peer-cert-file=${pki.etcdServer.cert}`,
    `--peer-key-file=${pki.etcdServer.key}`,
    `--peer-trusted-ca-file=${pki.etcdCa.cert}`,
    '--peer-client-cert-auth=true',
  ];
}

function apiserverArgs(lab: LabConfig, pki: LabPki): string[] {
  return [
    '--bind-address=127.0.0.1',
    `--secure-port=${lab.apiserverPort}`,
    '--advertise-address=127.0.0.1',
    // Endpoints may not hold a loopback address, so the `kubernetes` Service gets
    // no endpoints; clients on this host use the kubeconfig's 127.0.0.1 address.
    '--endpoint-reconciler-type=none',
    `--etcd-servers=https://127.0.0.1:${lab.etcdClientPort}`,
    `--etcd-cafile=${pki.etcdCa.cert}`,
    `--etcd-certfile=${pki.apiserverEtcdClient.cert}`,
    `--etcd-keyfile=${pki.apiserverEtcdClient.key}`,
    `--tls-cert-file=${pki.apiserver.cert}`,
    `--tls-private-key-file=${pki.apiserver.key}`,
    `--client-ca-file=${pki.ca.cert}`,
    `--cert-dir=${pki.dir}`,
    // The aggregation layer's front proxy; delegated authentication (the
    // controller-manager's port, future extension apiservers) reads this CA.
    `--requestheader-client-ca-file=${pki.frontProxyCa.cert}`,
    '--requestheader-allowed-names=front-proxy-client',
    '--requestheader-username-headers=X-Remote-User',
    '--requestheader-group-headers=X-Remote-Group',
    '--requestheader-extra-headers-prefix=X-Remote-Extra-',
    `--proxy-client-cert-file=${pki.frontProxyClient.cert}`,
    `--proxy-client-key-file=${pki.frontProxyClient.key}`,
    '--authorization-mode=Node,RBAC',
    '--enable-admission-plugins=NodeRestriction',
    `--service-cluster-ip-range=${lab.serviceCIDR}`,
    `--service-account-issuer=${SERVICE_ACCOUNT_ISSUER}`,
    `--service-account-key-file=${pki.serviceAccountPub}`,
    `--service-account-signing-key-file=${pki.serviceAccountKey}`,
    '--allow-privileged=true',
    '--profiling=false',
  ];
}

/** Controllers that need a kubelet or a cloud are off; the rest run. */
export const DISABLED_CONTROLLERS = ['node-lifecycle-controller', 'cloud-node-lifecycle-controller', 'service-lb-controller', 'node-route-controller'];

function controllerManagerArgs(lab: LabConfig, l: LabLayout, pki: LabPki): string[] {
  return [
    `--kubeconfig=${l.controllerManagerKubeconfig}`,
    `--authentication-kubeconfig=${l.controllerManagerKubeconfig}`,
    `--authorization-kubeconfig=${l.controllerManagerKubeconfig}`,
    '--bind-address=127.0.0.1',
    `--secure-port=${lab.controllerManagerPort}`,
    `--tls-cert-file=${pki.controllerManagerServing.cert}`,
    `--tls-private-key-file=${pki.controllerManagerServing.key}`,
    `--client-ca-file=${pki.ca.cert}`,
    '--leader-elect=false',
    '--use-service-account-credentials=true',
    `--service-account-private-key-file=${pki.serviceAccountKey}`,
    `--root-ca-file=${pki.ca.cert}`,
    `--cluster-signing-cert-file=${pki.ca.cert}`,
    `--cluster-signing-key-file=${pki.ca.key}`,
    `--service-cluster-ip-range=${lab.serviceCIDR}`,
    `--cluster-cidr=${lab.clusterCIDR}`,
    '--allocate-node-cidrs=true',
    `--node-cidr-mask-size=${parsePrefix(lab.podCIDR).bits}`,
    `--controllers=*,${DISABLED_CONTROLLERS.map((c) => '-' + c).join(',')}`,
    '--profiling=false',
  ];
}

/**
 * Extra flags for one component, appended after the lab's own (so they win):
 * a debugging aid, e.g. MEMBRANE_LAB_EXTRA_ARGS_KUBE_APISERVER="--v=4".
 * Split on whitespace; no quoting.
 */
export const EXTRA_ARGS_ENV: Record<ComponentName, string> = {
  etcd: 'MEMBRANE_LAB_EXTRA_ARGS_ETCD',
  'kube-apiserver': 'MEMBRANE_LAB_EXTRA_ARGS_KUBE_APISERVER',
  'kube-controller-manager': 'MEMBRANE_LAB_EXTRA_ARGS_KUBE_CONTROLLER_MANAGER',
};

function extraArgs(name: ComponentName, env: NodeJS.ProcessEnv = process.env): string[] {
  const v = env[EXTRA_ARGS_ENV[name]]?.trim();
  return v ? v.split(/\s+/) : [];
}

/** The TLS material a probe of each component uses (files in the lab PKI). */
function probeTls(name: ComponentName, l: LabLayout): TlsFiles {
  const p = (f: string) => join(l.pki, f);
  if (name === 'etcd') return { ca: p('etcd-ca.crt'), cert: p('apiserver-etcd-client.crt'), key: p('apiserver-etcd-client.key') };
  return { ca: p('ca.crt'), cert: p('admin.crt'), key: p('admin.key') };
}

const HEALTH_PATH: Record<ComponentName, string> = { etcd: '/health', 'kube-apiserver': '/readyz', 'kube-controller-manager': '/healthz' };

async function probeHealthy(name: ComponentName, endpoint: string, l: LabLayout): Promise<{ ok: boolean; detail: string }> {
  try {
    const r = await httpsGet(endpoint + HEALTH_PATH[name], probeTls(name, l), 2000);
    if (name === 'etcd') {
      const ok = r.status === 200 && (JSON.parse(r.body) as { health?: string }).health === 'true';
      return { ok, detail: r.body.trim() };
    }
    return { ok: r.status === 200, detail: `HTTP ${r.status} ${r.body.trim().slice(0, 200)}` };
  } catch (err) {
    return { ok: false, detail: (err as Error).message };
  }
}

// ---------------------------------------------------------------------------
// up

export interface LabUpOptions {
  log: Logger;
  signal?: AbortSignal;
  /** Seconds to wait for each component to become healthy. */
  startTimeoutSeconds?: number;
}

export interface LabUpResult {
  action: 'started' | 'already-up';
  seconds: number;
  /** True when this `up` had to build the binaries. */
  built: boolean;
  notes: string[];
  status: LabStatus;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function takeLabLock(l: LabLayout): Promise<Lock> {
  try {
    return await acquireLock(l.lock);
  } catch (err) {
    if (err instanceof LockBusyError) {
      throw new LabError(`another membrane lab command (pid ${err.holder.pid}) is working on the lab in ${l.dir}; wait for it to finish`);
    }
    throw err;
  }
}

export async function labUp(config: MembraneConfig, opts: LabUpOptions): Promise<LabUpResult> {
  const started = Date.now();
  const lab = config.lab;
  const log = opts.log.child({ subsystem: 'lab' });
  validateLabSettings(lab);
  const l = labLayout(lab.dir);
  try {
    mkdirSync(l.dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new LabError(`cannot create the lab directory ${l.dir} (${code}); run as root, or set lab.dir (MEMBRANE_LAB_DIR) to a directory you can write`);
  }
  const lock = await takeLabLock(l);
  const notes: string[] = [];
  try {
    const existing = readState(l);
    if (existing) {
      const expectedNode = nodeProcessesOf(existing.settings);
      const recs: ProcessRecord[] = [
        ...COMPONENTS.map((c) => existing.components[c]).filter((r): r is ComponentRecord => r !== undefined),
        ...NODE_PROCESSES.map((p) => existing.nodeProcesses?.[p]).filter((r): r is NodeProcessRecord => r !== undefined),
      ];
      const alive = recs.filter(isOurs);
      if (existing.phase === 'up' && alive.length === COMPONENTS.length + expectedNode.length) {
        const changed = changedSettings(existing.settings, lab);
        if (changed.length) notes.push(`the running lab was started with other settings (${changed.join(', ')}); run membrane lab down, then membrane lab up, to apply them`);
        log.info({ dir: l.dir }, 'the lab is already up; nothing to do');
        return { action: 'already-up', seconds: secondsSince(started), built: false, notes, status: await labStatusLocked(l, existing) };
      }
      if (alive.length > 0) {
        const desc = [...COMPONENTS.map((c) => [c, existing.components[c]] as const), ...NODE_PROCESSES.map((p) => [p, existing.nodeProcesses?.[p]] as const)]
          .map(([name, r]) => `${name} ${r && isOurs(r) ? 'running' : 'stopped'}`)
          .join(', ');
        throw new LabError(`the lab in ${l.dir} is only partly running (${desc}); run membrane lab down, then membrane lab up`);
      }
      log.warn({ dir: l.dir }, 'found the state of a lab that no longer runs (a reboot, or killed processes); cleaning it up first');
      const cleaned = await teardown(l, existing, log);
      notes.push(`cleaned up a lab that was no longer running${cleaned.routesRemoved.length ? ` (removed routes ${cleaned.routesRemoved.join(', ')})` : ''}`);
    }

    // Build (or find) the binaries before touching anything on the host.
    const bins = await ensureLabBinaries({ cacheDir: lab.cacheDir, log: opts.log, signal: opts.signal });
    if (opts.signal?.aborted) throw new LabError('interrupted');
    await checkPorts(portClaims(lab));

    removeRuntimeState(l);
    mkdirSync(l.logs, { recursive: true, mode: 0o700 });
    mkdirSync(l.run, { recursive: true, mode: 0o700 });
    for (const c of COMPONENTS) writeFileSync(l.log(c), '', { mode: 0o600 }); // a fresh log per lab

    const state: LabState = {
      version: 1,
      phase: 'starting',
      dir: l.dir,
      createdAt: new Date().toISOString(),
      settings: { ...lab },
      binaries: { key: bins.key, dir: bins.dir, versions: bins.manifest.versions },
      components: {},
      routes: [],
    };
    writeState(l, state);
    try {
      await bringUp(l, lab, bins, state, opts, log);
    } catch (err) {
      log.error({ err: (err as Error).message }, 'lab up failed; stopping what it started');
      try {
        await teardown(l, state, log);
      } catch (cleanupErr) {
        log.error({ err: (cleanupErr as Error).message }, 'cleaning up after the failed lab up failed too');
        throw new LabError(`${(err as Error).message}\n\nCleaning up failed as well: ${(cleanupErr as Error).message}; run membrane lab down`);
      }
      throw err;
    }
    const status = await labStatusLocked(l, state);
    log.info({ seconds: secondsSince(started), built: bins.built }, 'the lab is up');
    return { action: 'started', seconds: secondsSince(started), built: bins.built, notes, status };
  } finally {
    lock.release();
  }
}

/** The node's processes a lab with these settings runs (none when lab.node is none). */
function nodeProcessesOf(settings: LabConfig): readonly NodeProcessName[] {
  return settings.node === 'none' ? [] : NODE_PROCESSES;
}

function changedSettings(was: LabConfig, now: LabConfig): string[] {
  return (Object.keys(now) as (keyof LabConfig)[]).filter((k) => k !== 'cacheDir' && was[k] !== now[k]).map((k) => `lab.${k} ${String(was[k])} -> ${String(now[k])}`);
}

function secondsSince(t: number): number {
  return Math.round((Date.now() - t) / 100) / 10;
}

async function bringUp(l: LabLayout, lab: LabConfig, bins: LabBinaries, state: LabState, opts: LabUpOptions, log: Logger): Promise<void> {
  const timeout = (opts.startTimeoutSeconds ?? 180) * 1000;
  const check = () => {
    if (opts.signal?.aborted) throw new LabError('interrupted; the lab was not started');
  };

  log.info({ dir: l.pki }, 'creating the lab PKI');
  const pki = createPki({ dir: l.pki, kubernetesServiceIP: firstHost(lab.serviceCIDR), nodeName: lab.nodeName });
  check();

  const start = async (name: ComponentName, args: string[]) => {
    const binary = bins.paths[name];
    const extra = extraArgs(name);
    if (extra.length) log.warn({ labComponent: name, extra }, `extra flags for ${name} from ${EXTRA_ARGS_ENV[name]}`);
    args = [...args, ...extra];
    const rec = spawnDetached(binary, args, l.log(name), l.dir);
    const record: ComponentRecord = { ...rec, name, endpoint: endpointOf(name, lab), log: l.log(name), args, startedAt: new Date().toISOString() };
    state.components[name] = record;
    writeState(l, state);
    writeFileSync(l.pidFile(name), `${rec.pid}\n`);
    log.info({ labComponent: name, pid: rec.pid, endpoint: record.endpoint, log: record.log }, `started ${name}`);
    await waitHealthy(name, record, l, timeout, opts.signal);
    log.info({ labComponent: name, seconds: secondsSince(Date.parse(record.startedAt)) }, `${name} is healthy`);
  };

  await start('etcd', etcdArgs(lab, l, pki));
  await start('kube-apiserver', apiserverArgs(lab, pki));

  writeKubeconfig(l.kubeconfig, { server: endpointOf('kube-apiserver', lab), caFile: pki.ca.cert, client: pki.admin, user: 'membrane-lab-admin' });
  writeKubeconfig(l.controllerManagerKubeconfig, { server: endpointOf('kube-apiserver', lab), caFile: pki.ca.cert, client: pki.controllerManager, user: 'system:kube-controller-manager' });

  await start('kube-controller-manager', controllerManagerArgs(lab, l, pki));
  check();

  for (const [cidr, purpose] of [
    [lab.clusterCIDR, 'pods'],
    [lab.serviceCIDR, 'services'],
  ] as const) {
    if (addBlackhole(cidr)) {
      state.routes.push({ cidr, purpose });
      writeState(l, state);
      log.info({ cidr, purpose }, 'added blackhole route');
    } else {
      log.info({ cidr, purpose }, 'a blackhole route for this range already exists; leaving it as it is');
    }
  }

  const kc = kubeConfigFromFile(l.kubeconfig);
  const alive = () => assertAllAlive(state);
  const crds = readCrdFiles(crdsDir());
  await applyCrds(kc, crds, 60_000, opts.signal);
  log.info({ crds: crds.map((c) => c.crd.metadata?.name) }, 'CRDs established');
  alive();

  await registerNode(kc, { name: lab.nodeName, podCIDR: lab.podCIDR, kubernetesVersion: bins.manifest.versions.kubernetes });
  state.node = lab.nodeName;
  writeState(l, state);
  log.info({ node: lab.nodeName, podCIDR: lab.podCIDR }, 'registered the simulated node');

  await waitForDefaultServiceAccount(kc, 90_000, opts.signal, alive);
  alive();

  if (lab.node === 'none') {
    // Control plane only: the caller runs its own agent (tests, benchmarks).
    state.phase = 'up';
    state.upAt = new Date().toISOString();
    writeState(l, state);
    return;
  }
  state.cniPlugin = requirePlugin(cniPluginPath());
  state.nodeProcesses = {};
  writeState(l, state);
  await startNode({
    lab,
    l,
    log,
    cniPlugin: state.cniPlugin,
    timeoutMs: timeout,
    signal: opts.signal,
    record: (rec) => {
      state.nodeProcesses![rec.name] = rec;
      writeState(l, state);
    },
  });
  alive();
  state.phase = 'up';
  state.upAt = new Date().toISOString();
  writeState(l, state);
}

function assertAllAlive(state: LabState): void {
  for (const c of COMPONENTS) {
    const r = state.components[c];
    if (r && !isOurs(r)) throw new ComponentFailedError(c, r.log, `exited (pid ${r.pid})`);
  }
}

async function waitHealthy(name: ComponentName, rec: ComponentRecord, l: LabLayout, timeoutMs: number, signal?: AbortSignal): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    if (!isOurs(rec)) throw new ComponentFailedError(name, rec.log, `exited while starting (pid ${rec.pid})`);
    const h = await probeHealthy(name, rec.endpoint, l);
    if (h.ok) return;
    last = h.detail;
    if (signal?.aborted) throw new LabError(`interrupted while ${name} was starting; the lab was not started`);
    if (Date.now() > deadline) throw new ComponentFailedError(name, rec.log, `did not become healthy within ${timeoutMs / 1000}s (last answer from ${rec.endpoint}${HEALTH_PATH[name]}: ${last})`);
    await sleep(250);
  }
}

// ---------------------------------------------------------------------------
// down

export interface LabDownResult {
  action: 'stopped' | 'not-up';
  dir: string;
  stopped: { component: ComponentName; pid: number; outcome: StopResult['outcome']; seconds: number }[];
  /** The node's processes (simulator, agent) and the simulated pods torn down after the simulator was gone. */
  node: { stopped: { component: NodeProcessName; pid: number; outcome: StopResult['outcome']; seconds: number }[]; podsSwept: string[]; removed: string[] };
  /** Processes of this lab found running although no state listed them. */
  strays: { pid: number; binary: string; outcome: StopResult['outcome'] }[];
  routesRemoved: string[];
  removed: string[];
  logsKept?: string;
}

export interface LabDownOptions {
  log: Logger;
  /** Remove logs/ and lab.dir itself too. */
  purge?: boolean;
}

export async function labDown(config: MembraneConfig, opts: LabDownOptions): Promise<LabDownResult> {
  const l = labLayout(config.lab.dir);
  const log = opts.log.child({ subsystem: 'lab' });
  if (!existsSync(l.dir)) return { action: 'not-up', dir: l.dir, stopped: [], node: { stopped: [], podsSwept: [], removed: [] }, strays: [], routesRemoved: [], removed: [] };
  const lock = await takeLabLock(l);
  let result: LabDownResult;
  try {
    const state = readState(l);
    const t = await teardown(l, state, log);
    result = { action: state ? 'stopped' : 'not-up', dir: l.dir, ...t };
    if (existsSync(l.logs)) result.logsKept = l.logs;
  } finally {
    lock.release();
  }
  if (opts.purge) {
    rmSync(l.logs, { recursive: true, force: true });
    if (result.logsKept) result.removed.push(l.logs);
    delete result.logsKept;
    try {
      rmdirSync(l.dir);
      result.removed.push(l.dir);
    } catch {
      // not empty: something that is not ours lives there; leave it
    }
  }
  return result;
}

/** Stops the recorded processes (last started first), removes recorded routes and runtime files. */
async function teardown(l: LabLayout, state: LabState | undefined, log: Logger): Promise<Omit<LabDownResult, 'action' | 'dir' | 'logsKept'>> {
  const stopped: LabDownResult['stopped'] = [];
  const errors: string[] = [];
  const node: LabDownResult['node'] = { stopped: [], podsSwept: [], removed: [] };
  if (state) {
    try {
      Object.assign(node, await stopNode(l, state.nodeProcesses ?? {}, state.cniPlugin, log));
    } catch (err) {
      errors.push((err as Error).message);
    }
  }
  for (const c of [...COMPONENTS].reverse()) {
    const rec = state?.components[c];
    if (!rec) continue;
    try {
      const r = await stopProcess(rec, c === 'etcd' ? 15_000 : 10_000);
      stopped.push({ component: c, pid: rec.pid, outcome: r.outcome, seconds: r.seconds });
      if (r.outcome !== 'not-running') log.info({ labComponent: c, pid: rec.pid, outcome: r.outcome }, `stopped ${c}`);
    } catch (err) {
      errors.push(`${c} (pid ${rec.pid}): ${(err as Error).message}`);
    }
  }
  const strays: LabDownResult['strays'] = [];
  for (const p of findStrays(l)) {
    try {
      const r = await stopProcess(p);
      strays.push({ pid: p.pid, binary: p.binary, outcome: r.outcome });
      log.warn({ pid: p.pid, binary: p.binary }, 'stopped a process of this lab that the state file did not list');
    } catch (err) {
      errors.push(`pid ${p.pid}: ${(err as Error).message}`);
    }
  }
  const routesRemoved: string[] = [];
  for (const r of state?.routes ?? []) {
    try {
      if (removeBlackhole(r.cidr)) {
        routesRemoved.push(r.cidr);
        log.info({ cidr: r.cidr }, 'removed blackhole route');
      }
    } catch (err) {
      errors.push((err as Error).message);
    }
  }
  if (errors.length) throw new LabError(`could not stop everything; state kept in ${l.state} so that membrane lab down can try again:\n${errors.map((e) => '  ' + e).join('\n')}`);
  const removed = [...node.removed, ...removeRuntimeState(l)];
  return { stopped, node: { ...node, removed: [] }, strays, routesRemoved, removed };
}

/** Processes whose command line points into this lab's directory: ours, even if the state file was lost. */
function findStrays(l: LabLayout): ProcessRecord[] {
  const out: ProcessRecord[] = [];
  const markers = [`--data-dir=${l.etcdData}`, `--tls-cert-file=${join(l.pki, 'apiserver.crt')}`, `--kubeconfig=${l.controllerManagerKubeconfig}`, `--config=${nodeLayout(l).agentConfig}`, `--lab-dir=${l.dir}`];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d) || Number(d) === process.pid) continue;
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    if (!argv.some((a) => markers.includes(a))) continue;
    const st = readProcStat(Number(d));
    if (st && st.state !== 'Z') out.push({ pid: Number(d), startTime: st.startTime, binary: argv[0] ?? '?' });
  }
  return out;
}

/** Removes the runtime entries of lab.dir (only names the lab makes; never anything else). */
function removeRuntimeState(l: LabLayout): string[] {
  const removed: string[] = [];
  for (const p of [l.state, `${l.state}.tmp`, l.kubeconfig, l.pki, l.etcdData, l.run]) {
    if (existsSync(p)) {
      rmSync(p, { recursive: true, force: true });
      removed.push(p);
    }
  }
  return removed;
}

// ---------------------------------------------------------------------------
// status

export interface ComponentStatus {
  name: ComponentName;
  running: boolean;
  pid: number | null;
  endpoint: string;
  healthy: boolean | null;
  version: string | null;
  log: string;
}

export interface LabStatus {
  /** up: everything runs; starting: an up is in progress; degraded: some part stopped; down: nothing recorded. */
  state: 'up' | 'starting' | 'degraded' | 'down';
  dir: string;
  kubeconfig: string | null;
  upAt: string | null;
  binaries: { key: string; dir: string; versions: PinnedVersions } | null;
  components: ComponentStatus[];
  /** The node's processes: the membrane agent and the node simulator. */
  nodeProcesses: NodeProcessStatus[];
  node: { name: string; registered: boolean; podCIDR: string | null; ready: string | null } | null;
  crds: { name: string; established: boolean }[];
  routes: { cidr: string; purpose: 'pods' | 'services'; present: boolean }[];
}

export async function labStatus(config: MembraneConfig): Promise<LabStatus> {
  const l = labLayout(config.lab.dir);
  const state = readState(l);
  if (!state) return downStatus(l, config.lab);
  return labStatusLocked(l, state);
}

function downStatus(l: LabLayout, lab: LabConfig): LabStatus {
  return {
    state: 'down',
    dir: l.dir,
    kubeconfig: null,
    upAt: null,
    binaries: null,
    components: COMPONENTS.map((name) => ({ name, running: false, pid: null, endpoint: endpointOf(name, lab), healthy: null, version: null, log: l.log(name) })),
    nodeProcesses: NODE_PROCESSES.map((name) => ({ name, running: false, pid: null, healthy: null, detail: 'not running', log: nodeLayout(l).log(name) })),
    node: null,
    crds: [],
    routes: [],
  };
}

async function labStatusLocked(l: LabLayout, state: LabState): Promise<LabStatus> {
  const lab = state.settings;
  const components = await Promise.all(
    COMPONENTS.map(async (name): Promise<ComponentStatus> => {
      const rec = state.components[name];
      const running = rec !== undefined && isOurs(rec);
      const endpoint = endpointOf(name, lab);
      let healthy: boolean | null = null;
      let version: string | null = null;
      if (running) {
        healthy = (await probeHealthy(name, endpoint, l)).ok;
        version = await componentVersion(name, endpoint, l, rec);
      }
      return { name, running, pid: rec?.pid ?? null, endpoint, healthy, version, log: l.log(name) };
    }),
  );
  const nodeProcesses = (await nodeProcessStatus(l, state.nodeProcesses)).filter((p) => nodeProcessesOf(lab).includes(p.name));
  const allRunning = components.every((c) => c.running) && (state.phase !== 'up' || nodeProcesses.every((p) => p.running));
  const anyRunning = components.some((c) => c.running) || nodeProcesses.some((p) => p.running);
  let st: LabStatus['state'] = state.phase === 'starting' ? 'starting' : allRunning ? 'up' : 'degraded';
  if (!anyRunning && state.phase === 'up') st = 'degraded';

  let node: LabStatus['node'] = { name: lab.nodeName, registered: false, podCIDR: null, ready: null };
  let crds: LabStatus['crds'] = [];
  const apiserver = components.find((c) => c.name === 'kube-apiserver');
  if (apiserver?.healthy && existsSync(l.kubeconfig)) {
    const kc = kubeConfigFromFile(l.kubeconfig);
    node = await nodeStatus(kc, lab.nodeName);
    try {
      const names = readCrdFiles(crdsDir()).map((d) => d.crd.metadata?.name ?? '');
      crds = await withTimeout(crdStates(kc, names), 5000);
    } catch {
      crds = [];
    }
  }
  const routes = state.routes.map((r) => ({ cidr: r.cidr, purpose: r.purpose, present: safeHasBlackhole(r.cidr) }));
  return {
    state: st,
    dir: l.dir,
    kubeconfig: existsSync(l.kubeconfig) ? l.kubeconfig : null,
    upAt: state.upAt ?? null,
    binaries: state.binaries ?? null,
    components,
    nodeProcesses,
    node,
    crds,
    routes,
  };
}

function safeHasBlackhole(cidr: string): boolean {
  try {
    return hasBlackhole(cidr);
  } catch {
    return false;
  }
}

async function nodeStatus(kc: KubeConfig, name: string): Promise<NonNullable<LabStatus['node']>> {
  try {
    const n = await withTimeout(kc.makeApiClient(CoreV1Api).readNode({ name }), 5000);
    const ready = n.status?.conditions?.find((c) => c.type === 'Ready')?.status ?? null;
    return { name, registered: true, podCIDR: n.spec?.podCIDR ?? null, ready };
  } catch (err) {
    if (isApiError(err, 404)) return { name, registered: false, podCIDR: null, ready: null };
    return { name, registered: false, podCIDR: null, ready: null };
  }
}

async function componentVersion(name: ComponentName, endpoint: string, l: LabLayout, rec: ComponentRecord | undefined): Promise<string | null> {
  try {
    if (name === 'etcd') return (await httpsJson<{ etcdserver?: string }>(`${endpoint}/version`, probeTls(name, l))).etcdserver ?? null;
    if (name === 'kube-apiserver') return (await httpsJson<{ gitVersion?: string }>(`${endpoint}/version`, probeTls(name, l))).gitVersion ?? null;
    // The controller-manager serves no /version without authorization; ask its binary.
    if (!rec) return null;
    const r = spawnSync(rec.binary, ['--version'], { encoding: 'utf8', timeout: 10_000 });
    return /Kubernetes (\S+)/.exec(r.stdout)?.[1] ?? null;
  } catch {
    return null;
  }
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(t);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}
