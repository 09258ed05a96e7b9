/**
 * ts/identity pure functions: pod -> security labels (filter, generated labels,
 * limits), canonical form and hash, reserved identities, candidate numbers,
 * MembraneIdentity parsing, the identity cache, GC decisions.
 */
import test from 'ava';
import { IdentityCache } from '../../ts/identity/cache.js';
import { checkIdentityTimings, gcCandidates } from '../../ts/identity/gc.js';
import {
  canonicalLabels,
  DEFAULT_EXCLUDED_LABEL_KEYS,
  formatLabels,
  isRelevantLabel,
  labelKeyProblem,
  labelsHash,
  labelValueProblem,
  makeLabelFilter,
  MAX_SECURITY_LABELS,
  parseLabelList,
  podSecurityLabels,
  sameLabels,
  securityLabelsProblem,
  type PodLabelInput,
} from '../../ts/identity/labels.js';
import { candidates, CLUSTER_IDENTITY_COUNT, firstCandidate } from '../../ts/identity/numbering.js';
import { identityFromLabels, identityObject, LABELS_HASH_LABEL, nodesWith, parseIdentityObject } from '../../ts/identity/object.js';
import {
  hasReservedLabels,
  isClusterIdentity,
  isReservedIdentity,
  MAX_CLUSTER_IDENTITY,
  MIN_CLUSTER_IDENTITY,
  RESERVED_IDENTITIES,
  ReservedId,
  reservedIdentity,
  reservedIdentityByName,
  reservedIdentityForLabels,
} from '../../ts/identity/reserved.js';
import type { MembraneIdentity } from '../../ts/k8s/types.js';

const base: PodLabelInput = {
  namespace: 'shop',
  podLabels: { app: 'frontend', tier: 'web' },
  namespaceLabels: { 'kubernetes.io/metadata.name': 'shop', team: 'payments' },
  serviceAccount: 'frontend-sa',
  clusterName: 'lab',
};

function labelsOf(input: PodLabelInput, filter = makeLabelFilter()) {
  const r = podSecurityLabels(input, filter);
  if (!r.ok) throw new Error(r.reason);
  return r.labels;
}

// ---------------------------------------------------------------------------
// pod -> labels

test('a pod gets its labels as k8s:, plus namespace, namespace labels, service account and cluster', (t) => {
  t.deepEqual(labelsOf(base), {
    'k8s:app': 'frontend',
    'k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name': 'shop',
    'k8s:io.cilium.k8s.namespace.labels.team': 'payments',
    'k8s:io.cilium.k8s.policy.cluster': 'lab',
    'k8s:io.cilium.k8s.policy.serviceaccount': 'frontend-sa',
    'k8s:io.kubernetes.pod.namespace': 'shop',
    'k8s:tier': 'web',
  });
  t.deepEqual(Object.keys(labelsOf(base)), Object.keys(labelsOf(base)).sort(), 'keys come out sorted');
});

test('without a service account there is no service-account label; generated labels win over look-alike pod labels', (t) => {
  const l = labelsOf({ ...base, serviceAccount: undefined, podLabels: { app: 'x', 'io.kubernetes.pod.namespace': 'spoofed' } });
  t.false('k8s:io.cilium.k8s.policy.serviceaccount' in l);
  t.is(l['k8s:io.kubernetes.pod.namespace'], 'shop');
});

test('the default filter drops per-pod and per-rollout controller labels', (t) => {
  const podLabels: Record<string, string> = { app: 'db' };
  for (const k of DEFAULT_EXCLUDED_LABEL_KEYS) podLabels[k] = 'x1';
  for (const k of ['pod-template-hash', 'controller-revision-hash', 'statefulset.kubernetes.io/pod-name', 'pod-template-generation', 'batch.kubernetes.io/job-name', 'batch.kubernetes.io/controller-uid', 'job-name', 'controller-uid']) {
    t.true(DEFAULT_EXCLUDED_LABEL_KEYS.includes(k), k);
  }
  const l = labelsOf({ ...base, podLabels });
  t.deepEqual(
    Object.keys(l).filter((k) => !k.startsWith('k8s:io.')),
    ['k8s:app'],
  );
  // Two replicas of one ReplicaSet and one of the next rollout share an identity.
  const a = labelsOf({ ...base, podLabels: { app: 'web', 'pod-template-hash': '5d8f7' } });
  const b = labelsOf({ ...base, podLabels: { app: 'web', 'pod-template-hash': '9c2aa' } });
  t.true(sameLabels(a, b));
});

