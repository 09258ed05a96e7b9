/**
 * Which number a new label set tries first, and in what order it probes on.
 *
 * The first candidate is derived from the labels hash, then candidates follow
 * linearly (wrapping within 256..65535), skipping numbers the caller knows are
 * held by other labels. Every agent computes the same sequence for the same
 * labels, so agents racing on one label set try the same numbers in the same
 * order, and the apiserver (create = 409 if the name exists) picks one winner.
 * The sequence visits every cluster number exactly once, so it only ends when
 * the space is exhausted.
 */
import { MAX_CLUSTER_IDENTITY, MIN_CLUSTER_IDENTITY } from './reserved.js';

export const CLUSTER_IDENTITY_COUNT = MAX_CLUSTER_IDENTITY - MIN_CLUSTER_IDENTITY + 1;

/** The first candidate for a labels hash (hex): the first 48 bits, modulo the range. */
export function firstCandidate(hash: string): number {
  if (!/^[0-9a-f]{12,}$/.test(hash)) throw new RangeError(`${JSON.stringify(hash)} is not a hex labels hash`);
  const n = parseInt(hash.slice(0, 12), 16);
  return MIN_CLUSTER_IDENTITY + (n % CLUSTER_IDENTITY_COUNT);
}

/** Candidates in probe order, skipping those `taken` says are held by other labels. */
export function* candidates(hash: string, taken: (id: number) => boolean = () => false): Generator<number> {
  const start = firstCandidate(hash) - MIN_CLUSTER_IDENTITY;
  for (let i = 0; i < CLUSTER_IDENTITY_COUNT; i++) {
    const id = MIN_CLUSTER_IDENTITY + ((start + i) % CLUSTER_IDENTITY_COUNT);
    if (!taken(id)) yield id;
  }
}
