/**
 * parsePolicy: one raw policy object (plain JSON, as the informer delivers it) -> a validated,
 * normalised ParsedPolicy, or the problems that keep it from being applied.
 *
 * Kinds: networking.k8s.io/v1 NetworkPolicy, cilium.io/v2 CiliumNetworkPolicy and
 * CiliumClusterwideNetworkPolicy. Items of a Kubernetes list response carry no `kind`; the
 * caller should pass the kind it watched as `expectedKind`. Without either, the kind is read
 * from the object's shape with a warning (refusing it would leave the policy unapplied,
 * which is fail open), and an object whose shape does not tell is an error.
 *
 * Every problem names the policy and the field path ("spec.ingress[0].ports[1].endPort").
 * - error: the policy is not applied. When the endpoint selectors parsed, `partial` keeps the
 *   rules' subjects and default-deny directions without any traffic rule, so the endpoints
 *   the policy selects are enforced with nothing allowed by it (fail closed). Without even
 *   that, there is no `partial` and the policy is skipped.
 * - warning: the policy applies without the part named (always the safe way: an allow that
 *   cannot be compiled is left out, it never widens). Unsupported: named ports, L7 rules (the
 *   L4 part is allowed), IPv6 CIDRs and ICMPv6, CCNP nodeSelector rules, and the Cilium peer
 *   kinds toFQDNs, toServices, toGroups, fromNodes/toNodes, CIDR groups and fromRequires /
 *   toRequires / authentication in allow rules. The same things in a deny rule are errors:
 *   leaving a deny out would allow more than the author wrote.
 *
 * Semantics recorded here (the compiler only evaluates them):
 * - NetworkPolicy: podSelector within the namespace; policyTypes default to Ingress, plus
 *   Egress when spec.egress has rules; rules of a direction not in policyTypes are ignored
 *   (warning). Peers: podSelector (same namespace), namespaceSelector ({} = every namespace),
 *   both (pods matching in namespaces matching), ipBlock {cidr, except}. Missing or empty
 *   `from`/`to` = every peer; missing or empty `ports` = every protocol and port. Port:
 *   protocol TCP (default), UDP or SCTP; a number 1..65535; endPort >= port. A named port is a
 *   warning and that port entry is left out (a rule left with no port matches nothing).
 * - Cilium: endpointSelector (the subject of a CiliumNetworkPolicy is always confined to the
 *   policy's namespace); fromEndpoints/toEndpoints are confined to it unless they name
 *   k8s:io.kubernetes.pod.namespace or a reserved label; a CCNP is never confined. An
 *   ingress/egress (or Deny) section, even empty, puts the subject into default deny in that
 *   direction unless spec.enableDefaultDeny says false. In one rule item the peers are the
 *   union of its from-/to- peer fields; with no peer field at all, the item applies to every peer
 *   when it has toPorts/icmps and to none otherwise (the `- {}` default-deny idiom); an empty
 *   peer list selects nothing. L4 is the union of toPorts and icmps (every port when neither).
 *   toPorts protocol: TCP, UDP, SCTP, ICMP (port = ICMP type) or ANY (default; with a port it
 *   stands for TCP, UDP and SCTP); port "0" or none = every port.
 */
import { NAMESPACE_LABEL, SOURCE_K8S, dnsLabelProblem, dnsSubdomainProblem } from '../identity/labels.js';
import { ReservedId } from '../identity/reserved.js';
import { cidrContains, parseCidr } from './cidr.js';
import { policyCookie } from './cookie.js';
import { ANY_PROTOCOL_WITH_PORT, ICMPV4_TYPES, IPPROTO_ICMP, IPPROTO_TCP, MAX_PORT, protocolNumber } from './ports.js';
import { EMPTY_SELECTOR, andSelectors, inNamespace, namesNamespace, namesReserved, parseSelector, type SelectorDialect } from './selector.js';
import type {
  Direction,
  LabelSelector,
  ParsedPolicy,
  PeerMatch,
  PolicyKind,
  PolicyProblem,
  PolicyRule,
  PolicySource,
  PortMatch,
  RuleAction,
  TrafficRule,
} from './types.js';

export type ParseResult =
  | { ok: true; policy: ParsedPolicy; warnings: PolicyProblem[] }
  | { ok: false; problems: PolicyProblem[]; partial?: ParsedPolicy };

const KINDS: readonly PolicyKind[] = ['NetworkPolicy', 'CiliumNetworkPolicy', 'CiliumClusterwideNetworkPolicy'];

const ALL_PORTS: PortMatch = Object.freeze({ proto: null, low: 0, high: MAX_PORT });
const ANY_PEER: PeerMatch = Object.freeze({ kind: 'any' });

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'string') return JSON.stringify(v.length > 60 ? `${v.slice(0, 60)}...` : v);
  return typeof v === 'object' ? 'an object' : `${typeof v} ${String(v)}`;
}

/** Collects problems for one policy. */
class Problems {
  readonly list: PolicyProblem[] = [];
  constructor(public source: PolicySource) {}
  error(field: string, message: string): void {
    this.list.push({ policy: this.source, field, message, severity: 'error' });
  }
  warn(field: string, message: string): void {
    this.list.push({ policy: this.source, field, message, severity: 'warning' });
  }
  get hasErrors(): boolean {
    return this.list.some((p) => p.severity === 'error');
  }
}

