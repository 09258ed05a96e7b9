/**
 * Reconnect delays: exponential, capped, jittered. Pure; the caller supplies the
 * random source so tests are deterministic.
 */

export interface BackoffOptions {
  /** Delay before the first retry. */
  initialMs: number;
  /** No delay exceeds this (before jitter is subtracted). */
  maxMs: number;
  /** Growth per attempt. */
  factor: number;
  /**
   * Fraction of the delay that is randomised, 0..1: the delay is drawn from
   * [d * (1 - jitter), d]. Spreads the reconnects of many agents after an
   * apiserver restart.
   */
  jitter: number;
}

export const DEFAULT_BACKOFF: Readonly<BackoffOptions> = { initialMs: 500, maxMs: 30_000, factor: 2, jitter: 0.5 };

/** Delay before retry number `attempt` (1 = first retry). */
export function backoffDelay(attempt: number, options: BackoffOptions = DEFAULT_BACKOFF, random: () => number = Math.random): number {
  const n = Math.max(1, Math.floor(attempt));
  const exp = options.initialMs * Math.pow(options.factor, n - 1);
  const capped = Math.min(options.maxMs, Number.isFinite(exp) ? exp : options.maxMs);
  const jitter = Math.min(1, Math.max(0, options.jitter));
  const r = Math.min(1, Math.max(0, random()));
  return Math.round(capped * (1 - jitter * r));
}

export function validateBackoff(options: BackoffOptions): void {
  const bad = (what: string) => {
    throw new RangeError(`backoff ${what}`);
  };
  if (!(options.initialMs > 0)) bad(`initialMs ${options.initialMs} must be > 0`);
  if (!(options.maxMs >= options.initialMs)) bad(`maxMs ${options.maxMs} must be >= initialMs ${options.initialMs}`);
  if (!(options.factor >= 1)) bad(`factor ${options.factor} must be >= 1`);
  if (!(options.jitter >= 0 && options.jitter <= 1)) bad(`jitter ${options.jitter} must be within 0..1`);
}
