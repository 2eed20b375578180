import { describe, expect, it } from 'vitest';
import type { BlockFormat } from '../src/format/layout.js';
import { createStorageBuffer, readBuffer } from '../src/gpu/buffers.js';
import type { GpuContext } from '../src/gpu/context.js';
import { attentionSegments } from '../src/kernels/cache/accumulate-attention.js';
import { PrefillAttentionKernel, type PrefillAttentionShape } from '../src/kernels/cache/prefill-attention.js';
import { prefillAttention, type PrefillAttentionResult } from '../src/attention/reference-attention.js';
import { seededRandom, testGpu } from './helpers/gpu.js';
import { buildPagedFixture, type PagedFixture } from './helpers/paged-fixture.js';

// Outputs: f32 online softmax over up to 4097 keys against the f64 reference, values in [-2, 2].
const OUT_TOLERANCE = 2e-4;
// Statistics: p = exp(logit - lse) with an f32 lse, summed over up to 65 queries × 4 heads; |error| ≤ 2e-5·ref + 1e-6.
const STATS_RELATIVE = 2e-5;
const STATS_ABSOLUTE = 1e-6;
const STATS_INIT = 0.5; // the pass adds to what the buffers hold

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs((a[i] ?? 0) - (b[i] ?? 0)));
  return m;
}

interface Case {
  queries: number;
  context: number;
  group: number;
  headDim: number;
  full: 'f32' | 'f16';
  quant?: BlockFormat;
}

const CASES: Case[] = [
  { queries: 1, context: 1, group: 1, headDim: 16, full: 'f16' },
  { queries: 63, context: 1, group: 4, headDim: 16, full: 'f32' },
  { queries: 65, context: 63, group: 1, headDim: 16, full: 'f16', quant: 'int4' },
  { queries: 1, context: 65, group: 4, headDim: 64, full: 'f16', quant: 'int4' },
  { queries: 63, context: 65, group: 4, headDim: 32, full: 'f16' },
  { queries: 65, context: 65, group: 4, headDim: 16, full: 'f32', quant: 'int4' },
  { queries: 65, context: 4097, group: 4, headDim: 64, full: 'f16', quant: 'int4' },
];

/** Query i sits at round(maxPos · (i + 1) / n): the last sees every key, early ones few or none (position 0). */
function queryPositionsFor(fixture: PagedFixture, slot: number, n: number): Uint32Array {
  const maxPos = Math.max(...(fixture.positions[slot] ?? []).map((p) => p[p.length - 1] ?? 0));
  return Uint32Array.from({ length: n }, (_, i) => Math.round((maxPos * (i + 1)) / n));
}

interface Ran {
  out: Float32Array;
  sum: Float32Array;
  sq: Float32Array;
  count: Float32Array;
  kernel: PrefillAttentionKernel;
}

async function runPrefill(
  gpu: GpuContext,
  fixture: PagedFixture,
  shape: Omit<PrefillAttentionShape, 'full' | 'quant'>,
  q: Float32Array,
  slots: Uint32Array,
  positions: Uint32Array,
  maxContext: number,
  withStats: boolean,
): Promise<Ran> {
  const kvHeads = shape.kvHeads;
  const maxTokens = fixture.bindings.maxBlocksPerHead * fixture.full.blockSize;
  const statsLength = fixture.bindings.seqSlots * kvHeads * maxTokens;
  const init = new Float32Array(statsLength).fill(STATS_INIT);
  const segments = attentionSegments(slots);
  const buffers = {
    queries: createStorageBuffer(gpu, 'q', q),
    slots: createStorageBuffer(gpu, 'slots', slots),
    pos: createStorageBuffer(gpu, 'pos', positions),
    out: createStorageBuffer(gpu, 'out', q.byteLength),
    segments: createStorageBuffer(gpu, 'segments', segments),
    sum: createStorageBuffer(gpu, 'sum', init),
    sq: createStorageBuffer(gpu, 'sq', init),
    count: createStorageBuffer(gpu, 'count', init),
  };
  const kernel = new PrefillAttentionKernel(gpu, { ...shape, full: fixture.full, quant: fixture.quant });
  await gpu.withErrorScope(() => {
    const encoder = gpu.device.createCommandEncoder();
    kernel.encode(encoder, {
      cache: fixture.bindings,
      layer: 0,
      numQueries: slots.length,
      queries: buffers.queries,
      querySlots: buffers.slots,
      queryPositions: buffers.pos,
      out: buffers.out,
      maxContext,
      ...(withStats
        ? { stats: { segments: buffers.segments, numSegments: segments.length / 3, target: { attnSum: buffers.sum, attnSqSum: buffers.sq, attnCount: buffers.count } } }
        : {}),
    });
    gpu.submit([encoder.finish()]);
  });
  const ran = {
    out: new Float32Array(await readBuffer(gpu, buffers.out)),
    sum: new Float32Array(await readBuffer(gpu, buffers.sum)),
    sq: new Float32Array(await readBuffer(gpu, buffers.sq)),
    count: new Float32Array(await readBuffer(gpu, buffers.count)),
    kernel,
  };
  for (const b of Object.values(buffers)) b.destroy();
  return ran;
}