test('users add exclude prefixes and keys; includes re-admit what excludes drop; both apply to namespace labels too', (t) => {
  const f = makeLabelFilter({ excludePrefixes: ['example.com/'], excludeKeys: ['build'], includeKeys: ['pod-template-hash'] });
  t.false(isRelevantLabel('example.com/owner', f));
  t.false(isRelevantLabel('build', f));
  t.true(isRelevantLabel('pod-template-hash', f), 'include beats the default exclude');
  t.false(isRelevantLabel('controller-revision-hash', f), 'defaults stay unless replaced');
  t.true(isRelevantLabel('example.org/owner', f));
  const l = labelsOf({ ...base, podLabels: { app: 'a', 'example.com/owner': 'me', build: '42' }, namespaceLabels: { 'example.com/cost': 'c1', env: 'prod' } }, f);
  t.deepEqual(
    Object.keys(l).filter((k) => k.includes('example') || k.includes('build') || k.includes('env')),
    ['k8s:io.cilium.k8s.namespace.labels.env'],
  );
  t.deepEqual(parseLabelList(' example.com/, team ,,'), ['example.com/', 'team']);
  const bare = makeLabelFilter({ replaceDefaults: true });
  t.true(isRelevantLabel('pod-template-hash', bare));
  t.throws(() => makeLabelFilter({ excludePrefixes: [''] }), { message: /cannot be empty/ });
});

test('Kubernetes label syntax and length limits are enforced with a reason that names the label', (t) => {
  t.is(labelKeyProblem('app'), undefined);
  t.is(labelKeyProblem('app.kubernetes.io/name'), undefined);
  t.is(labelKeyProblem('a'.repeat(63)), undefined);
  t.regex(labelKeyProblem('a'.repeat(64))!, /64 characters; at most 63/);
  t.regex(labelKeyProblem(`${'p'.repeat(254)}/x`)!, /prefix .* 254 characters; at most 253/);
  t.regex(labelKeyProblem('Bad_Prefix/x')!, /not a DNS subdomain/);
  t.regex(labelKeyProblem('-app')!, /invalid name/);
  t.regex(labelKeyProblem('a b')!, /invalid name/);
  t.regex(labelKeyProblem('/x')!, /empty prefix/);
  t.regex(labelKeyProblem('x/')!, /empty name/);
  t.regex(labelKeyProblem('')!, /empty/);
  t.is(labelValueProblem(''), undefined);
  t.is(labelValueProblem('v1.2_3-x'), undefined);
  t.regex(labelValueProblem('v'.repeat(64))!, /64 characters; at most 63/);
  t.regex(labelValueProblem('bad value')!, /invalid/);
  t.regex(labelValueProblem('ends-')!, /invalid/);

  const tooLong = podSecurityLabels({ ...base, podLabels: { app: 'x'.repeat(64) } });
  t.false(tooLong.ok);
  t.regex(!tooLong.ok ? tooLong.reason : '', /^pod label "app": the value "x+" is 64 characters; at most 63 are allowed$/);
  const badNsLabel = podSecurityLabels({ ...base, namespaceLabels: { 'bad key': 'v' } });
  t.regex(!badNsLabel.ok ? badNsLabel.reason : '', /^namespace label "bad key"/);
  const badNs = podSecurityLabels({ ...base, namespace: 'Not_A_Namespace' });
  t.regex(!badNs.ok ? badNs.reason : '', /namespace "Not_A_Namespace" is not a DNS label/);
  const badSa = podSecurityLabels({ ...base, serviceAccount: 'Bad SA' });
  t.regex(!badSa.ok ? badSa.reason : '', /service account "Bad SA"/);
  const badCluster = podSecurityLabels({ ...base, clusterName: 'has space' });
  t.regex(!badCluster.ok ? badCluster.reason : '', /cluster name/);
  const many: Record<string, string> = {};
  for (let i = 0; i < MAX_SECURITY_LABELS; i++) many[`l${i}`] = 'v';
  const tooMany = podSecurityLabels({ ...base, podLabels: many });
  t.regex(!tooMany.ok ? tooMany.reason : '', new RegExp(`security labels; at most ${MAX_SECURITY_LABELS}`));
});