/** A list field: undefined/null when absent, the array, or an error and undefined. */
function listField(p: Problems, obj: Obj, key: string, at: string): unknown[] | undefined {
  const v = obj[key];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) {
    p.error(at === '' ? key : `${at}.${key}`, `must be a list, got ${describe(v)}`);
    return undefined;
  }
  return v;
}

function selectorOrProblems(p: Problems, raw: unknown, dialect: SelectorDialect, at: string): LabelSelector | undefined {
  const r = parseSelector(raw, dialect);
  if (r.ok) return r.selector;
  for (const i of r.issues) p.error(i.field === '' ? at : `${at}.${i.field}`, i.message);
  return undefined;
}

// ---- entry point -------------------------------------------------------------------------------

/**
 * Validates and normalises one raw policy object. `expectedKind` is the kind the caller
 * watched (list items have no `kind`); an object naming another kind is refused.
 */
export function parsePolicy(obj: unknown, expectedKind?: PolicyKind): ParseResult {
  const fallback: PolicySource = { kind: expectedKind ?? 'NetworkPolicy', name: '' };
  if (!isObj(obj)) {
    return { ok: false, problems: [{ policy: fallback, field: '', message: `a policy must be an object, got ${describe(obj)}`, severity: 'error' }] };
  }
  const meta = isObj(obj.metadata) ? obj.metadata : {};
  const rawName = meta.name;
  const rawNamespace = meta.namespace;
  let kind: PolicyKind | undefined = expectedKind;
  const early: Array<{ field: string; message: string }> = [];
  let inferredFrom: string | undefined;
  if (obj.kind !== undefined) {
    if (typeof obj.kind !== 'string' || !(KINDS as readonly string[]).includes(obj.kind)) {
      early.push({ field: 'kind', message: `unknown policy kind ${describe(obj.kind)}: expected ${KINDS.join(', ')}` });
      kind = undefined;
    } else if (expectedKind !== undefined && obj.kind !== expectedKind) {
      early.push({ field: 'kind', message: `the object is a ${obj.kind}, but a ${expectedKind} was expected` });
      kind = undefined;
    } else kind = obj.kind as PolicyKind;
  } else if (kind === undefined) {
    const inferred = inferKind(obj);
    if (inferred) {
      kind = inferred.kind;
      inferredFrom = inferred.because;
    } else early.push({ field: 'kind', message: `the object has no kind and its shape does not tell: set kind (${KINDS.join(', ')}) or pass the expected kind` });
  }
  const source: PolicySource = { kind: kind ?? fallback.kind, name: typeof rawName === 'string' ? rawName : '' };
  if (kind !== 'CiliumClusterwideNetworkPolicy' && typeof rawNamespace === 'string') source.namespace = rawNamespace;
  const p = new Problems(source);
  for (const e of early) p.error(e.field, e.message);
  if (inferredFrom) p.warn('kind', `the object has no kind (list items have none); read as a ${kind} because ${inferredFrom}: pass the kind you watched to parsePolicy`);
  if (!isObj(obj.metadata)) p.error('metadata', `must be an object with name (and namespace), got ${describe(obj.metadata)}`);
  else if (typeof rawName !== 'string' || rawName === '') p.error('metadata.name', 'is required: a non-empty string');
  else {
    const np = dnsSubdomainProblem('the name', rawName);
    if (np) p.error('metadata.name', np);
  }
  if (kind === 'NetworkPolicy' || kind === 'CiliumNetworkPolicy') {
    if (typeof rawNamespace !== 'string' || rawNamespace === '') p.error('metadata.namespace', `is required for a ${kind}`);
    else {
      const nsp = dnsLabelProblem('the namespace', rawNamespace);
      if (nsp) p.error('metadata.namespace', nsp);
    }
  }
  if (p.hasErrors || kind === undefined) return { ok: false, problems: p.list };

  const rules = kind === 'NetworkPolicy' ? parseNetworkPolicy(p, obj, source.namespace!) : parseCiliumPolicy(p, obj, kind, source.namespace);
  const cookie = policyCookie(source);
  if (!p.hasErrors) {
    return { ok: true, policy: { source, cookie, rules: rules.map((r) => r.rule), complete: true }, warnings: p.list };
  }
  const withSubjects = rules.filter((r) => r.subjectOk);
  if (withSubjects.length === 0) return { ok: false, problems: p.list };
  const partial: ParsedPolicy = {
    source,
    cookie,
    rules: withSubjects.map(({ rule }) => ({ ...rule, traffic: [] })),
    complete: false,
  };
  return { ok: false, problems: p.list, partial };
}

/**
 * The kind of an object without `kind` (items of a list response), from its shape:
 * spec.podSelector or spec.policyTypes -> NetworkPolicy; endpointSelector/nodeSelector rules
 * or `specs` -> a Cilium policy, namespaced or cluster-wide by metadata.namespace.
 */