/** Compares the statistics rows of `slot` (after the STATS_INIT they started from) with the reference. */
function expectStats(ran: Ran, ref: PrefillAttentionResult, slot: number, kvHeads: number, lengths: number[], maxTokens: number): void {
  let worst = 0;
  for (let kv = 0; kv < kvHeads; kv++) {
    const base = (slot * kvHeads + kv) * maxTokens;
    for (let t = 0; t < (lengths[kv] ?? 0); t++) {
      const pairs = [
        [ran.sum[base + t] ?? 0, ref.probsPerKvHead[kv]?.[t] ?? 0],
        [ran.sq[base + t] ?? 0, ref.sqProbsPerKvHead[kv]?.[t] ?? 0],
      ] as const;
      for (const [got, want] of pairs) {
        const error = Math.abs(got - STATS_INIT - want);
        worst = Math.max(worst, error / (STATS_RELATIVE * Math.abs(want) + STATS_ABSOLUTE));
      }
      expect(ran.count[base + t]).toBe(STATS_INIT + (ref.visibleCount[kv]?.[t] ?? 0));
    }
  }
  expect(worst).toBeLessThanOrEqual(1);
}

describe('tiled prefill attention vs the TS reference', () => {
  it.each(CASES)('$queries queries, context $context, group $group, d$headDim, $full + $quant', async (c) => {
    const gpu = await testGpu();
    const kvHeads = 2;
    const nHeads = kvHeads * c.group;
    // heads of different lengths, as after per-head eviction
    const lengths = [c.context, Math.max(1, c.context - 5)];
    const fixture = buildPagedFixture(gpu, {
      headDim: c.headDim,
      blockSize: 16,
      kvHeads,
      lengths: [lengths],
      fullFormat: c.full,
      ...(c.quant ? { quantFormat: c.quant, quantBlocks: Math.ceil(c.context / 32) } : {}),
      seed: c.context * 7 + c.queries,
    });
    const random = seededRandom(c.queries * 13 + c.context);
    const q = Float32Array.from({ length: c.queries * nHeads * c.headDim }, () => random() * 2 - 1);
    const positions = queryPositionsFor(fixture, 0, c.queries);
    const ran = await runPrefill(gpu, fixture, { nHeads, kvHeads }, q, new Uint32Array(c.queries), positions, c.context, true);
    const ref = prefillAttention({
      q,
      keys: fixture.keys[0] ?? [],
      values: fixture.values[0] ?? [],
      nHeads,
      kvHeads,
      headDim: c.headDim,
      queryPositions: positions,
      keyPositions: fixture.positions[0] ?? [],
    });
    expect(maxAbsDiff(ran.out, ref.out)).toBeLessThan(OUT_TOLERANCE);
    expectStats(ran, ref, 0, kvHeads, lengths, fixture.bindings.maxBlocksPerHead * 16);
    // Scratch: (nHeads + 1) floats per query, nothing of queries × context.
    expect(ran.kernel.allocatedBytes()).toBe(ran.kernel.scratchBytes(c.queries));
    expect(ran.kernel.allocatedBytes()).toBeLessThanOrEqual(4 * (c.queries * nHeads * c.headDim + c.context));
    ran.kernel.destroy();
    fixture.destroy();
  });

  it('two sequences in one run: tiles and segments per slot, statistics only when asked for', async () => {
    const gpu = await testGpu();
    const kvHeads = 2;
    const nHeads = 4;
    const headDim = 16;
    const lengths = [
      [40, 33],
      [21, 29],
    ];
    const fixture = buildPagedFixture(gpu, { headDim, blockSize: 16, kvHeads, lengths, fullFormat: 'f32', quantFormat: 'int4', quantBlocks: 1, seed: 11 });
    const counts = [8, 5]; // slot 0 fills two tiles of 4 queries exactly
    const slots = Uint32Array.from(counts.flatMap((n, slot) => new Array<number>(n).fill(slot)));
    const perSlot = counts.map((n, slot) => queryPositionsFor(fixture, slot, n));
    const positions = Uint32Array.from(perSlot.flatMap((p) => [...p]));
    const random = seededRandom(3);
    const q = Float32Array.from({ length: slots.length * nHeads * headDim }, () => random() * 2 - 1);
    const shape = { nHeads, kvHeads, queryTile: 4, keyTile: 8, statsKeys: 8, statsQueries: 3 };
    const withStats = await runPrefill(gpu, fixture, shape, q, slots, positions, 40, true);
    const without = await runPrefill(gpu, fixture, shape, q, slots, positions, 40, false);
    const maxTokens = fixture.bindings.maxBlocksPerHead * 16;
    let first = 0;
    for (let slot = 0; slot < 2; slot++) {
      const n = counts[slot] ?? 0;
      const rowFloats = nHeads * headDim;
      const ref = prefillAttention({
        q: q.subarray(first * rowFloats, (first + n) * rowFloats),
        keys: fixture.keys[slot] ?? [],
        values: fixture.values[slot] ?? [],
        nHeads,
        kvHeads,
        headDim,
        queryPositions: perSlot[slot] ?? new Uint32Array(),
        keyPositions: fixture.positions[slot] ?? [],
      });
      expect(maxAbsDiff(withStats.out.subarray(first * rowFloats, (first + n) * rowFloats), ref.out)).toBeLessThan(OUT_TOLERANCE);
      expectStats(withStats, ref, slot, kvHeads, lengths[slot] ?? [], maxTokens);
      first += n;
    }
    expect(without.out).toEqual(withStats.out);
    expect(without.sum.every((v) => v === STATS_INIT) && without.count.every((v) => v === STATS_INIT)).toBe(true);
    withStats.kernel.destroy();
    without.kernel.destroy();
    fixture.destroy();
  });

  it('scratch stays O(n × heads + context) where the probability buffer grew with n × context', async () => {
    const gpu = await testGpu();
    const fixture = buildPagedFixture(gpu, { headDim: 128, blockSize: 16, kvHeads: 8, lengths: [[16, 16, 16, 16, 16, 16, 16, 16]], fullFormat: 'f16', seed: 1 });
    const kernel = new PrefillAttentionKernel(gpu, { nHeads: 32, kvHeads: 8, full: fixture.full, quant: fixture.quant });
    const n = 512;
    const context = 16384;
    // A 512-query chunk at 16K: the old kernel's probs were n × nHeads × context floats (1 GiB).
    expect(n * 32 * context * 4).toBe(2 ** 30);
    expect(kernel.scratchBytes(n)).toBe(n * 33 * 4);
    expect(kernel.scratchBytes(n)).toBeLessThanOrEqual(4 * (n * 32 * 128 + context));
    // Both passes fit WebGPU's guaranteed 16 KiB of workgroup memory at this shape.
    expect(kernel.workgroupBytes.attention).toBeLessThanOrEqual(16384);
    expect(kernel.workgroupBytes.stats).toBeLessThanOrEqual(16384);
    kernel.destroy();
    fixture.destroy();
  });
});
