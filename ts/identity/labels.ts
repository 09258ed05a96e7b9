/**
 * Security labels: the labels of an endpoint that decide its identity.
 *
 * A pod's security labels are (all with the source prefix "k8s:"):
 *   k8s:<key>=<value>                                       each relevant pod label
 *   k8s:io.kubernetes.pod.namespace=<namespace>
 *   k8s:io.cilium.k8s.namespace.labels.<key>=<value>        each relevant namespace label
 *   k8s:io.cilium.k8s.policy.serviceaccount=<name>          when the pod names one
 *   k8s:io.cilium.k8s.policy.cluster=<cluster name>
 *
 * "Relevant" is decided by a LabelFilter (below). The set is canonicalised
 * (sorted "key=value" joined by ";") and hashed (SHA-256, hex); equal sets give
 * equal strings and hashes, so the hash can index identities cluster-wide.
 *
 * All functions here are pure.
 */
import { createHash } from 'node:crypto';

/** Source-prefixed key -> value, e.g. { "k8s:app": "web", "reserved:host": "" }. */
export type SecurityLabels = Readonly<Record<string, string>>;

export const SOURCE_K8S = 'k8s';
export const SOURCE_RESERVED = 'reserved';
export const NAMESPACE_LABEL = 'io.kubernetes.pod.namespace';
export const NAMESPACE_LABELS_PREFIX = 'io.cilium.k8s.namespace.labels.';
export const SERVICE_ACCOUNT_LABEL = 'io.cilium.k8s.policy.serviceaccount';
export const CLUSTER_LABEL = 'io.cilium.k8s.policy.cluster';

/** An identity with more labels than this is refused (it would make a huge object and policy key). */
export const MAX_SECURITY_LABELS = 256;

// ---------------------------------------------------------------------------
// Kubernetes label syntax (apimachinery validation rules, written out)

const NAME_RE = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const DNS1123_LABEL_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** Why `key` is not a valid Kubernetes label key, or undefined if it is. */
export function labelKeyProblem(key: string): string | undefined {
  if (key === '') return 'the key is empty';
  const slash = key.indexOf('/');
  let name = key;
  if (slash >= 0) {
    const prefix = key.slice(0, slash);
    name = key.slice(slash + 1);
    if (prefix === '') return `the key ${JSON.stringify(key)} has an empty prefix before "/"`;
    if (prefix.length > 253) return `the prefix of key ${JSON.stringify(key)} is ${prefix.length} characters; at most 253 are allowed`;
    if (!DNS1123_SUBDOMAIN_RE.test(prefix)) return `the prefix of key ${JSON.stringify(key)} is not a DNS subdomain (lower-case alphanumerics, "-" and ".")`;
  }
  if (name === '') return `the key ${JSON.stringify(key)} has an empty name`;
  if (name.length > 63) return `the name part of key ${JSON.stringify(key)} is ${name.length} characters; at most 63 are allowed`;
  if (!NAME_RE.test(name)) return `the key ${JSON.stringify(key)} has an invalid name: alphanumerics, "-", "_" and "." only, starting and ending with an alphanumeric`;
  return undefined;
}

/** Why `value` is not a valid Kubernetes label value, or undefined if it is. */
export function labelValueProblem(value: string): string | undefined {
  if (value === '') return undefined;
  if (value.length > 63) return `the value ${JSON.stringify(value.slice(0, 80))}${value.length > 80 ? '...' : ''} is ${value.length} characters; at most 63 are allowed`;
  if (!NAME_RE.test(value)) return `the value ${JSON.stringify(value)} is invalid: alphanumerics, "-", "_" and "." only, starting and ending with an alphanumeric`;
  return undefined;
}

export function dnsLabelProblem(what: string, value: string): string | undefined {
  if (value.length > 63 || !DNS1123_LABEL_RE.test(value)) return `${what} ${JSON.stringify(value)} is not a DNS label (lower-case alphanumerics and "-", at most 63)`;
  return undefined;
}

export function dnsSubdomainProblem(what: string, value: string): string | undefined {
  if (value.length > 253 || !DNS1123_SUBDOMAIN_RE.test(value)) return `${what} ${JSON.stringify(value)} is not a DNS subdomain (lower-case alphanumerics, "-" and ".", at most 253)`;
  return undefined;
}

/** The first problem with a label map, naming the label; undefined if all are valid. */
export function labelMapProblem(what: string, labels: Readonly<Record<string, unknown>>): string | undefined {
  for (const [k, v] of Object.entries(labels)) {
    const kp = labelKeyProblem(k);
    if (kp) return `${what} label ${JSON.stringify(k)}: ${kp}`;
    if (typeof v !== 'string') return `${what} label ${JSON.stringify(k)}: the value is not a string`;
    const vp = labelValueProblem(v);
    if (vp) return `${what} label ${JSON.stringify(k)}: ${vp}`;
  }
  return undefined;
}

