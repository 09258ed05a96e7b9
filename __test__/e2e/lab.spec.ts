/**
 * The lab cluster end to end: real etcd, kube-apiserver and kube-controller-manager
 * built from source, driven through the `membrane lab` CLI, checked with
 * @kubernetes/client-node. Needs root (blackhole routes). Uses its own lab
 * directory, ports and ranges; always ends with `lab down --purge`.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import test from 'ava';
import { ApiException, CoreV1Api, CustomObjectsApi, VersionApi, Watch, type KubeConfig, type V1Pod } from '@kubernetes/client-node';
import { labKubeConfig } from '../../ts/lab/kube.js';
import type { LabDownResult, LabState, LabStatus, LabUpResult } from '../../ts/lab/lab.js';
import { labEnv, membrane, processesUsing, REPO, sameProcessAlive, testLabSettings } from './helpers/lab.js';

// Never skipped: without root every test here fails with this reason.
const serial = test.serial;
test.before(() => {
  if (process.getuid?.() !== 0) throw new Error('the lab e2e tests need root (the lab adds blackhole routes and binds its ports); run npm test as root');
});

const lab = testLabSettings(String(process.pid));
const env = labEnv(lab);
const MINUTE = 60_000;

function blackhole(cidr: string): boolean {
  const r = spawnSync('ip', ['-j', 'route', 'show', 'table', 'main', 'exact', cidr], { encoding: 'utf8' });
  const routes = JSON.parse(r.stdout || '[]') as { type?: string }[];
  return routes.some((x) => x.type === 'blackhole');
}

function apiCode(err: unknown): number | undefined {
  return err instanceof ApiException ? err.code : undefined;
}

function json<T>(text: string): T {
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new Error(`not JSON: ${text.slice(0, 2000)}`);
  }
}

let kc: KubeConfig;

test.before(async (t) => {
  // A cold build of the control plane takes minutes; CI builds it in its setup step first.
  t.timeout(45 * MINUTE);
  const r = await membrane(['lab', 'build'], env);
  t.is(r.code, 0, `membrane lab build failed:\n${r.stderr}`);
});

test.after.always(async () => {
  if (process.getuid?.() !== 0) return;
  await membrane(['lab', 'down', '--purge'], env, 2 * MINUTE);
  rmSync(lab.dir, { recursive: true, force: true });
});

serial('an interrupted build leaves nothing that passes for a cached one', async (t) => {
  t.timeout(10 * MINUTE);
  const cacheDir = mkdtempSync(join(tmpdir(), 'membrane-lab-cache-'));
  try {
    const child = spawn(process.execPath, ['--import=tsx', join(REPO, 'ts', 'cli', 'main.ts'), 'lab', 'build'], {
      cwd: REPO,
      env: { ...env, MEMBRANE_LAB_CACHE_DIR: cacheDir },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    const interrupted = new Promise<void>((resolve) => {
      child.stderr.on('data', (d: Buffer) => {
        stderr += d.toString();
        if (stderr.includes('"msg":"building etcd"')) resolve();
      });
    });
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    await interrupted;
    child.kill('SIGINT');
    const code = await exited;
    t.is(code, 1, stderr);
    t.regex(stderr, /interrupted; nothing was cached/);
    const entries = readdirSync(join(cacheDir, 'lab-bin'));
    t.deepEqual(entries.filter((e) => !e.startsWith('build-')), [], `only the build log is left: ${entries.join(', ')}`);
  } finally {
    rmSync(cacheDir, { recursive: true, force: true });
  }
});

serial('a failed build names its log file, and lab up starts nothing', async (t) => {
  const cacheDir = mkdtempSync(join(tmpdir(), 'membrane-lab-cache-'));
  const fakeGo = join(cacheDir, 'fake-go');
  writeFileSync(fakeGo, '#!/bin/sh\nif [ "$1" = env ]; then echo go1.99-fake; exit 0; fi\necho "vendor/example/broken.go:3:1: syntax error: e2e-broken-package" >&2\nexit 2\n', { mode: 0o755 });
  try {
    const r = await membrane(['lab', 'up'], { ...env, MEMBRANE_LAB_CACHE_DIR: cacheDir, MEMBRANE_GO: fakeGo });
    t.is(r.code, 1, r.stderr);
    const m = /read the build log (\S+\.log)/.exec(r.stderr);
    t.truthy(m, r.stderr);
    t.true(m![1]!.startsWith(join(cacheDir, 'lab-bin', 'build-')), m![1]);
    t.regex(readFileSync(m![1]!, 'utf8'), /e2e-broken-package/);
    t.regex(r.stderr, /e2e-broken-package/, 'the last lines of the build log are shown');
    t.false(existsSync(join(lab.dir, 'state.json')));
    t.deepEqual(processesUsing(lab.dir), []);
    t.deepEqual(readdirSync(join(cacheDir, 'lab-bin')).filter((e) => !e.startsWith('build-')), []);
  } finally {
    rmSync(cacheDir, { recursive: true, force: true });
  }
});

serial('lab up refuses a port in use, names it and how to change it, and leaves nothing behind', async (t) => {
  t.timeout(5 * MINUTE);
  const blocker: Server = createServer();
  await new Promise<void>((resolve) => blocker.listen(lab.apiserverPort, '127.0.0.1', resolve));
  try {
    const r = await membrane(['lab', 'up'], env);
    t.is(r.code, 1, r.stderr);
    t.regex(r.stderr, new RegExp(`port ${lab.apiserverPort}\\b`));
    t.regex(r.stderr, /kube-apiserver needs it/);
    t.regex(r.stderr, /lab\.apiserverPort/);
    t.regex(r.stderr, /MEMBRANE_LAB_APISERVER_PORT/);
    t.regex(r.stderr, new RegExp(`pid ${process.pid}\\b`), 'names the process that holds the port');
  } finally {
    await new Promise((resolve) => blocker.close(resolve));
  }
  t.false(existsSync(join(lab.dir, 'state.json')));
  t.deepEqual(processesUsing(lab.dir), []);
  t.false(blackhole(lab.clusterCIDR));
  t.false(blackhole(lab.serviceCIDR));
});

serial('a component that crashes while starting is named with its log, and up undoes what it started', async (t) => {
  t.timeout(5 * MINUTE);
  const r = await membrane(['lab', 'up'], { ...env, MEMBRANE_LAB_EXTRA_ARGS_KUBE_APISERVER: '--no-such-flag-for-e2e' });
  t.is(r.code, 1, r.stderr);
  t.regex(r.stderr, /kube-apiserver exited while starting/);
  t.true(r.stderr.includes(join(lab.dir, 'logs', 'kube-apiserver.log')), r.stderr);
  t.regex(r.stderr, /no-such-flag-for-e2e/, 'shows the last lines of the log');
  t.false(existsSync(join(lab.dir, 'state.json')));
  t.deepEqual(processesUsing(lab.dir), [], 'etcd, started before the crash, was stopped');
  t.false(blackhole(lab.clusterCIDR));
});

serial('lab up starts etcd, kube-apiserver and kube-controller-manager', async (t) => {
  t.timeout(10 * MINUTE);
  const r = await membrane(['-o', 'json', 'lab', 'up'], env);
  t.is(r.code, 0, r.stderr);
  const up = json<LabUpResult>(r.stdout);
  t.is(up.action, 'started');
  t.is(up.status.state, 'up');
  for (const c of up.status.components) t.true(c.running && c.healthy === true, `${c.name} is running and healthy`);
  t.log(`lab up took ${up.seconds}s (built: ${up.built})`);
  kc = labKubeConfig({ dir: lab.dir });
  t.is(kc.getCurrentCluster()?.server, `https://127.0.0.1:${lab.apiserverPort}`);
});

serial('the control plane listens on 127.0.0.1 only', (t) => {
  const ss = spawnSync('ss', ['-H', '-ltnp'], { encoding: 'utf8' });
  const state = json<LabState>(readFileSync(join(lab.dir, 'state.json'), 'utf8'));
  const pids = Object.values(state.components).map((c) => c.pid);
  const lines = ss.stdout.split('\n').filter((l) => pids.some((p) => l.includes(`pid=${p},`)));
  t.true(lines.length >= 4, ss.stdout);
  for (const l of lines) t.regex(l, /\s127\.0\.0\.1:\d+\s/, l);
});

serial('client-node lists namespaces', async (t) => {
  const core = kc.makeApiClient(CoreV1Api);
  const names = (await core.listNamespace()).items.map((n) => n.metadata?.name);
  t.true(names.includes('default'));
  t.true(names.includes('kube-system'));
});

serial('/version reports the pinned Kubernetes release', async (t) => {
  const v = await kc.makeApiClient(VersionApi).getCode();
  t.is(v.gitVersion, 'v1.34.4');
  t.is(v.major, '1');
  t.is(v.minor, '34');
});

serial('a watch on pods delivers ADDED for a pod the test creates', async (t) => {
  t.timeout(2 * MINUTE);
  const core = kc.makeApiClient(CoreV1Api);
  const namespace = 'lab-e2e-watch';
  await core.createNamespace({ body: { metadata: { name: namespace } } });
  let stop: AbortController | undefined;
  const added = new Promise<V1Pod>((resolve, reject) => {
    new Watch(kc)
      .watch(
        `/api/v1/namespaces/${namespace}/pods`,
        {},
        (phase, obj: V1Pod) => {
          if (phase === 'ADDED' && obj.metadata?.name === 'echo') resolve(obj);
        },
        (err: unknown) => {
          if (err) reject(err instanceof Error ? err : new Error(String(err)));
        },
      )
      .then((c) => (stop = c), reject);
  });
  // The controller-manager creates the namespace's default ServiceAccount, which Pod admission needs.
  const pod: V1Pod = { metadata: { name: 'echo', labels: { app: 'echo' } }, spec: { containers: [{ name: 'echo', image: 'membrane.io/echo:lab', ports: [{ containerPort: 8080 }] }] } };
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      await core.createNamespacedPod({ namespace, body: pod });
      break;
    } catch (err) {
      if (Date.now() > deadline || !(apiCode(err) === 403 || apiCode(err) === 404 || apiCode(err) === 409)) throw err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  const seen = await added;
  stop?.abort();
  t.is(seen.metadata?.namespace, namespace);
  t.is(seen.spec?.containers[0]?.image, 'membrane.io/echo:lab');
});

serial('CiliumNetworkPolicy is served: a Cilium policy round-trips, malformed ones are rejected', async (t) => {
  const custom = kc.makeApiClient(CustomObjectsApi);
  const group = 'cilium.io';
  const version = 'v2';
  const namespace = 'default';
  const plural = 'ciliumnetworkpolicies';
  const policy = {
    apiVersion: 'cilium.io/v2',
    kind: 'CiliumNetworkPolicy',
    metadata: { name: 'backend-from-frontend' },
    spec: {
      endpointSelector: { matchLabels: { app: 'backend-api' } },
      ingress: [
        {
          fromEndpoints: [{ matchLabels: { app: 'frontend' } }],
          toPorts: [{ ports: [{ port: '8080', protocol: 'TCP' }], rules: { http: [{ method: 'GET', path: '/api/.*' }] } }],
        },
      ],
      egress: [
        { toEndpoints: [{ matchLabels: { 'k8s:io.kubernetes.pod.namespace': 'kube-system', 'k8s:k8s-app': 'kube-dns' } }], toPorts: [{ ports: [{ port: 53, protocol: 'ANY' }], rules: { dns: [{ matchPattern: '*' }] } }] },
        { toFQDNs: [{ matchName: 'api.example.com' }], toPorts: [{ ports: [{ port: '443' }] }] },
        { toEntities: ['kube-apiserver'] },
        { toCIDRSet: [{ cidr: '192.0.2.0/24', except: ['192.0.2.128/25'] }] },
      ],
      egressDeny: [{ toCIDR: ['198.51.100.0/24'] }],
    },
  };
  await custom.createNamespacedCustomObject({ group, version, namespace, plural, body: policy });
  const back = (await custom.getNamespacedCustomObject({ group, version, namespace, plural, name: 'backend-from-frontend' })) as typeof policy;
  t.deepEqual(back.spec, policy.spec);

  const reject = async (name: string, spec: unknown, why: string) => {
    const err = await t.throwsAsync(custom.createNamespacedCustomObject({ group, version, namespace, plural, body: { apiVersion: 'cilium.io/v2', kind: 'CiliumNetworkPolicy', metadata: { name }, spec } }));
    t.true(apiCode(err) === 422 || apiCode(err) === 400, `${why}: expected 422/400, got ${apiCode(err)} ${err?.message ?? ''}`);
  };
  await reject('spec-is-a-string', 'allow everything', 'spec as a string');
  await reject('ingress-not-a-list', { endpointSelector: {}, ingress: { fromEndpoints: [] } }, 'ingress not an array');
  await reject('bad-protocol', { endpointSelector: {}, ingress: [{ toPorts: [{ ports: [{ port: '80', protocol: 'HTTP' }] }] }] }, 'unknown protocol');
  await reject('two-subjects', { endpointSelector: {}, nodeSelector: {}, ingress: [{}] }, 'endpointSelector and nodeSelector together');
  await reject('bad-entity', { endpointSelector: {}, egress: [{ toEntities: ['everything'] }] }, 'unknown entity');

  // The cluster-wide kind and Membrane's identity CRD are served too.
  await custom.createClusterCustomObject({
    group,
    version,
    plural: 'ciliumclusterwidenetworkpolicies',
    body: { apiVersion: 'cilium.io/v2', kind: 'CiliumClusterwideNetworkPolicy', metadata: { name: 'host-ssh' }, spec: { nodeSelector: {}, ingress: [{ fromEntities: ['cluster'], toPorts: [{ ports: [{ port: '22' }] }] }] } },
  });
  const identity = { apiVersion: 'membrane.io/v1alpha1', kind: 'MembraneIdentity', metadata: { name: '12345' }, spec: { securityLabels: { 'k8s:app': 'frontend', 'k8s:io.kubernetes.pod.namespace': 'default' } } };
  await custom.createClusterCustomObject({ group: 'membrane.io', version: 'v1alpha1', plural: 'membraneidentities', body: identity });
  const badName = await t.throwsAsync(custom.createClusterCustomObject({ group: 'membrane.io', version: 'v1alpha1', plural: 'membraneidentities', body: { ...identity, metadata: { name: 'frontend' } } }));
  t.is(apiCode(badName), 422);
});

serial('the Node is registered with its podCIDR and a Ready condition', async (t) => {
  const node = await kc.makeApiClient(CoreV1Api).readNode({ name: lab.nodeName });
  t.is(node.spec?.podCIDR, lab.podCIDR);
  t.deepEqual(node.spec?.podCIDRs, [lab.podCIDR]);
  t.is(node.status?.conditions?.find((c) => c.type === 'Ready')?.status, 'True');
  t.deepEqual(node.status?.addresses?.find((a) => a.type === 'InternalIP')?.address, '127.0.0.1');
  t.deepEqual(node.spec?.taints ?? [], []);
});

serial('blackhole routes cover the pod and service ranges', (t) => {
  t.true(blackhole(lab.clusterCIDR), lab.clusterCIDR);
  t.true(blackhole(lab.serviceCIDR), lab.serviceCIDR);
});

serial('lab status -o json reports running components, node, CRDs and routes', async (t) => {
  const r = await membrane(['-o', 'json', 'lab', 'status'], env);
  t.is(r.code, 0, r.stderr);
  const s = json<LabStatus>(r.stdout);
  t.is(s.state, 'up');
  t.deepEqual(
    s.components.map((c) => [c.name, c.running, c.healthy]),
    [
      ['etcd', true, true],
      ['kube-apiserver', true, true],
      ['kube-controller-manager', true, true],
    ],
  );
  t.is(s.components.find((c) => c.name === 'kube-apiserver')?.version, 'v1.34.4');
  t.is(s.components.find((c) => c.name === 'kube-controller-manager')?.version, 'v1.34.4');
  t.is(s.components.find((c) => c.name === 'etcd')?.version, '3.6.5');
  t.like(s.node, { name: lab.nodeName, registered: true, podCIDR: lab.podCIDR, ready: 'True' });
  t.is(s.crds.length, 3);
  t.true(s.crds.every((c) => c.established));
  t.deepEqual(s.routes.map((x) => [x.cidr, x.present]), [
    [lab.clusterCIDR, true],
    [lab.serviceCIDR, true],
  ]);
  const human = await membrane(['lab', 'status'], env);
  t.regex(human.stdout, /kube-apiserver\s+running/);
});

serial('a second lab up reports the lab is already up and changes nothing', async (t) => {
  const before = readFileSync(join(lab.dir, 'state.json'), 'utf8');
  const r = await membrane(['-o', 'json', 'lab', 'up'], env);
  t.is(r.code, 0, r.stderr);
  t.is(json<LabUpResult>(r.stdout).action, 'already-up');
  t.is(readFileSync(join(lab.dir, 'state.json'), 'utf8'), before);
});

serial('lab down stops exactly what it started and removes routes and state', async (t) => {
  t.timeout(3 * MINUTE);
  const state = json<LabState>(readFileSync(join(lab.dir, 'state.json'), 'utf8'));
  const procs = Object.values(state.components);
  t.is(procs.length, 3);
  const r = await membrane(['-o', 'json', 'lab', 'down'], env);
  t.is(r.code, 0, r.stderr);
  const down = json<LabDownResult>(r.stdout);
  t.is(down.action, 'stopped');
  t.deepEqual(down.routesRemoved.sort(), [lab.clusterCIDR, lab.serviceCIDR].sort());
  for (const p of procs) t.false(sameProcessAlive(p.pid, p.startTime), `${p.name} (pid ${p.pid}) is gone`);
  t.deepEqual(processesUsing(lab.dir), []);
  t.false(blackhole(lab.clusterCIDR));
  t.false(blackhole(lab.serviceCIDR));
  for (const f of ['state.json', 'kubeconfig', 'pki', 'etcd', 'run']) t.false(existsSync(join(lab.dir, f)), `${f} removed`);
  t.true(existsSync(join(lab.dir, 'logs', 'kube-apiserver.log')), 'logs are kept');

  const again = await membrane(['-o', 'json', 'lab', 'down'], env);
  t.is(again.code, 0, again.stderr);
  t.is(json<LabDownResult>(again.stdout).action, 'not-up');
  const status = json<LabStatus>((await membrane(['-o', 'json', 'lab', 'status'], env)).stdout);
  t.is(status.state, 'down');
});