// ---------------------------------------------------------------------------
// canonical form, hash

test('canonical form and hash are independent of key order and differ for different sets', (t) => {
  const a = { 'k8s:b': '2', 'k8s:a': '1' };
  const b = { 'k8s:a': '1', 'k8s:b': '2' };
  t.is(canonicalLabels(a), 'k8s:a=1;k8s:b=2');
  t.is(labelsHash(a), labelsHash(b));
  t.regex(labelsHash(a), /^[0-9a-f]{32}$/, 'fits a label value (63 max) with room to spare');
  t.not(labelsHash(a), labelsHash({ 'k8s:a': '1', 'k8s:b': '3' }));
  t.not(labelsHash({ 'k8s:a': '' }), labelsHash({ 'k8s:a': '', 'k8s:b': '' }));
  t.is(formatLabels({ 'reserved:host': '', 'k8s:app': 'web' }), 'k8s:app=web reserved:host');
});

test('the labels hash is stable across releases (it names objects cluster-wide)', (t) => {
  // Changing this value would make agents of different versions disagree on candidates.
  t.is(labelsHash({ 'k8s:app': 'frontend', 'k8s:io.kubernetes.pod.namespace': 'default' }), labelsHash({ 'k8s:io.kubernetes.pod.namespace': 'default', 'k8s:app': 'frontend' }));
  // = the first 32 hex digits of sha256("k8s:app=frontend;k8s:io.kubernetes.pod.namespace=default")
  const h = labelsHash({ 'k8s:app': 'frontend', 'k8s:io.kubernetes.pod.namespace': 'default' });
  t.is(h, '1bb51ecaed698d2e4dca3942659696c4');
  // = 256 + (0x1bb51ecaed69 mod 65280)
  t.is(firstCandidate(h), 43113);
});

test('security labels in objects: source prefix required, no delimiters, valid values', (t) => {
  t.is(securityLabelsProblem({ 'k8s:app': 'web' }), undefined);
  t.is(securityLabelsProblem({ 'reserved:host': '' }), undefined);
  t.regex(securityLabelsProblem({})!, /empty/);
  t.regex(securityLabelsProblem(null)!, /not a map/);
  t.regex(securityLabelsProblem({ app: 'web' })!, /no source prefix/);
  t.regex(securityLabelsProblem({ 'k8s:a;b': 'x' })!, /";", "="/);
  t.regex(securityLabelsProblem({ 'k8s:a': 'x;y' })!, /invalid/);
  t.regex(securityLabelsProblem({ 'k8s:a': 5 })!, /not a string/);
  t.regex(securityLabelsProblem({ 'K8S:a': 'x' })!, /invalid source/);
});

// ---------------------------------------------------------------------------
// reserved and cluster numbers

test('reserved identities are numbered as Cilium numbers them', (t) => {
  t.deepEqual(
    RESERVED_IDENTITIES.map((r) => [r.id, r.name, Object.keys(r.labels)[0]]),
    [
      [1, 'host', 'reserved:host'],
      [2, 'world', 'reserved:world'],
      [3, 'unmanaged', 'reserved:unmanaged'],
      [4, 'health', 'reserved:health'],
      [5, 'init', 'reserved:init'],
      [6, 'remote-node', 'reserved:remote-node'],
      [7, 'kube-apiserver', 'reserved:kube-apiserver'],
      [8, 'ingress', 'reserved:ingress'],
      [9, 'world-ipv4', 'reserved:world-ipv4'],
      [10, 'world-ipv6', 'reserved:world-ipv6'],
    ],
  );
  t.is(ReservedId.kubeApiserver, 7);
  t.is(reservedIdentity(5)?.name, 'init');
  t.is(reservedIdentityByName('ingress')?.id, 8);
  t.true(isReservedIdentity(1));
  t.false(isReservedIdentity(0));
  t.false(isReservedIdentity(256));
  t.is(reservedIdentityForLabels({ 'reserved:world': '' })?.id, 2);
  t.is(reservedIdentityForLabels({ 'reserved:host': '', 'k8s:node-role': 'worker' })?.id, 1, 'host may carry node labels');
  t.is(reservedIdentityForLabels({ 'reserved:world': '', 'k8s:x': 'y' }), undefined);
  t.is(reservedIdentityForLabels({ 'reserved:nope': '' }), undefined);
  t.is(reservedIdentityForLabels({ 'reserved:host': '', 'reserved:world': '' }), undefined);
  t.true(hasReservedLabels({ 'reserved:nope': '' }));
  t.false(hasReservedLabels({ 'k8s:app': 'reserved:x' }));
});

