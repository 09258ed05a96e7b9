/**
 * Benchmark of the policy compiler for `npm run bench` (group "policy"): the time of one
 * compilePolicy over a synthetic cluster of 2000 identities in 20 namespaces and 100 local
 * endpoints, at 10 and at 500 policies (a mix of NetworkPolicies with pod, namespace and
 * ipBlock peers and port ranges, and CiliumNetworkPolicies with entities, CIDR sets and
 * denies). The 10-policy case is the baseline; the ratio says how compile time grows with the
 * number of policies. Parse time and map entries of the 500 policies are reported against the
 * 10-policy case the same way. Timings are the median of 15 runs after a warm-up.
 * Pure CPU; no root, no BPF.
 */
import { performance } from 'node:perf_hooks';
import type { SecurityLabels } from '../identity/labels.js';
import { assignCidrIdentities, policyCidrs } from './cidr-identities.js';
import { compilePolicy, type CompileInputs, type PolicyEndpoint } from './compile.js';
import { parsePolicy } from './parse.js';
import type { ParsedPolicy } from './types.js';

export interface PolicyBenchResult {
  bench: string;
  metric: string;
  value: number;
  unit: string;
  baseline?: number;
  ratio?: number;
}

export interface SyntheticCluster {
  identities: Map<number, SecurityLabels>;
  endpoints: PolicyEndpoint[];
  /** Raw policy objects, as the informer would deliver them. */
  policies: unknown[];
}

const APPS = ['web', 'api', 'db', 'cache', 'queue', 'worker', 'auth', 'search', 'metrics', 'gateway'];

/** A deterministic synthetic cluster: `namespaces` x 100 identities, 100 local endpoints, `policyCount` policies. */
export function syntheticCluster(policyCount: number, namespaces = 20): SyntheticCluster {
  const identities = new Map<number, SecurityLabels>();
  let id = 256;
  for (let n = 0; n < namespaces; n++) {
    const ns = `team-${n}`;
    for (let i = 0; i < 100; i++) {
      identities.set(id++, {
        'k8s:app': APPS[i % APPS.length]!,
        'k8s:version': `v${i % 10}`,
        'k8s:io.kubernetes.pod.namespace': ns,
        'k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name': ns,
        'k8s:io.cilium.k8s.namespace.labels.tier': n % 2 === 0 ? 'frontend' : 'backend',
        'k8s:io.cilium.k8s.policy.cluster': 'default',
      });
    }
  }
  const ids = [...identities.keys()];
  const endpoints: PolicyEndpoint[] = [];
  for (let e = 0; e < 100; e++) {
    const identity = ids[(e * 37) % ids.length]!;
    endpoints.push({ id: e + 1, identity, labels: identities.get(identity)! });
  }
  const policies: unknown[] = [];
  for (let p = 0; p < policyCount; p++) {
    const ns = `team-${p % namespaces}`;
    const app = APPS[p % APPS.length]!;
    const peerApp = APPS[(p + 3) % APPS.length]!;
    switch (p % 5) {
      case 0:
        policies.push({
          kind: 'NetworkPolicy',
          metadata: { name: `np-${p}`, namespace: ns },
          spec: {
            podSelector: { matchLabels: { app } },
            policyTypes: ['Ingress', 'Egress'],
            ingress: [{ from: [{ podSelector: { matchLabels: { app: peerApp } } }], ports: [{ port: 8080 }, { port: 9000, endPort: 9100 }] }],
            egress: [{ to: [{ namespaceSelector: { matchLabels: { tier: 'backend' } }, podSelector: { matchLabels: { app: 'db' } } }], ports: [{ port: 5432 }] }],
          },
        });
        break;
      case 1:
        policies.push({
          kind: 'NetworkPolicy',
          metadata: { name: `np-${p}`, namespace: ns },
          spec: {
            podSelector: { matchExpressions: [{ key: 'app', operator: 'In', values: [app, peerApp] }] },
            ingress: [{ from: [{ namespaceSelector: { matchLabels: { tier: 'frontend' } } }, { ipBlock: { cidr: `10.${p % 250}.0.0/16`, except: [`10.${p % 250}.1.0/24`] } }], ports: [{ port: 443 }] }],
          },
        });
        break;
      case 2:
        policies.push({
          kind: 'CiliumNetworkPolicy',
          metadata: { name: `cnp-${p}`, namespace: ns },
          spec: {
            endpointSelector: { matchLabels: { app } },
            ingress: [{ fromEndpoints: [{ matchLabels: { app: peerApp } }, { matchLabels: { 'k8s:io.kubernetes.pod.namespace': `team-${(p + 1) % namespaces}` } }], toPorts: [{ ports: [{ port: '8000', endPort: 8999, protocol: 'TCP' }] }] }],
            egress: [{ toEntities: ['world'], toPorts: [{ ports: [{ port: '443', protocol: 'TCP' }] }] }, { toEntities: ['cluster'], toPorts: [{ ports: [{ port: '53', protocol: 'UDP' }] }] }],
          },
        });
        break;
      case 3:
        policies.push({
          kind: 'CiliumNetworkPolicy',
          metadata: { name: `cnp-${p}`, namespace: ns },
          spec: {
            endpointSelector: { matchLabels: { app, version: `v${p % 10}` } },
            egress: [{ toCIDRSet: [{ cidr: `172.${16 + (p % 16)}.0.0/16`, except: [`172.${16 + (p % 16)}.${p % 200}.0/24`] }] }],
            egressDeny: [{ toEndpoints: [{ matchLabels: { app: 'auth' } }], toPorts: [{ ports: [{ port: '0', protocol: 'TCP' }] }] }],
          },
        });
        break;
      default:
        policies.push({
          kind: 'CiliumClusterwideNetworkPolicy',
          metadata: { name: `ccnp-${p}` },
          spec: {
            endpointSelector: { matchLabels: { app, 'k8s:io.kubernetes.pod.namespace': ns } },
            ingress: [{ fromEndpoints: [{ matchLabels: { app: peerApp } }], toPorts: [{ ports: [{ port: '7000' }] }] }],
            ingressDeny: [{ fromCIDR: [`192.168.${p % 250}.0/24`] }],
          },
        });
    }
  }
  return { identities, endpoints, policies };
}

