import { describe, expect, it } from 'vitest';
import { UnknownPolicyError, InvalidArgumentError } from '../src/errors.js';
import type { ScoreInput } from '../src/compress/policy.js';
import { createPolicy, policyNames } from '../src/compress/registry.js';
import { mulberry32 } from '../src/random.js';
import { pool1d } from '../src/compress/policies/snapkv.js';
import { decodeAttention } from '../src/attention/reference-attention.js';

const nHeads = 4;
const kvHeads = 2;
const headDim = 8;
const seqLen = 40;
const w = 6;

function rand(n: number, seed: number): Float32Array {
  const next = mulberry32(seed);
  return Float32Array.from({ length: n }, () => next() * 2 - 1);
}

/** Head 0 keeps every position; head 1 already lost some (per-head eviction): lengths differ. */
function makeInput(seed = 1): ScoreInput {
  const positions = [
    Uint32Array.from({ length: seqLen }, (_, i) => i),
    Uint32Array.from({ length: seqLen }, (_, i) => i).filter((p) => p < 4 || p % 3 !== 0),
  ];
  const keys = positions.map((p, kv) => rand(p.length * headDim, seed * 10 + kv));
  const windowQueries = rand(w * nHeads * headDim, seed * 100);
  // Accumulate decode statistics over the window queries, as the cache would.
  const attnSum = positions.map((p) => new Float32Array(p.length));
  const attnSqSum = positions.map((p) => new Float32Array(p.length));
  const attnCount = positions.map((p) => new Uint32Array(p.length));
  for (let j = 0; j < w; j++) {
    const qpos = seqLen - w + j;
    const vis = positions.map((p) => Array.from(p).filter((x) => x <= qpos).length);
    const r = decodeAttention({
      q: windowQueries.subarray(j * nHeads * headDim, (j + 1) * nHeads * headDim),
      keys: keys.map((k, kv) => k.subarray(0, (vis[kv] ?? 0) * headDim)),
      values: keys.map((k, kv) => k.subarray(0, (vis[kv] ?? 0) * headDim)),
      nHeads,
      kvHeads,
      headDim,
    });
    for (let kv = 0; kv < kvHeads; kv++) {
      for (let t = 0; t < (vis[kv] ?? 0); t++) {
        attnSum[kv]![t]! += r.probsPerKvHead[kv]![t]!;
        attnSqSum[kv]![t]! += r.sqProbsPerKvHead[kv]![t]!;
        attnCount[kv]![t]! += 1;
      }
    }
  }
  return { nHeads, kvHeads, headDim, keys, positions, windowQueries, attnSum, attnSqSum, attnCount, seed: 7, layer: 2 };
}

describe.each(policyNames())('policy %s', (name) => {
  const options = { sinks: 2, recent: 4, window: w, kernelSize: 5 };
  const input = makeInput();

  it('returns one finite-or-+Inf score per cached token per KV head', () => {
    const scores = createPolicy(name, options).score(input);
    expect(scores.length).toBe(kvHeads);
    scores.forEach((s, kv) => {
      expect(s.length).toBe(input.positions[kv]!.length);
      for (const x of s) expect(Number.isNaN(x)).toBe(false);
    });
  });

  it('gives +Infinity to sinks and the recent window, and only to them (where scores are finite)', () => {
    const policy = createPolicy(name, options);
    const scores = policy.score(input);
    const recent = name === 'snapkv' ? Math.max(4, w) : 4;
    scores.forEach((s, kv) => {
      const pos = input.positions[kv]!;
      s.forEach((x, t) => {
        const p = pos[t] ?? 0;
        const prot = p < 2 || p >= seqLen - recent;
        expect(x === Infinity).toBe(prot);
      });
    });
  });

  it('is deterministic for the same input and seed', () => {
    const a = createPolicy(name, options).score(makeInput());
    const b = createPolicy(name, options).score(makeInput());
    expect(a).toEqual(b);
  });
});

describe('policy specifics', () => {
  const input = makeInput();
  const opts = { sinks: 0, recent: 0 };

  it('random: seed changes the scores, layer and head streams differ', () => {
    const p = createPolicy('random', opts);
    const a = p.score(input);
    const b = p.score({ ...input, seed: 8 });
    const c = p.score({ ...input, layer: 3 });
    expect(a[0]).not.toEqual(b[0]);
    expect(a[0]).not.toEqual(c[0]);
    expect(Array.from(a[0]!.subarray(0, 5))).not.toEqual(Array.from(a[1]!.subarray(0, 5)));
  });

  it('streaming: score = position', () => {
    const s = createPolicy('streaming', opts).score(input);
    expect(Array.from(s[1]!)).toEqual(Array.from(input.positions[1]!));
  });

  it('knorm: minus the key L2 norm', () => {
    const s = createPolicy('knorm', opts).score(input);
    const k = input.keys[0]!;
    let n2 = 0;
    for (let c = 0; c < headDim; c++) n2 += (k[3 * headDim + c] ?? 0) ** 2;
    expect(s[0]![3]).toBeCloseTo(-Math.sqrt(n2), 5);
  });

  it('h2o = attnSum / attnCount; kvcompress = attnSqSum', () => {
    const h = createPolicy('h2o', opts).score(input);
    const kc = createPolicy('kvcompress', opts).score(input);
    expect(h[1]![5]).toBeCloseTo((input.attnSum![1]![5] ?? 0) / (input.attnCount![1]![5] ?? 1), 6);
    expect(kc[0]![5]).toBe(input.attnSqSum![0]![5]);
  });

  it('tova: last query probabilities averaged over the group; snapkv: window mean, pooled', () => {
    // With window 1 and kernel 1 snapkv reduces to tova.
    const t = createPolicy('tova', opts).score(input);
    const s1 = createPolicy('snapkv', { ...opts, window: 1, kernelSize: 1 }).score(input);
    for (let kv = 0; kv < kvHeads; kv++) {
      const tv = t[kv]!;
      const sv = s1[kv]!;
      for (let i = 0; i < tv.length - 1; i++) expect(sv[i]).toBeCloseTo(tv[i] ?? 0, 6);
      // Averaged over the group of 2 query heads, each softmax sums to 1.
      expect(Array.from(tv).reduce((a, b) => a + (Number.isFinite(b) ? b : 0), 0)).toBeLessThanOrEqual(1 + 1e-5);
    }
  });

  it('snapkv pooling: max and avg with same padding', () => {
    const x = new Float32Array([0, 0, 5, 0, 0, 0, 1]);
    expect(Array.from(pool1d(x, 3, 'max'))).toEqual([0, 5, 5, 5, 0, 1, 1]);
    expect(Array.from(pool1d(x, 3, 'avg'))).toEqual(Array.from(new Float32Array([0, 5 / 3, 5 / 3, 5 / 3, 0, 1 / 3, 1 / 3])));
  });

  it('errors: unknown name, missing inputs, bad options', () => {
    expect(() => createPolicy('nope')).toThrow(UnknownPolicyError);
    expect(() => createPolicy('h2o').score({ ...input, attnSum: undefined })).toThrow(InvalidArgumentError);
    expect(() => createPolicy('snapkv').score({ ...input, windowQueries: undefined })).toThrow(InvalidArgumentError);
    expect(() => createPolicy('snapkv', { kernelSize: 4 })).toThrow(InvalidArgumentError);
    expect(() => createPolicy('knorm', { sinks: -1 })).toThrow(InvalidArgumentError);
  });
});
