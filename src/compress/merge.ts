/**
 * Merging evicted tokens into kept ones (see {@link MergeMode}): the plain TS reference of
 * shaders/merge_values.wgsl, used by the CPU stages and by the GPU-vs-reference tests.
 */
import { MERGE_CANDIDATES, MERGE_HASH_SEED, MERGE_WINDOW, ranksWindowExactly } from '../kernels/compress/merge-values.js';

export { ranksWindowExactly };
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

/** Which of channels 4i .. 4i + 3 the key hash negates (bit c for channel 4i + c): shaders/merge_common.wgsl hash_flips. */
function hashFlips(i: number): number {
  let x = Math.imul((i ^ MERGE_HASH_SEED) >>> 0, 0x9e3779b1) >>> 0;
  x = (x ^ (x >>> 16)) >>> 0;
  x = Math.imul(x, 0x85ebca6b) >>> 0;
  x = (x ^ (x >>> 13)) >>> 0;
  return x >>> 28;
}

/**
 * The 32-bit SimHash of the key at `keys[offset ..]` that MergeMode 'nearest' ranks kept tokens by: bit g is the
 * sign (> 0) of the key's projection on row g of H₃₂·F, where F negates channel d by a fixed seeded pattern
 * ({@link MERGE_HASH_SEED}) and sums it into group d mod 32, and H₃₂ is the 32-point Walsh–Hadamard matrix: 32
 * orthogonal dense ±1 directions. Every step is an f32 addition or subtraction in the order of
 * shaders/merge_common.wgsl key_hash (a Float32Array rounds each one), so GPU and reference agree on every bit.
 *
 * @example
 * ```ts
 * const near = popcount(keyHash(keys, a * headDim, headDim) ^ keyHash(keys, b * headDim, headDim)); // small: similar keys
 * ```
 */
export function keyHash(keys: ArrayLike<number>, offset: number, headDim: number): number {
  const u = new Float32Array(32);
  const headVecs = Math.ceil(headDim / 4);
  for (let i = 0; i < headVecs; i++) {
    const flips = hashFlips(i);
    const group = (i % 8) * 4;
    for (let c = 0; c < 4; c++) {
      const d = 4 * i + c;
      const x = d < headDim ? Math.fround(keys[offset + d] ?? 0) : 0;
      u[group + c] = (u[group + c] ?? 0) + ((flips >> c) & 1 ? -x : x);
    }
  }
  for (let h = 1; h < 32; h *= 2) {
    for (let j = 0; j < 32; j++) {
      if ((j & h) !== 0) continue;
      const a = u[j] ?? 0;
      const b = u[j + h] ?? 0;
      u[j] = a + b;
      u[j + h] = a - b;
    }
  }
  let bits = 0;
  for (let g = 0; g < 32; g++) if ((u[g] ?? 0) > 0) bits |= 1 << g;
  return bits >>> 0;
}

