/**
 * The policy part of the desired state: the policy objects the informers hold,
 * parsed once per object version, compiled for the local endpoints (ts/policy),
 * with stable CIDR identities. Problems are logged once per object version; a
 * malformed policy never stops the agent (the compiler fails closed for the
 * endpoints it would select).
 */
import type { Logger } from '../log/logger.js';
import { assignCidrIdentities, compilePolicy, parsePolicy, policyCidrs, type ParsedPolicy, type PolicyEndpoint, type PolicyProblem } from '../policy/index.js';
import type { SecurityLabels } from '../identity/labels.js';
import type { EndpointEnforcement, PolicyOutcome } from './desired.js';

interface Parsed {
  version: string;
  policy: ParsedPolicy | undefined;
}

export interface PolicyObject {
  metadata?: { uid?: string; resourceVersion?: string; namespace?: string; name?: string };
}

export type PolicyObjectKind = 'NetworkPolicy' | 'CiliumNetworkPolicy' | 'CiliumClusterwideNetworkPolicy';

export class PolicyStep {
  private readonly parsed = new Map<string, Parsed>();
  private cidrIds = new Map<string, number>();
  problems: PolicyProblem[] = [];
  policies = 0;

  constructor(private readonly log: Logger) {}

  /** Parses what changed since the last call (by uid + resourceVersion) and forgets deleted objects. */
  private refresh(objects: ReadonlyArray<readonly [PolicyObjectKind, PolicyObject]>): ParsedPolicy[] {
    const seen = new Set<string>();
    const out: ParsedPolicy[] = [];
    for (const [kind, obj] of objects) {
      const id = `${kind}/${obj.metadata?.uid ?? ''}/${obj.metadata?.namespace ?? ''}/${obj.metadata?.name ?? ''}`;
      seen.add(id);
      const version = obj.metadata?.resourceVersion ?? '';
      let entry = this.parsed.get(id);
      if (!entry || entry.version !== version) {
        // List responses carry no kind on their items: say which informer it came from.
        const r = parsePolicy(obj, kind);
        if (r.ok) {
          entry = { version, policy: r.policy };
          for (const w of r.warnings) this.log.warn({ policy: w.policy, field: w.field }, `policy: ${w.message}`);
        } else {
          entry = { version, policy: r.partial };
          for (const p of r.problems) this.log.error({ policy: p.policy, field: p.field }, `policy rejected: ${p.message}${r.partial ? ' (the endpoints it selects stay in default deny)' : ''}`);
        }
        this.parsed.set(id, entry);
      }
      if (entry.policy) out.push(entry.policy);
    }
    for (const id of [...this.parsed.keys()]) if (!seen.has(id)) this.parsed.delete(id);
    return out;
  }

  compute(objects: ReadonlyArray<readonly [PolicyObjectKind, PolicyObject]>, endpoints: readonly PolicyEndpoint[], identities: ReadonlyMap<number, SecurityLabels>): PolicyOutcome {
    const policies = this.refresh(objects);
    this.policies = policies.length;
    this.cidrIds = assignCidrIdentities(policyCidrs(policies), this.cidrIds);
    const result = compilePolicy({ policies, endpoints, identities, cidrIdentities: this.cidrIds });
    this.problems = result.problems;
    const enforcement = new Map<number, EndpointEnforcement>();
    const entries: PolicyOutcome['entries'] = [];
    for (const ep of result.endpoints) {
      enforcement.set(ep.epId, { epId: ep.epId, ingress: ep.ingressEnforced, egress: ep.egressEnforced });
      entries.push(...ep.entries);
    }
    return { entries, enforcement, cidrIdentities: this.cidrIds };
  }

  cidrIdentities(): ReadonlyMap<string, number> {
    return this.cidrIds;
  }
}
