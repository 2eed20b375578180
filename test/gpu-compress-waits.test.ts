import { describe, expect, it } from 'vitest';
import { PagedKvCache } from '../src/engine/paged-kv-cache.js';
import type { CompressOptions } from '../src/compress/options.js';
import { testGpu } from './helpers/gpu.js';
import { countGpuWork, type GpuCounts } from './helpers/gpu-counters.js';
import { fillSequence } from './helpers/paged-compress.js';

const SHAPE = { layers: 2, kvHeads: 2, headDim: 8, blockSize: 16 };

// What one compress() asks of the host: the budget readback (adakv/global budgets only) and the mass readback
// (opt-in) are its only CPU waits; no gpu.idle(); scratch is reused, so a repeat of one size allocates nothing.
describe('GPU compression: waits, dispatches and copies', () => {
  const cases: [string, CompressOptions, number][] = [
    ['snapkv uniform f16', { policy: 'snapkv', budget: 24 }, 0],
    ['h2o adakv int4', { policy: 'h2o', budget: 24, budgetMode: 'adakv', bits: 4 }, 1],
    ['kvcompress global f16', { policy: 'kvcompress', budget: 24, budgetMode: 'global' }, 1],
    ['snapkv uniform f16 + mass', { policy: 'snapkv', budget: 24, measureMass: true }, 1],
    ['h2o adakv int4 + mass', { policy: 'h2o', budget: 24, budgetMode: 'adakv', bits: 4, measureMass: true }, 2],
  ];
  it.each(cases)('%s: only the pinned CPU waits, scratch reused', async (_name, options, waits) => {
    const gpu = await testGpu();
    const cache = PagedKvCache.create(gpu, {
      shape: SHAPE,
      nHeads: 4,
      fullFormat: 'f32',
      ...(options.bits === 4 ? { quantBits: 4 as const } : {}),
      maxTokensPerHead: 256,
      observationWindow: 8,
      seqSlots: 3,
    });
    try {
      cache.addSequence(0);
      await fillSequence(gpu, cache, 0, [90, 1, 1, 1, 5], 2);
      const runs: GpuCounts[] = [];
      for (let i = 0; i < 2; i++) {
        cache.fork(0, 1);
        const { result, counts } = await countGpuWork(gpu, () => cache.compress(1, options));
        runs.push(counts);
        expect(result.keptPerHead.flat().every((n) => n <= 98)).toBe(true);
        expect(Number.isNaN(result.attentionMassKept)).toBe(options.measureMass !== true);
        await cache.freeSequence(1);
      }
      console.log(`${_name}: ${JSON.stringify(runs)}`);
      for (const counts of runs) expect(counts.waits).toBe(waits);
      // The second call of the same size creates no scratch or staging buffer (the merge's 'none' needs none).
      expect(runs[1]?.scratchCreated).toBe(0);
      expect(cache.checkInvariants()).toEqual([]);
    } finally {
      cache.destroy();
    }
  });
});
