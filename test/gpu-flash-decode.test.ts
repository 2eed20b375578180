import { describe, expect, it } from 'vitest';
import { blockLayout, type BlockFormat } from '../src/format/layout.js';
import { createStorageBuffer, readBuffer } from '../src/gpu/buffers.js';
import type { GpuContext } from '../src/gpu/context.js';
import { kernelPipeline } from '../src/gpu/kernel.js';
import { attentionSegments } from '../src/kernels/cache/accumulate-attention.js';
import { FLASH_DECODE_STORAGE_BUFFERS, FlashDecodeKernel, type FlashDecodeShape } from '../src/kernels/cache/flash-decode.js';
import { createNodeGpu } from '../src/node/gpu.js';
import { flashDecodeContexts } from '../src/bench/cases/flash-decode.js';
import { decodeAttention, prefillAttention } from '../src/attention/reference-attention.js';
import { seededRandom, testGpu } from './helpers/gpu.js';
import { buildPagedFixture, type PagedFixture } from './helpers/paged-fixture.js';

// Outputs: f32 accumulation over up to ~1000 tokens in another order than the f64 reference, across partitions
// merged by log-sum-exp. Statistics: probabilities ≤ 1 recomputed in f32 (the count is exact).
const OUT_TOLERANCE = 2e-4;
const PROB_TOLERANCE = 1e-5;

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs((a[i] ?? 0) - (b[i] ?? 0)));
  return m;
}

interface Stats {
  buffers: { attnSum: GPUBuffer; attnSqSum: GPUBuffer; attnCount: GPUBuffer };
  maxTokens: number;
  read(): Promise<{ sum: Float32Array; sq: Float32Array; count: Float32Array }>;
  destroy(): void;
}

function statsBuffers(gpu: GpuContext, fixture: PagedFixture, kvHeads: number): Stats {
  const maxTokens = fixture.bindings.maxBlocksPerHead * fixture.full.blockSize;
  const bytes = fixture.bindings.seqSlots * kvHeads * maxTokens * 4;
  const buffers = {
    attnSum: createStorageBuffer(gpu, 'attn-sum', bytes),
    attnSqSum: createStorageBuffer(gpu, 'attn-sq', bytes),
    attnCount: createStorageBuffer(gpu, 'attn-count', bytes),
  };
  return {
    buffers,
    maxTokens,
    read: async () => ({
      sum: new Float32Array(await readBuffer(gpu, buffers.attnSum)),
      sq: new Float32Array(await readBuffer(gpu, buffers.attnSqSum)),
      count: new Float32Array(await readBuffer(gpu, buffers.attnCount)),
    }),
    destroy: () => Object.values(buffers).forEach((b) => b.destroy()),
  };
}

interface DecodeCase {
  context: number;
  group: number;
  headDim: number;
  full: 'f32' | 'f16';
  quant?: BlockFormat;
  /** Kernel shape overrides; the default forces partitions of 32 tokens so the merge always runs. */
  kernel?: Partial<FlashDecodeShape>;
}

const SMALL: Partial<FlashDecodeShape> = { workgroupSize: 16, chunkTokens: 16, partitionTokens: 32 };

