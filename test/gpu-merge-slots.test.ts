// MergeMode 'slots' on the GPU (shaders/merge_slots.wgsl) against the plain TS reference absorbIntoSlots, at
// awkward sizes (1, 63, 65 tokens; a head that evicts nothing; head_dim past the workgroup), over two runs so the
// persisted slot masses are exercised.
import { describe, expect, it } from 'vitest';
import { MERGE_WEIGHT_FLOOR } from '../src/compress/merge.js';
import { absorbIntoSlots, emptySlots, type EvictedTokens, type MergeSlots } from '../src/compress/merge-slots.js';
import { PagedKvCache } from '../src/engine/paged-kv-cache.js';
import { createStorageBuffer, readBuffer } from '../src/gpu/buffers.js';
import { packMergeHeads } from '../src/kernels/compress/merge-values.js';
import { MergeSlotsKernel, slotStateWords, unpackSlotState } from '../src/kernels/compress/merge-slots.js';
import { seededRandom, testGpu } from './helpers/gpu.js';

const STRIDE = 128;

function evictedOf(head: { keys: Float32Array; values: Float32Array; positions: Uint32Array }, kept: Set<number>, mass: Float32Array, headDim: number): EvictedTokens {
  const idx = Array.from(head.positions, (_, t) => t).filter((t) => !kept.has(t));
  const pick = (a: Float32Array): Float32Array => Float32Array.from(idx.flatMap((t) => Array.from(a.subarray(t * headDim, (t + 1) * headDim))));
  return { keys: pick(head.keys), values: pick(head.values), positions: idx.map((t) => head.positions[t] ?? 0), mass: idx.map((t) => mass[t] ?? 0) };
}

describe('merge_slots against absorbIntoSlots', () => {
  const cases = [
    { tokens: 1, headDim: 8, slots: 2, keepEvery: 0 }, // the only token evicted, nothing kept
    { tokens: 63, headDim: 8, slots: 4, keepEvery: 4 },
    { tokens: 65, headDim: 72, slots: 3, keepEvery: 3 }, // 72 channels: some threads own two
  ];
  for (const { tokens, headDim, slots, keepEvery } of cases) {
    it(`${tokens} tokens, head_dim ${headDim}, ${slots} slots, two runs; the second head evicts nothing`, async () => {
      const gpu = await testGpu();
      const shape = { layers: 1, kvHeads: 2, headDim, blockSize: 16 };
      const cache = PagedKvCache.create(gpu, { shape, nHeads: 2, fullFormat: 'f32', maxTokensPerHead: STRIDE, initialFullBlocks: 16 });
      const scratch: GPUBuffer[] = [];
      try {
        cache.addSequence(1);
        const random = seededRandom(tokens + headDim);
        const n = tokens * shape.kvHeads * headDim;
        await cache.append(1, Float32Array.from({ length: n }, () => random() - 0.5), Float32Array.from({ length: n }, () => random() - 0.5));
        const rows = [0, 1].map((h) => cache.meta.rowOf(1, 0, h));
        const heads = await Promise.all([0, 1].map((h) => cache.readHead(1, 0, h)));
        const mass = [0, 1].map(() => Float32Array.from({ length: tokens }, () => random()));
        const massWords = new Float32Array(cache.meta.tables.numRows * STRIDE);
        rows.forEach((row, h) => massWords.set(mass[h] ?? new Float32Array(0), row * STRIDE));
        const massBuffer = createStorageBuffer(gpu, 'test:mass', massWords);
        const state = createStorageBuffer(gpu, 'test:state', 2 * slotStateWords(slots, headDim) * 4);
        const kernel = new MergeSlotsKernel(gpu, { full: cache.fullLayout, quant: cache.quantLayout, slots }, { weightFloor: MERGE_WEIGHT_FLOOR });
        scratch.push(massBuffer, state);
        const expected: MergeSlots[] = [emptySlots(slots, headDim), emptySlots(slots, headDim)];
        // Run 1 keeps every keepEvery-th token of head 0 (none when 0); run 2 keeps the odd ones. Head 1 keeps all.
        const keptSets = [
          new Set(Array.from({ length: tokens }, (_, t) => t).filter((t) => keepEvery > 0 && t % keepEvery === 0)),
          new Set(Array.from({ length: tokens }, (_, t) => t).filter((t) => t % 2 === 1)),
        ];
        for (const keptHead0 of keptSets) {
          const all = new Set(Array.from({ length: tokens }, (_, t) => t));
          const kept = [keptHead0, all];
          const keptWords = new Uint32Array(cache.meta.tables.numRows * STRIDE);
          rows.forEach((row, h) => keptWords.set([...(kept[h] ?? [])].sort((a, b) => a - b), row * STRIDE));
          const keptBuffer = createStorageBuffer(gpu, 'test:kept', keptWords);
          const headsBuffer = createStorageBuffer(gpu, 'test:heads', packMergeHeads(rows.map((row, h) => ({ row, tokens, kept: kept[h]?.size ?? 0, outBase: h }))));
          scratch.push(keptBuffer, headsBuffer);
          const encoder = gpu.device.createCommandEncoder();
          kernel.encode(encoder, { cache: cache.storage.bindings(0), heads: headsBuffer, numHeads: 2, stride: STRIDE, keptIndex: keptBuffer, mass: massBuffer, state });
          gpu.submit([encoder.finish()]);
          for (let h = 0; h < 2; h++) {
            const head = heads[h];
            if (head) expected[h] = absorbIntoSlots(expected[h] ?? emptySlots(slots, headDim), evictedOf(head, kept[h] ?? all, mass[h] ?? new Float32Array(0), headDim));
          }
        }
        const words = new Float32Array(await readBuffer(gpu, state));
        for (let h = 0; h < 2; h++) {
          const got = unpackSlotState(words, h, slots, headDim);
          const want = expected[h] ?? emptySlots(slots, headDim);
          expect(got.count).toBe(want.count);
          expect(Array.from(got.positions)).toEqual(Array.from(want.positions));
          got.mass.forEach((m, c) => expect(m).toBeCloseTo(want.mass[c] ?? 0, 4));
          got.keys.forEach((k, i) => expect(Math.abs(k - (want.keys[i] ?? 0))).toBeLessThan(1e-5));
          got.values.forEach((v, i) => expect(Math.abs(v - (want.values[i] ?? 0))).toBeLessThan(1e-5));
        }
        // Head 0 absorbed something and head 1 nothing: the comparison above is not of two empty states.
        expect(unpackSlotState(words, 0, slots, headDim).count).toBeGreaterThan(0);
        expect(unpackSlotState(words, 1, slots, headDim).count).toBe(0);
      } finally {
        for (const b of scratch) b.destroy();
        cache.destroy();
      }
    });
  }
});