function inferKind(obj: Obj): { kind: PolicyKind; because: string } | undefined {
  const spec = isObj(obj.spec) ? obj.spec : undefined;
  const namespaced = isObj(obj.metadata) && typeof obj.metadata.namespace === 'string' && obj.metadata.namespace !== '';
  if (spec && ('podSelector' in spec || 'policyTypes' in spec)) return { kind: 'NetworkPolicy', because: 'its spec has podSelector/policyTypes' };
  const cilium = (spec && ('endpointSelector' in spec || 'nodeSelector' in spec)) || Array.isArray(obj.specs);
  if (cilium) {
    return namespaced
      ? { kind: 'CiliumNetworkPolicy', because: 'it has Cilium rules (endpointSelector/nodeSelector or specs) and a namespace' }
      : { kind: 'CiliumClusterwideNetworkPolicy', because: 'it has Cilium rules (endpointSelector/nodeSelector or specs) and no namespace' };
  }
  return undefined;
}

interface RuleOutcome {
  rule: PolicyRule;
  /** The subject selector parsed (the rule may still have errors elsewhere). */
  subjectOk: boolean;
}

// ---- Kubernetes NetworkPolicy -------------------------------------------------------------------

function parseNetworkPolicy(p: Problems, obj: Obj, namespace: string): RuleOutcome[] {
  const spec = obj.spec;
  if (!isObj(spec)) {
    p.error('spec', `must be an object, got ${describe(spec)}`);
    return [];
  }
  for (const k of Object.keys(spec)) {
    if (!['podSelector', 'policyTypes', 'ingress', 'egress'].includes(k)) p.error(`spec.${k}`, `unknown NetworkPolicy field ${JSON.stringify(k)}`);
  }
  let subject: LabelSelector | undefined;
  if (spec.podSelector === undefined || spec.podSelector === null) p.error('spec.podSelector', 'is required ({} selects every pod of the namespace)');
  else subject = selectorOrProblems(p, spec.podSelector, { kind: 'k8s-pod' }, 'spec.podSelector');

  const ingress = listField(p, spec, 'ingress', 'spec');
  const egress = listField(p, spec, 'egress', 'spec');
  let types = { ingress: true, egress: (egress?.length ?? 0) > 0 };
  const rawTypes = spec.policyTypes;
  if (rawTypes !== undefined && rawTypes !== null) {
    if (!Array.isArray(rawTypes)) p.error('spec.policyTypes', `must be a list of "Ingress" and/or "Egress", got ${describe(rawTypes)}`);
    else if (rawTypes.length > 0) {
      types = { ingress: false, egress: false };
      rawTypes.forEach((t: unknown, i) => {
        if (t === 'Ingress') types.ingress = true;
        else if (t === 'Egress') types.egress = true;
        else p.error(`spec.policyTypes[${i}]`, `unknown policy type ${describe(t)}: use "Ingress" or "Egress"`);
      });
    }
  }
  const traffic: TrafficRule[] = [];
  const sides: Array<[Direction, unknown[] | undefined, 'from' | 'to', 'ingress' | 'egress']> = [
    [1, ingress, 'from', 'ingress'],
    [2, egress, 'to', 'egress'],
  ];
  for (const [direction, list, peerKey, name] of sides) {
    if (!list) continue;
    if (!types[name] && list.length > 0) {
      p.warn(`spec.${name}`, `has rules but spec.policyTypes does not include ${name === 'ingress' ? 'Ingress' : 'Egress'}: they are ignored`);
      continue;
    }
    list.forEach((raw, i) => {
      const rule = parseK8sRule(p, raw, direction, peerKey, namespace, `spec.${name}[${i}]`);
      if (rule) traffic.push(rule);
    });
  }
  const scoped = inNamespace(subject ?? EMPTY_SELECTOR, namespace);
  return [{ rule: { subject: scoped, defaultDeny: types, traffic, field: 'spec' }, subjectOk: subject !== undefined }];
}

function parseK8sRule(p: Problems, raw: unknown, direction: Direction, peerKey: 'from' | 'to', namespace: string, at: string): TrafficRule | undefined {
  if (!isObj(raw)) {
    p.error(at, `must be an object with ${peerKey} and ports, got ${describe(raw)}`);
    return undefined;
  }
  for (const k of Object.keys(raw)) if (k !== peerKey && k !== 'ports') p.error(`${at}.${k}`, `unknown field ${JSON.stringify(k)} (a rule has ${peerKey} and ports)`);
  const rawPeers = listField(p, raw, peerKey, at);
  let peers: PeerMatch[];
  if (!rawPeers || rawPeers.length === 0) peers = [ANY_PEER];
  else {
    peers = [];
    rawPeers.forEach((rp, j) => peers.push(...parseK8sPeer(p, rp, namespace, `${at}.${peerKey}[${j}]`)));
  }
  const rawPorts = listField(p, raw, 'ports', at);
  let ports: PortMatch[];
  if (!rawPorts || rawPorts.length === 0) ports = [ALL_PORTS];
  else {
    ports = [];
    rawPorts.forEach((rp, j) => ports.push(...parseK8sPort(p, rp, `${at}.ports[${j}]`)));
  }
  return { direction, action: 'allow', peers, ports, field: at };
}

