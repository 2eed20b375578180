import { describe, expect, it } from 'vitest';
import { decodeAttention, prefillAttention } from '../src/attention/reference-attention.js';
import { mulberry32 } from '../src/random.js';

function rand(n: number, seed: number, spread = 1): Float32Array {
  const next = mulberry32(seed);
  return Float32Array.from({ length: n }, () => (next() * 2 - 1) * spread);
}

/** Naive: per query head, explicit logits, softmax without the max trick (small logits only). */
function naive(q: Float32Array, k: Float32Array, v: Float32Array, tokens: number, d: number, visible: boolean[]) {
  const logits = Array.from({ length: tokens }, (_, t) => {
    let s = 0;
    for (let c = 0; c < d; c++) s += (q[c] ?? 0) * (k[t * d + c] ?? 0);
    return visible[t] ? Math.exp(s / Math.sqrt(d)) : 0;
  });
  const z = logits.reduce((a, b) => a + b, 0);
  const p = logits.map((x) => x / z);
  const out = Array.from({ length: d }, (_, c) => p.reduce((a, pt, t) => a + pt * (v[t * d + c] ?? 0), 0));
  return { p, out };
}

describe('decodeAttention', () => {
  const nHeads = 6;
  const kvHeads = 2;
  const d = 8;
  const tokens = [5, 9]; // per-head eviction: heads differ in length
  const q = rand(nHeads * d, 1);
  const keys = tokens.map((n, i) => rand(n * d, 10 + i));
  const values = tokens.map((n, i) => rand(n * d, 20 + i));
  const r = decodeAttention({ q, keys, values, nHeads, kvHeads, headDim: d });

  it('matches a naive implementation with GQA head mapping', () => {
    for (let h = 0; h < nHeads; h++) {
      const kv = Math.floor(h / 3);
      const n = tokens[kv] ?? 0;
      const ref = naive(q.subarray(h * d, (h + 1) * d), keys[kv]!, values[kv]!, n, d, Array(n).fill(true));
      for (let c = 0; c < d; c++) expect(r.out[h * d + c]).toBeCloseTo(ref.out[c] ?? 0, 5);
    }
  });

  it('probabilities per KV head sum to the group size', () => {
    for (let kv = 0; kv < kvHeads; kv++) {
      const s = Array.from(r.probsPerKvHead[kv]!).reduce((a, b) => a + b, 0);
      expect(s).toBeCloseTo(3, 5);
      expect(r.probsPerKvHead[kv]!.length).toBe(tokens[kv]);
      const sq = r.sqProbsPerKvHead[kv]!;
      for (let t = 0; t < sq.length; t++) expect(sq[t]).toBeLessThanOrEqual((r.probsPerKvHead[kv]![t] ?? 0) + 1e-6);
    }
  });

  it('is stable for huge logits', () => {
    const big = decodeAttention({ q: rand(2 * d, 3, 1000), keys: [rand(4 * d, 4, 1000)], values: [rand(4 * d, 5)], nHeads: 2, kvHeads: 1, headDim: d });
    for (const x of big.out) expect(Number.isFinite(x)).toBe(true);
    expect(Array.from(big.probsPerKvHead[0]!).reduce((a, b) => a + b, 0)).toBeCloseTo(2, 5);
  });

  it('gives a zero row for an empty head', () => {
    const e = decodeAttention({ q: rand(d, 1), keys: [new Float32Array(0)], values: [new Float32Array(0)], nHeads: 1, kvHeads: 1, headDim: d });
    expect(Array.from(e.out)).toEqual(Array(d).fill(0));
  });
});

describe('prefillAttention', () => {
  const nHeads = 4;
  const kvHeads = 2;
  const d = 4;
  const n = 7;
  const keyPositions = Uint32Array.from({ length: n }, (_, i) => i * 2);
  const queryPositions = new Uint32Array([3, 8, 12]);
  const q = rand(3 * nHeads * d, 7);
  const keys = [rand(n * d, 8), rand(n * d, 9)];
  const values = [rand(n * d, 10), rand(n * d, 11)];
  const r = prefillAttention({ q, queryPositions, keys, values, keyPositions: [keyPositions, keyPositions], nHeads, kvHeads, headDim: d, returnProbs: true });

  it('is causal by position and matches the naive reference', () => {
    for (let i = 0; i < 3; i++) {
      const visible = Array.from(keyPositions, (p) => p <= (queryPositions[i] ?? 0));
      for (let h = 0; h < nHeads; h++) {
        const kv = Math.floor(h / 2);
        const row = (i * nHeads + h) * d;
        const ref = naive(q.subarray(row, row + d), keys[kv]!, values[kv]!, n, d, visible);
        for (let c = 0; c < d; c++) expect(r.out[row + c]).toBeCloseTo(ref.out[c] ?? 0, 5);
      }
      for (let kv = 0; kv < kvHeads; kv++) {
        const pq = r.probsPerQuery![kv]!.subarray(i * n, (i + 1) * n);
        expect(Array.from(pq).reduce((a, b) => a + b, 0)).toBeCloseTo(2, 5);
        pq.forEach((p, t) => {
          if (!visible[t]) expect(p).toBe(0);
        });
      }
    }
    expect(Array.from(r.visibleCount[0]!)).toEqual([3, 3, 2, 2, 2, 1, 1]);
    expect(Array.from(r.probsPerKvHead[0]!).reduce((a, b) => a + b, 0)).toBeCloseTo(6, 4);
  });
});
