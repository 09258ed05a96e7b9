/**
 * deploy/ against a real apiserver: every plain manifest and every object the
 * Helm chart renders pass a server-side dry-run (validation and admission run,
 * nothing is stored); the chart renders the same objects as deploy/*.yaml and
 * its values reach them, malformed values are refused; the agent's RBAC allows
 * what the agent does and nothing else (SubjectAccessReview); the policy CRDs
 * store Cilium users' policies unchanged and refuse malformed ones naming the
 * field; the Dockerfile produces every path the DaemonSet runs.
 * Needs root (the lab). Its own lab: ports 23090/23100/22743/22557, ranges
 * 10.241.0.0/16 and 10.242.0.0/16, torn down with `lab down --purge`.
 * helm is built once from the Go module proxy by ts/setup/build-helm.sh.
 */
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import type { KubeConfig } from '@kubernetes/client-node';
import { parseAllDocuments, parse as parseYaml } from 'yaml';
import { renderCrdFiles } from '../../ts/lab/gen-crds.js';
import { crdsDir, deployDir, helmChartDir } from '../../ts/lab/repo.js';
import { k8sLabSettings, MINUTE, requireRoot, startLab, stopLab } from './helpers/k8s-lab.js';
import { REPO } from './helpers/lab.js';

const serial = test.serial;
const lab = k8sLabSettings(`deploy-${process.pid}`, {
  etcdClientPort: 23090,
  etcdPeerPort: 23100,
  apiserverPort: 22743,
  controllerManagerPort: 22557,
  podNet: '10.241',
  serviceNet: '10.242',
});
const NAMESPACE = 'membrane-system';
const FIELD_MANAGER = 'membrane-deploy-test';
const TEST_IMAGE_REPO = 'registry.example.com/membrane/membrane';

type Obj = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string>; [k: string]: unknown }; [k: string]: unknown };

let kc: KubeConfig;
let helm: string;
let kubeVersion: string;

test.before(async (t) => {
  requireRoot('the deploy');
  t.timeout(45 * MINUTE);
  const built = spawnSync('bash', [join(REPO, 'ts', 'setup', 'build-helm.sh')], { encoding: 'utf8', timeout: 30 * MINUTE });
  if (built.status !== 0) throw new Error(`ts/setup/build-helm.sh failed:\n${built.stderr}`);
  helm = built.stdout.trim();
  kc = await startLab(lab);
  kubeVersion = ((await api('GET', '/version')).body as { gitVersion: string }).gitVersion;
});

test.after.always(async () => {
  if (process.getuid?.() !== 0) return;
  await stopLab(lab);
});

// ---------------------------------------------------------------------------
// Reading manifests and rendering the chart

function parseObjects(text: string, source: string): Obj[] {
  const out: Obj[] = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length) throw new Error(`${source}: ${doc.errors.map((e) => e.message).join('; ')}`);
    const v = doc.toJS() as Obj | null;
    if (v) out.push(v);
  }
  return out;
}

/** deploy/NN-*.yaml in file order: what `kubectl apply -f deploy/` applies after deploy/crds. */
function plainManifests(): Obj[] {
  const files = readdirSync(deployDir()).filter((f) => /^\d\d-.*\.ya?ml$/.test(f)).sort();
  return files.flatMap((f) => parseObjects(readFileSync(join(deployDir(), f), 'utf8'), f));
}

function runHelm(args: string[]): { ok: boolean; stdout: string; stderr: string } {
  const r = spawnSync(helm, args, { encoding: 'utf8', timeout: 2 * MINUTE });
  return { ok: r.status === 0, stdout: r.stdout, stderr: r.stderr };
}

function renderChart(set: Record<string, string> = {}, extra: string[] = []): Obj[] {
  const args = ['template', 'membrane', helmChartDir(), '--namespace', NAMESPACE, '--kube-version', kubeVersion, ...extra];
  for (const [k, v] of Object.entries({ 'image.repository': TEST_IMAGE_REPO, ...set })) args.push('--set', `${k}=${v}`);
  const r = runHelm(args);
  if (!r.ok) throw new Error(`helm ${args.join(' ')} failed:\n${r.stderr}`);
  return parseObjects(r.stdout, 'helm template');
}

const find = (objs: Obj[], kind: string, name: string): Obj => {
  const o = objs.find((x) => x.kind === kind && x.metadata.name === name);
  if (!o) throw new Error(`no ${kind} ${name} among ${objs.map((x) => `${x.kind}/${x.metadata.name}`).join(', ')}`);
  return o;
};

