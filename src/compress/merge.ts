/**
 * Merging evicted tokens into kept ones (see {@link MergeMode}): the plain TS reference of
 * shaders/merge_values.wgsl, used by the CPU stages and by the GPU-vs-reference tests.
 */
import { CAM_MERGE_SPAN, type MergeMode } from './options.js';

/**
 * Added to every token's attention mass before it weighs a merge: a head whose statistics are all zero (nothing
 * attended yet) then merges with equal weights instead of dividing by zero; next to real masses it is negligible.
 */
export const MERGE_WEIGHT_FLOOR = 1e-6;

/**
 * One head to merge: every token's key, value and attention mass in logical order, and the kept logical indices
 * (ascending, as the selection leaves them).
 */
export interface MergeHead {
  readonly headDim: number;
  /** `[tokens][headDim]`. */
  readonly keys: Float32Array;
  /** `[tokens][headDim]`. */
  readonly values: Float32Array;
  /** `[tokens]`: attention mass per query of each token (MergeMode's weight, raw: the floor is added here). */
  readonly mass: ArrayLike<number>;
  readonly kept: ArrayLike<number>;
}

/** Index of the first kept entry ≥ t (kept ascending), so kept.length when none is. */
function lowerBound(kept: ArrayLike<number>, t: number): number {
  let lo = 0;
  let hi = kept.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if ((kept[mid] ?? 0) < t) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The kept slot whose key is most cosine-similar to token t's (the earliest on ties; a zero key scores 0). */
function nearestKept(head: MergeHead, t: number): number {
  const { keys, kept, headDim } = head;
  let norm = 0;
  for (let d = 0; d < headDim; d++) norm += (keys[t * headDim + d] ?? 0) ** 2;
  let best = 0;
  let bestScore = Number.NEGATIVE_INFINITY;
  for (let s = 0; s < kept.length; s++) {
    const j = kept[s] ?? 0;
    let dot = 0;
    let keptNorm = 0;
    for (let d = 0; d < headDim; d++) {
      const kj = keys[j * headDim + d] ?? 0;
      dot += (keys[t * headDim + d] ?? 0) * kj;
      keptNorm += kj * kj;
    }
    const denominator = Math.sqrt(norm * keptNorm);
    const score = denominator > 0 ? dot / denominator : 0;
    if (score > bestScore) {
      bestScore = score;
      best = s;
    }
  }
  return best;
}

/**
 * The values the kept tokens of one head hold after merging, `[kept][headDim]` in kept order (keys and positions
 * are never changed). `none` returns the kept tokens' values as they are.
 *
 * @example
 * ```ts
 * const merged = mergeHeadValues('nearest', { headDim: 8, keys, values, mass: attnSum, kept });
 * ```
 */
export function mergeHeadValues(mode: MergeMode, head: MergeHead): Float32Array {
  const { values, kept, headDim, mass } = head;
  const n = values.length / headDim;
  const out = new Float32Array(kept.length * headDim);
  const weight = (t: number): number => Math.max(mass[t] ?? 0, 0) + MERGE_WEIGHT_FLOOR;
  if (mode === 'nearest') {
    const denominators = new Float64Array(kept.length);
    for (let s = 0; s < kept.length; s++) {
      const j = kept[s] ?? 0;
      const w = weight(j);
      denominators[s] = w;
      for (let d = 0; d < headDim; d++) out[s * headDim + d] = w * (values[j * headDim + d] ?? 0);
    }
    for (let t = 0, next = 0; t < n; t++) {
      if (next < kept.length && kept[next] === t) {
        next++;
        continue;
      }
      const s = nearestKept(head, t);
      const w = weight(t);
      denominators[s] = (denominators[s] ?? 0) + w;
      for (let d = 0; d < headDim; d++) out[s * headDim + d] = (out[s * headDim + d] ?? 0) + w * (values[t * headDim + d] ?? 0);
    }
    for (let s = 0; s < kept.length; s++) {
      const den = denominators[s] ?? 1;
      for (let d = 0; d < headDim; d++) out[s * headDim + d] = (out[s * headDim + d] ?? 0) / den;
    }
    return out;
  }
  for (let s = 0; s < kept.length; s++) {
    const j = kept[s] ?? 0;
    out.set(values.subarray(j * headDim, (j + 1) * headDim), s * headDim);
  }
  if (mode !== 'cam') return out;
  for (let t = 0, next = 0; t < n; t++) {
    if (next < kept.length && kept[next] === t) {
      next++;
      continue;
    }
    const first = lowerBound(kept, t);
    const span = Math.min(CAM_MERGE_SPAN, kept.length - first);
    if (span <= 0) continue;
    let targetMass = 0;
    for (let s = first; s < first + span; s++) targetMass += weight(kept[s] ?? 0);
    const share = Math.min(1, (weight(t) * span) / targetMass) / span;
    for (let s = first; s < first + span; s++) {
      for (let d = 0; d < headDim; d++) out[s * headDim + d] = (out[s * headDim + d] ?? 0) + share * (values[t * headDim + d] ?? 0);
    }
  }
  return out;
}