test('cluster identities are 256..65535', (t) => {
  t.is(MIN_CLUSTER_IDENTITY, 256);
  t.is(MAX_CLUSTER_IDENTITY, 65535);
  t.true(isClusterIdentity(256));
  t.true(isClusterIdentity(65535));
  t.false(isClusterIdentity(255));
  t.false(isClusterIdentity(65536));
  t.false(isClusterIdentity(300.5));
});

test('candidate numbers: derived from the hash, in range, linear with wrap-around, skipping taken ones, each number once', (t) => {
  const h = labelsHash({ 'k8s:app': 'x' });
  const first = firstCandidate(h);
  t.true(isClusterIdentity(first));
  t.is(firstCandidate(h), first, 'deterministic');
  const seq = [...take(candidates(h), 3)];
  t.deepEqual(seq, [first, first === 65535 ? 256 : first + 1, first >= 65534 ? 256 + (first - 65534) : first + 2]);
  const skip = [...take(candidates(h, (n) => n === first || n === first + 1), 1)];
  t.deepEqual(skip, [first + 2 > 65535 ? first + 2 - CLUSTER_IDENTITY_COUNT : first + 2]);
  // A hash whose first candidate is the last number wraps to 256.
  const top = (65535 - 256).toString(16).padStart(12, '0') + '0'.repeat(20);
  t.is(firstCandidate(top), 65535);
  t.deepEqual([...take(candidates(top), 2)], [65535, 256]);
  const all = [...candidates(h)];
  t.is(all.length, CLUSTER_IDENTITY_COUNT);
  t.is(new Set(all).size, CLUSTER_IDENTITY_COUNT);
  t.throws(() => firstCandidate('xyz'), { message: /not a hex labels hash/ });
  // Different label sets spread over the range.
  const firsts = new Set(Array.from({ length: 200 }, (_, i) => firstCandidate(labelsHash({ 'k8s:app': `a${i}` }))));
  t.true(firsts.size > 195);
});

function* take<T>(it: Iterable<T>, n: number): Generator<T> {
  if (n <= 0) return;
  for (const x of it) {
    yield x;
    if (--n <= 0) return;
  }
}

// ---------------------------------------------------------------------------
// objects

const labels = { 'k8s:app': 'web', 'k8s:io.kubernetes.pod.namespace': 'default' };

function obj(name: string, l: Record<string, unknown> | undefined, hash?: string | null, extra: Partial<MembraneIdentity> = {}): MembraneIdentity {
  const o = identityObject(identityFromLabels(Number(name) || 300, labels));
  o.metadata!.name = name;
  o.metadata!.resourceVersion = '7';
  o.spec = { securityLabels: l as Record<string, string> };
  if (hash === null) delete o.metadata!.labels![LABELS_HASH_LABEL];
  else if (hash !== undefined) o.metadata!.labels![LABELS_HASH_LABEL] = hash;
  return { ...o, ...extra };
}

test('a well-formed MembraneIdentity parses, with lastUsed falling back to the creation time', (t) => {
  const o = identityObject(identityFromLabels(4242, labels));
  t.is(o.metadata?.name, '4242');
  t.is(o.metadata?.labels?.[LABELS_HASH_LABEL], labelsHash(labels));
  t.is(o.metadata?.labels?.['app.kubernetes.io/managed-by'], 'membrane');
  o.metadata!.creationTimestamp = '2030-01-01T00:00:00Z' as unknown as Date;
  o.metadata!.resourceVersion = '9';
  const p = parseIdentityObject(o);
  t.true(p.ok);
  if (!p.ok) return;
  t.is(p.record.identity.id, 4242);
  t.is(p.record.resourceVersion, '9');
  t.is(p.record.lastUsed, Date.parse('2030-01-01T00:00:00Z'));
  t.deepEqual(p.record.nodes, []);
  const used = parseIdentityObject({ ...o, status: { lastUsed: '2031-01-01T00:00:00Z', nodes: ['n1', 'n2'] } });
  t.true(used.ok && used.record.lastUsed === Date.parse('2031-01-01T00:00:00Z') && used.record.nodes.length === 2);
});

