/**
 * The normalised form of network policies that the compiler works on.
 *
 * parsePolicy (parse.ts) turns a raw NetworkPolicy, CiliumNetworkPolicy or
 * CiliumClusterwideNetworkPolicy into a ParsedPolicy: a list of rules, each
 * with the endpoints it applies to (a label selector, already scoped to the
 * policy's namespace where the policy kind requires it), the directions in
 * which it puts those endpoints into default deny, and its traffic rules
 * (peers x L4 matches, allow or deny). compilePolicy (compile.ts) evaluates
 * the selectors against endpoints and identities and writes map entries.
 *
 * Everything here is plain data (no classes), so parsed policies can be kept,
 * compared and logged freely.
 */

export type PolicyKind = 'NetworkPolicy' | 'CiliumNetworkPolicy' | 'CiliumClusterwideNetworkPolicy';

/** Which Kubernetes object a policy came from. `namespace` is absent for cluster-wide policies. */
export interface PolicySource {
  kind: PolicyKind;
  namespace?: string;
  name: string;
}

/** A problem found in a policy, naming the field path (e.g. "spec.ingress[0].ports[1].endPort"). */
export interface PolicyProblem {
  policy: PolicySource;
  field: string;
  message: string;
  severity: 'error' | 'warning';
}

// ---- selectors ---------------------------------------------------------------------------

export type SelectorOperator = 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';

/**
 * One requirement on a security label. `source` is the label source ("k8s",
 * "reserved", ...) or null for "any source" (a selector key written without a
 * source, or with "any:"). `key` is the label key without its source.
 */
export interface LabelRequirement {
  source: string | null;
  key: string;
  operator: SelectorOperator;
  /** Sorted, deduplicated; empty for Exists / DoesNotExist. */
  values: readonly string[];
}

/** A conjunction of requirements; no requirement selects everything (within its scope). */
export interface LabelSelector {
  requirements: readonly LabelRequirement[];
}

// ---- peers and L4 --------------------------------------------------------------------------

/**
 * Who a traffic rule is about.
 * - `any`: every peer (identity 0 in the map).
 * - `selector`: cluster identities (and reserved ones when the selector names reserved labels)
 *   whose labels match.
 * - `identities`: fixed numeric identities (entities), e.g. world = [2, 9].
 * - `entityCluster`: every cluster identity plus the reserved ones inside the cluster.
 * - `cidr`: the CIDR identities of `cidr` and of every policy CIDR inside it, minus the
 *   `except` CIDRs (and policy CIDRs inside those). A /0 also stands for the world identities.
 */
export type PeerMatch =
  | { kind: 'any' }
  | { kind: 'selector'; selector: LabelSelector }
  | { kind: 'identities'; ids: readonly number[] }
  | { kind: 'entityCluster' }
  | { kind: 'cidr'; cidr: string; except: readonly string[] };

/**
 * An L4 match. `proto` null means every protocol and port (prefixLen 64). Otherwise the IP
 * protocol number and an inclusive port range (for ICMP: the ICMP type, low = high);
 * 0..65535 is every port of that protocol (prefixLen 80).
 */
export interface PortMatch {
  proto: number | null;
  low: number;
  high: number;
}

export type RuleAction = 'allow' | 'deny';

/** Traffic direction as the datapath numbers it: 1 ingress, 2 egress. */
export type Direction = 1 | 2;

/**
 * One traffic rule: traffic in `direction` between the subject endpoints and any of `peers`,
 * on any of `ports`. An empty `peers` or `ports` list matches nothing (the rule only marks the
 * direction as enforced); "every peer" is `[{ kind: 'any' }]`, "every port" is
 * `[{ proto: null, low: 0, high: 65535 }]`.
 */
export interface TrafficRule {
  direction: Direction;
  action: RuleAction;
  peers: readonly PeerMatch[];
  ports: readonly PortMatch[];
  /** The field path of the rule in the object, for problems and tracing. */
  field: string;
}

/** One rule of a policy: which endpoints, which directions it enforces, what it allows/denies. */
export interface PolicyRule {
  /** Local endpoints the rule applies to (already scoped to the namespace where required). */
  subject: LabelSelector;
  /**
   * The directions this rule puts its endpoints into default deny. A direction with traffic
   * rules but no default deny (CNP enableDefaultDeny: false) only adds its allows and denies.
   */
  defaultDeny: { ingress: boolean; egress: boolean };
  traffic: readonly TrafficRule[];
  field: string;
}

export interface ParsedPolicy {
  source: PolicySource;
  /** Stable 32-bit cookie written into the policy entries (flow events name it). */
  cookie: number;
  rules: readonly PolicyRule[];
  /**
   * False for the fail-closed remainder of a policy with errors: its rules keep their
   * subjects and default-deny directions but carry no traffic rules.
   */
  complete: boolean;
}
