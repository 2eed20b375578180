import { describe, expect, it } from 'vitest';
import { assertInvariants } from '../src/cache/invariants.js';
import { PagedKvCache } from '../src/engine/paged-kv-cache.js';
import type { BudgetMode } from '../src/compress/budgets.js';
import { DecodeCompressor } from '../src/compress/decode-compression.js';
import { createPolicy } from '../src/compress/registry.js';
import { InvalidArgumentError, UnknownPolicyError } from '../src/errors.js';
import { readBuffer } from '../src/gpu/buffers.js';
import { testGpu } from './helpers/gpu.js';
import { fillSequence as fill, referenceKeep } from './helpers/paged-compress.js';

const SHAPE = { layers: 2, kvHeads: 2, headDim: 8, blockSize: 16 };
const N_HEADS = 4;
const WINDOW = 8;

describe('GPU compression of a paged cache', () => {
  const cases: [string, BudgetMode, 16 | 4 | 2][] = [
    ['snapkv', 'uniform', 16],
    ['h2o', 'adakv', 4],
    ['kvcompress', 'global', 16],
    ['tova', 'pyramid', 2],
    ['knorm', 'uniform', 4],
    ['streaming', 'adakv', 16],
    ['random', 'uniform', 16],
  ];
  it.each(cases)('%s with %s budgets at %i bits keeps exactly the reference tokens and frees blocks', async (policy, mode, bits) => {
    const gpu = await testGpu();
    const cache = PagedKvCache.create(gpu, {
      shape: SHAPE,
      nHeads: N_HEADS,
      fullFormat: 'f32',
      ...(bits < 16 ? { quantBits: bits as 4 | 2 } : {}),
      maxTokensPerHead: 256,
      observationWindow: WINDOW,
      seqSlots: 3,
    });
    cache.addSequence(0);
    cache.addSequence(7);
    await fill(gpu, cache, 0, [40], 1); // another sequence, which must stay untouched
    await fill(gpu, cache, 7, [90, 1, 1, 1, 5], 2);
    const before = await cache.readHead(0, 1, 1);
    const expected = await referenceKeep(cache, 7, createPolicy(policy, { sinks: 4, recent: 8, window: WINDOW, seed: 3 }), mode, 24, 3);
    const sumBefore = new Float32Array(await readBuffer(gpu, cache.attention.statistics.attnSum));
    const positionsBefore = await Promise.all(
      [0, 1].flatMap((l) => [0, 1].map(async (h) => [...(await cache.readHead(7, l, h)).positions])),
    );
    const usedBefore = cache.memory().usedBytes;
    const report = await cache.compress(7, { policy, budget: 24, budgetMode: mode, bits, sinks: 4, recent: 8, window: WINDOW, seed: 3, measureMass: true });
    assertInvariants(cache.meta);
    for (let l = 0; l < SHAPE.layers; l++) {
      for (let h = 0; h < SHAPE.kvHeads; h++) {
        const got = await cache.readHead(7, l, h);
        expect([...got.positions]).toEqual(expected[l]?.[h]);
        expect(report.keptPerHead[l]?.[h]).toBe(expected[l]?.[h]?.length);
      }
    }
    // statistics moved with their tokens, for this sequence's rows only
    const sumAfter = new Float32Array(await readBuffer(gpu, cache.attention.statistics.attnSum));
    const stride = cache.maxTokensPerHead;
    for (let l = 0; l < SHAPE.layers; l++) {
      for (let h = 0; h < SHAPE.kvHeads; h++) {
        const row = cache.meta.rowOf(7, l, h);
        const before = positionsBefore[l * SHAPE.kvHeads + h] ?? [];
        (expected[l]?.[h] ?? []).forEach((position, j) => {
          const oldIndex = before.indexOf(position);
          expect(sumAfter[row * stride + j]).toBe(sumBefore[row * stride + oldIndex]);
        });
      }
    }
    const otherRow = cache.meta.rowOf(0, 1, 1);
    expect(sumAfter.slice(otherRow * stride, (otherRow + 1) * stride)).toEqual(sumBefore.slice(otherRow * stride, (otherRow + 1) * stride));
    const total = report.keptPerHead.flat().reduce((a, b) => a + b, 0);
    expect(total).toBeLessThanOrEqual(SHAPE.layers * SHAPE.kvHeads * 24);
    expect(report.bytesFreed).toBeGreaterThan(0);
    expect(cache.memory().usedBytes).toBe(usedBefore - report.bytesFreed);
    expect(report.ratio).toBeCloseTo(report.originalBytes / report.compressedBytes, 10);
    expect(report.attentionMassKept).toBeGreaterThan(0);
    expect(report.attentionMassKept).toBeLessThanOrEqual(1 + 1e-6);
    for (let l = 0; l < SHAPE.layers; l++) {
      for (let h = 0; h < SHAPE.kvHeads; h++) {
        // whole blocks older than the recent window (8) are quantized, the rest stays full precision
        const kept = expected[l]?.[h]?.length ?? 0;
        const quantBlocks = cache.meta.headBlocks(7, l, h).filter((e) => e >= 0x8000_0000).length;
        expect(quantBlocks).toBe(bits < 16 ? Math.floor(Math.max(0, kept - 8) / 16) : 0);
      }
    }
    const after = await cache.readHead(0, 1, 1);
    expect(after).toEqual(before);
    // the compressed sequence keeps working: more steps append and attend
    await fill(gpu, cache, 7, [3], 9);
    assertInvariants(cache.meta);
    expect(cache.tokenCount(7, 0, 0)).toBe((expected[0]?.[0]?.length ?? 0) + 3);
    cache.destroy();
  });

  it('rejects bad options before any GPU work, cache untouched', async () => {
    const gpu = await testGpu();
    const cache = PagedKvCache.create(gpu, { shape: SHAPE, nHeads: N_HEADS, fullFormat: 'f16', quantBits: 4, maxTokensPerHead: 128, observationWindow: WINDOW });
    cache.addSequence(1);
    await fill(gpu, cache, 1, [40], 4);
    const snapshot = cache.meta.snapshot();
    await expect(cache.compress(1, { budget: 0 })).rejects.toThrow(InvalidArgumentError);
    await expect(cache.compress(1, { budget: 41 })).rejects.toThrow(/larger than the context/);
    await expect(cache.compress(1, { budget: Number.NaN })).rejects.toThrow(InvalidArgumentError);
    await expect(cache.compress(1, { policy: 'nope', budget: 8 })).rejects.toThrow(UnknownPolicyError);
    await expect(cache.compress(1, { budget: 8, bits: 3 as 4 })).rejects.toThrow(/bits/);
    await expect(cache.compress(1, { budget: 8, bits: 2 })).rejects.toThrow(/quantBits: 2/);
    await expect(cache.compress(1, { budget: 8, budgetMode: 'fancy' as 'uniform' })).rejects.toThrow(/budgetMode/);
    await expect(cache.compress(1, { budget: 8, ratio: 2 })).rejects.toThrow(/not both/);
    expect(cache.meta.snapshot()).toEqual(snapshot);
    cache.destroy();
  });

  it.each(['uniform', 'adakv'] as const)('decode-time compression (%s) keeps the cache within the budget at every step', async (budgets) => {
    const gpu = await testGpu();
    const cache = PagedKvCache.create(gpu, { shape: SHAPE, nHeads: N_HEADS, fullFormat: 'f16', maxTokensPerHead: 128, observationWindow: WINDOW });
    cache.addSequence(2);
    const budget = 24;
    const decode = new DecodeCompressor(cache, { mode: 'on-exceed', budget, slack: 8, recent: 8, compress: { policy: 'h2o', budgetMode: budgets } });
    await decode.beforeStep(2, 20);
    await fill(gpu, cache, 2, [20], 6);
    for (let step = 0; step < 30; step++) {
      await decode.beforeStep(2, 1);
      await fill(gpu, cache, 2, [1], 100 + step);
      let total = 0;
      for (let l = 0; l < SHAPE.layers; l++) {
        for (let h = 0; h < SHAPE.kvHeads; h++) {
          const n = cache.tokenCount(2, l, h);
          total += n;
          if (budgets === 'uniform') expect(n).toBeLessThanOrEqual(budget);
        }
      }
      expect(total).toBeLessThanOrEqual(SHAPE.layers * SHAPE.kvHeads * budget);
      assertInvariants(cache.meta);
    }
    expect(cache.sequenceLength(2)).toBe(50);
    // compressions ran once per slack window, not every step
    expect(decode.reports.length).toBeGreaterThanOrEqual(3);
    expect(decode.reports.length).toBeLessThanOrEqual(6);
    cache.destroy();
  });

  it('compressAuto reaches the target ratio and says what it chose', async () => {
    const gpu = await testGpu();
    const cache = PagedKvCache.create(gpu, { shape: SHAPE, nHeads: N_HEADS, fullFormat: 'f16', quantBits: 4, maxTokensPerHead: 256, observationWindow: WINDOW });
    cache.addSequence(1);
    await fill(gpu, cache, 1, [160], 5);
    const report = await cache.compressAuto(1, 3);
    expect(report.chosen.bits).toBe(4);
    expect(report.chosen.why).toMatch(/4-bit/);
    expect(report.ratio).toBeGreaterThanOrEqual(3);
    assertInvariants(cache.meta);
    cache.destroy();
  });
});
