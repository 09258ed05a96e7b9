/**
 * Network policy: Kubernetes NetworkPolicy and Cilium(Clusterwide)NetworkPolicy objects ->
 * the per-endpoint entries of the datapath's policy map. Pure functions, no I/O.
 *
 * Typical use by the agent, on any change of policies, endpoints or identities:
 *   const parsed = raws.map((o) => parsePolicy(o, kind));            // log problems; use policy or partial
 *   const cidrIds = assignCidrIdentities(policyCidrs(policies), previousCidrIds);  // ipcache entries
 *   const { endpoints, problems } = compilePolicy({ policies, endpoints, identities, cidrIdentities: cidrIds });
 */
export type { LabelRequirement, LabelSelector, ParsedPolicy, PeerMatch, PolicyKind, PolicyProblem, PolicyRule, PolicySource, PortMatch, TrafficRule } from './types.js';
export { parsePolicy, type ParseResult } from './parse.js';
export { compilePolicy, type CompileInputs, type CompileResult, type EndpointPolicy, type PolicyEndpoint } from './compile.js';
export { assignCidrIdentities, policyCidrs, FIRST_CIDR_IDENTITY, LAST_CIDR_IDENTITY } from './cidr-identities.js';
export { policyCookie } from './cookie.js';
export { portRangePrefixes, type PortPrefix } from './ports.js';
export { tracePolicy, policiesByCookie, type TraceQuery, type TraceResult, type TraceVerdict } from './trace.js';
