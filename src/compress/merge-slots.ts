/**
 * MergeMode 'slots', the rule alone (plain TS reference): M summary tokens per head that absorb the evicted tokens
 * recurrently. Not wired into compress yet (resolveCompressOptions still rejects 'slots'); this is the reference the
 * engines' implementations will be tested against, and it fixes the rule:
 *
 * - A slot holds a key, a value, a position and an accumulated mass W. Absorbing a token (k, v, w) makes
 *   K ← (W K + w k) / (W + w), V likewise, W ← W + w: each slot is the mass-weighted mean of every token it ever
 *   absorbed, whatever the order of compressions (the mass persists, so a later eviction folds in with the right
 *   weight against all the earlier ones).
 * - Keys are averaged as the cache holds them, after RoPE. That is what the merge rule means and all it needs: a
 *   query q rotated at its own position gives q·K = Σ w_i (q·k_i) / Σ w_i, the mass-weighted mean of the logits the
 *   absorbed tokens would have had (each k_i already carries its own rotation, so no position has to be re-applied).
 *   The softmax of that mean is not the mean of the softmaxes (it under-weighs a peaked token), which is the price
 *   of a summary; un-rotating to average pre-RoPE keys would instead need one position for the blend and be wrong
 *   for every absorbed token but one.
 * - A slot's position is the earliest absorbed position, so every query that could see any absorbed token sees the
 *   slot (causal masks compare positions).
 * - Evicted tokens are taken in logical (= position) order; a token fills the first empty slot, else joins the slot
 *   whose key is most cosine-similar to its own (the earliest on ties; a zero key scores 0), as 'nearest' chooses.
 * - Weights are {@link MERGE_WEIGHT_FLOOR} + max(mass, 0), as for the other modes.
 */
import { MERGE_WEIGHT_FLOOR } from './merge.js';

/** The slots of one head: `count` of `capacity` are in use (the rest zero). */
export interface MergeSlots {
  readonly headDim: number;
  readonly capacity: number;
  readonly count: number;
  /** `[capacity][headDim]`. */
  readonly keys: Float32Array;
  /** `[capacity][headDim]`. */
  readonly values: Float32Array;
  /** `[capacity]`: the earliest position each slot absorbed. */
  readonly positions: Uint32Array;
  /** `[capacity]`: Σ weight absorbed (f64: a slot may absorb thousands of tokens over a generation). */
  readonly mass: Float64Array;
}

/**
 * Empty slots for one head.
 *
 * @example
 * ```ts
 * let slots = emptySlots(2, 64);
 * ```
 */
export function emptySlots(capacity: number, headDim: number): MergeSlots {
  return {
    headDim,
    capacity,
    count: 0,
    keys: new Float32Array(capacity * headDim),
    values: new Float32Array(capacity * headDim),
    positions: new Uint32Array(capacity),
    mass: new Float64Array(capacity),
  };
}

/** Evicted tokens of one head, in logical order. */
export interface EvictedTokens {
  /** `[n][headDim]`, post-RoPE as cached. */
  readonly keys: Float32Array;
  /** `[n][headDim]`. */
  readonly values: Float32Array;
  readonly positions: ArrayLike<number>;
  /** `[n]`: attention mass per query (raw: the floor is added here). */
  readonly mass: ArrayLike<number>;
}

function cosine(a: Float32Array, aBase: number, b: Float32Array, bBase: number, headDim: number): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let d = 0; d < headDim; d++) {
    const x = a[aBase + d] ?? 0;
    const y = b[bBase + d] ?? 0;
    dot += x * y;
    na += x * x;
    nb += y * y;
  }
  const denominator = Math.sqrt(na * nb);
  return denominator > 0 ? dot / denominator : 0;
}

/**
 * The slots after absorbing `evicted` (a new object; the input is not changed). Absorbing A and then B gives the
 * slots that absorbing A followed by B at once gives: the recurrence a sequence of compressions runs.
 *
 * @example
 * ```ts
 * slots = absorbIntoSlots(slots, { keys, values, positions, mass });
 * ```
 */
export function absorbIntoSlots(slots: MergeSlots, evicted: EvictedTokens): MergeSlots {
  const { headDim, capacity } = slots;
  const keys = Float32Array.from(slots.keys);
  const values = Float32Array.from(slots.values);
  const positions = Uint32Array.from(slots.positions);
  const mass = Float64Array.from(slots.mass);
  let count = slots.count;
  const n = evicted.keys.length / headDim;
  for (let t = 0; t < n; t++) {
    const w = Math.max(evicted.mass[t] ?? 0, 0) + MERGE_WEIGHT_FLOOR;
    let s = count;
    if (count < capacity) {
      count++;
      positions[s] = evicted.positions[t] ?? 0;
    } else {
      let best = Number.NEGATIVE_INFINITY;
      for (let c = 0; c < capacity; c++) {
        const score = cosine(evicted.keys, t * headDim, keys, c * headDim, headDim);
        if (score > best) {
          best = score;
          s = c;
        }
      }
      positions[s] = Math.min(positions[s] ?? 0, evicted.positions[t] ?? 0);
    }
    const before = mass[s] ?? 0;
    const total = before + w;
    for (let d = 0; d < headDim; d++) {
      const i = s * headDim + d;
      keys[i] = ((keys[i] ?? 0) * before + w * (evicted.keys[t * headDim + d] ?? 0)) / total;
      values[i] = ((values[i] ?? 0) * before + w * (evicted.values[t * headDim + d] ?? 0)) / total;
    }
    mass[s] = total;
  }
  return { headDim, capacity, count, keys, values, positions, mass };
}
