/**
 * Benchmark results: every figure is reported beside a baseline measured in the
 * same run, as a ratio, because absolute times drift on shared machines.
 */
export interface BenchResult {
  /** Group and case, e.g. "datapath/established-flow". */
  bench: string;
  /** What was measured, e.g. "ns_per_packet", "entries_per_s". */
  metric: string;
  value: number;
  unit: string;
  /** The same metric for the baseline case of this run (e.g. the empty program). */
  baseline: number;
  /** value / baseline. */
  ratio: number;
  /** Optional target, for the table: e.g. "<= 2.5x floor". */
  target?: string;
}

export function result(fields: Omit<BenchResult, 'ratio'>): BenchResult {
  const ratio = fields.baseline === 0 ? Number.NaN : fields.value / fields.baseline;
  return { ...fields, ratio };
}

function formatNumber(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  if (Math.abs(n) >= 1e6) return n.toExponential(3);
  if (Math.abs(n) >= 100) return n.toFixed(0);
  return n.toPrecision(3);
}

export function formatTable(results: BenchResult[]): string {
  const header = ['bench', 'metric', 'value', 'unit', 'baseline', 'ratio', 'target'];
  const rows = results.map((r) => [r.bench, r.metric, formatNumber(r.value), r.unit, formatNumber(r.baseline), `${r.ratio.toFixed(2)}x`, r.target ?? '']);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}
