import { describe, expect, it } from 'vitest';
import type { BlockFormat } from '../src/format/layout.js';
import { createStorageBuffer, readBuffer } from '../src/gpu/buffers.js';
import { PagedAttentionKernel } from '../src/kernels/cache/paged-attention.js';
import { decodeAttention, prefillAttention } from '../src/attention/reference-attention.js';
import { seededRandom, testGpu } from './helpers/gpu.js';
import { buildPagedFixture } from './helpers/paged-fixture.js';

// f32 accumulation over up to 1000 tokens in a different order than the f64 reference.
const TOLERANCE = 2e-4;

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs((a[i] ?? 0) - (b[i] ?? 0)));
  return m;
}

interface Case {
  context: number;
  group: number;
  headDim: number;
  full: 'f32' | 'f16';
  quant?: BlockFormat;
}

const CASES: Case[] = [
  { context: 1, group: 1, headDim: 8, full: 'f32' },
  { context: 15, group: 2, headDim: 8, full: 'f16' },
  { context: 16, group: 4, headDim: 64, full: 'f32' },
  { context: 17, group: 2, headDim: 128, full: 'f16' },
  { context: 1000, group: 4, headDim: 64, full: 'f16', quant: 'int4' },
  { context: 65, group: 1, headDim: 8, full: 'f32', quant: 'int2' },
  { context: 63, group: 2, headDim: 128, full: 'f32', quant: 'int8' },
];

describe('paged attention decode vs the TS reference', () => {
  it.each(CASES)('context $context, GQA group $group, head_dim $headDim, $full + $quant', async (c) => {
    const gpu = await testGpu();
    const kvHeads = 2;
    const nHeads = kvHeads * c.group;
    const blockSize = 16;
    // two sequences; heads of different lengths, as after per-head eviction
    const lengths = [
      [c.context, Math.max(1, c.context - 5)],
      [Math.max(1, Math.floor(c.context / 2)), c.context],
    ];
    const fixture = buildPagedFixture(gpu, {
      headDim: c.headDim,
      blockSize,
      kvHeads,
      lengths,
      fullFormat: c.full,
      ...(c.quant ? { quantFormat: c.quant, quantBlocks: 2 } : {}),
      seed: c.context * 7 + c.headDim,
    });
    const random = seededRandom(c.context);
    const q = Float32Array.from({ length: 2 * nHeads * c.headDim }, () => random() * 2 - 1);
    const probsStride = c.context;
    const queries = createStorageBuffer(gpu, 'q', q);
    const slots = createStorageBuffer(gpu, 'slots', new Uint32Array([0, 1]));
    const pos = createStorageBuffer(gpu, 'pos', new Uint32Array([0xffff_ffff, 0xffff_ffff]));
    const out = createStorageBuffer(gpu, 'out', q.byteLength);
    const probs = createStorageBuffer(gpu, 'probs', 2 * nHeads * probsStride * 4);
    const kernel = new PagedAttentionKernel(gpu, { nHeads, kvHeads, full: fixture.full, quant: fixture.quant });
    await gpu.withErrorScope(() => {
      const encoder = gpu.device.createCommandEncoder();
      kernel.encode(encoder, {
        cache: fixture.bindings,
        layer: 0,
        numQueries: 2,
        queries,
        querySlots: slots,
        queryPositions: pos,
        out,
        probs,
        probsStride,
      });
      gpu.submit([encoder.finish()]);
    });
    const gpuOut = new Float32Array(await readBuffer(gpu, out));
    const gpuProbs = new Float32Array(await readBuffer(gpu, probs));
    for (let s = 0; s < 2; s++) {
      const ref = decodeAttention({
        q: q.subarray(s * nHeads * c.headDim, (s + 1) * nHeads * c.headDim),
        keys: fixture.keys[s] ?? [],
        values: fixture.values[s] ?? [],
        nHeads,
        kvHeads,
        headDim: c.headDim,
      });
      const got = gpuOut.subarray(s * nHeads * c.headDim, (s + 1) * nHeads * c.headDim);
      expect(maxAbsDiff(got, ref.out)).toBeLessThan(TOLERANCE);
      // probabilities summed over each group equal the reference's per-KV-head sums
      for (let kv = 0; kv < kvHeads; kv++) {
        const n = lengths[s]?.[kv] ?? 0;
        const summed = new Float32Array(n);
        for (let g = 0; g < c.group; g++) {
          const h = kv * c.group + g;
          const base = (s * nHeads + h) * probsStride;
          for (let t = 0; t < n; t++) summed[t] = (summed[t] ?? 0) + (gpuProbs[base + t] ?? 0);
        }
        expect(maxAbsDiff(summed, ref.probsPerKvHead[kv] ?? new Float32Array())).toBeLessThan(1e-5);
      }
    }
    fixture.destroy();
    for (const b of [queries, slots, pos, out, probs]) b.destroy();
  });

  it('prefill chunk: causal by original position, matches the reference', async () => {
    const gpu = await testGpu();
    const kvHeads = 2;
    const nHeads = 4;
    const headDim = 8;
    const n = 37;
    const fixture = buildPagedFixture(gpu, { headDim, blockSize: 16, kvHeads, lengths: [[n, n]], fullFormat: 'f32', seed: 3 });
    const random = seededRandom(5);
    const numQueries = 5;
    const keyPositions = fixture.positions[0] ?? [];
    const queryPositions = Uint32Array.from({ length: numQueries }, (_, i) => keyPositions[0]?.[n - numQueries + i] ?? 0);
    const q = Float32Array.from({ length: numQueries * nHeads * headDim }, () => random() * 2 - 1);
    const buffers = {
      queries: createStorageBuffer(gpu, 'q', q),
      slots: createStorageBuffer(gpu, 'slots', new Uint32Array(numQueries)),
      pos: createStorageBuffer(gpu, 'pos', queryPositions),
      out: createStorageBuffer(gpu, 'out', q.byteLength),
      probs: createStorageBuffer(gpu, 'probs', numQueries * nHeads * n * 4),
    };
    const kernel = new PagedAttentionKernel(gpu, { nHeads, kvHeads, full: fixture.full, quant: null });
    const encoder = gpu.device.createCommandEncoder();
    kernel.encode(encoder, {
      cache: fixture.bindings,
      layer: 0,
      numQueries,
      queries: buffers.queries,
      querySlots: buffers.slots,
      queryPositions: buffers.pos,
      out: buffers.out,
      probs: buffers.probs,
      probsStride: n,
    });
    gpu.submit([encoder.finish()]);
    const got = new Float32Array(await readBuffer(gpu, buffers.out));
    // both kv heads share positions only if the fixture drew them so; use each head's own
    const ref = prefillAttention({
      q,
      keys: fixture.keys[0] ?? [],
      values: fixture.values[0] ?? [],
      nHeads,
      kvHeads,
      headDim,
      queryPositions,
      keyPositions: fixture.positions[0] ?? [],
    });
    expect(maxAbsDiff(got, ref.out)).toBeLessThan(TOLERANCE);
    fixture.destroy();
    for (const b of Object.values(buffers)) b.destroy();
  });
});
