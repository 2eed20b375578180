/**
 * Top-k selection with a tie rule a GPU can reproduce: rank by score descending, ties broken by the LOWER
 * index first. Equivalently (see {@link thresholdForK}): keep every score above the k-th largest score, plus
 * the `keepEqual` lowest-indexed scores equal to it — a threshold and a count, which a compaction kernel can
 * apply with one prefix sum.
 */
import { InvalidArgumentError } from '../errors.js';

function checkScores(scores: Float32Array): void {
  for (let i = 0; i < scores.length; i++) {
    if (Number.isNaN(scores[i])) {
      throw new InvalidArgumentError('scores', `score ${i} is NaN; a scoring policy must return numbers`);
    }
  }
}

function checkK(k: number): void {
  if (!Number.isInteger(k) || k < 0) throw new InvalidArgumentError('k', `must be a non-negative integer; got ${k}`);
}

/**
 * Indices of tokens in descending score order, ties by lower index (a total order; stable on ties).
 *
 * @example
 * ```ts
 * rankByScore(new Float32Array([1, 3, 3])); // Uint32Array [1, 2, 0]
 * ```
 */
export function rankByScore(scores: Float32Array): Uint32Array {
  checkScores(scores);
  const order = Array.from({ length: scores.length }, (_, i) => i);
  order.sort((a, b) => {
    const sa = scores[a] ?? 0;
    const sb = scores[b] ?? 0;
    return sa > sb ? -1 : sa < sb ? 1 : a - b;
  });
  return Uint32Array.from(order);
}

/**
 * Indices of the `k` kept tokens, in ascending (original) order. `k ≥ scores.length` keeps all.
 *
 * @throws InvalidArgumentError for NaN scores or a negative / non-integer k.
 * @example
 * ```ts
 * selectTopK(new Float32Array([5, 1, 5, 5]), 2); // Uint32Array [0, 2] — the tie at 5 keeps lower indices
 * ```
 */
export function selectTopK(scores: Float32Array, k: number): Uint32Array {
  checkK(k);
  const ranked = rankByScore(scores);
  return ranked.slice(0, Math.min(k, scores.length)).sort();
}

/**
 * The k-th largest score and how many tokens equal to it are kept (the lowest-indexed ones).
 */
export interface Threshold {
  /** The k-th largest score (+Infinity when k = 0). */
  readonly threshold: number;
  /** Tokens with score === threshold that are kept, lowest indices first. */
  readonly keepEqual: number;
}

/**
 * Threshold form of {@link selectTopK}: token i is kept iff scores[i] > threshold, or scores[i] === threshold
 * and fewer than `keepEqual` tokens with index < i have score === threshold.
 *
 * @example
 * ```ts
 * thresholdForK(new Float32Array([5, 1, 5, 5]), 2); // { threshold: 5, keepEqual: 2 }
 * thresholdForK(new Float32Array([9, 1, 5, 5]), 2); // { threshold: 5, keepEqual: 1 }
 * ```
 */
export function thresholdForK(scores: Float32Array, k: number): Threshold {
  checkK(k);
  const kk = Math.min(k, scores.length);
  if (kk === 0) return { threshold: Infinity, keepEqual: 0 };
  checkScores(scores);
  const sorted = Float32Array.from(scores).sort();
  const threshold = sorted[sorted.length - kk] ?? 0;
  let above = 0;
  for (let i = 0; i < scores.length; i++) if ((scores[i] ?? 0) > threshold) above++;
  return { threshold, keepEqual: kk - above };
}

/**
 * Applies a threshold (see {@link thresholdForK}): the kept indices in ascending order.
 *
 * @example
 * ```ts
 * applyThreshold(new Float32Array([5, 1, 5, 5]), { threshold: 5, keepEqual: 2 }); // Uint32Array [0, 2]
 * ```
 */
export function applyThreshold(scores: Float32Array, t: Threshold): Uint32Array {
  const kept: number[] = [];
  let equal = 0;
  for (let i = 0; i < scores.length; i++) {
    const s = scores[i] ?? 0;
    if (s > t.threshold) kept.push(i);
    else if (s === t.threshold && equal < t.keepEqual) {
      kept.push(i);
      equal++;
    }
  }
  return Uint32Array.from(kept);
}
