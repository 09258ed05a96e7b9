/**
 * The benchmark groups `npm run bench` knows. Each capability adds its group
 * here; `npm run bench -- <name>` runs one.
 */
import type { BenchResult } from './results.js';
import type { Logger } from '../log/logger.js';
import { DATAPATH_BENCH_GROUPS } from '../datapath/bench.js';
import { agentBench } from '../agent/bench.js';

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
  { name: 'agent', description: 'the agent at 5k pods / 1k namespaces / 2k identities: sync, RSS, restart, event-to-map latency', run: ({ log }) => agentBench(log) },
];
