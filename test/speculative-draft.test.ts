import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '../src/errors.js';
import { AdaptiveDraftLength, PromptLookup } from '../src/model/prompt-lookup.js';
import { createSampler } from '../src/model/sampling.js';
import { samplingDistribution, verifyDrafts } from '../src/model/speculative-sampling.js';
import { mulberry32 } from '../src/random.js';

/** The obvious O(n²) lookup, to check the index against. */
function naiveDraft(tokens: number[], max: number, lookupMax: number, lookupMin: number): number[] {
  for (let n = Math.min(lookupMax, tokens.length); n >= lookupMin; n--) {
    const suffix = tokens.slice(tokens.length - n).join(',');
    for (let start = tokens.length - n - 1; start >= 0; start--) {
      if (tokens.slice(start, start + n).join(',') === suffix) return tokens.slice(start + n, Math.min(tokens.length, start + n + max));
    }
  }
  return [];
}

describe('PromptLookup', () => {
  it('drafts what followed the latest earlier occurrence of the longest matching suffix', () => {
    const lookup = new PromptLookup({ lookupMax: 3, lookupMin: 1 });
    lookup.push([1, 5, 6, 7, 8, 2, 5, 6]);
    expect(lookup.draft(3)).toEqual([7, 8, 2]);
    lookup.push([9]);
    expect(lookup.draft(3)).toEqual([]); // 9 never occurred before
    lookup.push([5]);
    expect(lookup.draft(2)).toEqual([6, 9]); // "5" last occurred at index 6, followed by 6 9
    expect(lookup.draft(0)).toEqual([]);
  });

  it('matches the naive search on random texts, also after truncation', () => {
    const rand = mulberry32(3);
    for (let trial = 0; trial < 200; trial++) {
      const lookupMin = 1 + Math.floor(rand() * 2);
      const lookupMax = lookupMin + Math.floor(rand() * 3);
      const tokens = Array.from({ length: 5 + Math.floor(rand() * 60) }, () => Math.floor(rand() * 6));
      const lookup = new PromptLookup({ lookupMax, lookupMin });
      lookup.push(tokens);
      if (trial % 3 === 0) {
        const cut = Math.floor(rand() * tokens.length);
        lookup.truncate(cut);
        tokens.length = cut;
      }
      const max = 1 + Math.floor(rand() * 8);
      expect(lookup.draft(max)).toEqual(naiveDraft(tokens, max, lookupMax, lookupMin));
    }
  });

  it('rejects bad options', () => {
    expect(() => new PromptLookup({ lookupMin: 0 })).toThrow(InvalidArgumentError);
    expect(() => new PromptLookup({ lookupMax: 1, lookupMin: 2 })).toThrow(InvalidArgumentError);
    expect(() => new PromptLookup({ numSpeculative: 0 })).toThrow(InvalidArgumentError);
  });
});

describe('AdaptiveDraftLength', () => {
  it('drafts while drafts pay: long when accepted and cheap, none when rejected and costly, and probes again later', () => {
    const k = new AdaptiveDraftLength(10);
    // Prior acceptance ½ and the cost unknown: a short probe, so a miss where verification is dear costs little.
    expect(k.next()).toBe(AdaptiveDraftLength.PROBE_DRAFTS);
    for (let i = 0; i < 20; i++) k.record(2, 2);
    expect(k.next()).toBe(AdaptiveDraftLength.PROBE_DRAFTS);
    // Measured as almost free (a GPU verifies a few tokens for about the price of one): long drafts.
    k.record(0, 0, 10);
    k.record(2, 2, 10.2);
    expect(k.marginalCost).toBeLessThan(0.05);
    expect(k.next()).toBe(10);
    // Costly verification (each extra token 0.3 of a one-token pass) and drafts that miss: plain decoding.
    const costly = new AdaptiveDraftLength(10);
    costly.record(0, 0, 10);
    for (let i = 0; i < 10; i++) costly.record(4, 0, 22);
    expect(costly.marginalCost).toBeCloseTo(0.3, 1);
    expect(costly.next()).toBe(0);
    // Plain steps decay the evidence toward ½, so drafting is probed again.
    let probed = false;
    for (let i = 0; i < 40 && !probed; i++) {
      costly.record(0, 0, 10);
      probed = costly.next() > 0;
    }
    expect(probed).toBe(true);
    // The same costs with drafts that are kept: drafting pays.
    const paying = new AdaptiveDraftLength(10);
    paying.record(0, 0, 10);
    for (let i = 0; i < 10; i++) paying.record(4, 4, 22);
    expect(paying.next()).toBeGreaterThan(3);
  });

  it('with a known verification cost (a GPU\'s, ≈ 0.02 of a pass) drafts long at once and backs off when drafts miss', () => {
    const k = new AdaptiveDraftLength(10, 0.9, 0.02);
    // No probe limit and no timing pass: the cost is given (prior acceptance ½ pays for a few drafts).
    expect(k.next()).toBeGreaterThan(AdaptiveDraftLength.PROBE_DRAFTS);
    for (let i = 0; i < 20; i++) k.record(10, 0);
    expect(k.acceptance).toBeLessThan(0.1);
    expect(k.next()).toBeLessThanOrEqual(1);
    for (let i = 0; i < 20; i++) k.record(10, 10);
    expect(k.next()).toBe(10);
    expect(() => new AdaptiveDraftLength(10, 0.9, -1)).toThrow(InvalidArgumentError);
    expect(() => new AdaptiveDraftLength(10, 0.9, Number.NaN)).toThrow(InvalidArgumentError);
  });

  it('takes a plain step to time when every pass so far had drafts', () => {
    const k = new AdaptiveDraftLength(10);
    for (let i = 0; i < 3; i++) k.record(5, 5, 20);
    expect(k.next()).toBe(0);
    k.record(0, 0, 10);
    expect(k.next()).toBeGreaterThan(0);
  });
});

