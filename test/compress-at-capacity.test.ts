// Compression that always fits: with the pools at maxBytes (appends fail with OutOfBlocksError), compressing to
// fewer tokens still succeeds, releasing each head's blocks before the next head allocates.
import { describe, expect, it } from 'vitest';
import { CpuKvCache } from '../src/engine/cpu-kv-cache.js';
import { PagedKvCache } from '../src/engine/paged-kv-cache.js';
import { OutOfBlocksError } from '../src/errors.js';
import { seededRandom, testGpu } from './helpers/gpu.js';

const SHAPE = { layers: 2, kvHeads: 2, headDim: 8, blockSize: 16 };
const OPTIONS = { shape: SHAPE, nHeads: 4, fullFormat: 'f32' as const, maxTokensPerHead: 512, maxBytes: 96 * 1024, initialFullBlocks: 4, seqSlots: 2 };

/** Appends 16-token chunks until the byte budget refuses one (or `limit` tokens); returns the tokens held. */
async function fillToCapacity(cache: PagedKvCache | CpuKvCache, seq: number, limit = Number.POSITIVE_INFINITY): Promise<number> {
  const random = seededRandom(seq + 1);
  const perToken = SHAPE.layers * SHAPE.kvHeads * SHAPE.headDim;
  while (cache.sequenceLength(seq) < limit) {
    const keys = Float32Array.from({ length: 16 * perToken }, () => random() - 0.5);
    try {
      await cache.append(seq, keys, keys);
    } catch (error) {
      expect(error).toBeInstanceOf(OutOfBlocksError);
      expect((error as OutOfBlocksError).pool).toBe('full');
      return cache.sequenceLength(seq);
    }
  }
  return cache.sequenceLength(seq);
}

describe('compression at the byte budget', () => {
  for (const engine of ['gpu', 'cpu'] as const) {
    it(`${engine}: compresses to budget 1, and to half the tokens, with the pools full`, async () => {
      const cache = engine === 'gpu' ? PagedKvCache.create(await testGpu(), OPTIONS) : CpuKvCache.create(OPTIONS);
      try {
        cache.addSequence(0);
        cache.addSequence(1);
        const first = await fillToCapacity(cache, 0, 64);
        const second = await fillToCapacity(cache, 1);
        expect(first).toBe(64);
        expect(second).toBeGreaterThan(64);
        // Full: the next append fails on both sequences.
        await expect(fillToCapacity(cache, 0)).resolves.toBe(64);
        expect(cache.memory().usedBytes).toBeGreaterThan(0);
        const half = Math.floor(second / 2);
        const report = await cache.compress(1, { policy: 'knorm', budget: half, sinks: 0, recent: 0 });
        expect(report.keptPerHead.flat().every((n) => n === half)).toBe(true);
        expect(report.bytesFreed).toBeGreaterThan(0);
        const tiny = await cache.compress(0, { policy: 'streaming', budget: 1 });
        expect(tiny.keptPerHead.flat()).toEqual([1, 1, 1, 1]);
        expect(cache.checkInvariants()).toEqual([]);
        // Without the reserve the first head has nowhere to go.
        const bare = engine === 'gpu' ? PagedKvCache.create(await testGpu(), { ...OPTIONS, compactionReserve: 0 }) : CpuKvCache.create({ ...OPTIONS, compactionReserve: 0 });
        try {
          bare.addSequence(1);
          const held = await fillToCapacity(bare, 1);
          await expect(bare.compress(1, { policy: 'knorm', budget: Math.floor(held / 2), sinks: 0, recent: 0 })).rejects.toThrow(OutOfBlocksError);
          expect(bare.checkInvariants()).toEqual([]);
          expect(bare.sequenceLength(1)).toBe(held);
        } finally {
          if (bare instanceof PagedKvCache) bare.destroy();
        }
        // The freed blocks serve appends again.
        const perToken = SHAPE.layers * SHAPE.kvHeads * SHAPE.headDim;
        await cache.append(0, new Float32Array(16 * perToken), new Float32Array(16 * perToken));
        await cache.freeSequence(0);
        await cache.freeSequence(1);
        expect(cache.memory().usedBytes).toBe(0);
        expect(cache.checkInvariants()).toEqual([]);
      } finally {
        if (cache instanceof PagedKvCache) cache.destroy();
      }
    });
  }
});
