// The two engines are one product: the same options, defaults, growth and compression pipeline, so the same calls
// on the same tokens give the same reports, field by field, and the same inspection API.
import { describe, expect, it } from 'vitest';
import { CpuKvCache } from '../src/engine/cpu-kv-cache.js';
import { PagedKvCache } from '../src/engine/paged-kv-cache.js';
import type { CompressionReport } from '../src/compress/options.js';
import { decode } from './helpers/reliability.js';
import { seededRandom, testGpu } from './helpers/gpu.js';

const SHAPE = { layers: 2, kvHeads: 2, headDim: 8, blockSize: 16 };
const N_HEADS = 4;
const OPTIONS = { shape: SHAPE, nHeads: N_HEADS, fullFormat: 'f32' as const, maxTokensPerHead: 256, observationWindow: 8, initialFullBlocks: 8 };

/** Decodes `tokens` random tokens through both engines, the same q, k, v for each (test/helpers/reliability.ts). */
async function decodeBoth(gpuCache: PagedKvCache, cpuCache: CpuKvCache, seq: number, tokens: number, seed: number): Promise<void> {
  await decode(gpuCache, seq, tokens, seededRandom(seed));
  await decode(cpuCache, seq, tokens, seededRandom(seed));
}

/** Every field but the wall-clock time and the float mass, which must agree within a tolerance. */
function comparable(report: CompressionReport): Omit<CompressionReport, 'milliseconds' | 'attentionMassKept'> {
  const { milliseconds: _ms, attentionMassKept: _mass, ...rest } = report;
  return rest;
}

describe('the CPU and GPU engines', () => {
  it('give the same reports, field by field, for the same sequence of compress calls', async () => {
    const gpu = await testGpu();
    const gpuCache = PagedKvCache.create(gpu, OPTIONS);
    const cpuCache = CpuKvCache.create(OPTIONS);
    try {
      for (const cache of [gpuCache, cpuCache]) cache.addSequence(3);
      await decodeBoth(gpuCache, cpuCache, 3, 90, 11);
      const calls: ((cache: PagedKvCache | CpuKvCache) => Promise<CompressionReport>)[] = [
        (cache) => cache.compress(3, { budget: 64, measureMass: true }), // the default policy: snapkv, since decoding filled the window
        (cache) => cache.compress(3, { policy: 'h2o', budget: 48, budgetMode: 'adakv', bits: 4, measureMass: true }), // creates the int4 pool
        (cache) => cache.compress(3, { policy: 'knorm', ratio: 2, bits: 4, measureMass: false }),
        (cache) => cache.compressAuto(3, 2.5, { policy: 'streaming' }),
      ];
      for (const [i, call] of calls.entries()) {
        const fromGpu = await call(gpuCache);
        const fromCpu = await call(cpuCache);
        expect(Object.keys(fromGpu).sort(), `call ${i}`).toEqual(Object.keys(fromCpu).sort());
        expect(comparable(fromGpu), `call ${i}`).toEqual(comparable(fromCpu));
        if (Number.isNaN(fromCpu.attentionMassKept)) expect(fromGpu.attentionMassKept).toBeNaN();
        else expect(fromGpu.attentionMassKept).toBeCloseTo(fromCpu.attentionMassKept, 5);
        expect(gpuCache.memory(), `call ${i}`).toEqual(cpuCache.memory());
        await decodeBoth(gpuCache, cpuCache, 3, 5, 100 + i);
      }
      expect((await gpuCache.compress(3, { budget: 32 })).policy).toBe('snapkv');
      // The inspection API: the same heads, token for token.
      for (let layer = 0; layer < SHAPE.layers; layer++) {
        for (let head = 0; head < SHAPE.kvHeads; head++) {
          const g = await gpuCache.readHead(3, layer, head);
          const c = cpuCache.readHead(3, layer, head);
          expect(gpuCache.tokenCount(3, layer, head)).toBe(cpuCache.tokenCount(3, layer, head));
          expect(Array.from(g.positions)).toEqual(Array.from(c.positions));
          expect(Array.from(g.keys)).toEqual(Array.from(c.keys));
        }
      }
      expect(gpuCache.checkInvariants()).toEqual([]);
      expect(cpuCache.checkInvariants()).toEqual([]);
    } finally {
      gpuCache.destroy();
    }
  });

  it('use the same defaults: a plain append compresses with the default policy, window policies say what they need', async () => {
    const gpu = await testGpu();
    const gpuCache = PagedKvCache.create(gpu, OPTIONS);
    const cpuCache = CpuKvCache.create(OPTIONS);
    try {
      const random = seededRandom(5);
      const perToken = SHAPE.layers * SHAPE.kvHeads * SHAPE.headDim;
      const keys = Float32Array.from({ length: 70 * perToken }, () => random() - 0.5);
      const values = Float32Array.from({ length: 70 * perToken }, () => random() - 0.5);
      for (const cache of [gpuCache, cpuCache]) {
        cache.addSequence(1);
        await cache.append(1, keys, values);
        await expect(cache.compress(1, { policy: 'snapkv', budget: 32 })).rejects.toThrow(/observation window/);
        expect(cache.checkInvariants()).toEqual([]);
      }
      const fromGpu = await gpuCache.compress(1, { budget: 32 });
      const fromCpu = await cpuCache.compress(1, { budget: 32 });
      expect(fromGpu.policy).toBe('knorm');
      expect(comparable(fromGpu)).toEqual(comparable(fromCpu));
    } finally {
      gpuCache.destroy();
    }
  });
});
