import { beforeAll, describe, expect, it } from 'vitest';
import { assertInvariants } from '../src/cache/invariants.js';
import { baselineF16Bytes, decodeBlockRef } from '../src/format/layout.js';
import { allocateBudgets, BUDGET_MODES, budgetCap, smallestHeadBudget } from '../src/compress/budgets.js';
import { clampProtection } from '../src/compress/pipeline.js';
import type { ScoreInput } from '../src/compress/policy.js';
import { createPolicy, policyNames } from '../src/compress/registry.js';
import { selectTopK } from '../src/compress/select.js';
import { InvalidArgumentError, NonFiniteValueError, UnknownPolicyError } from '../src/errors.js';
import { parseCheckpoint, type LlamaCheckpoint } from '../src/model/checkpoint.js';
import { ReferenceLlama } from '../src/model/reference-forward.js';
import { argmax } from '../src/model/sampling.js';
import { decodeAttention } from '../src/attention/reference-attention.js';
import { CpuKvCache } from '../src/engine/cpu-kv-cache.js';
import { sharedBytes, sharedText } from './model-helpers.js';

const checkpoint: LlamaCheckpoint = parseCheckpoint(sharedBytes('models/stories260K.bin'));
const { nLayers, nKvHeads, headSize, nHeads } = checkpoint.config;
const shape = { layers: nLayers, kvHeads: nKvHeads, headDim: headSize };
const greedy = JSON.parse(sharedText('data/stories260K_greedy_reference.json')) as { tokens: number[] };

/** A cache with `steps` tokens of the greedy reference run through the model (stats and window recorded). */
function driven(steps: number, options: { fullFormat?: 'f32' | 'f16'; quantBits?: 8 | 4 | 2; seq?: number } = {}): CpuKvCache {
  const cache = CpuKvCache.create({
    shape,
    nHeads,
    fullFormat: options.fullFormat ?? 'f16',
    ...(options.quantBits ? { quantBits: options.quantBits } : {}),
    maxTokensPerHead: 512,
    seqSlots: 4,
  });
  const seq = options.seq ?? 0;
  cache.addSequence(seq);
  const model = new ReferenceLlama(checkpoint, { attention: cache.attentionHook(seq) });
  for (let pos = 0; pos < steps; pos++) model.forward(greedy.tokens[pos]!, pos);
  return cache;
}

/** Everything observable about a cache, to prove an operation left it untouched. */
function fingerprint(cache: CpuKvCache, seq: number): string {
  const heads: unknown[] = [];
  for (let l = 0; l < nLayers; l++) {
    for (let h = 0; h < nKvHeads; h++) {
      const head = cache.readHead(seq, l, h);
      const stats = cache.stats(seq, l, h);
      heads.push([cache.meta.headBlocks(seq, l, h), Array.from(head.keys), Array.from(head.positions), Array.from(stats.attnSum), Array.from(stats.attnCount)]);
    }
  }
  return JSON.stringify({
    heads,
    full: cache.meta.poolUsage('full'),
    quant: cache.meta.poolUsage('quant'),
    words: Array.from({ length: cache.meta.shape.layers }, (_, l) => Array.from(cache.poolWords('full', l)).join(',')).join(';'),
    qwords: Array.from({ length: cache.meta.shape.layers }, (_, l) => Array.from(cache.poolWords('quant', l)).join(',')).join(';'),
    length: cache.sequenceLength(seq),
  });
}

/** The score input the policies see, rebuilt through the public API. */
function scoreInput(cache: CpuKvCache, seq: number, layer: number, window: number): ScoreInput {
  const heads = Array.from({ length: nKvHeads }, (_, h) => ({ ...cache.readHead(seq, layer, h), ...cache.stats(seq, layer, h) }));
  const w = cache.windowQueries(seq, layer, window);
  return {
    nHeads,
    kvHeads: nKvHeads,
    headDim: headSize,
    keys: heads.map((h) => h.keys),
    positions: heads.map((h) => h.positions),
    windowQueries: w.queries,
    windowPositions: w.positions,
    attnSum: heads.map((h) => h.attnSum),
    attnSqSum: heads.map((h) => h.attnSqSum),
    attnCount: heads.map((h) => h.attnCount),
    sequenceLength: cache.sequenceLength(seq),
    layer,
    seed: 0,
  };
}