// ---------------------------------------------------------------------------
// The relevance filter

/**
 * Which pod and namespace labels count for identity. A key is relevant when it
 * matches an include rule; otherwise it is dropped when it matches an exclude
 * rule; otherwise it is relevant. So includes re-admit keys the excludes would
 * drop. Rules match the label key as written on the pod or namespace (no "k8s:").
 * A "prefix" rule matches keys starting with that text, e.g. "example.com/"
 * matches "example.com/team".
 */
export interface LabelFilter {
  excludeKeys: readonly string[];
  excludePrefixes: readonly string[];
  includeKeys: readonly string[];
  includePrefixes: readonly string[];
}

/**
 * Labels Kubernetes controllers put on pods that differ per pod, per rollout or
 * per run; letting them into identities would give every replica (or every
 * rollout) its own identity.
 */
export const DEFAULT_EXCLUDED_LABEL_KEYS: readonly string[] = [
  'pod-template-hash',
  'controller-revision-hash',
  'pod-template-generation',
  'statefulset.kubernetes.io/pod-name',
  'apps.kubernetes.io/pod-index',
  'batch.kubernetes.io/job-name',
  'batch.kubernetes.io/controller-uid',
  'batch.kubernetes.io/job-completion-index',
  'job-name',
  'controller-uid',
];

export const DEFAULT_LABEL_FILTER: Readonly<LabelFilter> = {
  excludeKeys: DEFAULT_EXCLUDED_LABEL_KEYS,
  excludePrefixes: [],
  includeKeys: [],
  includePrefixes: [],
};

export interface LabelFilterOptions {
  /** Added to the default exclusions (or replacing them with replaceDefaults). */
  excludeKeys?: readonly string[];
  excludePrefixes?: readonly string[];
  includeKeys?: readonly string[];
  includePrefixes?: readonly string[];
  /** Start from an empty filter instead of DEFAULT_LABEL_FILTER. */
  replaceDefaults?: boolean;
}

export function makeLabelFilter(options: LabelFilterOptions = {}): LabelFilter {
  const base = options.replaceDefaults ? { excludeKeys: [], excludePrefixes: [], includeKeys: [], includePrefixes: [] } : DEFAULT_LABEL_FILTER;
  for (const p of [...(options.excludePrefixes ?? []), ...(options.includePrefixes ?? [])]) {
    if (p === '') throw new RangeError('a label filter prefix cannot be empty (it would match every key)');
  }
  const uniq = (a: readonly string[], b: readonly string[] | undefined) => [...new Set([...a, ...(b ?? [])])];
  return {
    excludeKeys: uniq(base.excludeKeys, options.excludeKeys),
    excludePrefixes: uniq(base.excludePrefixes, options.excludePrefixes),
    includeKeys: uniq(base.includeKeys, options.includeKeys),
    includePrefixes: uniq(base.includePrefixes, options.includePrefixes),
  };
}

/** "a, b,,c" -> ["a", "b", "c"]: for filter lists that come from a config string. */
export function parseLabelList(text: string): string[] {
  return text
    .split(',')
    .map((x) => x.trim())
    .filter((x) => x !== '');
}

export function isRelevantLabel(key: string, filter: LabelFilter = DEFAULT_LABEL_FILTER): boolean {
  if (filter.includeKeys.includes(key) || filter.includePrefixes.some((p) => key.startsWith(p))) return true;
  if (filter.excludeKeys.includes(key) || filter.excludePrefixes.some((p) => key.startsWith(p))) return false;
  return true;
}

export function filterLabels(labels: Readonly<Record<string, string>>, filter: LabelFilter = DEFAULT_LABEL_FILTER): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(labels)) if (isRelevantLabel(k, filter)) out[k] = v;
  return out;
}

// ---------------------------------------------------------------------------
// Pod -> security labels

export interface PodLabelInput {
  namespace: string;
  podLabels: Readonly<Record<string, string>>;
  namespaceLabels: Readonly<Record<string, string>>;
  /** spec.serviceAccountName; no label when absent. */
  serviceAccount?: string | undefined;
  clusterName: string;
}

export type LabelsResult = { ok: true; labels: SecurityLabels } | { ok: false; reason: string };

/**
 * The security labels of a pod, or the reason it cannot have any (a label
 * breaking Kubernetes' syntax or length limits, an invalid namespace, service
 * account or cluster name, too many labels). The caller logs the reason and
 * skips the pod; nothing throws.
 */