function parseK8sPeer(p: Problems, raw: unknown, namespace: string, at: string): PeerMatch[] {
  if (!isObj(raw)) {
    p.error(at, `must be an object with podSelector, namespaceSelector or ipBlock, got ${describe(raw)}`);
    return [];
  }
  for (const k of Object.keys(raw)) {
    if (!['podSelector', 'namespaceSelector', 'ipBlock'].includes(k)) p.error(`${at}.${k}`, `unknown peer field ${JSON.stringify(k)}`);
  }
  const has = (k: string) => raw[k] !== undefined && raw[k] !== null;
  if (has('ipBlock')) {
    if (has('podSelector') || has('namespaceSelector')) {
      p.error(at, 'ipBlock cannot be combined with podSelector or namespaceSelector in one peer: write them as separate peers');
      return [];
    }
    return parseIpBlock(p, raw.ipBlock, 'cidr', 'except', `${at}.ipBlock`, 'allow');
  }
  if (!has('podSelector') && !has('namespaceSelector')) {
    p.error(at, 'a peer needs podSelector, namespaceSelector or ipBlock (to allow every peer, leave the list empty)');
    return [];
  }
  const pod = has('podSelector') ? selectorOrProblems(p, raw.podSelector, { kind: 'k8s-pod' }, `${at}.podSelector`) : EMPTY_SELECTOR;
  if (!has('namespaceSelector')) return pod ? [{ kind: 'selector', selector: inNamespace(pod, namespace) }] : [];
  const ns = selectorOrProblems(p, raw.namespaceSelector, { kind: 'k8s-namespace' }, `${at}.namespaceSelector`);
  if (!pod || !ns) return [];
  const anyNamespace: LabelSelector = { requirements: [{ source: SOURCE_K8S, key: NAMESPACE_LABEL, operator: 'Exists', values: [] }] };
  return [{ kind: 'selector', selector: andSelectors(pod, ns, anyNamespace) }];
}

function parseK8sPort(p: Problems, raw: unknown, at: string): PortMatch[] {
  if (!isObj(raw)) {
    p.error(at, `must be an object {protocol, port, endPort}, got ${describe(raw)}`);
    return [];
  }
  for (const k of Object.keys(raw)) if (!['protocol', 'port', 'endPort'].includes(k)) p.error(`${at}.${k}`, `unknown port field ${JSON.stringify(k)}`);
  let proto = IPPROTO_TCP;
  if (raw.protocol !== undefined && raw.protocol !== null) {
    const n = typeof raw.protocol === 'string' ? protocolNumber(raw.protocol) : undefined;
    if (n === undefined) {
      p.error(`${at}.protocol`, `unknown protocol ${describe(raw.protocol)}: use TCP, UDP or SCTP`);
      return [];
    }
    proto = n;
  }
  const port = raw.port;
  const endPort = raw.endPort;
  if (port === undefined || port === null) {
    if (endPort !== undefined && endPort !== null) {
      p.error(`${at}.endPort`, 'needs a numeric port: endPort is the last port of the range that starts at port');
      return [];
    }
    return [{ proto, low: 0, high: MAX_PORT }];
  }
  if (typeof port === 'string') {
    if (endPort !== undefined && endPort !== null) p.error(`${at}.endPort`, 'cannot be used with a named port');
    else p.warn(`${at}.port`, `named port ${JSON.stringify(port)} is not supported yet (it needs the pods' containerPorts): this port entry allows nothing; write the port number`);
    return [];
  }
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > MAX_PORT) {
    p.error(`${at}.port`, `must be a port number 1..65535 or a port name, got ${describe(port)}`);
    return [];
  }
  if (endPort === undefined || endPort === null) return [{ proto, low: port, high: port }];
  if (typeof endPort !== 'number' || !Number.isInteger(endPort) || endPort < 1 || endPort > MAX_PORT) {
    p.error(`${at}.endPort`, `must be a port number 1..65535, got ${describe(endPort)}`);
    return [];
  }
  if (endPort < port) {
    p.error(`${at}.endPort`, `${endPort} is below port ${port}: endPort must be >= port`);
    return [];
  }
  return [{ proto, low: port, high: endPort }];
}

/** ipBlock {cidr, except} (NetworkPolicy) or a CIDRSet item {cidr, except}. */
function parseIpBlock(p: Problems, raw: unknown, cidrKey: string, exceptKey: string, at: string, action: RuleAction): PeerMatch[] {
  if (!isObj(raw)) {
    p.error(at, `must be an object {${cidrKey}, ${exceptKey}}, got ${describe(raw)}`);
    return [];
  }
  const cidr = cidrText(p, raw[cidrKey], `${at}.${cidrKey}`, action);
  const rawExcept = listField(p, raw, exceptKey, at) ?? [];
  const except: string[] = [];
  rawExcept.forEach((e, i) => {
    const text = cidrText(p, e, `${at}.${exceptKey}[${i}]`, 'except');
    if (text === undefined || cidr === undefined) return;
    const outer = parseCidr(cidr);
    const inner = parseCidr(text);
    if (outer.ok && inner.ok && !cidrContains(outer.cidr, inner.cidr)) {
      p.error(`${at}.${exceptKey}[${i}]`, `${text} is not inside ${cidr}: an except CIDR must be within the block's CIDR`);
      return;
    }
    except.push(text);
  });
  if (cidr === undefined) return [];
  return [{ kind: 'cidr', cidr, except: [...new Set(except)].sort() }];
}

