/**
 * Output for every CLI verb: human text by default, `-o json` for machines.
 * Verbs return a result value; this module decides how it is printed.
 */
export type OutputFormat = 'human' | 'json';

export const OUTPUT_FORMATS: readonly OutputFormat[] = ['human', 'json'];

export function parseOutputFormat(value: string): OutputFormat {
  if (value === 'json' || value === 'human') return value;
  throw new UsageError(`-o ${value} is not an output format; use one of: ${OUTPUT_FORMATS.join(', ')}`);
}

/** A mistake in how the command was called: printed without a stack, exit code 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** A verb that exists in the interface but whose capability has not landed yet: exit code 3. */
export class NotAvailableError extends Error {
  override name = 'NotAvailableError';
}

export interface Printable<T> {
  value: T;
  /** Lines for people; JSON output ignores it. */
  human: (value: T) => string;
}

export function render<T>(result: Printable<T>, format: OutputFormat): string {
  return format === 'json' ? JSON.stringify(result.value, null, 2) : result.human(result.value);
}

/** Left-aligned columns separated by three spaces, like tabwriter output in cilium-dbg. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
      .join('   ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}
