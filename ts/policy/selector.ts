/**
 * Label selectors over security labels: parsing the two dialects, scoping, matching and a
 * cached, indexed evaluation against every known identity.
 *
 * Security labels carry a source prefix ("k8s:app=web", "reserved:host="). Kubernetes
 * NetworkPolicy selectors name plain pod or namespace label keys; they become requirements on
 * "k8s:<key>" and "k8s:io.cilium.k8s.namespace.labels.<key>". Cilium selectors name keys with
 * an optional source: "k8s:app" (that source only), "any:app" or "app" (any source),
 * "reserved:host" (the reserved identities).
 *
 * Semantics are Kubernetes': requirements are ANDed; In needs one of the values; NotIn holds
 * when the label is absent or has another value; Exists / DoesNotExist test presence. An
 * empty selector matches everything in its scope.
 */
import { NAMESPACE_LABEL, SOURCE_K8S, SOURCE_RESERVED, labelKeyProblem, labelValueProblem, type SecurityLabels } from '../identity/labels.js';
import { RESERVED_IDENTITIES } from '../identity/reserved.js';
import type { LabelRequirement, LabelSelector, SelectorOperator } from './types.js';

const OPERATORS: readonly SelectorOperator[] = ['In', 'NotIn', 'Exists', 'DoesNotExist'];

export const EMPTY_SELECTOR: LabelSelector = Object.freeze({ requirements: Object.freeze([]) as readonly LabelRequirement[] });

/** A problem at a field path below the selector (e.g. "matchLabels.app"). */
export interface SelectorIssue {
  field: string;
  message: string;
}

export type SelectorParse = { ok: true; selector: LabelSelector } | { ok: false; issues: SelectorIssue[] };

/** How selector keys are read. */
export type SelectorDialect =
  /** Kubernetes pod labels: key "app" -> "k8s:app". */
  | { kind: 'k8s-pod' }
  /** Kubernetes namespace labels: key "team" -> "k8s:io.cilium.k8s.namespace.labels.team". */
  | { kind: 'k8s-namespace' }
  /** Cilium: "[source:]key"; no source or "any" = any source. */
  | { kind: 'cilium' };

interface KeyParse {
  source: string | null;
  key: string;
  problem?: string;
}

const SOURCE_RE = /^[a-z0-9][a-z0-9-]*$/;

function readKey(raw: string, dialect: SelectorDialect): KeyParse {
  if (dialect.kind === 'k8s-pod') return { source: SOURCE_K8S, key: raw, problem: labelKeyProblem(raw) };
  if (dialect.kind === 'k8s-namespace') return { source: SOURCE_K8S, key: `io.cilium.k8s.namespace.labels.${raw}`, problem: labelKeyProblem(raw) };
  const colon = raw.indexOf(':');
  let source: string | null = null;
  let key = raw;
  if (colon >= 0) {
    const prefix = raw.slice(0, colon);
    key = raw.slice(colon + 1);
    if (!SOURCE_RE.test(prefix)) return { source: null, key, problem: `the key ${JSON.stringify(raw)} has an invalid source ${JSON.stringify(prefix)} (expected e.g. "k8s:", "reserved:" or "any:")` };
    source = prefix === 'any' ? null : prefix;
  }
  if (key === '') return { source, key, problem: `the key ${JSON.stringify(raw)} is empty after its source` };
  if (/[\s;=]/.test(key) || key.length > 512) return { source, key, problem: `the key ${JSON.stringify(raw)} contains whitespace, ";" or "=", or is longer than 512 characters` };
  return { source, key };
}

