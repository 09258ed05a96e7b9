/**
 * The benchmark groups `npm run bench` knows. Each capability adds its group
 * here; `npm run bench -- <name>` runs one.
 */
import type { BenchResult } from './results.js';
import type { Logger } from '../log/logger.js';
import { DATAPATH_BENCH_GROUPS } from '../datapath/bench.js';
import { agentBench } from '../agent/bench.js';
import { policyBench } from '../policy/bench.js';
import { cniBench } from '../cni/bench.js';
import { result } from './results.js';

export interface BenchContext {
  log: Logger;
}

export interface BenchGroup {
  name: string;
  description: string;
  run(ctx: BenchContext): Promise<BenchResult[]>;
}

export const BENCH_GROUPS: BenchGroup[] = [
  ...DATAPATH_BENCH_GROUPS,
  {
    name: 'policy',
    description: 'policy compile at 10 vs 500 policies over 2000 identities and 100 endpoints',
    run: async () => (await policyBench()).map((r) => result({ bench: r.bench, metric: r.metric, value: r.value, unit: r.unit, baseline: r.baseline ?? r.value })),
  },
  { name: 'cni', description: 'CNI ADD latency p50/p99 sequential and 100 concurrent ADDs, against the real agent on a lab', run: (ctx) => cniBench(ctx) },
  { name: 'agent', description: 'the agent at 5k pods / 1k namespaces / 2k identities: sync, RSS, restart, event-to-map latency', run: ({ log }) => agentBench(log) },
];