/**
 * A normalised CIDR, or undefined (with an error, or a warning for IPv6 where leaving it out is
 * safe: an allow, or an except whose outer block is IPv4 anyway).
 */
function cidrText(p: Problems, raw: unknown, at: string, use: RuleAction | 'except'): string | undefined {
  if (typeof raw !== 'string') {
    p.error(at, `must be a CIDR string such as "10.0.0.0/8", got ${describe(raw)}`);
    return undefined;
  }
  const c = parseCidr(raw);
  if (!c.ok) {
    if (c.ipv6 && use === 'allow') p.warn(at, `${c.reason}: this allow is left out`);
    else if (c.ipv6 && use === 'deny') p.warn(at, `${c.reason}: an IPv6 deny has nothing to deny on this datapath and is left out`);
    else if (c.ipv6) p.warn(at, `${c.reason}: ignored`);
    else p.error(at, c.reason);
    return undefined;
  }
  if (c.hadHostBits) p.warn(at, `${JSON.stringify(raw)} has host bits set; it is read as ${c.text}`);
  return c.text;
}

// ---- Cilium policies ---------------------------------------------------------------------------

const CNP_TOP = ['spec', 'specs', 'status'];
const RULE_FIELDS = ['endpointSelector', 'nodeSelector', 'ingress', 'ingressDeny', 'egress', 'egressDeny', 'labels', 'description', 'enableDefaultDeny', 'log'];

const INGRESS_PEER_FIELDS = ['fromEndpoints', 'fromEntities', 'fromCIDR', 'fromCIDRSet'];
const EGRESS_PEER_FIELDS = ['toEndpoints', 'toEntities', 'toCIDR', 'toCIDRSet'];
/** Peer kinds this compiler does not evaluate (a union member: leaving it out of an allow narrows it). */
const INGRESS_UNSUPPORTED_PEERS = ['fromNodes', 'fromGroups'];
const EGRESS_UNSUPPORTED_PEERS = ['toNodes', 'toGroups', 'toFQDNs', 'toServices'];
/** Constraints that narrow a rule: an allow rule with one is left out entirely. */
const NARROWING = { ingress: ['fromRequires', 'authentication'], egress: ['toRequires', 'authentication'] };

const ENTITY_IDS: ReadonlyMap<string, readonly number[]> = new Map<string, readonly number[]>([
  ['world', [ReservedId.world, ReservedId.worldIPv4]],
  ['world-ipv4', [ReservedId.world, ReservedId.worldIPv4]],
  ['world-ipv6', [ReservedId.worldIPv6]],
  ['host', [ReservedId.host]],
  ['remote-node', [ReservedId.remoteNode]],
  ['kube-apiserver', [ReservedId.kubeApiserver]],
  ['health', [ReservedId.health]],
  ['init', [ReservedId.init]],
  ['unmanaged', [ReservedId.unmanaged]],
  ['ingress', [ReservedId.ingress]],
  ['none', []],
]);

/** The reserved identities inside the cluster (the "cluster" entity adds every cluster identity). */
export const CLUSTER_ENTITY_RESERVED: readonly number[] = [
  ReservedId.host,
  ReservedId.unmanaged,
  ReservedId.health,
  ReservedId.init,
  ReservedId.remoteNode,
  ReservedId.kubeApiserver,
  ReservedId.ingress,
];

function parseCiliumPolicy(p: Problems, obj: Obj, kind: PolicyKind, namespace: string | undefined): RuleOutcome[] {
  for (const k of Object.keys(obj)) {
    if (!['apiVersion', 'kind', 'metadata', ...CNP_TOP].includes(k)) p.error(k, `unknown ${kind} field ${JSON.stringify(k)}`);
  }
  const raws: Array<[unknown, string]> = [];
  if (obj.spec !== undefined && obj.spec !== null) raws.push([obj.spec, 'spec']);
  const specs = listField(p, obj, 'specs', '');
  specs?.forEach((s, i) => raws.push([s, `specs[${i}]`]));
  if (raws.length === 0) {
    p.error('spec', `a ${kind} needs spec (one rule) or specs (a list of rules)`);
    return [];
  }
  const out: RuleOutcome[] = [];
  for (const [raw, at] of raws) {
    const r = parseCiliumRule(p, raw, kind, namespace, at);
    if (r) out.push(r);
  }
  return out;
}