type Container = { name: string; image: string; resources?: unknown; securityContext?: Record<string, unknown>; volumeMounts?: { name: string; mountPath: string; mountPropagation?: string }[] };
type PodSpec = { containers: Container[]; initContainers: Container[]; tolerations?: unknown[]; imagePullSecrets?: unknown[]; volumes: { name: string; hostPath?: { path: string } }[]; [k: string]: unknown };
const podSpecOf = (ds: Obj): PodSpec => (ds['spec'] as { template: { spec: PodSpec } }).template.spec;
const agentOf = (ds: Obj): Container => podSpecOf(ds).containers.find((c) => c.name === 'agent')!;
const configOf = (cm: Obj): Record<string, unknown> => parseYaml((cm['data'] as { 'config.yaml': string })['config.yaml']) as Record<string, unknown>;

// ---------------------------------------------------------------------------
// The apiserver, raw: server-side apply (optionally dry-run) and discovery

interface ApiAnswer {
  status: number;
  body: unknown;
}

async function api(method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<ApiAnswer> {
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error('the lab kubeconfig has no cluster');
  const opts: import('node:https').RequestOptions = {};
  await kc.applyToHTTPSOptions(opts);
  const url = new URL(cluster.server + path);
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      { ...opts, method, headers: { accept: 'application/json', ...(payload ? { 'content-type': contentType, 'content-length': payload.length } : {}) }, timeout: 30_000 },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = text;
          try {
            parsed = JSON.parse(text);
          } catch {
            // not JSON: keep the text
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer within 30 s`)));
    req.on('error', reject);
    if (payload) req.write(payload);
    req.end();
  });
}

const discovery = new Map<string, { name: string; kind: string; namespaced: boolean }[]>();

/** The REST path of an object, found through API discovery (as kubectl does). */
async function objectPath(o: Obj): Promise<string> {
  const gv = o.apiVersion;
  let resources = discovery.get(gv);
  if (!resources) {
    const r = await api('GET', gv.includes('/') ? `/apis/${gv}` : `/api/${gv}`);
    if (r.status !== 200) throw new Error(`discovery of ${gv}: HTTP ${r.status}`);
    resources = (r.body as { resources: { name: string; kind: string; namespaced: boolean }[] }).resources.filter((x) => !x.name.includes('/'));
    discovery.set(gv, resources);
  }
  const res = resources.find((x) => x.kind === o.kind);
  if (!res) throw new Error(`${gv} serves no ${o.kind}`);
  const root = gv.includes('/') ? `/apis/${gv}` : `/api/${gv}`;
  if (!res.namespaced) return `${root}/${res.name}/${encodeURIComponent(o.metadata.name)}`;
  const ns = o.metadata.namespace;
  if (!ns) throw new Error(`${o.kind} ${o.metadata.name} is namespaced but names no namespace`);
  return `${root}/namespaces/${encodeURIComponent(ns)}/${res.name}/${encodeURIComponent(o.metadata.name)}`;
}

/** A create (POST), as `kubectl create --dry-run=server` does when dryRun is set. */
async function create(o: Obj, dryRun: boolean): Promise<ApiAnswer> {
  const path = await objectPath(o);
  const collection = path.slice(0, path.lastIndexOf('/'));
  return api('POST', `${collection}?fieldManager=${FIELD_MANAGER}${dryRun ? '&dryRun=All' : ''}`, o);
}

/** Server-side apply; with dryRun the apiserver validates and admits but stores nothing. */
async function apply(o: Obj, dryRun: boolean): Promise<ApiAnswer> {
  const query = `fieldManager=${FIELD_MANAGER}&force=true${dryRun ? '&dryRun=All' : ''}`;
  return api('PATCH', `${await objectPath(o)}?${query}`, o, 'application/apply-patch+yaml');
}

const describe = (o: Obj) => `${o.kind} ${o.metadata.namespace ? o.metadata.namespace + '/' : ''}${o.metadata.name}`;
const messageOf = (a: ApiAnswer) => (typeof a.body === 'object' && a.body !== null ? ((a.body as { message?: string }).message ?? JSON.stringify(a.body)) : String(a.body));

async function ensureNamespace(name: string): Promise<void> {
  const r = await apply({ apiVersion: 'v1', kind: 'Namespace', metadata: { name } }, false);
  if (r.status !== 200 && r.status !== 201) throw new Error(`creating namespace ${name}: HTTP ${r.status} ${messageOf(r)}`);
}

/** Dry-runs each object (Namespaces are created for real first, so the rest has a home). */
async function dryRunAll(t: import('ava').ExecutionContext, objs: Obj[]): Promise<Map<string, unknown>> {
  const answers = new Map<string, unknown>();
  for (const o of objs) {
    const r = await apply(o, true);
    t.true(r.status === 200 || r.status === 201, `${describe(o)}: HTTP ${r.status} ${messageOf(r)}`);
    answers.set(describe(o), r.body);
    if (o.kind === 'Namespace') await ensureNamespace(o.metadata.name);
  }
  return answers;
}

// ---------------------------------------------------------------------------
// Dry runs

serial('every plain manifest in deploy/ passes a server-side dry-run, and nothing is stored', async (t) => {
  const objs = plainManifests();
  t.deepEqual(
    objs.map((o) => `${o.kind}/${o.metadata.name}`),
    ['Namespace/membrane-system', 'ServiceAccount/membrane-agent', 'ClusterRole/membrane-agent', 'ClusterRoleBinding/membrane-agent', 'ConfigMap/membrane-config', 'DaemonSet/membrane-agent'],
  );
  const answers = await dryRunAll(t, objs);
  // What the apiserver would store keeps every privilege setting as written (nothing dropped or defaulted away).
  const stored = answers.get(`DaemonSet ${NAMESPACE}/membrane-agent`) as Obj;
  t.deepEqual(agentOf(stored).securityContext, agentOf(find(objs, 'DaemonSet', 'membrane-agent')).securityContext);
  t.is(podSpecOf(stored)['priorityClassName'], 'system-node-critical');
  // Dry run: not stored.
  for (const o of objs.filter((x) => x.kind !== 'Namespace')) t.is((await api('GET', await objectPath(o))).status, 404, `${describe(o)} was stored by a dry run`);
});

serial('the CRDs in deploy/crds and every object the Helm chart renders pass a server-side dry-run', async (t) => {
  const crds = readdirSync(crdsDir())
    .filter((f) => f.endsWith('.yaml'))
    .flatMap((f) => parseObjects(readFileSync(join(crdsDir(), f), 'utf8'), f));
  t.is(crds.length, 3);
  await dryRunAll(t, crds);
  const rendered = renderChart({ 'namespace.create': 'true' }, ['--include-crds']);
  t.deepEqual(
    rendered.map((o) => o.kind).sort(),
    ['ClusterRole', 'ClusterRoleBinding', 'ConfigMap', 'CustomResourceDefinition', 'CustomResourceDefinition', 'CustomResourceDefinition', 'DaemonSet', 'Namespace', 'ServiceAccount'],
  );
  await dryRunAll(t, rendered);
});

serial('a DaemonSet that breaks a rule Kubernetes enforces fails the dry run (the check can fail)', async (t) => {
  const ds = structuredClone(find(plainManifests(), 'DaemonSet', 'membrane-agent'));
  // Bidirectional propagation in an unprivileged container is refused by the apiserver.
  agentOf(ds).volumeMounts!.find((m) => m.name === 'bpf-maps')!.mountPropagation = 'Bidirectional';
  await ensureNamespace(NAMESPACE);
  const r = await apply(ds, true);
  t.is(r.status, 422);
  t.regex(messageOf(r), /mountPropagation/);
});

// ---------------------------------------------------------------------------
// The chart

/** Labels only Helm adds, and the checksum annotation that restarts agents on a config change. */
function withoutHelmBookkeeping(o: Obj): Obj {
  const c = structuredClone(o);
  const strip = (labels: Record<string, string> | undefined) => {
    if (!labels) return;
    for (const k of ['helm.sh/chart', 'app.kubernetes.io/managed-by', 'app.kubernetes.io/instance', 'app.kubernetes.io/version']) delete labels[k];
  };
  strip(c.metadata.labels);
  const template = (c['spec'] as { template?: { metadata: { labels?: Record<string, string>; annotations?: Record<string, string> } } } | undefined)?.template;
  if (template) {
    strip(template.metadata.labels);
    delete template.metadata.annotations?.['checksum/config'];
    if (template.metadata.annotations && Object.keys(template.metadata.annotations).length === 0) delete template.metadata.annotations;
  }
  if (c.kind === 'ConfigMap') (c['data'] as Record<string, unknown>)['config.yaml'] = configOf(o);
  return c;
}

serial('with default values the chart renders the same objects as deploy/*.yaml', (t) => {
  const plain = plainManifests();
  const rendered = renderChart({ 'namespace.create': 'true', 'image.tag': '0.1.0' });
  t.is(rendered.length, plain.length);
  for (const p of plain) {
    const r = find(rendered, p.kind, p.metadata.name);
    t.deepEqual(withoutHelmBookkeeping(r), withoutHelmBookkeeping(p), describe(p));
  }
  // The image defaults to the chart's appVersion.
  t.is(agentOf(find(renderChart(), 'DaemonSet', 'membrane-agent')).image, `${TEST_IMAGE_REPO}:0.1.0`);
  // Without namespace.create the Namespace is left to `helm install --create-namespace`.
  t.false(renderChart().some((o) => o.kind === 'Namespace'));
});

serial('chart values reach the objects: image, log level, identity GC, resources, tolerations', (t) => {
  const objs = renderChart({
    'image.tag': 'v9.9.9',
    'image.pullSecrets[0]': 'regcred',
    logLevel: 'debug',
    'identity.gcGraceSeconds': '3600',
    'identity.refreshSeconds': '600',
    'resources.requests.cpu': '250m',
    'resources.limits.memory': '2Gi',
    'tolerations[0].key': 'dedicated',
    'tolerations[0].operator': 'Equal',
    'tolerations[0].value': 'net',
    'tolerations[0].effect': 'NoSchedule',
    'updateStrategy.maxUnavailable': '10%',
  });
  const ds = find(objs, 'DaemonSet', 'membrane-agent');
  const spec = podSpecOf(ds);
  for (const c of [...spec.containers, ...spec.initContainers]) t.is(c.image, `${TEST_IMAGE_REPO}:v9.9.9`, c.name);
  t.deepEqual(spec.imagePullSecrets, [{ name: 'regcred' }]);
  t.deepEqual(agentOf(ds).resources, { requests: { cpu: '250m', memory: '256Mi' }, limits: { memory: '2Gi' } });
  t.deepEqual(spec.tolerations, [{ key: 'dedicated', operator: 'Equal', value: 'net', effect: 'NoSchedule' }]);
  t.is((ds['spec'] as { updateStrategy: { rollingUpdate: { maxUnavailable: unknown } } }).updateStrategy.rollingUpdate.maxUnavailable, '10%');
  const config = configOf(find(objs, 'ConfigMap', 'membrane-config'));
  t.like(config, { logLevel: 'debug', identity: { gcGraceSeconds: 3600, refreshSeconds: 600, gcIntervalSeconds: 60 } });
  // A different configuration changes the pod template, so the agents restart with it.
  const checksum = (o: Obj[]) => (find(o, 'DaemonSet', 'membrane-agent')['spec'] as { template: { metadata: { annotations: Record<string, string> } } }).template.metadata.annotations['checksum/config'];
  t.not(checksum(objs), checksum(renderChart()));
});

serial('malformed chart values are refused, naming the value', (t) => {
  const refused = (set: Record<string, string>, pattern: RegExp, omitRepository = false) => {
    const args = ['template', 'membrane', helmChartDir(), '--namespace', NAMESPACE, '--kube-version', kubeVersion];
    for (const [k, v] of Object.entries(omitRepository ? set : { 'image.repository': TEST_IMAGE_REPO, ...set })) args.push('--set', `${k}=${v}`);
    const r = runHelm(args);
    t.false(r.ok, `helm accepted ${JSON.stringify(set)}`);
    t.regex(r.stderr, pattern, JSON.stringify(set));
  };
  refused({}, /image\.repository: name the image you built/, true);
  refused({ logLevel: 'loud' }, /logLevel.*must be one of/s);
  refused({ 'identity.refreshSeconds': '400' }, /identity\.refreshSeconds 400 must be at most a third of identity\.gcGraceSeconds 900/);
  refused({ 'identity.gcGraceSeconds': '0' }, /gcGraceSeconds/);
  refused({ 'updateStrategy.maxUnavailable': '0' }, /maxUnavailable/);
  refused({ 'image.pullPolicy': 'Sometimes' }, /pullPolicy/);
  refused({ logLevl: 'debug' }, /logLevl/);
  refused({ metricsAddress: 'localhost' }, /metricsAddress/);
  // An older cluster than the chart supports is refused before anything is applied.
  const old = runHelm(['template', 'membrane', helmChartDir(), '--kube-version', '1.29.0', '--set', `image.repository=${TEST_IMAGE_REPO}`]);
  t.false(old.ok);
  t.regex(old.stderr, /kubeVersion/);
});

serial('the chart carries the same CRDs as deploy/crds (both written by ts/lab/gen-crds.ts)', (t) => {
  for (const [file, text] of renderCrdFiles()) {
    t.is(readFileSync(join(helmChartDir(), 'crds', file), 'utf8'), text, file);
    t.is(readFileSync(join(crdsDir(), file), 'utf8'), text, file);
  }
});

// ---------------------------------------------------------------------------
// RBAC: least privilege, checked by the apiserver's own authorizer

serial("the agent's ServiceAccount may do exactly what the agent needs", async (t) => {
  for (const o of plainManifests().filter((x) => ['Namespace', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding'].includes(x.kind))) {
    const r = await apply(o, false);
    t.true(r.status === 200 || r.status === 201, `${describe(o)}: HTTP ${r.status} ${messageOf(r)}`);
  }
  const user = `system:serviceaccount:${NAMESPACE}:membrane-agent`;
  const can = async (verb: string, group: string, resource: string, subresource = ''): Promise<boolean> => {
    const r = await api('POST', '/apis/authorization.k8s.io/v1/subjectaccessreviews', {
      apiVersion: 'authorization.k8s.io/v1',
      kind: 'SubjectAccessReview',
      spec: { user, groups: ['system:serviceaccounts', `system:serviceaccounts:${NAMESPACE}`, 'system:authenticated'], resourceAttributes: { verb, group, resource, subresource, namespace: 'default' } },
    });
    if (r.status !== 201 && r.status !== 200) throw new Error(`SubjectAccessReview: HTTP ${r.status} ${messageOf(r)}`);
    return (r.body as { status: { allowed: boolean } }).status.allowed;
  };
  const needed: [string, string, string, string?][] = [
    ...['list', 'watch'].flatMap((v) =>
      [
        ['', 'pods'],
        ['', 'namespaces'],
        ['', 'nodes'],
        ['', 'services'],
        ['discovery.k8s.io', 'endpointslices'],
        ['networking.k8s.io', 'networkpolicies'],
        ['cilium.io', 'ciliumnetworkpolicies'],
        ['cilium.io', 'ciliumclusterwidenetworkpolicies'],
      ].map(([g, r]) => [v, g!, r!] as [string, string, string]),
    ),
    ['get', '', 'nodes'],
    ...['get', 'list', 'watch', 'create', 'update', 'delete'].map((v) => [v, 'membrane.io', 'membraneidentities'] as [string, string, string]),
    ['update', 'membrane.io', 'membraneidentities', 'status'],
  ];
  for (const [verb, group, resource, sub] of needed) t.true(await can(verb, group, resource, sub), `the agent cannot ${verb} ${group || 'core'}/${resource}${sub ? '/' + sub : ''}`);
  const forbidden: [string, string, string, string?][] = [
    ['get', '', 'secrets'],
    ['list', '', 'secrets'],
    ['list', '', 'configmaps'],
    ['create', '', 'pods'],
    ['delete', '', 'pods'],
    ['update', '', 'pods', 'status'],
    ['update', '', 'nodes'],
    ['patch', '', 'nodes'],
    ['update', '', 'nodes', 'status'],
    ['create', '', 'services'],
    ['get', '', 'pods'],
    ['create', 'cilium.io', 'ciliumnetworkpolicies'],
    ['update', 'cilium.io', 'ciliumnetworkpolicies', 'status'],
    ['delete', 'networking.k8s.io', 'networkpolicies'],
    ['patch', 'membrane.io', 'membraneidentities'],
    ['deletecollection', 'membrane.io', 'membraneidentities'],
    ['patch', 'membrane.io', 'membraneidentities', 'status'],
    ['create', 'rbac.authorization.k8s.io', 'clusterroles'],
    ['create', '', 'serviceaccounts', 'token'],
    ['impersonate', '', 'users'],
  ];
  for (const [verb, group, resource, sub] of forbidden) t.false(await can(verb, group, resource, sub), `the agent may ${verb} ${group || 'core'}/${resource}${sub ? '/' + sub : ''}, which it does not need`);
});

// ---------------------------------------------------------------------------
// The policy CRDs

function examples(): Obj[] {
  const dir = join(deployDir(), 'examples');
  return readdirSync(dir)
    .filter((f) => f.endsWith('.yaml'))
    .sort()
    .flatMap((f) => parseObjects(readFileSync(join(dir, f), 'utf8'), f));
}

serial("the CRDs store Cilium users' policies exactly as written (deploy/examples)", async (t) => {
  const objs = examples();
  for (const name of ['backend-api', 'baseline']) t.true(objs.some((o) => o.metadata.name === name), `deploy/examples has ${name}`);
  for (const ns of new Set(objs.map((o) => o.metadata.namespace).filter((n): n is string => n !== undefined))) await ensureNamespace(ns);
  for (const o of objs) {
    const r = await apply(o, false);
    t.true(r.status === 200 || r.status === 201, `${describe(o)}: HTTP ${r.status} ${messageOf(r)}`);
    if (!o.apiVersion.startsWith('cilium.io/')) continue;
    const stored = (await api('GET', await objectPath(o))).body as Obj;
    // Nothing pruned: every field a user wrote comes back.
    for (const key of ['spec', 'specs'] as const) if (o[key] !== undefined) t.deepEqual(stored[key], o[key], `${describe(o)} .${key}`);
    t.deepEqual(stored.metadata.labels, o.metadata.labels);
  }
  // The README's policy is deploy/examples/allow-frontend-to-api.yaml, verbatim.
  const readme = readFileSync(join(deployDir(), '..', 'README.md'), 'utf8');
  t.true(readme.includes(readFileSync(join(deployDir(), 'examples', 'allow-frontend-to-api.yaml'), 'utf8').split('\n').filter((l) => !l.startsWith('#')).join('\n').trim()));
});

serial('the CRDs refuse malformed policies with a message naming the field', async (t) => {
  const base = examples().find((o) => o.kind === 'CiliumNetworkPolicy' && o.metadata.name === 'backend-api')!;
  const variant = (name: string, edit: (spec: Record<string, unknown>, o: Obj) => void): Obj => {
    const o = structuredClone(base);
    o.metadata.name = name;
    edit(o['spec'] as Record<string, unknown>, o);
    return o;
  };
  type Rule = { toPorts: { ports: Record<string, unknown>[]; rules?: Record<string, unknown> }[]; [k: string]: unknown };
  const ingress0 = (s: Record<string, unknown>) => (s['ingress'] as Rule[])[0]!;
  const cases: [Obj, RegExp][] = [
    [variant('port-object', (s) => (ingress0(s).toPorts[0]!.ports[0]!['port'] = { number: 80 })), /spec\.ingress\[0\]\.toPorts\[0\]\.ports\[0\]\.port/],
    [variant('port-range', (s) => (ingress0(s).toPorts[0]!.ports[0]!['port'] = 70000)), /spec\.ingress\[0\]\.toPorts\[0\]\.ports\[0\]\.port/],
    [variant('port-garbage', (s) => (ingress0(s).toPorts[0]!.ports[0]!['port'] = '80/tcp')), /spec\.ingress\[0\]\.toPorts\[0\]\.ports\[0\]\.port/],
    [variant('protocol', (s) => (ingress0(s).toPorts[0]!.ports[0]!['protocol'] = 'TCPX')), /spec\.ingress\[0\]\.toPorts\[0\]\.ports\[0\]\.protocol: Unsupported value: "TCPX"/],
    [variant('endport', (s) => (ingress0(s).toPorts[0]!.ports[0]!['endPort'] = 65536)), /endPort/],
    [variant('no-port', (s) => delete ingress0(s).toPorts[0]!.ports[0]!['port']), /spec\.ingress\[0\]\.toPorts\[0\]\.ports\[0\]\.port: Required value/],
    [variant('ingress-map', (s) => (s['ingress'] = { fromEndpoints: [] })), /spec\.ingress: Invalid value: "object"/],
    [variant('http-map', (s) => (ingress0(s).toPorts[0]!.rules = { http: { method: 'GET' } })), /spec\.ingress\[0\]\.toPorts\[0\]\.rules\.http/],
    [variant('entity', (s) => (s['ingressDeny'] = [{ fromEntities: ['everything'] }])), /spec\.ingressDeny\[0\]\.fromEntities\[0\]: Unsupported value: "everything"/],
    [variant('operator', (s) => (s['endpointSelector'] = { matchExpressions: [{ key: 'app', operator: 'Like' }] })), /matchExpressions\[0\]\.operator/],
    [variant('two-subjects', (s) => (s['nodeSelector'] = { matchLabels: { a: 'b' } })), /exactly one of endpointSelector or nodeSelector/],
    [variant('no-subject', (s) => delete s['endpointSelector']), /exactly one of endpointSelector or nodeSelector/],
    [variant('spec-string', (_s, o) => (o['spec'] = 'allow everything')), /spec: Invalid value: "string"/],
    [variant('no-spec', (_s, o) => delete o['spec']), /needs spec or specs/],
    [variant('cidrset', (s) => (s['ingress'] = [{ fromCIDRSet: [{ cidr: '10.0.0.0/8', except: '10.1.0.0/16' }] }])), /fromCIDRSet\[0\]\.except/],
  ];
  for (const [o, pattern] of cases) {
    const r = await create(o, true);
    t.is(r.status, 422, `${o.metadata.name}: HTTP ${r.status} ${messageOf(r)}`);
    t.regex(messageOf(r), pattern, o.metadata.name);
  }
  const ccnp = examples().find((o) => o.kind === 'CiliumClusterwideNetworkPolicy' && o.metadata.name === 'baseline')!;
  const badSpecs = { ...structuredClone(ccnp), metadata: { name: 'bad-specs' }, specs: 'x' };
  const r = await create(badSpecs, true);
  t.is(r.status, 422);
  t.regex(messageOf(r), /specs: Invalid value: "string"/);
});

// ---------------------------------------------------------------------------
// The image

serial('the Dockerfile copies what exists and produces every path the DaemonSet runs', (t) => {
  const dockerfile = readFileSync(join(deployDir(), 'Dockerfile'), 'utf8');
  // Sources copied from the build context exist in the repository.
  for (const m of dockerfile.matchAll(/^COPY (?!--from)(.+)$/gm)) {
    const parts = m[1]!.trim().split(/\s+/);
    for (const src of parts.slice(0, -1)) t.true(existsSync(join(REPO, src)), `the Dockerfile copies ${src}, which is not in the repository`);
  }
  // Paths the DaemonSet's containers use are where the runtime stage puts them.
  const runtime = dockerfile.slice(dockerfile.indexOf('AS runtime'));
  t.regex(runtime, /^WORKDIR \/app$/m);
  t.regex(runtime, /COPY --from=build \/src\/dist \.\/dist/, '/app/dist/cli/main.js');
  t.regex(runtime, /COPY --from=build \/out\/membrane-cni \.\/membrane-cni/, '/app/membrane-cni');
  t.regex(runtime, /COPY deploy\/cni\/10-membrane\.conflist \.\/deploy\/cni\/10-membrane\.conflist/, '/app/deploy/cni/10-membrane.conflist');
  t.regex(runtime, /membrane\.linux-x64-gnu\.node/, 'the addon next to index.js');
  const ds = find(plainManifests(), 'DaemonSet', 'membrane-agent');
  const script = (podSpecOf(ds).initContainers.find((c) => c.name === 'install-cni') as unknown as { command: string[] }).command.join(' ');
  t.regex(script, /\/app\/membrane-cni/);
  t.regex(script, /\/app\/deploy\/cni\/10-membrane\.conflist/);
  t.deepEqual((agentOf(ds) as unknown as { command: string[] }).command, ['node', '--max-semi-space-size=4', '/app/dist/cli/main.js', 'agent']);
  // The build stage builds the addon, the plugin and the TypeScript with npm run build.
  const build = dockerfile.slice(0, dockerfile.indexOf('AS runtime'));
  t.regex(build, /npm run build/);
  t.regex(build, /clang-16/);
  const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
  t.regex(pkg.scripts['build'] ?? '', /build:addon.*build:cni.*build:ts/);
});

serial('helm lint --strict passes', (t) => {
  const r = runHelm(['lint', '--strict', helmChartDir(), '--kube-version', kubeVersion, '--set', `image.repository=${TEST_IMAGE_REPO}`]);
  t.true(r.ok, r.stdout + r.stderr);
});

// ---------------------------------------------------------------------------
// The containers' own scripts, run here against stand-ins for their mounts

type Scripted = { name: string; command: string[] };

serial("the install-cni init container's script installs the plugin and the conflist atomically", (t) => {
  const ds = find(plainManifests(), 'DaemonSet', 'membrane-agent');
  const init = podSpecOf(ds).initContainers.find((c) => c.name === 'install-cni') as unknown as Scripted;
  const root = mkdtempSync(join(tmpdir(), 'membrane-install-cni-'));
  try {
    const app = join(root, 'app');
    mkdirSync(join(app, 'deploy', 'cni'), { recursive: true });
    writeFileSync(join(app, 'membrane-cni'), '#!/bin/sh\necho plugin\n');
    chmodSync(join(app, 'membrane-cni'), 0o600);
    writeFileSync(join(app, 'deploy', 'cni', '10-membrane.conflist'), readFileSync(join(deployDir(), 'cni', '10-membrane.conflist')));
    for (const d of ['opt/cni/bin', 'etc/cni/net.d']) mkdirSync(join(root, 'host', d), { recursive: true });
    // An older plugin is replaced.
    writeFileSync(join(root, 'host/opt/cni/bin/membrane-cni'), 'old');
    const script = init.command[2]!.replaceAll('/host/', `${root}/host/`).replaceAll('/app/', `${app}/`);
    const r = spawnSync(init.command[0]!, [init.command[1]!, script], { encoding: 'utf8' });
    t.is(r.status, 0, r.stderr);
    t.is(readFileSync(join(root, 'host/opt/cni/bin/membrane-cni'), 'utf8'), '#!/bin/sh\necho plugin\n');
    t.is(readFileSync(join(root, 'host/opt/cni/bin/membrane-cni')).length > 0, true);
    t.is(spawnSync('stat', ['-c', '%a', join(root, 'host/opt/cni/bin/membrane-cni')], { encoding: 'utf8' }).stdout.trim(), '755');
    t.deepEqual(JSON.parse(readFileSync(join(root, 'host/etc/cni/net.d/10-membrane.conflist'), 'utf8')), JSON.parse(readFileSync(join(deployDir(), 'cni', '10-membrane.conflist'), 'utf8')));
    t.deepEqual(readdirSync(join(root, 'host/opt/cni/bin')), ['membrane-cni'], 'no temporary file left');
    t.deepEqual(readdirSync(join(root, 'host/etc/cni/net.d')), ['10-membrane.conflist']);
    // A missing plugin fails the init container (and so the pod), it does not install half.
    rmSync(join(app, 'membrane-cni'));
    const broken = spawnSync(init.command[0]!, [init.command[1]!, script], { encoding: 'utf8' });
    t.not(broken.status, 0);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

serial('the mount-bpf-fs init container leaves a mounted bpffs alone', (t) => {
  const ds = find(plainManifests(), 'DaemonSet', 'membrane-agent');
  const init = podSpecOf(ds).initContainers.find((c) => c.name === 'mount-bpf-fs') as unknown as Scripted;
  t.is(spawnSync('stat', ['-f', '-c', '%T', '/sys/fs/bpf'], { encoding: 'utf8' }).stdout.trim(), 'bpf_fs', 'this machine has bpffs at /sys/fs/bpf');
  const r = spawnSync(init.command[0]!, [init.command[1]!, init.command[2]!], { encoding: 'utf8' });
  t.is(r.status, 0, r.stderr);
  t.is(r.stdout.trim(), 'bpffs is mounted at /sys/fs/bpf');
});

serial("the agent's probes: ready only on 200 from /v1/healthz, alive on any answer, failing without the socket", async (t) => {
  const ds = find(plainManifests(), 'DaemonSet', 'membrane-agent');
  const agent = agentOf(ds) as unknown as Record<'startupProbe' | 'livenessProbe' | 'readinessProbe', { exec: { command: string[] } }>;
  const dir = mkdtempSync(join(tmpdir(), 'membrane-probe-'));
  const socket = join(dir, 'agent.sock');
  const run = (probe: 'startupProbe' | 'livenessProbe' | 'readinessProbe') =>
    new Promise<number | null>((resolve) => {
      const [cmd, ...args] = agent[probe].exec.command.map((a) => a.replaceAll('/var/run/membrane/agent.sock', socket));
      const child = spawn(cmd!, args, { stdio: 'ignore' });
      child.on('close', resolve);
    });
  let status = 200;
  let paths: string[] = [];
  const server = createServer((req, res) => {
    paths.push(req.url ?? '');
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ ok: status === 200 }));
  });
  try {
    t.is(await run('readinessProbe'), 1, 'no agent: not ready');
    t.is(await run('livenessProbe'), 1, 'no agent: not alive');
    await new Promise<void>((r) => server.listen(socket, r));
    t.is(await run('readinessProbe'), 0);
    t.is(await run('livenessProbe'), 0);
    t.is(await run('startupProbe'), 0);
    status = 503;
    t.is(await run('readinessProbe'), 1, 'syncing: not ready');
    t.is(await run('livenessProbe'), 0, 'syncing: alive');
    t.true(paths.every((p) => p === '/v1/healthz'), paths.join(', '));
    paths = [];
  } finally {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