describe('verifyDrafts', () => {
  const vocab = 5;
  /** A toy model: logits of the next token given the previous one. */
  const model = (prev: number): Float32Array => Float32Array.from({ length: vocab }, (_, i) => Math.sin(1.7 * i + 2.3 * prev) * 2 + (i === (prev + 1) % vocab ? 1.5 : 0));

  it('greedy accepts the longest prefix equal to the argmax, then the argmax', () => {
    const rows = [Float32Array.of(0, 3, 1), Float32Array.of(2, 0, 1), Float32Array.of(0, 0, 5)];
    expect(verifyDrafts(rows, [1, 0], { temperature: 0 }, Math.random)).toEqual({ accepted: 2, tokens: [1, 0, 2] });
    expect(verifyDrafts(rows, [1, 2], { temperature: 0 }, Math.random)).toEqual({ accepted: 1, tokens: [1, 0] });
    expect(verifyDrafts(rows, [2, 2], { temperature: 0 }, Math.random)).toEqual({ accepted: 0, tokens: [1] });
    expect(() => verifyDrafts(rows, [1], { temperature: 0 }, Math.random)).toThrow(InvalidArgumentError);
  });

  it('samplingDistribution is what createSampler draws (top-p nucleus, renormalised)', () => {
    const logits = model(2);
    const q = samplingDistribution(logits, 0.8, 0.7);
    const sample = createSampler({ temperature: 0.8, topP: 0.7, seed: 5 });
    const counts = new Float64Array(vocab);
    const trials = 40000;
    for (let t = 0; t < trials; t++) counts[sample(logits)]! += 1;
    expect(chiSquare(counts, q, trials)).toBeLessThan(20.5); // df ≤ 4, p = 0.0004
    expect(q.some((x) => x === 0)).toBe(true); // the nucleus dropped something
  });

  it('speculative sampling keeps the joint distribution of the next two tokens exact', () => {
    for (const [temperature, topP] of [
      [1, 1],
      [0.7, 0.8],
    ] as const) {
      const rng = mulberry32(11);
      const start = 0;
      const drafts = [3, 1]; // a fixed guess, right or wrong
      const counts = new Float64Array(vocab * vocab);
      const trials = 60000;
      for (let t = 0; t < trials; t++) {
        const rows = [model(start), model(drafts[0]!), model(drafts[1]!)];
        const { tokens } = verifyDrafts(rows, drafts, { temperature, topP }, rng);
        // One token emitted: the second comes from the next pass (no drafts) after it.
        const second = tokens[1] ?? verifyDrafts([model(tokens[0]!)], [], { temperature, topP }, rng).tokens[0]!;
        counts[tokens[0]! * vocab + second]! += 1;
      }
      const expected = new Float64Array(vocab * vocab);
      const first = samplingDistribution(model(start), temperature, topP);
      for (let a = 0; a < vocab; a++) {
        const next = samplingDistribution(model(a), temperature, topP);
        for (let b = 0; b < vocab; b++) expected[a * vocab + b] = (first[a] ?? 0) * (next[b] ?? 0);
      }
      expect(chiSquare(counts, expected, trials)).toBeLessThan(45); // df ≤ 24, p ≈ 0.006
    }
  });

  it('a wrong acceptance rule fails the same check (the test can fail)', () => {
    const rng = mulberry32(12);
    const counts = new Float64Array(vocab);
    const trials = 20000;
    const q = samplingDistribution(model(0), 1, 1);
    for (let t = 0; t < trials; t++) {
      // Always accepting the draft is the classic bug.
      counts[rng() < 1 ? 3 : 0]! += 1;
    }
    expect(chiSquare(counts, q, trials)).toBeGreaterThan(1000);
  });
});

function chiSquare(counts: ArrayLike<number>, probs: ArrayLike<number>, trials: number): number {
  let chi = 0;
  for (let i = 0; i < counts.length; i++) {
    const expected = (probs[i] ?? 0) * trials;
    const observed = counts[i] ?? 0;
    if (expected === 0) {
      if (observed > 0) return Number.POSITIVE_INFINITY;
      continue;
    }
    chi += ((observed - expected) ** 2) / expected;
  }
  return chi;
}