function parseCiliumRule(p: Problems, raw: unknown, kind: PolicyKind, namespace: string | undefined, at: string): RuleOutcome | undefined {
  if (!isObj(raw)) {
    p.error(at, `must be a rule object, got ${describe(raw)}`);
    return undefined;
  }
  for (const k of Object.keys(raw)) if (!RULE_FIELDS.includes(k)) p.error(`${at}.${k}`, `unknown rule field ${JSON.stringify(k)}`);
  const hasEp = raw.endpointSelector !== undefined && raw.endpointSelector !== null;
  const hasNode = raw.nodeSelector !== undefined && raw.nodeSelector !== null;
  if (hasEp && hasNode) {
    p.error(at, 'a rule has either endpointSelector or nodeSelector, not both');
    return undefined;
  }
  if (hasNode) {
    if (kind !== 'CiliumClusterwideNetworkPolicy') p.error(`${at}.nodeSelector`, 'nodeSelector is only allowed in a CiliumClusterwideNetworkPolicy');
    else p.warn(`${at}.nodeSelector`, 'host policies (nodeSelector) are not supported yet: this rule is skipped');
    return undefined;
  }
  if (!hasEp) {
    p.error(`${at}.endpointSelector`, 'is required ({} selects every endpoint of the namespace, or of the cluster for a clusterwide policy)');
    return undefined;
  }
  const selector = selectorOrProblems(p, raw.endpointSelector, { kind: 'cilium' }, `${at}.endpointSelector`);
  let subject = selector ?? EMPTY_SELECTOR;
  if (namespace !== undefined) {
    const own = subject.requirements.find((r) => r.key === NAMESPACE_LABEL && (r.source === null || r.source === SOURCE_K8S));
    if (own && !(own.operator === 'In' && own.values.includes(namespace))) {
      p.warn(`${at}.endpointSelector`, `names namespaces other than the policy's own (${namespace}); a CiliumNetworkPolicy only applies to endpoints of its namespace`);
    }
    subject = inNamespace(subject, namespace);
  }

  let defaultDenyIngress = true;
  let defaultDenyEgress = true;
  const edd = raw.enableDefaultDeny;
  if (edd !== undefined && edd !== null) {
    if (!isObj(edd)) p.error(`${at}.enableDefaultDeny`, `must be an object {ingress, egress} of booleans, got ${describe(edd)}`);
    else {
      for (const [k, v] of Object.entries(edd)) {
        if (k !== 'ingress' && k !== 'egress') p.error(`${at}.enableDefaultDeny.${k}`, `unknown field ${JSON.stringify(k)}`);
        else if (typeof v !== 'boolean') p.error(`${at}.enableDefaultDeny.${k}`, `must be true or false, got ${describe(v)}`);
        else if (k === 'ingress') defaultDenyIngress = v;
        else defaultDenyEgress = v;
      }
    }
  }
  const sections: Array<[string, Direction, RuleAction]> = [
    ['ingress', 1, 'allow'],
    ['ingressDeny', 1, 'deny'],
    ['egress', 2, 'allow'],
    ['egressDeny', 2, 'deny'],
  ];
  const present = { ingress: false, egress: false };
  const traffic: TrafficRule[] = [];
  for (const [key, direction, action] of sections) {
    const list = listField(p, raw, key, at);
    if (raw[key] === undefined || raw[key] === null) continue;
    present[direction === 1 ? 'ingress' : 'egress'] = true;
    list?.forEach((item, i) => {
      const rule = parseCiliumTrafficRule(p, item, direction, action, namespace, `${at}.${key}[${i}]`);
      if (rule) traffic.push(rule);
    });
  }
  if (!present.ingress && !present.egress) p.warn(at, 'the rule has no ingress, ingressDeny, egress or egressDeny section: it does nothing');
  return {
    rule: { subject, defaultDeny: { ingress: present.ingress && defaultDenyIngress, egress: present.egress && defaultDenyEgress }, traffic, field: at },
    subjectOk: selector !== undefined,
  };
}

