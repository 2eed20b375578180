import { describe, expect, it } from 'vitest';
import { applyThreshold, rankByScore, selectTopK, thresholdForK } from '../src/compress/select.js';
import { mulberry32 } from '../src/random.js';
import { InvalidArgumentError } from '../src/errors.js';

describe('selectTopK', () => {
  it('keeps ascending indices, ties by lower index', () => {
    expect(Array.from(selectTopK(new Float32Array([5, 1, 5, 5]), 2))).toEqual([0, 2]);
    expect(Array.from(selectTopK(new Float32Array([1, 9, 1, Infinity]), 3))).toEqual([0, 1, 3]);
    expect(Array.from(selectTopK(new Float32Array([3, 2, 1]), 0))).toEqual([]);
    expect(Array.from(selectTopK(new Float32Array([3, 2, 1]), 10))).toEqual([0, 1, 2]);
    expect(Array.from(rankByScore(new Float32Array([1, 3, 3])))).toEqual([1, 2, 0]);
  });

  it('agrees with the threshold form on random data with many ties', () => {
    const next = mulberry32(3);
    for (let trial = 0; trial < 50; trial++) {
      const n = 1 + Math.floor(next() * 60);
      const s = Float32Array.from({ length: n }, () => Math.floor(next() * 5));
      const k = Math.floor(next() * (n + 2));
      const t = thresholdForK(s, k);
      expect(Array.from(applyThreshold(s, t))).toEqual(Array.from(selectTopK(s, k)));
    }
  });

  it('thresholdForK reports the k-th score and the equal count', () => {
    expect(thresholdForK(new Float32Array([5, 1, 5, 5]), 2)).toEqual({ threshold: 5, keepEqual: 2 });
    expect(thresholdForK(new Float32Array([9, 1, 5, 5]), 2)).toEqual({ threshold: 5, keepEqual: 1 });
    expect(thresholdForK(new Float32Array([9, 1]), 0)).toEqual({ threshold: Infinity, keepEqual: 0 });
  });

  it('rejects NaN and bad k', () => {
    expect(() => selectTopK(new Float32Array([NaN]), 1)).toThrow(InvalidArgumentError);
    expect(() => selectTopK(new Float32Array([1]), -1)).toThrow(InvalidArgumentError);
    expect(() => thresholdForK(new Float32Array([NaN, 1]), 1)).toThrow(InvalidArgumentError);
  });
});