const DECODE_CASES: DecodeCase[] = [
  { context: 1, group: 1, headDim: 8, full: 'f32' },
  { context: 15, group: 2, headDim: 8, full: 'f16' },
  { context: 16, group: 4, headDim: 64, full: 'f32' },
  { context: 17, group: 2, headDim: 128, full: 'f16', quant: 'int8' },
  { context: 63, group: 2, headDim: 128, full: 'f32', quant: 'int8' },
  { context: 65, group: 1, headDim: 8, full: 'f32', quant: 'int2' },
  { context: 65, group: 4, headDim: 64, full: 'f16', quant: 'int4', kernel: { workgroupSize: 32, chunkTokens: 64, partitionTokens: 64 } },
  { context: 1031, group: 4, headDim: 64, full: 'f16', quant: 'int4', kernel: {} },
  { context: 1031, group: 2, headDim: 128, full: 'f16', quant: 'int2', kernel: { partitionTokens: 128 } },
  { context: 200, group: 4, headDim: 128, full: 'f16', quant: 'int4' },
  { context: 300, group: 2, headDim: 64, full: 'f32', quant: 'int4', kernel: { ...SMALL, foldKScale: false } },
  // the SwiftShader bench shape: K groups as long as the workgroup, so the group index is the loop counter
  { context: 1031, group: 4, headDim: 128, full: 'f16', quant: 'int4', kernel: { workgroupSize: 16, chunkTokens: 64, partitionTokens: 256 } },
  // more than four rows per workgroup: the general (indexed) accumulators instead of the row vectors
  { context: 40, group: 8, headDim: 64, full: 'f16', quant: 'int4' },
  { context: 40, group: 8, headDim: 64, full: 'f16', quant: 'int4', kernel: { ...SMALL, foldKScale: false } },
];

/** Runs one decode case (two sequences, forced small partitions unless the case says otherwise) against the reference. */
async function checkDecodeCase(c: DecodeCase, overrides: Partial<FlashDecodeShape> = {}, device?: GpuContext): Promise<FlashDecodeKernel> {
      const gpu = device ?? (await testGpu());
      const kvHeads = 2;
      const nHeads = kvHeads * c.group;
      // two sequences; heads of different lengths, as after per-head eviction
      const lengths = [
        [c.context, Math.max(1, c.context - 5)],
        [Math.max(1, Math.floor(c.context / 2)), c.context],
      ];
      const fixture = buildPagedFixture(gpu, {
        headDim: c.headDim,
        blockSize: 16,
        kvHeads,
        lengths,
        fullFormat: c.full,
        ...(c.quant ? { quantFormat: c.quant, quantBlocks: Math.max(2, Math.floor(c.context / 20)) } : {}),
        seed: c.context * 7 + c.headDim,
      });
      const random = seededRandom(c.context + 11);
      const q = Float32Array.from({ length: 2 * nHeads * c.headDim }, () => random() * 2 - 1);
      const buffers = {
        queries: createStorageBuffer(gpu, 'q', q),
        slots: createStorageBuffer(gpu, 'slots', new Uint32Array([0, 1])),
        pos: createStorageBuffer(gpu, 'pos', new Uint32Array([0xffff_ffff, 0xffff_ffff])),
        out: createStorageBuffer(gpu, 'out', q.byteLength),
        segments: createStorageBuffer(gpu, 'segments', attentionSegments([0, 1])),
      };
      const stats = statsBuffers(gpu, fixture, kvHeads);
      const kernel = new FlashDecodeKernel(gpu, {
        nHeads,
        kvHeads,
        full: fixture.full,
        quant: fixture.quant,
        ...(c.kernel ?? SMALL),
        ...overrides,
      });
      const used = { reductions: kernel.reductions };
      expect(kernel.partitions(c.context)).toBe(Math.ceil(c.context / kernel.partitionTokens));
      await gpu.withErrorScope(() => {
        const encoder = gpu.device.createCommandEncoder();
        kernel.encode(encoder, {
          cache: fixture.bindings,
          layer: 0,
          numQueries: 2,
          queries: buffers.queries,
          querySlots: buffers.slots,
          queryPositions: buffers.pos,
          out: buffers.out,
          maxContext: c.context,
          stats: { segments: buffers.segments, numSegments: 2, target: stats.buffers },
        });
        gpu.submit([encoder.finish()]);
      });
      const got = new Float32Array(await readBuffer(gpu, buffers.out));
      const gotStats = await stats.read();
      for (let s = 0; s < 2; s++) {
        const ref = decodeAttention({
          q: q.subarray(s * nHeads * c.headDim, (s + 1) * nHeads * c.headDim),
          keys: fixture.keys[s] ?? [],
          values: fixture.values[s] ?? [],
          nHeads,
          kvHeads,
          headDim: c.headDim,
        });
        expect(maxAbsDiff(got.subarray(s * nHeads * c.headDim, (s + 1) * nHeads * c.headDim), ref.out), `out of sequence ${s}`).toBeLessThan(
          OUT_TOLERANCE,
        );
        for (let kv = 0; kv < kvHeads; kv++) {
          const n = lengths[s]?.[kv] ?? 0;
          const base = (s * kvHeads + kv) * stats.maxTokens;
          expect(maxAbsDiff(gotStats.sum.subarray(base, base + n), ref.probsPerKvHead[kv] ?? []), `attnSum ${s}/${kv}`).toBeLessThan(PROB_TOLERANCE);
          expect(maxAbsDiff(gotStats.sq.subarray(base, base + n), ref.sqProbsPerKvHead[kv] ?? [])).toBeLessThan(PROB_TOLERANCE);
          expect(Array.from(gotStats.count.subarray(base, base + n))).toEqual(new Array<number>(n).fill(1));
          // past the head's tokens nothing is written
          expect(Array.from(gotStats.sum.subarray(base + n, base + stats.maxTokens)).every((x) => x === 0)).toBe(true);
        }
      }
      fixture.destroy();
      stats.destroy();
      kernel.destroy();
      Object.values(buffers).forEach((b) => b.destroy());
      expect(kernel.reductions).toBe(used.reductions);
      return kernel;
}

