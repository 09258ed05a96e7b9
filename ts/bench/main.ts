#!/usr/bin/env node
/**
 * `npm run bench [-- <group> ...]`: runs benchmark groups, prints each result
 * beside its baseline as a ratio, and writes bench-results.json at the repo root.
 */
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLogger } from '../log/logger.js';
import { BENCH_GROUPS } from './groups.js';
import { formatTable, type BenchResult } from './results.js';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

async function main(argv: string[]): Promise<number> {
  const log = createLogger({ component: 'bench' });
  const known = BENCH_GROUPS.map((g) => g.name);
  const unknown = argv.filter((name) => !known.includes(name));
  if (unknown.length > 0) {
    process.stderr.write(`bench: unknown group ${unknown.join(', ')}; known groups: ${known.join(', ') || '(none yet)'}\n`);
    return 2;
  }
  const groups = argv.length === 0 ? BENCH_GROUPS : BENCH_GROUPS.filter((g) => argv.includes(g.name));
  if (groups.length === 0) {
    process.stderr.write('bench: no benchmark groups are registered yet\n');
    return 2;
  }
  const results: BenchResult[] = [];
  for (const group of groups) {
    const started = Date.now();
    log.info({ group: group.name }, 'benchmark group started');
    const groupResults = await group.run({ log: log.child({ group: group.name }) });
    results.push(...groupResults);
    log.info({ group: group.name, results: groupResults.length, ms: Date.now() - started }, 'benchmark group finished');
  }
  process.stdout.write(formatTable(results) + '\n');
  const path = join(repoRoot, 'bench-results.json');
  writeFileSync(path, JSON.stringify(results, null, 2) + '\n');
  log.info({ path, results: results.length }, 'wrote benchmark results');
  return 0;
}

process.exitCode = await main(process.argv.slice(2));
