// MergeMode 'slots', the rule alone (src/compress/merge-slots.ts): mass-weighted running means that persist their
// mass, so absorbing in two compressions equals absorbing in one; awkward sizes (1, 63, 65 tokens; no evictions).
import { describe, expect, it } from 'vitest';
import { MERGE_WEIGHT_FLOOR } from '../src/compress/merge.js';
import { absorbIntoSlots, emptySlots, type EvictedTokens } from '../src/compress/merge-slots.js';
import { seededRandom } from './helpers/gpu.js';

function randomTokens(n: number, headDim: number, seed: number, firstPosition = 0): EvictedTokens {
  const random = seededRandom(seed);
  return {
    keys: Float32Array.from({ length: n * headDim }, () => random() - 0.5),
    values: Float32Array.from({ length: n * headDim }, () => random() - 0.5),
    positions: Uint32Array.from({ length: n }, (_, i) => firstPosition + i),
    mass: Float32Array.from({ length: n }, () => random()),
  };
}

function slice(tokens: EvictedTokens, from: number, to: number, headDim: number): EvictedTokens {
  return {
    keys: tokens.keys.slice(from * headDim, to * headDim),
    values: tokens.values.slice(from * headDim, to * headDim),
    positions: Uint32Array.from(Array.from(tokens.positions).slice(from, to)),
    mass: Float32Array.from(Array.from(tokens.mass).slice(from, to)),
  };
}

describe('absorbIntoSlots (the slots reference)', () => {
  it('fills empty slots first, then joins the most cosine-similar slot, as mass-weighted means', () => {
    // head_dim 2, 2 slots: tokens 0 (x) and 1 (y) fill them; token 2 (x, w 3) joins slot 0, token 3 (−y) is
    // opposite slot 1 (cosine −1) and orthogonal to slot 0 (0): it joins slot 0, the larger cosine.
    const evicted: EvictedTokens = {
      keys: Float32Array.from([1, 0, 0, 1, 2, 0, 0, -1]),
      values: Float32Array.from([1, 1, 2, 2, 3, 3, 4, 4]),
      positions: Uint32Array.from([5, 6, 7, 8]),
      mass: Float32Array.from([1, 1, 3, 0]),
    };
    const slots = absorbIntoSlots(emptySlots(2, 2), evicted);
    expect(slots.count).toBe(2);
    const w = (m: number): number => m + MERGE_WEIGHT_FLOOR;
    const total = w(1) + w(3) + w(0);
    expect(slots.values[0]).toBeCloseTo((w(1) * 1 + w(3) * 3 + w(0) * 4) / total, 5);
    expect(slots.keys[0]).toBeCloseTo((w(1) * 1 + w(3) * 2) / total, 5);
    expect(slots.keys[1]).toBeCloseTo(-w(0) / total, 5);
    expect(Array.from(slots.values.subarray(2, 4))).toEqual([2, 2]);
    expect(slots.mass[0]).toBeCloseTo(total, 9);
    // The earliest absorbed position, so every query that saw an absorbed token sees the slot.
    expect(Array.from(slots.positions)).toEqual([5, 6]);
  });

  for (const n of [1, 63, 65]) {
    it(`absorbing ${n} tokens in two compressions equals absorbing them in one (the mass persists)`, () => {
      const headDim = 8;
      const tokens = randomTokens(n, headDim, n);
      const once = absorbIntoSlots(emptySlots(4, headDim), tokens);
      const split = Math.floor(n / 2);
      const twice = absorbIntoSlots(absorbIntoSlots(emptySlots(4, headDim), slice(tokens, 0, split, headDim)), slice(tokens, split, n, headDim));
      expect(twice.count).toBe(Math.min(4, n));
      expect(Array.from(twice.keys)).toEqual(Array.from(once.keys));
      expect(Array.from(twice.values)).toEqual(Array.from(once.values));
      expect(Array.from(twice.mass)).toEqual(Array.from(once.mass));
      // Every token's weight is held by exactly one slot.
      let sum = 0;
      for (let t = 0; t < n; t++) sum += (tokens.mass[t] ?? 0) + MERGE_WEIGHT_FLOOR;
      expect(once.mass.reduce((a, b) => a + b, 0)).toBeCloseTo(sum, 6);
      // Each slot's value is a convex combination: within the range of the absorbed values per channel.
      const max = Math.max(...tokens.values);
      const min = Math.min(...tokens.values);
      for (const x of once.values.subarray(0, once.count * headDim)) {
        expect(x).toBeLessThanOrEqual(max + 1e-6);
        expect(x).toBeGreaterThanOrEqual(min - 1e-6);
      }
    });
  }

  it('a head with no evictions leaves its slots as they were (a new object)', () => {
    const before = absorbIntoSlots(emptySlots(2, 4), randomTokens(5, 4, 3));
    const after = absorbIntoSlots(before, randomTokens(0, 4, 4));
    expect(after).not.toBe(before);
    expect(after).toEqual(before);
  });
});
