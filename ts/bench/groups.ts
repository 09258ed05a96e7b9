/**
 * The benchmark groups `npm run bench` knows. Each capability adds its group
 * here; `npm run bench -- <name>` runs one.
 */
import type { BenchResult } from './results.js';
import type { Logger } from '../log/logger.js';
import { DATAPATH_BENCH_GROUPS } from '../datapath/bench.js';

export interface BenchContext {
  log: Logger;
}

export interface BenchGroup {
  name: string;
  description: string;
  run(ctx: BenchContext): Promise<BenchResult[]>;
}

export const BENCH_GROUPS: BenchGroup[] = [...DATAPATH_BENCH_GROUPS];