test('malformed MembraneIdentity objects are recognised with a reason', (t) => {
  const reason = (o: MembraneIdentity) => {
    const p = parseIdentityObject(o);
    return p.ok ? 'ok' : p.reason;
  };
  t.is(reason(obj('300', labels)), 'ok');
  t.regex(reason(obj('web', labels)), /name "web" is not a number/);
  t.regex(reason(obj('0300', labels)), /not a number/);
  t.regex(reason(obj('12', labels)), /outside the cluster identity range 256-65535/);
  t.regex(reason(obj('70000', labels)), /outside/);
  t.regex(reason(obj('300', { app: 'web' })), /no source prefix/);
  t.regex(reason(obj('300', undefined)), /not a map/);
  t.regex(reason(obj('300', { 'reserved:host': '' }, labelsHash({ 'reserved:host': '' }))), /reserved: labels/);
  t.regex(reason(obj('300', labels, null)), /labels-hash label is missing/);
  t.regex(reason(obj('300', labels, 'deadbeef')), /label deadbeef does not match its labels/);
});

test('status nodes: add and remove this node, sorted, no duplicates', (t) => {
  t.deepEqual(nodesWith(['b', 'a'], 'c', true), ['a', 'b', 'c']);
  t.deepEqual(nodesWith(['a', 'c'], 'c', true), ['a', 'c']);
  t.deepEqual(nodesWith(['a', 'c'], 'c', false), ['a']);
});

// ---------------------------------------------------------------------------
// the cache

test('identity cache: indexes valid objects by hash, lowest number wins, malformed ones are reported once per version and count as taken', (t) => {
  const c = new IdentityCache();
  const id = identityFromLabels(0, labels);
  const valid = (n: number, rv = '1') => {
    const o = identityObject(identityFromLabels(n, labels));
    o.metadata!.resourceVersion = rv;
    return o;
  };
  t.deepEqual(c.upsert(valid(900)), [{ type: 'add', identity: identityFromLabels(900, labels) }]);
  t.deepEqual(c.upsert(valid(900, '2')), [], 'a new version of the same identity is no change for subscribers');
  c.upsert(valid(500));
  t.is(c.lookup(id.canonical, id.hash), 500);
  t.false(c.isTakenByOther(500, id.canonical));
  t.true(c.isTakenByOther(500, 'k8s:other=1'));
  t.false(c.isTakenByOther(501, id.canonical));

  const bad = obj('600', labels, 'deadbeef');
  const first = c.upsert(bad);
  t.is(first.length, 1);
  t.like(first[0], { type: 'malformed', name: '600', id: 600 });
  t.deepEqual(c.upsert(bad), [], 'the same version is not reported again');
  t.true(c.isTakenByOther(600, id.canonical));
  t.deepEqual(c.upsert(obj('notanumber', labels)).map((x) => x.type), ['malformed']);
  t.deepEqual(c.upsert(obj('notanumber', labels)), []);
  t.is(c.lookup(id.canonical, id.hash), 500);
  t.deepEqual(c.remove('500').map((x) => x.type), ['delete']);
  t.is(c.lookup(id.canonical, id.hash), 900);
  t.deepEqual(c.malformed(), [{ id: 600, reason: `the ${LABELS_HASH_LABEL} label deadbeef does not match its labels (hash ${id.hash})` }]);
});

// ---------------------------------------------------------------------------
// GC decisions

test('gc: only identities unused here and stamped longer ago than the grace period are garbage', (t) => {
  const rec = (id: number, lastUsed: number | undefined) => ({ identity: identityFromLabels(id, { 'k8s:a': String(id) }), resourceVersion: `rv${id}`, lastUsed, nodes: [] });
  const now = 1_000_000;
  const grace = 60_000;
  const records = [rec(300, now - grace - 1), rec(301, now - grace + 1), rec(302, now - 10 * grace), rec(303, undefined), rec(299, now - grace)];
  t.deepEqual(
    gcCandidates(records, (id) => id === 302, now, grace),
    [
      { id: 299, resourceVersion: 'rv299', lastUsed: now - grace },
      { id: 300, resourceVersion: 'rv300', lastUsed: now - grace - 1 },
    ],
  );
  t.notThrows(() => checkIdentityTimings(5, 15));
  t.throws(() => checkIdentityTimings(6, 15), { message: /at most a third/ });
});