function popcount(x: number): number {
  let v = x >>> 0;
  v -= (v >>> 1) & 0x55555555;
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333);
  return (Math.imul((v + (v >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24) & 0xff;
}

/**
 * The first kept slot of the {@link MERGE_WINDOW} slots an evicted token whose first kept slot after it is `next`
 * looks at: centred on `next`, moved inside the head's kept slots.
 */
export function mergeWindowStart(kept: number, next: number): number {
  return Math.max(0, Math.min(next - MERGE_WINDOW / 2, kept - MERGE_WINDOW));
}

/**
 * The kept slots an evicted token with key hash `hash` re-ranks: among the {@link MERGE_WINDOW} kept slots around
 * `next` (its first kept slot after it, {@link mergeWindowStart}), the {@link MERGE_CANDIDATES} nearest in Hamming
 * distance to it (the earlier slot first on equal distance), all of them when the window holds no more. The window
 * keeps the scan linear in tokens (not evicted × kept).
 */
export function mergeCandidates(keptHashes: ArrayLike<number>, hash: number, next: number): number[] {
  const order: { slot: number; distance: number }[] = [];
  const start = mergeWindowStart(keptHashes.length, next);
  const end = Math.min(keptHashes.length, start + MERGE_WINDOW);
  for (let s = start; s < end; s++) order.push({ slot: s, distance: popcount((keptHashes[s] ?? 0) ^ hash) });
  order.sort((a, b) => a.distance - b.distance || a.slot - b.slot);
  return order.slice(0, MERGE_CANDIDATES).map((c) => c.slot);
}

/** Cosine similarity of tokens t and j of the head (0 when either key is zero). */
function cosine(head: MergeHead, t: number, j: number): number {
  const { keys, headDim } = head;
  let dot = 0;
  let norm = 0;
  let keptNorm = 0;
  for (let d = 0; d < headDim; d++) {
    const kt = keys[t * headDim + d] ?? 0;
    const kj = keys[j * headDim + d] ?? 0;
    dot += kt * kj;
    norm += kt * kt;
    keptNorm += kj * kj;
  }
  const denominator = Math.sqrt(norm * keptNorm);
  return denominator > 0 ? dot / denominator : 0;
}

/**
 * The kept slot token t folds into: among its {@link mergeCandidates} (`keptHashes` null: every slot of its
 * window, {@link ranksWindowExactly}), the one whose key is most cosine-similar to token t's (the earliest slot on
 * ties).
 */
function nearestKept(head: MergeHead, keptHashes: ArrayLike<number> | null, t: number): number {
  let best = 0;
  let bestScore = Number.NEGATIVE_INFINITY;
  const next = lowerBound(head.kept, t);
  const start = mergeWindowStart(head.kept.length, next);
  const slots = keptHashes
    ? mergeCandidates(keptHashes, keyHash(head.keys, t * head.headDim, head.headDim), next)
    : Array.from({ length: Math.min(head.kept.length, start + MERGE_WINDOW) - start }, (_, i) => start + i);
  for (const s of slots) {
    const score = cosine(head, t, head.kept[s] ?? 0);
    if (score > bestScore || (score === bestScore && s < best)) {
      bestScore = score;
      best = s;
    }
  }
  return best;
}

/**
 * The exact-nearest kept slot of token t over all kept keys (largest cosine, earliest on ties): what
 * MergeMode 'nearest' approximates; the benchmarks and tests measure how often {@link nearestKept} agrees.
 *
 * @example
 * ```ts
 * const agree = evicted.filter((t) => mergeTargets(head)[t] === exactNearestKept(head, t)).length;
 * ```
 */
export function exactNearestKept(head: MergeHead, t: number): number {
  let best = 0;
  let bestScore = Number.NEGATIVE_INFINITY;
  for (let s = 0; s < head.kept.length; s++) {
    const score = cosine(head, t, head.kept[s] ?? 0);
    if (score > bestScore) {
      bestScore = score;
      best = s;
    }
  }
  return best;
}

/**
 * Where each token of the head folds under MergeMode 'nearest': its kept slot, -1 for kept tokens.
 *
 * @example
 * ```ts
 * const targets = mergeTargets({ headDim: 8, keys, values, mass, kept }); // Int32Array [tokens]
 * ```
 */
export function mergeTargets(head: MergeHead): Int32Array {
  const { kept, headDim } = head;
  const n = head.keys.length / headDim;
  const keptHashes = ranksWindowExactly(n, kept.length) ? null : Uint32Array.from(kept, (j) => keyHash(head.keys, j * headDim, headDim));
  const targets = new Int32Array(n);
  for (let t = 0, next = 0; t < n; t++) {
    if (next < kept.length && kept[next] === t) {
      next++;
      targets[t] = -1;
      continue;
    }
    targets[t] = nearestKept(head, keptHashes, t);
  }
  return targets;
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
    const targets = mergeTargets(head);
    for (let t = 0; t < n; t++) {
      const s = targets[t] ?? -1;
      if (s < 0) continue;
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