function parseCiliumTrafficRule(
  p: Problems,
  raw: unknown,
  direction: Direction,
  action: RuleAction,
  namespace: string | undefined,
  at: string,
): TrafficRule | undefined {
  if (!isObj(raw)) {
    p.error(at, `must be a rule object, got ${describe(raw)}`);
    return undefined;
  }
  const side = direction === 1 ? 'ingress' : 'egress';
  const peerFields = direction === 1 ? INGRESS_PEER_FIELDS : EGRESS_PEER_FIELDS;
  const unsupported = direction === 1 ? INGRESS_UNSUPPORTED_PEERS : EGRESS_UNSUPPORTED_PEERS;
  const narrowing = NARROWING[side];
  const known = [...peerFields, ...unsupported, ...narrowing, 'toPorts', 'icmps'];
  for (const k of Object.keys(raw)) if (!known.includes(k)) p.error(`${at}.${k}`, `unknown ${side}${action === 'deny' ? 'Deny' : ''} rule field ${JSON.stringify(k)}`);
  const present = (k: string) => raw[k] !== undefined && raw[k] !== null;

  let skip = false;
  for (const k of narrowing) {
    if (!present(k)) continue;
    if (action === 'deny') p.error(`${at}.${k}`, `${k} is not supported in deny rules`);
    else p.warn(`${at}.${k}`, `${k} is not supported yet: this allow rule is left out`);
    skip = true;
  }
  let hadPeerField = false;
  const peers: PeerMatch[] = [];
  for (const k of unsupported) {
    if (!present(k)) continue;
    hadPeerField = true;
    if (action === 'deny') p.error(`${at}.${k}`, `${k} is not supported yet; a deny rule cannot leave it out (that would allow more): remove it or express it with CIDRs`);
    else p.warn(`${at}.${k}`, `${k} is not supported yet: these peers are left out of the allow`);
  }
  const [endpointsKey, entitiesKey, cidrKey, cidrSetKey] = peerFields as [string, string, string, string];
  const eps = listField(p, raw, endpointsKey, at);
  if (present(endpointsKey)) hadPeerField = true;
  eps?.forEach((s, i) => {
    const sel = selectorOrProblems(p, s, { kind: 'cilium' }, `${at}.${endpointsKey}[${i}]`);
    if (!sel) return;
    const scoped = namespace !== undefined && !namesNamespace(sel) && !namesReserved(sel) ? inNamespace(sel, namespace) : sel;
    peers.push({ kind: 'selector', selector: scoped });
  });
  const ents = listField(p, raw, entitiesKey, at);
  if (present(entitiesKey)) hadPeerField = true;
  ents?.forEach((e, i) => {
    const f = `${at}.${entitiesKey}[${i}]`;
    if (e === 'all') peers.push(ANY_PEER);
    else if (e === 'cluster') peers.push({ kind: 'entityCluster' });
    else if (typeof e === 'string' && ENTITY_IDS.has(e)) {
      const ids = ENTITY_IDS.get(e)!;
      if (ids.length > 0) peers.push({ kind: 'identities', ids });
    } else p.error(f, `unknown entity ${describe(e)}: use one of all, world, cluster, host, remote-node, kube-apiserver, health, init, unmanaged, ingress, none`);
  });
  const cidrs = listField(p, raw, cidrKey, at);
  if (present(cidrKey)) hadPeerField = true;
  cidrs?.forEach((c, i) => {
    const text = cidrText(p, c, `${at}.${cidrKey}[${i}]`, action);
    if (text !== undefined) peers.push({ kind: 'cidr', cidr: text, except: [] });
  });
  const sets = listField(p, raw, cidrSetKey, at);
  if (present(cidrSetKey)) hadPeerField = true;
  sets?.forEach((s, i) => {
    const f = `${at}.${cidrSetKey}[${i}]`;
    if (isObj(s) && (s.cidrGroupRef !== undefined || s.cidrGroupSelector !== undefined)) {
      if (action === 'deny') p.error(f, 'CIDR groups (cidrGroupRef, cidrGroupSelector) are not supported yet; a deny rule cannot leave them out: list the CIDRs');
      else p.warn(f, 'CIDR groups (cidrGroupRef, cidrGroupSelector) are not supported yet: this CIDR set is left out of the allow');
      return;
    }
    if (isObj(s)) for (const k of Object.keys(s)) if (k !== 'cidr' && k !== 'except') p.error(`${f}.${k}`, `unknown CIDR set field ${JSON.stringify(k)}`);
    peers.push(...parseIpBlock(p, s, 'cidr', 'except', f, action));
  });

  let hadL4 = false;
  const ports: PortMatch[] = [];
  const toPorts = listField(p, raw, 'toPorts', at);
  if (toPorts && toPorts.length > 0) hadL4 = true;
  toPorts?.forEach((tp, i) => ports.push(...parseCiliumPortRule(p, tp, action, `${at}.toPorts[${i}]`)));
  const icmps = listField(p, raw, 'icmps', at);
  if (icmps && icmps.length > 0) hadL4 = true;
  icmps?.forEach((ic, i) => ports.push(...parseIcmpRule(p, ic, `${at}.icmps[${i}]`)));

  if (skip) return undefined;
  // No peer field: every peer when L4 is given, nobody otherwise (`- {}` only enforces).
  const finalPeers = hadPeerField ? peers : hadL4 ? [ANY_PEER] : [];
  const finalPorts = hadL4 ? ports : [ALL_PORTS];
  return { direction, action, peers: finalPeers, ports: finalPorts, field: at };
}

function parseCiliumPortRule(p: Problems, raw: unknown, action: RuleAction, at: string): PortMatch[] {
  if (!isObj(raw)) {
    p.error(at, `must be an object {ports, rules}, got ${describe(raw)}`);
    return [];
  }
  for (const k of Object.keys(raw)) {
    if (k === 'ports') continue;
    if (['rules', 'terminatingTLS', 'originatingTLS', 'serverNames', 'listener'].includes(k)) {
      const v = raw[k];
      const empty = v === null || v === undefined || (Array.isArray(v) && v.length === 0) || (isObj(v) && Object.keys(v).length === 0);
      if (empty) continue;
      if (action === 'deny') p.error(`${at}.${k}`, `${k} (L7) is not allowed in a deny rule`);
      else p.warn(`${at}.${k}`, `L7 enforcement is not built yet: ${k} is not enforced; the L4 ports of this rule are allowed`);
      continue;
    }
    p.error(`${at}.${k}`, `unknown toPorts field ${JSON.stringify(k)}`);
  }
  const list = listField(p, raw, 'ports', at);
  if (!list || list.length === 0) return [ALL_PORTS];
  const out: PortMatch[] = [];
  list.forEach((pp, i) => out.push(...parseCiliumPort(p, pp, action, `${at}.ports[${i}]`)));
  return out;
}