// Cases the reductions test runs under every variant: GQA 4 and 1, quantized and not, a workgroup of 4 threads,
// which one SwiftShader subgroup (4 lanes) spans whole (the subgroup variant's no-exchange path), and one of 64.
const REDUCTION_CASES: DecodeCase[] = [
  { context: 65, group: 4, headDim: 64, full: 'f16', quant: 'int4' },
  { context: 47, group: 1, headDim: 64, full: 'f32' },
  { context: 70, group: 4, headDim: 32, full: 'f16', quant: 'int4', kernel: { workgroupSize: 4, chunkTokens: 16, partitionTokens: 32 } },
  // 64 threads: past 16, one thread scans the posted values and posts the result
  { context: 200, group: 2, headDim: 64, full: 'f16', quant: 'int4', kernel: { partitionTokens: 128 } },
];

describe('flash decode (split-context paged attention) vs the TS reference', () => {
  it("fits Chrome's 10 storage buffers per stage: a device capped there runs every pass, statistics included", async () => {
    await testGpu(); // picks the adapter (SwiftShader in CI) for this process
    const chrome = await createNodeGpu({ limits: { maxStorageBuffersPerShaderStage: 10 } });
    expect(chrome.limits.maxStorageBuffersPerShaderStage).toBe(10);
    expect(FLASH_DECODE_STORAGE_BUFFERS).toBeLessThanOrEqual(10);
    const errors: string[] = [];
    chrome.device.onuncapturederror = (event) => errors.push(event.error.message);
    await checkDecodeCase({ context: 65, group: 4, headDim: 64, full: 'f16', quant: 'int4' }, {}, chrome);
    await checkDecodeCase({ context: 40, group: 2, headDim: 8, full: 'f32' }, {}, chrome);
    await chrome.idle();
    expect(errors).toEqual([]);
    await chrome.destroy();
  });


  it.each(DECODE_CASES)(
    'context $context, GQA group $group, head_dim $headDim, $full + $quant',
    async (c) => {
      await checkDecodeCase(c);
    },
    60_000,
  );

  it('row reductions: each variant the adapter supports matches the reference; subgroup is the default where present', async () => {
    const gpu = await testGpu();
    const variants = FlashDecodeKernel.reductionVariants(gpu);
    const full = blockLayout('f16', { headDim: 64, blockSize: 16 });
    if (gpu.has('subgroups')) {
      expect(variants).toEqual(['workgroup', 'subgroup']);
      const subgroup = new FlashDecodeKernel(gpu, { nHeads: 4, kvHeads: 1, full, quant: null });
      const workgroup = new FlashDecodeKernel(gpu, { nHeads: 4, kvHeads: 1, full, quant: null, reductions: 'workgroup' });
      expect(subgroup.reductions).toBe('subgroup');
      // two pipelines, keyed apart in the cache
      expect(kernelPipeline(gpu, subgroup.partialSpec)).not.toBe(kernelPipeline(gpu, workgroup.partialSpec));
    } else {
      // Without the feature the fallback is all there is, and asking for subgroups says so instead of compiling.
      expect(variants).toEqual(['workgroup']);
      expect(() => new FlashDecodeKernel(gpu, { nHeads: 4, kvHeads: 1, full, quant: null, reductions: 'subgroup' })).toThrow(/subgroups/);
      expect(new FlashDecodeKernel(gpu, { nHeads: 4, kvHeads: 1, full, quant: null }).reductions).toBe('workgroup');
    }
    for (const reductions of variants) {
      for (const c of REDUCTION_CASES) {
        const kernel = await checkDecodeCase(c, { reductions });
        expect(kernel.reductions).toBe(reductions);
        // small partitions: the merge combines several
        expect(kernel.partitions(c.context)).toBeGreaterThan(1);
      }
    }
  }, 120_000);

  it.each([
    { queryTile: 1, numQueries: 5, quant: undefined, fold: true },
    { queryTile: 2, numQueries: 5, quant: 'int4' as const, fold: true },
    { queryTile: 4, numQueries: 7, quant: 'int8' as const, fold: true },
    { queryTile: 2, numQueries: 6, quant: 'int2' as const, fold: false },
  ])('prefill chunk, query tile $queryTile, $numQueries queries, $quant (K scale folded: $fold): causal by position', async (c) => {
    const gpu = await testGpu();
    const kvHeads = 2;
    const nHeads = 4;
    const headDim = 64;
    const n = 77;
    const fixture = buildPagedFixture(gpu, {
      headDim,
      blockSize: 16,
      kvHeads,
      lengths: [[n, n - 9]],
      fullFormat: 'f16',
      ...(c.quant ? { quantFormat: c.quant, quantBlocks: 2 } : {}),
      seed: 3 + c.queryTile,
    });
    const random = seededRandom(5);
    const keyPositions = fixture.positions[0]?.[0] ?? new Uint32Array();
    // the chunk's queries sit at the last positions of head 0; head 1 is shorter, so some of its keys lie past them
    const queryPositions = Uint32Array.from({ length: c.numQueries }, (_, i) => keyPositions[n - c.numQueries + i] ?? 0);
    const q = Float32Array.from({ length: c.numQueries * nHeads * headDim }, () => random() * 2 - 1);
    const buffers = {
      queries: createStorageBuffer(gpu, 'q', q),
      slots: createStorageBuffer(gpu, 'slots', new Uint32Array(c.numQueries)),
      pos: createStorageBuffer(gpu, 'pos', queryPositions),
      out: createStorageBuffer(gpu, 'out', q.byteLength),
      segments: createStorageBuffer(gpu, 'segments', attentionSegments(new Uint32Array(c.numQueries))),
    };
    const stats = statsBuffers(gpu, fixture, kvHeads);
    const kernel = new FlashDecodeKernel(gpu, {
      nHeads,
      kvHeads,
      full: fixture.full,
      quant: fixture.quant,
      ...SMALL,
      queryTile: c.queryTile,
      foldKScale: c.fold,
    });
    expect(kernel.foldsKScale).toBe(c.quant !== undefined && c.fold);
    await gpu.withErrorScope(() => {
      const encoder = gpu.device.createCommandEncoder();
      kernel.encode(encoder, {
        cache: fixture.bindings,
        layer: 0,
        numQueries: c.numQueries,
        queries: buffers.queries,
        querySlots: buffers.slots,
        queryPositions: buffers.pos,
        out: buffers.out,
        maxContext: n,
        stats: { segments: buffers.segments, numSegments: 1, target: stats.buffers },
      });
      gpu.submit([encoder.finish()]);
    });
    const got = new Float32Array(await readBuffer(gpu, buffers.out));
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
    expect(maxAbsDiff(got, ref.out), 'out').toBeLessThan(OUT_TOLERANCE);
    const gotStats = await stats.read();
    for (let kv = 0; kv < kvHeads; kv++) {
      const tokens = kv === 0 ? n : n - 9;
      const base = kv * stats.maxTokens;
      expect(maxAbsDiff(gotStats.sum.subarray(base, base + tokens), ref.probsPerKvHead[kv] ?? []), `attnSum ${kv}`).toBeLessThan(PROB_TOLERANCE);
      expect(maxAbsDiff(gotStats.sq.subarray(base, base + tokens), ref.sqProbsPerKvHead[kv] ?? [])).toBeLessThan(PROB_TOLERANCE);
      expect(Array.from(gotStats.count.subarray(base, base + tokens))).toEqual(Array.from(ref.visibleCount[kv] ?? []));
    }
    fixture.destroy();
    stats.destroy();
    kernel.destroy();
    Object.values(buffers).forEach((b) => b.destroy());
  });

  it('splits decode into partitions and gives a long prefill chunk one partition per workgroup instead', async () => {
    const gpu = await testGpu();
    const full = blockLayout('f16', { headDim: 128, blockSize: 16 });
    const kernel = new FlashDecodeKernel(gpu, { nHeads: 32, kvHeads: 8, full, quant: null });
    expect(kernel.split(1, 16384)).toEqual({ partitions: 64, partitionTokens: 256 });
    expect(kernel.split(1, 1)).toEqual({ partitions: 1, partitionTokens: 256 });
    // 512 queries × 8 KV heads already fill the GPU: one partition, partials the size of the output
    expect(kernel.split(512, 16384)).toEqual({ partitions: 1, partitionTokens: 16384 });
    // 16 queries: 128 workgroups' worth of (tile, head) pairs, so 8 partitions of 2048 tokens
    expect(kernel.split(16, 16384)).toEqual({ partitions: 8, partitionTokens: 2048 });
    const odd = kernel.split(100, 1000);
    expect(odd.partitionTokens % kernel.chunkTokens).toBe(0);
    expect(odd.partitions * odd.partitionTokens).toBeGreaterThanOrEqual(1000);
  });

  it('says which layouts it cannot read instead of reading them wrongly', async () => {
    const gpu = await testGpu();
    const f16 = blockLayout('f16', { headDim: 12, blockSize: 16 });
    expect(FlashDecodeKernel.unsupported(f16, null)).toMatch(/multiple of 8/);
    expect(() => new FlashDecodeKernel(gpu, { nHeads: 2, kvHeads: 1, full: f16, quant: null })).toThrow(/PagedAttentionKernel/);
    const ok = blockLayout('f16', { headDim: 64, blockSize: 16 });
    expect(FlashDecodeKernel.supports(ok, blockLayout('int4', { headDim: 64, blockSize: 16 }))).toBe(true);
    expect(FlashDecodeKernel.supports(ok, blockLayout('int4', { headDim: 64, blockSize: 16 }, 4))).toBe(false);
    expect(
      () => new FlashDecodeKernel(gpu, { nHeads: 2, kvHeads: 1, full: ok, quant: null, chunkTokens: 16, partitionTokens: 24, workgroupSize: 16 }),
    ).toThrow(/partitionTokens/);
  });

  it('bench contexts: 1K/4K quick, 1K/4K/16K full, or exactly what KVCOMPACT_BENCH_CONTEXTS lists', () => {
    expect(flashDecodeContexts(true, undefined)).toEqual([1024, 4096]);
    expect(flashDecodeContexts(false, '')).toEqual([1024, 4096, 16384]);
    expect(flashDecodeContexts(true, '16384, 65536')).toEqual([16384, 65536]);
    expect(() => flashDecodeContexts(false, '16K')).toThrow(/KVCOMPACT_BENCH_CONTEXTS/);
  });
});