describe('CpuKvCache attention', () => {
  it('reproduces the greedy 256-step reference exactly through the hook (f32, no compression)', () => {
    const cache = CpuKvCache.create({ shape, nHeads, fullFormat: 'f32', maxTokensPerHead: 512 });
    cache.addSequence(0);
    const model = new ReferenceLlama(checkpoint, { attention: cache.attentionHook(0) });
    const dense = new ReferenceLlama(checkpoint);
    const ids = [1];
    let worst = 0;
    for (let pos = 0; pos < 256; pos++) {
      const logits = model.forward(ids[pos]!, pos);
      if (pos % 32 === 0) {
        const want = dense.forward(ids[pos]!, pos);
        for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(want[i]! - logits[i]!));
      } else {
        dense.forward(ids[pos]!, pos);
      }
      ids.push(argmax(logits));
      if (pos % 64 === 63) assertInvariants(cache.meta);
    }
    expect(ids).toEqual(greedy.tokens);
    expect(worst).toBeLessThan(1e-3);
    // Statistics: one visible query per later position, probabilities summing to the group size per query.
    const stats = cache.stats(0, 2, 1);
    expect(stats.attnCount[0]).toBe(256);
    expect(stats.attnCount[255]).toBe(1);
    let mass = 0;
    for (const p of stats.attnSum) mass += p;
    expect(mass).toBeCloseTo(256 * (nHeads / nKvHeads), 3);
    const w = cache.windowQueries(0, 0);
    expect(Array.from(w.positions)).toEqual(Array.from({ length: 32 }, (_, j) => 224 + j));
  });

  it('attends over f16 blocks like the reference attention on the decoded head, across block boundaries', () => {
    const cache = driven(70);
    const q = Float32Array.from({ length: nHeads * headSize }, (_, i) => Math.sin(i));
    const { out, probsPerKvHead } = cache.attend(0, 3, q);
    const heads = Array.from({ length: nKvHeads }, (_, h) => cache.readHead(0, 3, h));
    const want = decodeAttention({ q, keys: heads.map((h) => h.keys), values: heads.map((h) => h.values), nHeads, kvHeads: nKvHeads, headDim: headSize });
    expect(Array.from(out)).toEqual(Array.from(want.out));
    expect(probsPerKvHead[0]?.length).toBe(70);
    expect(Array.from(heads[0]!.positions)).toEqual(Array.from({ length: 70 }, (_, i) => i));
  });

  it('forks share blocks and copy on write; appends validate input first', async () => {
    const cache = driven(40);
    cache.fork(0, 1);
    assertInvariants(cache.meta);
    expect(cache.meta.headBlocks(1, 0, 0)).toEqual(cache.meta.headBlocks(0, 0, 0));
    expect(cache.stats(1, 1, 1)).toEqual(cache.stats(0, 1, 1));
    const perToken = nLayers * nKvHeads * headSize;
    const k = Float32Array.from({ length: perToken }, (_, i) => i / 100);
    cache.append(1, k, k);
    assertInvariants(cache.meta);
    const a = cache.meta.headBlocks(0, 0, 0);
    const b = cache.meta.headBlocks(1, 0, 0);
    expect(b.slice(0, -1)).toEqual(a.slice(0, -1));
    expect(b.at(-1)).not.toBe(a.at(-1)); // the shared partly filled block was copied
    expect(cache.readHead(0, 0, 0).keys).toEqual(cache.readHead(1, 0, 0).keys.subarray(0, 40 * headSize));
    expect(cache.tokenCount(1, 0, 0)).toBe(41);
    const before = fingerprint(cache, 1);
    const bad = Float32Array.from(k);
    bad[5] = NaN;
    await expect(cache.append(1, bad, k)).rejects.toThrow(NonFiniteValueError);
    bad[5] = 1e6; // past f16's ±65504: the same error as the GPU cache's
    await expect(cache.append(1, bad, k)).rejects.toThrow(NonFiniteValueError); // outside f16
    expect(fingerprint(cache, 1)).toBe(before);
    cache.freeSequence(1);
    assertInvariants(cache.meta);
  });
});