function parseCiliumPort(p: Problems, raw: unknown, action: RuleAction, at: string): PortMatch[] {
  if (!isObj(raw)) {
    p.error(at, `must be an object {port, endPort, protocol}, got ${describe(raw)}`);
    return [];
  }
  for (const k of Object.keys(raw)) if (!['port', 'endPort', 'protocol'].includes(k)) p.error(`${at}.${k}`, `unknown port field ${JSON.stringify(k)}`);
  let protos: readonly number[] | 'any' = 'any';
  if (raw.protocol !== undefined && raw.protocol !== null && raw.protocol !== 'ANY') {
    const name = raw.protocol;
    if (name === 'ICMP') protos = [IPPROTO_ICMP];
    else if (name === 'ICMPv6' || name === 'ICMPV6') {
      if (action === 'deny') p.warn(`${at}.protocol`, 'ICMPv6 has nothing to match on this IPv4 datapath: this port entry is left out');
      else p.warn(`${at}.protocol`, 'ICMPv6 is not supported on this IPv4 datapath: this port entry allows nothing');
      return [];
    } else {
      const n = typeof name === 'string' ? protocolNumber(name) : undefined;
      if (n === undefined) {
        p.error(`${at}.protocol`, `unknown protocol ${describe(name)}: use TCP, UDP, SCTP, ICMP or ANY`);
        return [];
      }
      protos = [n];
    }
  }
  let port = 0;
  const rp = raw.port;
  if (typeof rp === 'number') port = rp;
  else if (typeof rp === 'string' && /^\d+$/.test(rp)) port = Number(rp);
  else if (typeof rp === 'string' && rp !== '') {
    if (action === 'deny') {
      p.error(`${at}.port`, `named port ${JSON.stringify(rp)} is not supported yet; a deny cannot leave it out: write the port number`);
      return [];
    }
    p.warn(`${at}.port`, `named port ${JSON.stringify(rp)} is not supported yet (it needs the pods' containerPorts): this port entry allows nothing; write the port number`);
    return [];
  } else if (rp !== undefined && rp !== null && rp !== '') {
    p.error(`${at}.port`, `must be a port number ("80") or name, got ${describe(rp)}`);
    return [];
  }
  if (!Number.isInteger(port) || port < 0 || port > MAX_PORT) {
    p.error(`${at}.port`, `${port} is not a port: 0..65535 (0 = every port)`);
    return [];
  }
  const re = raw.endPort;
  let high = port;
  if (re !== undefined && re !== null && re !== 0) {
    if (typeof re !== 'number' || !Number.isInteger(re) || re < 0 || re > MAX_PORT) {
      p.error(`${at}.endPort`, `must be a port number 1..65535, got ${describe(re)}`);
      return [];
    }
    if (port === 0) {
      p.error(`${at}.endPort`, 'needs a non-zero port: endPort is the last port of the range that starts at port');
      return [];
    }
    if (re < port) {
      p.error(`${at}.endPort`, `${re} is below port ${port}: endPort must be >= port`);
      return [];
    }
    high = re;
  }
  const low = port === 0 ? 0 : port;
  if (port === 0) high = MAX_PORT;
  if (protos === 'any') {
    if (port === 0) return [ALL_PORTS];
    return ANY_PROTOCOL_WITH_PORT.map((proto) => ({ proto, low, high }));
  }
  if (protos[0] === IPPROTO_ICMP && port !== 0 && high > 255) {
    p.error(`${at}.port`, `for ICMP the port is the ICMP type: 0..255 (0 = every type), got ${port}${high !== port ? `-${high}` : ''}`);
    return [];
  }
  return protos.map((proto) => ({ proto, low, high }));
}

function parseIcmpRule(p: Problems, raw: unknown, at: string): PortMatch[] {
  if (!isObj(raw)) {
    p.error(at, `must be an object {fields: [{type, family}]}, got ${describe(raw)}`);
    return [];
  }
  for (const k of Object.keys(raw)) if (k !== 'fields') p.error(`${at}.${k}`, `unknown icmps field ${JSON.stringify(k)}`);
  const fields = listField(p, raw, 'fields', at) ?? [];
  const out: PortMatch[] = [];
  fields.forEach((f, i) => {
    const fat = `${at}.fields[${i}]`;
    if (!isObj(f)) {
      p.error(fat, `must be an object {type, family}, got ${describe(f)}`);
      return;
    }
    for (const k of Object.keys(f)) if (k !== 'type' && k !== 'family') p.error(`${fat}.${k}`, `unknown ICMP field ${JSON.stringify(k)}`);
    const family = f.family ?? 'IPv4';
    if (family !== 'IPv4' && family !== 'IPv6') {
      p.error(`${fat}.family`, `must be IPv4 or IPv6, got ${describe(family)}`);
      return;
    }
    let type: number | undefined;
    if (typeof f.type === 'number' && Number.isInteger(f.type) && f.type >= 0 && f.type <= 255) type = f.type;
    else if (typeof f.type === 'string' && /^\d{1,3}$/.test(f.type) && Number(f.type) <= 255) type = Number(f.type);
    else if (typeof f.type === 'string' && family === 'IPv4') type = f.type === 'Echo' ? 8 : ICMPV4_TYPES.get(f.type);
    else if (typeof f.type === 'string' && family === 'IPv6') type = -1;
    if (type === undefined) {
      p.error(`${fat}.type`, `must be an ICMP type 0..255 or its name (e.g. EchoRequest), got ${describe(f.type)}`);
      return;
    }
    if (family === 'IPv6') {
      p.warn(fat, 'ICMPv6 is not supported on this IPv4 datapath: this ICMP entry is left out');
      return;
    }
    out.push({ proto: IPPROTO_ICMP, low: type, high: type });
  });
  return out;
}