export function podSecurityLabels(input: PodLabelInput, filter: LabelFilter = DEFAULT_LABEL_FILTER): LabelsResult {
  const problem =
    dnsLabelProblem('namespace', input.namespace) ??
    labelValueProblem(input.clusterName)?.replace(/^the value/, 'the cluster name') ??
    (input.clusterName === '' ? 'the cluster name is empty' : undefined) ??
    (input.serviceAccount !== undefined && input.serviceAccount !== '' ? dnsSubdomainProblem('service account', input.serviceAccount) : undefined) ??
    labelMapProblem('pod', input.podLabels) ??
    labelMapProblem('namespace', input.namespaceLabels);
  if (problem) return { ok: false, reason: problem };

  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(filterLabels(input.podLabels, filter))) out[`${SOURCE_K8S}:${k}`] = v;
  for (const [k, v] of Object.entries(filterLabels(input.namespaceLabels, filter))) out[`${SOURCE_K8S}:${NAMESPACE_LABELS_PREFIX}${k}`] = v;
  // The generated labels win over pod labels that happen to use the same keys.
  out[`${SOURCE_K8S}:${NAMESPACE_LABEL}`] = input.namespace;
  if (input.serviceAccount) out[`${SOURCE_K8S}:${SERVICE_ACCOUNT_LABEL}`] = input.serviceAccount;
  out[`${SOURCE_K8S}:${CLUSTER_LABEL}`] = input.clusterName;

  const count = Object.keys(out).length;
  if (count > MAX_SECURITY_LABELS) return { ok: false, reason: `${count} security labels; at most ${MAX_SECURITY_LABELS} are allowed` };
  return { ok: true, labels: sortLabels(out) };
}

// ---------------------------------------------------------------------------
// Canonical form and hash

/** A copy with keys in sorted order (so JSON and iteration order are canonical too). */
export function sortLabels(labels: Readonly<Record<string, string>>): SecurityLabels {
  const out: Record<string, string> = {};
  for (const k of Object.keys(labels).sort()) out[k] = labels[k]!;
  return Object.freeze(out);
}

/**
 * Why a source-prefixed security label cannot be part of an identity, or
 * undefined. Keys are "<source>:<key>"; ";" and "=" are refused anywhere in
 * keys and values so the canonical string is unambiguous.
 */
export function securityLabelProblem(key: string, value: unknown): string | undefined {
  const colon = key.indexOf(':');
  if (colon <= 0) return `security label ${JSON.stringify(key)} has no source prefix such as "k8s:"`;
  const source = key.slice(0, colon);
  const rest = key.slice(colon + 1);
  if (!/^[a-z0-9][a-z0-9-]*$/.test(source)) return `security label ${JSON.stringify(key)} has an invalid source ${JSON.stringify(source)}`;
  if (source !== SOURCE_RESERVED && rest === '') return `security label ${JSON.stringify(key)} has an empty key`;
  if (key.length > 512) return `security label key ${JSON.stringify(key.slice(0, 60))}... is ${key.length} characters; at most 512 are allowed`;
  if (/[;=\s]/.test(key)) return `security label key ${JSON.stringify(key)} contains ";", "=" or whitespace`;
  if (typeof value !== 'string') return `security label ${JSON.stringify(key)} has a value that is not a string`;
  const vp = labelValueProblem(value);
  if (vp) return `security label ${JSON.stringify(key)}: ${vp}`;
  return undefined;
}

export function securityLabelsProblem(labels: unknown): string | undefined {
  if (labels === null || typeof labels !== 'object' || Array.isArray(labels)) return 'the security labels are not a map of strings';
  const entries = Object.entries(labels as Record<string, unknown>);
  if (entries.length === 0) return 'the security labels are empty';
  if (entries.length > MAX_SECURITY_LABELS) return `${entries.length} security labels; at most ${MAX_SECURITY_LABELS} are allowed`;
  for (const [k, v] of entries) {
    const p = securityLabelProblem(k, v);
    if (p) return p;
  }
  return undefined;
}

/** "k8s:a=1;k8s:b=2": sorted by key. Equal label sets, and only those, give equal strings. */
export function canonicalLabels(labels: SecurityLabels): string {
  return Object.keys(labels)
    .sort()
    .map((k) => `${k}=${labels[k]}`)
    .join(';');
}

/** Length of the labels hash: 32 hex digits (128 bits), well within a label value's 63 characters. */
export const LABELS_HASH_LENGTH = 32;

export function hashCanonical(canonical: string): string {
  return createHash('sha256').update(canonical).digest('hex').slice(0, LABELS_HASH_LENGTH);
}

export function labelsHash(labels: SecurityLabels): string {
  return hashCanonical(canonicalLabels(labels));
}

export function sameLabels(a: SecurityLabels, b: SecurityLabels): boolean {
  return canonicalLabels(a) === canonicalLabels(b);
}

/** "k8s:app=web k8s:io.kubernetes.pod.namespace=default" for logs and CLI output. */
export function formatLabels(labels: SecurityLabels): string {
  return Object.keys(labels)
    .sort()
    .map((k) => (labels[k] === '' ? k : `${k}=${labels[k]}`))
    .join(' ');
}