/** Parses every policy of a synthetic cluster; throws on any problem (the generator is wrong then). */
export function parseAll(raws: readonly unknown[]): ParsedPolicy[] {
  return raws.map((raw) => {
    const r = parsePolicy(raw);
    if (!r.ok) throw new Error(`synthetic policy does not parse: ${JSON.stringify(r.problems[0])}`);
    return r.policy;
  });
}

export function compileInputsFor(cluster: SyntheticCluster): CompileInputs {
  const policies = parseAll(cluster.policies);
  return { policies, endpoints: cluster.endpoints, identities: cluster.identities, cidrIdentities: assignCidrIdentities(policyCidrs(policies), new Map()) };
}

/** The median of `runs` timings of fn, in milliseconds, after one warm-up. */
function medianMs(runs: number, fn: () => void): number {
  fn();
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    fn();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

export async function policyBench(): Promise<PolicyBenchResult[]> {
  const small = syntheticCluster(10);
  const large = syntheticCluster(500);
  const smallInputs = compileInputsFor(small);
  const largeInputs = compileInputsFor(large);
  const smallMs = medianMs(15, () => compilePolicy(smallInputs));
  const largeMs = medianMs(15, () => compilePolicy(largeInputs));
  const parseSmallMs = medianMs(15, () => parseAll(small.policies));
  const parseLargeMs = medianMs(15, () => parseAll(large.policies));
  const entries = (inputs: CompileInputs) => compilePolicy(inputs).endpoints.reduce((n, e) => n + e.entries.length, 0);
  const smallEntries = entries(smallInputs);
  const largeEntries = entries(largeInputs);
  const rec = (bench: string, metric: string, value: number, unit: string, baseline: number): PolicyBenchResult => ({ bench, metric, value, unit, baseline, ratio: value / baseline });
  return [
    rec('policy/compile-10-policies', 'compile_ms', smallMs, 'ms', smallMs),
    rec('policy/compile-500-policies', 'compile_ms', largeMs, 'ms', smallMs),
    rec('policy/parse-500-policies', 'parse_ms', parseLargeMs, 'ms', parseSmallMs),
    rec('policy/compile-500-policies', 'entries', largeEntries, 'entries', smallEntries),
  ];
}