function valueProblem(v: unknown): string | undefined {
  if (typeof v !== 'string') return 'the value is not a string';
  return labelValueProblem(v);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/**
 * Parses a Kubernetes-style label selector object ({matchLabels, matchExpressions}). A missing
 * selector is the caller's business; here `undefined`/`null` is refused like any non-object.
 */
export function parseSelector(raw: unknown, dialect: SelectorDialect): SelectorParse {
  const issues: SelectorIssue[] = [];
  if (!isPlainObject(raw)) return { ok: false, issues: [{ field: '', message: 'must be a label selector object ({matchLabels, matchExpressions})' }] };
  const reqs: LabelRequirement[] = [];
  for (const k of Object.keys(raw)) {
    if (k !== 'matchLabels' && k !== 'matchExpressions') issues.push({ field: k, message: `unknown selector field ${JSON.stringify(k)}: only matchLabels and matchExpressions are allowed` });
  }
  const ml = raw.matchLabels;
  if (ml !== undefined && ml !== null) {
    if (!isPlainObject(ml)) issues.push({ field: 'matchLabels', message: 'must be a map of label key to value' });
    else {
      for (const [k, v] of Object.entries(ml)) {
        const kp = readKey(k, dialect);
        const problem = kp.problem ?? valueProblem(v);
        if (problem) issues.push({ field: `matchLabels[${JSON.stringify(k)}]`, message: problem });
        else reqs.push({ source: kp.source, key: kp.key, operator: 'In', values: [v as string] });
      }
    }
  }
  const me = raw.matchExpressions;
  if (me !== undefined && me !== null) {
    if (!Array.isArray(me)) issues.push({ field: 'matchExpressions', message: 'must be a list of {key, operator, values}' });
    else {
      me.forEach((expr: unknown, i) => {
        const at = `matchExpressions[${i}]`;
        if (!isPlainObject(expr)) {
          issues.push({ field: at, message: 'must be an object {key, operator, values}' });
          return;
        }
        if (typeof expr.key !== 'string') {
          issues.push({ field: `${at}.key`, message: 'is required and must be a string' });
          return;
        }
        const kp = readKey(expr.key, dialect);
        if (kp.problem) {
          issues.push({ field: `${at}.key`, message: kp.problem });
          return;
        }
        const op = expr.operator;
        if (typeof op !== 'string' || !(OPERATORS as readonly string[]).includes(op)) {
          issues.push({ field: `${at}.operator`, message: `unknown operator ${JSON.stringify(op)}: use In, NotIn, Exists or DoesNotExist` });
          return;
        }
        const operator = op as SelectorOperator;
        const values = expr.values ?? [];
        if (!Array.isArray(values)) {
          issues.push({ field: `${at}.values`, message: 'must be a list of strings' });
          return;
        }
        if ((operator === 'In' || operator === 'NotIn') && values.length === 0) {
          issues.push({ field: `${at}.values`, message: `operator ${operator} needs at least one value` });
          return;
        }
        if ((operator === 'Exists' || operator === 'DoesNotExist') && values.length > 0) {
          issues.push({ field: `${at}.values`, message: `operator ${operator} takes no values` });
          return;
        }
        let bad = false;
        values.forEach((v: unknown, j) => {
          const p = valueProblem(v);
          if (p) {
            issues.push({ field: `${at}.values[${j}]`, message: p });
            bad = true;
          }
        });
        if (!bad) reqs.push({ source: kp.source, key: kp.key, operator, values: values as string[] });
      });
    }
  }
  if (issues.length > 0) return { ok: false, issues };
  return { ok: true, selector: normalizeSelector(reqs) };
}

function compareStr(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function requirementKey(r: LabelRequirement): string {
  return `${r.source ?? 'any'}:${r.key}\u0000${r.operator}\u0000${r.values.join('\u0001')}`;
}

/** Sorted, deduplicated requirements with sorted, deduplicated values. */
export function normalizeSelector(reqs: readonly LabelRequirement[]): LabelSelector {
  const seen = new Map<string, LabelRequirement>();
  for (const r of reqs) {
    const n: LabelRequirement = { source: r.source, key: r.key, operator: r.operator, values: [...new Set(r.values)].sort(compareStr) };
    seen.set(requirementKey(n), n);
  }
  const requirements = [...seen.entries()].sort((a, b) => compareStr(a[0], b[0])).map(([, r]) => r);
  return { requirements };
}

/** A canonical text of a selector: equal selectors, equal strings (used as a cache key). */
export function selectorKey(sel: LabelSelector): string {
  return sel.requirements.map(requirementKey).join('\u0002');
}

export function andSelectors(...sels: LabelSelector[]): LabelSelector {
  return normalizeSelector(sels.flatMap((s) => s.requirements));
}

/** True when some requirement is about the pod namespace label (k8s or any source). */
export function namesNamespace(sel: LabelSelector): boolean {
  return sel.requirements.some((r) => r.key === NAMESPACE_LABEL && (r.source === null || r.source === SOURCE_K8S));
}

/** True when some requirement is about a reserved label ("reserved:host", ...). */
export function namesReserved(sel: LabelSelector): boolean {
  return sel.requirements.some((r) => r.source === SOURCE_RESERVED);
}

/** The selector restricted to pods of `namespace`. */
export function inNamespace(sel: LabelSelector, namespace: string): LabelSelector {
  return andSelectors(sel, { requirements: [{ source: SOURCE_K8S, key: NAMESPACE_LABEL, operator: 'In', values: [namespace] }] });
}

/** Security labels as a selector evaluates them: exact "source:key" and by bare key (any source). */
export interface LabelView {
  readonly exact: ReadonlyMap<string, string>;
  readonly bare: ReadonlyMap<string, readonly string[]>;
}

export function labelView(labels: SecurityLabels): LabelView {
  const exact = new Map<string, string>();
  const bare = new Map<string, string[]>();
  for (const [k, v] of Object.entries(labels)) {
    exact.set(k, v);
    const colon = k.indexOf(':');
    const b = colon >= 0 ? k.slice(colon + 1) : k;
    const list = bare.get(b);
    if (list) list.push(v);
    else bare.set(b, [v]);
  }
  return { exact, bare };
}

function hasAny(vals: readonly string[], wanted: readonly string[]): boolean {
  for (const v of vals) if (wanted.includes(v)) return true;
  return false;
}

export function requirementMatches(view: LabelView, r: LabelRequirement): boolean {
  if (r.source !== null) {
    const v = view.exact.get(`${r.source}:${r.key}`);
    switch (r.operator) {
      case 'In':
        return v !== undefined && r.values.includes(v);
      case 'NotIn':
        return v === undefined || !r.values.includes(v);
      case 'Exists':
        return v !== undefined;
      case 'DoesNotExist':
        return v === undefined;
    }
  }
  const vals = view.bare.get(r.key);
  switch (r.operator) {
    case 'In':
      return vals !== undefined && hasAny(vals, r.values);
    case 'NotIn':
      return vals === undefined || !hasAny(vals, r.values);
    case 'Exists':
      return vals !== undefined;
    case 'DoesNotExist':
      return vals === undefined;
  }
}

export function selectorMatches(view: LabelView, sel: LabelSelector): boolean {
  for (const r of sel.requirements) if (!requirementMatches(view, r)) return false;
  return true;
}

/**
 * Evaluates selectors against a set of labelled things (identities, or local endpoints), with
 * an index by label and a cache by canonical selector. Every member is a candidate for every
 * selector; with `withReserved`, the reserved identities are candidates too, but only for
 * selectors that name a reserved label (so `{}` never means "the world").
 */
export class IdentitySelectorCache {
  private readonly views = new Map<number, LabelView>();
  private readonly identities: ReadonlyMap<number, SecurityLabels>;
  private readonly allIds: readonly number[];
  /** "source:key" -> value -> ids, and bare key -> value -> ids (any source). */
  private readonly byExact = new Map<string, Map<string, number[]>>();
  private readonly byBare = new Map<string, Map<string, number[]>>();
  private readonly reservedViews: ReadonlyArray<readonly [number, LabelView]>;
  private readonly cache = new Map<string, readonly number[]>();

  constructor(identities: ReadonlyMap<number, SecurityLabels>, withReserved = true) {
    this.identities = identities;
    const ids = [...identities.keys()].sort((a, b) => a - b);
    this.allIds = ids;
    const add = (index: Map<string, Map<string, number[]>>, key: string, value: string, id: number) => {
      let byValue = index.get(key);
      if (!byValue) index.set(key, (byValue = new Map()));
      const list = byValue.get(value);
      if (list) list.push(id);
      else byValue.set(value, [id]);
    };
    for (const id of ids) {
      const labels = identities.get(id)!;
      for (const k in labels) {
        const v = labels[k]!;
        add(this.byExact, k, v, id);
        const colon = k.indexOf(':');
        add(this.byBare, colon >= 0 ? k.slice(colon + 1) : k, v, id);
      }
    }
    this.reservedViews = withReserved ? RESERVED_IDENTITIES.map((r) => [r.id, labelView(r.labels)] as const) : [];
  }

  /** Sorted ids of the identities `sel` selects. */
  select(sel: LabelSelector): readonly number[] {
    const key = selectorKey(sel);
    const hit = this.cache.get(key);
    if (hit) return hit;
    const out: number[] = [];
    if (namesReserved(sel)) for (const [id, view] of this.reservedViews) if (selectorMatches(view, sel)) out.push(id);
    for (const id of this.candidates(sel)) if (selectorMatches(this.view(id), sel)) out.push(id);
    out.sort((a, b) => a - b);
    const result = Object.freeze(dedupSorted(out));
    this.cache.set(key, result);
    return result;
  }

  private view(id: number): LabelView {
    let v = this.views.get(id);
    if (!v) this.views.set(id, (v = labelView(this.identities.get(id)!)));
    return v;
  }

  /** The smallest candidate list an In requirement gives, or every identity. */
  private candidates(sel: LabelSelector): readonly number[] {
    let best: readonly number[] = this.allIds;
    for (const r of sel.requirements) {
      if (r.operator !== 'In') continue;
      const byValue = r.source === null ? this.byBare.get(r.key) : this.byExact.get(`${r.source}:${r.key}`);
      if (!byValue) return [];
      let list: number[] = [];
      for (const v of r.values) {
        const ids = byValue.get(v);
        if (ids) list = list.length === 0 ? ids : list.concat(ids);
      }
      if (list.length < best.length) best = list;
      if (best.length === 0) return best;
    }
    return best;
  }
}

function dedupSorted(sorted: number[]): number[] {
  let w = 0;
  for (let i = 0; i < sorted.length; i++) if (i === 0 || sorted[i] !== sorted[w - 1]) sorted[w++] = sorted[i]!;
  sorted.length = w;
  return sorted;
}