describe('CpuKvCache.compress', () => {
  let base: CpuKvCache;
  beforeAll(() => {
    base = driven(150);
  });

  it('keeps exactly selectTopK of the policy scores per head, within layers × kvHeads × B, for every policy and mode', async () => {
    const budget = 40;
    for (const policy of policyNames()) {
      for (const mode of BUDGET_MODES) {
        base.fork(0, 1);
        const inputs = Array.from({ length: nLayers }, (_, l) => scoreInput(base, 1, l, 32));
        // The compressor's protection rule: clamped newest-first to the smallest budget a head may get.
        const headBudget = smallestHeadBudget(mode, budget, nLayers);
        const { sinks, recent } = clampProtection(4, 16, headBudget);
        const scorer = createPolicy(policy, { sinks, recent, recentLimit: headBudget - sinks, window: 32, seed: 0 });
        const scores = inputs.map((input) => scorer.score(input));
        const counts = allocateBudgets(scores, { mode, budget });
        const report = await base.compress(1, { policy, budget, budgetMode: mode, recent: 16, measureMass: true });
        assertInvariants(base.meta);
        let kept = 0;
        for (let l = 0; l < nLayers; l++) {
          for (let h = 0; h < nKvHeads; h++) {
            const idx = selectTopK(scores[l]![h]!, counts[l]![h]!);
            const before = inputs[l]!;
            const after = base.readHead(1, l, h);
            expect(Array.from(after.positions), `${policy} ${mode} layer ${l} head ${h}`).toEqual(Array.from(idx, (i) => before.positions[h]![i]!));
            // f16 → f16 re-encoding is exact: the kept K/V are the same values.
            const wantKeys = new Float32Array(idx.length * headSize);
            idx.forEach((i, j) => wantKeys.set(before.keys[h]!.subarray(i * headSize, (i + 1) * headSize), j * headSize));
            expect(after.keys).toEqual(wantKeys);
            // Statistics moved with their tokens.
            expect(Array.from(base.stats(1, l, h).attnSum)).toEqual(Array.from(idx, (i) => before.attnSum![h]![i]!));
            expect(report.keptPerHead[l]![h]).toBe(idx.length);
            kept += idx.length;
          }
        }
        expect(kept).toBeLessThanOrEqual(budgetCap(scores, budget));
        expect(kept).toBeLessThanOrEqual(nLayers * nKvHeads * budget);
        expect(report.keptPerLayer.reduce((a, b) => a + b, 0)).toBe(kept);
        expect(report.attentionMassKept).toBeGreaterThan(0);
        expect(report.attentionMassKept).toBeLessThanOrEqual(1 + 1e-9);
        base.freeSequence(1);
        assertInvariants(base.meta);
      }
    }
  });

  it('returns the freed bytes to the pools and reports memory like the GPU cache', async () => {
    const cache = driven(150, { quantBits: 4 });
    const before = cache.meta.poolUsage('full');
    const usedBefore = cache.memory().usedBytes;
    expect(cache.sequenceBytes(0).bytes).toBe(usedBefore);
    const report = await cache.compress(0, { policy: 'h2o', budget: 48, bits: 4 });
    assertInvariants(cache.meta);
    const after = cache.meta.poolUsage('full');
    expect(report.bytesFreed).toBe(usedBefore - cache.memory().usedBytes);
    expect(report.bytesFreed).toBeGreaterThan(0);
    expect(after.free).toBeGreaterThan(before.free);
    expect(cache.meta.poolUsage('quant').used).toBe(nLayers * nKvHeads); // (48 − 32) / 16 = 1 block per head
    expect(report.compressedBytes).toBe(cache.memory().usedBytes);
    expect(report.originalBytes).toBe(baselineF16Bytes({ ...shape, blockSize: 16 }, 150));
    expect(report.ratio).toBeCloseTo(report.originalBytes / report.compressedBytes, 12);
    for (let l = 0; l < nLayers; l++) {
      for (let h = 0; h < nKvHeads; h++) {
        const entries = cache.meta.headBlocks(0, l, h).map(decodeBlockRef);
        expect(entries.map((e) => e.pool)).toEqual(['quant', 'full', 'full']);
      }
    }
    // Decoding keeps working on the compressed cache, and the next compression frees again.
    const model = new ReferenceLlama(checkpoint, { attention: cache.attentionHook(0) });
    for (let pos = 150; pos < 170; pos++) model.forward(greedy.tokens[pos]!, pos);
    assertInvariants(cache.meta);
    const second = await cache.compress(0, { policy: 'snapkv', budget: 32, budgetMode: 'adakv', bits: 4 });
    expect(second.keptPerLayer.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(nLayers * nKvHeads * 32);
    assertInvariants(cache.meta);
    cache.freeSequence(0);
    assertInvariants(cache.meta);
    expect(cache.memory().usedBytes).toBe(0);
  });

  it('quantizes without eviction: int8 attention stays close, every block but the recent window is quantized', async () => {
    const cache = driven(100);
    const q = Float32Array.from({ length: nHeads * headSize }, (_, i) => Math.cos(i));
    const want = cache.attend(0, 1, q).out;
    const report = await cache.compress(0, { bits: 8 }); // creates the int8 pool lazily
    assertInvariants(cache.meta);
    expect(cache.quantLayout?.format).toBe('int8');
    expect(report.keptPerHead.flat().every((n) => n === 100)).toBe(true);
    expect(report.attentionMassKept).toBe(1);
    expect(cache.meta.headBlocks(0, 1, 0).map((e) => decodeBlockRef(e).pool)).toEqual(['quant', 'quant', 'quant', 'quant', 'full', 'full', 'full']); // (100 − 32) / 16 = 4 whole blocks age out
    const got = cache.attend(0, 1, q).out;
    for (let i = 0; i < want.length; i++) expect(Math.abs(got[i]! - want[i]!)).toBeLessThan(0.05);
    await expect(cache.compress(0, { bits: 4 })).rejects.toThrow(InvalidArgumentError); // the pool holds int8 blocks
  });

  it('rejects bad input with typed errors and leaves the cache untouched', async () => {
    const cache = driven(80, { quantBits: 4 });
    const before = fingerprint(cache, 0);
    await expect(cache.compress(0, { policy: 'h2o', budget: 0 })).rejects.toThrow(InvalidArgumentError);
    await expect(cache.compress(0, { policy: 'h2o', budget: 81 })).rejects.toThrow(InvalidArgumentError);
    await expect(cache.compress(0, { policy: 'nope', budget: 32 })).rejects.toThrow(UnknownPolicyError);
    await expect(cache.compress(0, { policy: 'h2o', budget: 32, bits: 3 as 4 })).rejects.toThrow(InvalidArgumentError);
    await expect(cache.compress(0, { policy: 'h2o', budget: 32, bits: 2 })).rejects.toThrow(InvalidArgumentError); // pool is int4
    await expect(cache.compress(0, { policy: 'h2o', budget: 32, budgetMode: 'bogus' as 'uniform' })).rejects.toThrow(InvalidArgumentError);
    await expect(cache.compressAuto(0, 0.5)).rejects.toThrow(InvalidArgumentError);
    await expect(cache.compressAuto(0, 1000)).rejects.toThrow(InvalidArgumentError);
    expect(fingerprint(cache, 0)).toBe(before);
    assertInvariants(cache.meta);
    // A step out of order is refused before anything is written.
    const kv = new Float32Array(nKvHeads * headSize);
    expect(() => cache.step(0, 1, 80, new Float32Array(nHeads * headSize), kv, kv)).toThrow(InvalidArgumentError);
    expect(() => cache.step(0, 0, 79, new Float32Array(nHeads * headSize), kv, kv)).toThrow(InvalidArgumentError);
    expect(fingerprint(cache, 0)).toBe(before);
  });

  it('compressAuto prefers int8, then int4, then int4 with a budget, then int2, and reaches the target', async () => {
    const cache = driven(200);
    let seq = 1;
    const at = async (target: number): Promise<{ bits: number; budget: number | null; ratio: number }> => {
      // Each target on a fork of the same 200 tokens; freeing the fork empties the lazily created pool again.
      cache.fork(0, seq);
      const r = await cache.compressAuto(seq, target);
      assertInvariants(cache.meta);
      expect(r.ratio, r.chosen.why).toBeGreaterThanOrEqual(target);
      cache.freeSequence(seq);
      seq++;
      return { bits: r.chosen.bits, budget: r.chosen.budget, ratio: r.ratio };
    };
    // Per head at 200 tokens: f16 baseline 6400 B; int8 keeps 10 blocks of 448 B + 3 f16 blocks of 576 B (1.03×),
    // int4 10 × 320 B + 3 × 576 B (1.30×).
    expect(await at(1.02)).toMatchObject({ bits: 8, budget: null });
    expect(await at(1.25)).toMatchObject({ bits: 4, budget: null });
    const evicting = await at(3);
    expect(evicting.bits).toBe(4);
    expect(evicting.budget).toBeGreaterThanOrEqual(50);
    const extreme = await at(9);
    expect(extreme.bits).toBe(2);
    expect(extreme.budget).not.toBeNull();
  });
});
