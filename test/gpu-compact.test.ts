import { describe, expect, it } from 'vitest';
import { type BlockLayout, blockLayout, encodeBlockRef, isQuantized } from '../src/format/layout.js';
import { selectTopK } from '../src/compress/select.js';
import { createStorageBuffer, readBuffer } from '../src/gpu/buffers.js';
import type { GpuContext } from '../src/gpu/context.js';
import { CompactBlocksKernel, type CompactJob, IDENTITY_INDEX_BASE, packCompactJobs } from '../src/kernels/compress/compact-blocks.js';
import { GatherStatsKernel } from '../src/kernels/compress/gather-stats.js';
import type { PagedCacheBindings } from '../src/kernels/cache/paged-attention.js';
import { TopKSelectKernel } from '../src/kernels/compress/select.js';
import { quantizesByQuad } from '../src/kernels/compress/compact-unrolled.js';
import { decodeBlock, encodeBlock } from '../src/format/block-codec.js';
import { seededRandom, testGpu } from './helpers/gpu.js';

// Tolerances. Full formats (f32, f16): every word of a destination block bit-exact against encodeBlock of the
// decoded source tokens (f16 conversion rounds to nearest even, as on every driver we know). Quantized formats:
// positions, zero-points and unfilled slots exact; at most 1% of scales one f16 ulp off, and at most 1% of the
// other codes off by exactly ±1, both from values on a rounding boundary (WGSL division is 2.5 ulp). Measured
// on SwiftShader: 0 differences of either kind.
const MISMATCH_FRACTION = 0.01;

/** A hand-built paged cache with spare fresh blocks (prefilled with garbage) at the end of each pool. */
interface Cache {
  bindings: PagedCacheBindings;
  full: BlockLayout;
  quant: BlockLayout;
  /** Decoded tokens per row: k/v [len][headDim], positions [len]. */
  rows: { k: Float32Array; v: Float32Array; pos: Uint32Array }[];
  firstFreeFull: number;
  firstFreeQuant: number;
  destroy(): void;
}

/** Token t's value of the rounding-boundary channel: 0, levels, then integers (odd t) and half-integers. */
function boundaryValue(t: number, levels: number): number {
  if (t === 0) return 0;
  if (t === 1) return levels;
  return ((t * 7) % levels) + (t % 2 === 0 ? 0.5 : 0);
}

function buildCache(
  gpu: GpuContext,
  o: { headDim: number; blockSize: number; full: 'f32' | 'f16'; quant: 'int8' | 'int4' | 'int2'; group: number; lengths: number[]; spare: number; seed: number },
): Cache {
  const random = seededRandom(o.seed);
  const full = blockLayout(o.full, o);
  const quant = blockLayout(o.quant, o, o.group);
  const levels = 2 ** quant.bits - 1;
  const maxBlocks = Math.max(...o.lengths.map((n) => Math.ceil(n / o.blockSize)));
  const table = new Uint32Array(o.lengths.length * maxBlocks);
  const fullBlocks: Uint32Array[] = [new Uint32Array(full.wordsPerBlock)];
  const quantBlocks: Uint32Array[] = [new Uint32Array(quant.wordsPerBlock)];
  const rows = o.lengths.map((n, row) => {
    const k = new Float32Array(n * o.headDim);
    const v = new Float32Array(n * o.headDim);
    const pos = Uint32Array.from({ length: n }, (_, t) => 3 * t + row);
    for (let b = 0; b * o.blockSize < n; b++) {
      const count = Math.min(o.blockSize, n - b * o.blockSize);
      // some channels nearly constant, one exactly constant: exercises scale 0 and tiny scales; channel 3 holds
      // 0, levels, then integers and half-integers: where a group spans 0 … levels its scale is 1 and
      // (x − zero) / scale + 0.5 lands exactly on integers and on halves (floor, not round-to-even)
      const kb = Float32Array.from({ length: count * o.headDim }, (_, i) =>
        i % o.headDim === 1 ? 0.25 : i % o.headDim === 2 ? 1 + random() * 1e-3 : i % o.headDim === 3 ? boundaryValue(Math.floor(i / o.headDim), levels) : random() * 6 - 3,
      );
      // the first token's V constant: exercises V groups of scale 0
      const vb = Float32Array.from({ length: count * o.headDim }, (_, i) => (i < o.headDim ? -0.75 : random() * 4 - 2));
      const isQuant = b % 2 === 0; // mixed sources: every other block quantized
      const layout = isQuant ? quant : full;
      const words = encodeBlock(layout, kb, vb, pos.slice(b * o.blockSize, b * o.blockSize + count), count);
      const decoded = decodeBlock(layout, words, count);
      k.set(decoded.k, b * o.blockSize * o.headDim);
      v.set(decoded.v, b * o.blockSize * o.headDim);
      const list = isQuant ? quantBlocks : fullBlocks;
      table[row * maxBlocks + b] = encodeBlockRef(isQuant ? 'quant' : 'full', list.length);
      list.push(words);
    }
    return { k, v, pos };
  });
  const firstFreeFull = fullBlocks.length;
  const firstFreeQuant = quantBlocks.length;
  for (let i = 0; i < o.spare; i++) {
    fullBlocks.push(new Uint32Array(full.wordsPerBlock).fill(0xdeadbeef));
    quantBlocks.push(new Uint32Array(quant.wordsPerBlock).fill(0xdeadbeef));
  }
  const concat = (blocks: Uint32Array[], words: number): Uint32Array => {
    const out = new Uint32Array(blocks.length * words);
    blocks.forEach((b, i) => out.set(b, i * words));
    return out;
  };
  const bindings: PagedCacheBindings = {
    blockTable: createStorageBuffer(gpu, 'table', table),
    contextLens: createStorageBuffer(gpu, 'ctx', Uint32Array.from(o.lengths)),
    fullPool: createStorageBuffer(gpu, 'full', concat(fullBlocks, full.wordsPerBlock)),
    quantPool: createStorageBuffer(gpu, 'quant', concat(quantBlocks, quant.wordsPerBlock)),
    seqSlots: 1,
    maxBlocksPerHead: maxBlocks,
  };
  return {
    bindings,
    full,
    quant,
    rows,
    firstFreeFull,
    firstFreeQuant,
    destroy() {
      for (const b of [bindings.blockTable, bindings.contextLens, bindings.fullPool, bindings.quantPool]) b.destroy();
    },
  };
}

function codeAt(words: Uint32Array, base: number, index: number, bits: number): number {
  const bit = index * bits;
  return ((words[base + Math.floor(bit / 32)] ?? 0) >>> bit % 32) & ((1 << bits) - 1);
}

interface Mismatches {
  codes: number;
  codeCount: number;
  scales: number;
  groupCount: number;
}

/**
 * Compares each job's destination block in `pools` with encodeBlock of its source tokens (compareBlock's
 * tolerances); adds the tolerated differences to `tally`.
 */
function compareJobs(
  cache: Cache,
  jobs: readonly CompactJob[],
  sources: readonly (readonly number[])[],
  pools: { readonly full?: Uint32Array; readonly quant: Uint32Array },
  tally: Mismatches,
): void {
  const { headDim } = cache.full;
  jobs.forEach((job, j) => {
    const src = sources[j] ?? [];
    const row = cache.rows[job.row];
    if (!row) throw new Error('no row');
    const k = new Float32Array(src.length * headDim);
    const v = new Float32Array(src.length * headDim);
    src.forEach((t, i) => {
      k.set(row.k.subarray(t * headDim, (t + 1) * headDim), i * headDim);
      v.set(row.v.subarray(t * headDim, (t + 1) * headDim), i * headDim);
    });
    const pos = Uint32Array.from(src, (t) => row.pos[t] ?? 0);
    const isQuant = job.destEntry >= 0x8000_0000;
    const layout = isQuant ? cache.quant : cache.full;
    const pool = isQuant ? pools.quant : pools.full;
    if (!pool) throw new Error(`job ${j} writes a full block; no full pool given`);
    const block = job.destEntry & 0x7fff_ffff;
    const got = pool.subarray(block * layout.wordsPerBlock, (block + 1) * layout.wordsPerBlock);
    compareBlock(layout, got, encodeBlock(layout, k, v, pos, src.length), src.length, `job ${j} (${layout.format}, ${src.length} tokens)`, tally);
    // and the decoded block is what attention will see: its positions are the sources'
    expect(Array.from(decodeBlock(layout, got, src.length).positions)).toEqual(Array.from(pos));
  });
}

/**
 * Compares one GPU-built block with encodeBlock of the same decoded tokens (see the tolerances above); adds the
 * tolerated differences to `tally`.
 */
function compareBlock(layout: BlockLayout, got: Uint32Array, expected: Uint32Array, n: number, label: string, tally: Mismatches): void {
  if (!isQuantized(layout.format)) {
    expect(Array.from(got), label).toEqual(Array.from(expected));
    return;
  }
  const { blockSize, headDim, groupSize: g, bits } = layout;
  expect(Array.from(got.subarray(layout.positionsOffset)), `${label} positions`).toEqual(
    Array.from(expected.subarray(layout.positionsOffset)),
  );
  // Parameter words: zero-points exact; a scale may be one f16 ulp off (its f32 quotient came from a 2.5-ulp
  // division and rounded to the other f16 neighbour); codes of such a group legitimately differ and are skipped.
  const shifted = new Set<number>();
  for (let w = layout.kParamsOffset; w < layout.positionsOffset; w++) {
    const a = got[w] ?? 0;
    const b = expected[w] ?? 0;
    tally.groupCount++;
    if (a === b) continue;
    expect(a >>> 16, `${label} zero-point word ${w}`).toBe(b >>> 16);
    expect(Math.abs((a & 0xffff) - (b & 0xffff)), `${label} scale word ${w}`).toBe(1);
    tally.scales++;
    shifted.add(w);
  }
  const values = blockSize * headDim;
  for (const part of ['k', 'v'] as const) {
    const base = part === 'k' ? layout.kOffset : layout.vOffset;
    for (let i = 0; i < values; i++) {
      const t = Math.floor(i / headDim);
      const c = i % headDim;
      const a = codeAt(got, base, i, bits);
      const b = codeAt(expected, base, i, bits);
      if (t >= n) {
        expect(a, `${label} unfilled slot ${t}`).toBe(0);
        continue;
      }
      const param =
        part === 'k'
          ? layout.kParamsOffset + Math.floor(t / g) * headDim + c
          : layout.vParamsOffset + t * (headDim / g) + Math.floor(c / g);
      if (shifted.has(param)) continue;
      tally.codeCount++;
      if (a !== b) {
        expect(Math.abs(a - b), `${label} ${part} code ${i}`).toBe(1);
        tally.codes++;
      }
    }
  }
}

interface Case {
  headDim: number;
  blockSize: number;
  full: 'f32' | 'f16';
  quant: 'int8' | 'int4' | 'int2';
  group: number;
}

const CASES: Case[] = [
  { headDim: 16, blockSize: 16, full: 'f32', quant: 'int8', group: 16 },
  { headDim: 16, blockSize: 16, full: 'f16', quant: 'int4', group: 4 },
  { headDim: 8, blockSize: 16, full: 'f32', quant: 'int2', group: 8 }, // a code word spans two tokens
  { headDim: 32, blockSize: 8, full: 'f16', quant: 'int2', group: 2 },
  { headDim: 64, blockSize: 16, full: 'f32', quant: 'int4', group: 1 },
  { headDim: 16, blockSize: 32, full: 'f16', quant: 'int8', group: 8 },
  // the benchmark's shape (whole-word items; V item unrolled per layout), every bit width
  { headDim: 128, blockSize: 16, full: 'f16', quant: 'int8', group: 16 },
  { headDim: 128, blockSize: 16, full: 'f16', quant: 'int4', group: 16 },
  { headDim: 128, blockSize: 16, full: 'f32', quant: 'int2', group: 16 },
  // head_dim 8: whole words at int8/int4 (a V item spans one group), by word at int2 (above)
  { headDim: 8, blockSize: 16, full: 'f16', quant: 'int4', group: 8 },
  { headDim: 8, blockSize: 16, full: 'f16', quant: 'int8', group: 4 },
  // head_dim ≡ 2 (mod 4): the last channel quad of a token is a pair
  { headDim: 6, blockSize: 16, full: 'f16', quant: 'int8', group: 2 },
];

describe('compact_blocks vs the reference codec', () => {
  it.each(CASES)('head_dim $headDim, block $blockSize, $full + $quant (G $group)', async (c) => {
    const gpu = await testGpu();
    const random = seededRandom(c.headDim * 131 + c.blockSize + c.group);
    const lengths = [1, 63, 65, 2 * c.blockSize + 3];
    const cache = buildCache(gpu, { ...c, lengths, spare: 40, seed: c.headDim + c.group });
    // Jobs: random kept lists (ascending, ~60% of each row) cut into blocks, destinations alternating between
    // the two pools; plus identity jobs and partially filled blocks.
    const indices: number[] = [];
    const jobs: CompactJob[] = [];
    const sources: number[][] = [];
    let nextFull = cache.firstFreeFull;
    let nextQuant = cache.firstFreeQuant;
    const destination = (j: number): number =>
      j % 2 === 0 ? encodeBlockRef('quant', nextQuant++) : encodeBlockRef('full', nextFull++);
    lengths.forEach((n, row) => {
      const kept = Array.from({ length: n }, (_, t) => t).filter(() => random() < 0.6);
      if (kept.length === 0) kept.push(n - 1);
      for (let start = 0; start < kept.length; start += c.blockSize) {
        const part = kept.slice(start, start + c.blockSize);
        jobs.push({ row, destEntry: destination(jobs.length), count: part.length, indexBase: indices.length, identityStart: 0 });
        sources.push(part);
        indices.push(...part);
      }
      const identityStart = Math.floor(n / 3);
      const count = Math.min(c.blockSize, n - identityStart);
      for (const pool of ['quant', 'full'] as const) {
        const dest = pool === 'quant' ? encodeBlockRef('quant', nextQuant++) : encodeBlockRef('full', nextFull++);
        jobs.push({ row, destEntry: dest, count, indexBase: IDENTITY_INDEX_BASE, identityStart });
        sources.push(Array.from({ length: count }, (_, i) => identityStart + i));
      }
    });
    expect(nextFull - cache.firstFreeFull).toBeLessThanOrEqual(40);
    expect(nextQuant - cache.firstFreeQuant).toBeLessThanOrEqual(40);
    const jobBuffer = createStorageBuffer(gpu, 'jobs', packCompactJobs(jobs));
    const indexBuffer = createStorageBuffer(gpu, 'indices', Uint32Array.from(indices));
    const kernel = new CompactBlocksKernel(gpu, { full: cache.full, quant: cache.quant });
    await gpu.withErrorScope(() => {
      const encoder = gpu.device.createCommandEncoder();
      kernel.encode(encoder, { cache: cache.bindings, jobs: jobBuffer, numJobs: jobs.length, indices: indexBuffer });
      gpu.submit([encoder.finish()]);
    });
    const pools = {
      full: new Uint32Array(await readBuffer(gpu, cache.bindings.fullPool)),
      quant: new Uint32Array(await readBuffer(gpu, cache.bindings.quantPool)),
    };
    const tally: Mismatches = { codes: 0, codeCount: 0, scales: 0, groupCount: 0 };
    compareJobs(cache, jobs, sources, pools, tally);
    expect(tally.codes).toBeLessThanOrEqual(Math.floor(tally.codeCount * MISMATCH_FRACTION));
    expect(tally.scales).toBeLessThanOrEqual(Math.floor(tally.groupCount * MISMATCH_FRACTION));
    jobBuffer.destroy();
    indexBuffer.destroy();
    cache.destroy();
  });

  it.each([
    { headDim: 128, full: 'f16' as const, quant: 'int4' as const },
    { headDim: 8, full: 'f16' as const, quant: 'int2' as const },
    // Whole-word K items with 1 and 4 channel quads per code word, from f32 rows.
    { headDim: 128, full: 'f32' as const, quant: 'int8' as const },
    { headDim: 64, full: 'f32' as const, quant: 'int2' as const },
  ])("sources 'full' (full-pool sources only): head_dim $headDim, $full → $quant", async ({ headDim, full, quant }) => {
    const gpu = await testGpu();
    const blockSize = 16;
    const lengths = [1, 63, 65];
    const cache = buildCache(gpu, { headDim, blockSize, full, quant, group: 8, lengths, spare: 8, seed: headDim + 5 });
    // Identity jobs over the full source blocks (odd blocks; buildCache quantizes the even ones), into fresh
    // quantized blocks, as compress() quantizes blocks leaving the recent window.
    const jobs: CompactJob[] = [];
    const sources: number[][] = [];
    let next = cache.firstFreeQuant;
    lengths.forEach((n, row) => {
      for (let b = 1; b * blockSize < n; b += 2) {
        const count = Math.min(blockSize, n - b * blockSize);
        jobs.push({ row, destEntry: encodeBlockRef('quant', next++), count, indexBase: IDENTITY_INDEX_BASE, identityStart: b * blockSize });
        sources.push(Array.from({ length: count }, (_, i) => b * blockSize + i));
      }
    });
    expect(jobs.length).toBeGreaterThan(2);
    const jobBuffer = createStorageBuffer(gpu, 'jobs', packCompactJobs(jobs));
    const noIndices = createStorageBuffer(gpu, 'no-indices', 4);
    await gpu.withErrorScope(() => {
      const encoder = gpu.device.createCommandEncoder();
      new CompactBlocksKernel(gpu, { full: cache.full, quant: cache.quant }).encode(encoder, {
        cache: cache.bindings,
        jobs: jobBuffer,
        numJobs: jobs.length,
        indices: noIndices,
        sources: 'full',
      });
      gpu.submit([encoder.finish()]);
    });
    const pool = new Uint32Array(await readBuffer(gpu, cache.bindings.quantPool));
    const tally: Mismatches = { codes: 0, codeCount: 0, scales: 0, groupCount: 0 };
    compareJobs(cache, jobs, sources, { quant: pool }, tally);
    expect(tally.codes).toBeLessThanOrEqual(Math.floor(tally.codeCount * MISMATCH_FRACTION));
    expect(tally.scales).toBeLessThanOrEqual(Math.floor(tally.groupCount * MISMATCH_FRACTION));
    jobBuffer.destroy();
    noIndices.destroy();
    cache.destroy();
  });

  // destinations 'quant': full-pool rows read as vec4<u32> where rows are octet-aligned (head_dim a multiple of 8),
  // else the u32 path; every bit width, f16 and f32 rows, counts 1/15/16, identity and index-list jobs. Output
  // must equal the kernel for any destinations word for word, and encodeBlock within the file's tolerances.
  const QUANT_DESTINATION_CASES = (['f16', 'f32'] as const).flatMap((full) =>
    ([8, 64, 128] as const).flatMap((headDim) => (['int8', 'int4', 'int2'] as const).map((quant) => ({ headDim, full, quant }))),
  );
  it.each(QUANT_DESTINATION_CASES)("destinations 'quant': head_dim $headDim, $full → $quant", async ({ headDim, full, quant }) => {
    const gpu = await testGpu();
    const blockSize = 16;
    const lengths = [64, 64];
    const group = Math.min(16, headDim);
    const cache = buildCache(gpu, { headDim, blockSize, full, quant, group, lengths, spare: 24, seed: headDim * 7 + quant.length });
    const jobs: CompactJob[] = [];
    const sources: number[][] = [];
    const indices: number[] = [];
    let next = cache.firstFreeQuant;
    lengths.forEach((_, row) => {
      for (const count of [1, 15, 16]) {
        // identity jobs over full block 1, and index lists mixing full blocks 1 and 3 (buildCache's odd blocks)
        jobs.push({ row, destEntry: encodeBlockRef('quant', next++), count, indexBase: IDENTITY_INDEX_BASE, identityStart: blockSize });
        sources.push(Array.from({ length: count }, (_, i) => blockSize + i));
        const list = Array.from({ length: count }, (_, i) => (i % 2 === 0 ? blockSize : 3 * blockSize) + ((5 * i + row) % blockSize));
        jobs.push({ row, destEntry: encodeBlockRef('quant', next++), count, indexBase: indices.length, identityStart: 0 });
        sources.push(list);
        indices.push(...list);
      }
    });
    const jobBuffer = createStorageBuffer(gpu, 'jobs', packCompactJobs(jobs));
    const indexBuffer = createStorageBuffer(gpu, 'indices', Uint32Array.from(indices));
    const kernel = new CompactBlocksKernel(gpu, { full: cache.full, quant: cache.quant });
    const run = async (options: { sources: 'full' | 'any'; destinations: 'quant' | 'any' }, by = kernel): Promise<Uint32Array> => {
      await gpu.withErrorScope(() => {
        const encoder = gpu.device.createCommandEncoder();
        by.encode(encoder, { cache: cache.bindings, jobs: jobBuffer, numJobs: jobs.length, indices: indexBuffer, ...options });
        gpu.submit([encoder.finish()]);
      });
      return new Uint32Array(await readBuffer(gpu, cache.bindings.quantPool));
    };
    const reference = await run({ sources: 'any', destinations: 'any' });
    for (const sourcesKind of ['full', 'any'] as const) {
      expect(await run({ sources: sourcesKind, destinations: 'quant' }), `sources '${sourcesKind}'`).toEqual(reference);
    }
    // A fallback adapter with subgroups shares K items over a quad (shaders/compact_k_quad.wgsl): the loop K item
    // (quantize_k_item) must write the same words.
    const quadPossible = gpu.has('subgroups') && gpu.adapter.isFallbackAdapter && quantizesByQuad(cache.quant);
    expect(kernel.quadKItems).toBe(quadPossible);
    if (quadPossible) {
      const loops = new CompactBlocksKernel(gpu, { full: cache.full, quant: cache.quant, quadKItems: false });
      for (const sourcesKind of ['full', 'any'] as const) {
        expect(await run({ sources: sourcesKind, destinations: 'quant' }, loops), `loop K items, sources '${sourcesKind}'`).toEqual(reference);
      }
    }
    const tally: Mismatches = { codes: 0, codeCount: 0, scales: 0, groupCount: 0 };
    compareJobs(cache, jobs, sources, { quant: reference }, tally);
    // SwiftShader's division is correctly rounded: there the codes are encodeBlock's exactly.
    const allowed = gpu.adapter.isFallbackAdapter ? 0 : Math.floor(tally.codeCount * MISMATCH_FRACTION);
    expect(tally.codes).toBeLessThanOrEqual(allowed);
    expect(tally.scales).toBeLessThanOrEqual(gpu.adapter.isFallbackAdapter ? 0 : Math.floor(tally.groupCount * MISMATCH_FRACTION));
    jobBuffer.destroy();
    indexBuffer.destroy();
    cache.destroy();
  });

  it('GPU top-k → kept indices → compaction, end to end', async () => {
    const gpu = await testGpu();
    const c = { headDim: 16, blockSize: 16, full: 'f16' as const, quant: 'int4' as const, group: 4 };
    const lengths = [1, 63, 65, 100];
    const cache = buildCache(gpu, { ...c, lengths, spare: 20, seed: 9 });
    const stride = cache.bindings.maxBlocksPerHead * c.blockSize;
    const random = seededRandom(4);
    const scores = lengths.map((n) => Float32Array.from({ length: n }, (_, t) => (t < 2 ? Infinity : Math.floor(random() * 5))));
    const ks = lengths.map((n) => Math.ceil(n / 2));
    const flat = new Float32Array(lengths.length * stride);
    scores.forEach((s, r) => flat.set(s, r * stride));
    const b = {
      scores: createStorageBuffer(gpu, 'scores', flat),
      k: createStorageBuffer(gpu, 'k', Uint32Array.from(ks)),
      thresholds: createStorageBuffer(gpu, 'thr', lengths.length * 8),
      keptIndices: createStorageBuffer(gpu, 'kept', flat.byteLength),
      keptCounts: createStorageBuffer(gpu, 'counts', lengths.length * 4),
    };
    const select = new TopKSelectKernel(gpu);
    let encoder = gpu.device.createCommandEncoder();
    select.encode(encoder, { ...b, lengths: cache.bindings.contextLens, numRows: lengths.length, stride });
    gpu.submit([encoder.finish()]);
    const counts = new Uint32Array(await readBuffer(gpu, b.keptCounts)); // the only readback the host needs
    const jobs: CompactJob[] = [];
    let next = cache.firstFreeQuant;
    counts.forEach((count, row) => {
      for (let start = 0; start < count; start += c.blockSize) {
        jobs.push({
          row,
          destEntry: encodeBlockRef('quant', next++),
          count: Math.min(c.blockSize, count - start),
          indexBase: row * stride + start,
          identityStart: 0,
        });
      }
    });
    const jobBuffer = createStorageBuffer(gpu, 'jobs', packCompactJobs(jobs));
    encoder = gpu.device.createCommandEncoder();
    new CompactBlocksKernel(gpu, { full: cache.full, quant: cache.quant }).encode(encoder, {
      cache: cache.bindings,
      jobs: jobBuffer,
      numJobs: jobs.length,
      indices: b.keptIndices,
    });
    gpu.submit([encoder.finish()]);
    const pool = new Uint32Array(await readBuffer(gpu, cache.bindings.quantPool));
    jobs.forEach((job) => {
      const kept = selectTopK(scores[job.row] ?? new Float32Array(), ks[job.row] ?? 0);
      const start = job.indexBase - job.row * stride;
      const block = job.destEntry & 0x7fff_ffff;
      const decoded = decodeBlock(cache.quant, pool.subarray(block * cache.quant.wordsPerBlock), job.count);
      const expectedPos = Array.from(kept.subarray(start, start + job.count), (t) => cache.rows[job.row]?.pos[t] ?? 0);
      expect(Array.from(decoded.positions)).toEqual(expectedPos);
    });
    for (const buffer of [...Object.values(b), jobBuffer]) buffer.destroy();
    cache.destroy();
  });
});

describe('gather_stats', () => {
  it('moves statistics to the new indices, bit for bit, zero past the count', async () => {
    const gpu = await testGpu();
    const random = seededRandom(8);
    const stride = 4097;
    const lengths = [1, 63, 65, 4097, 0];
    const numRows = lengths.length;
    const stats = new Float32Array(numRows * stride).map(() => random() * 10 - 5);
    stats[5] = -0;
    stats[stride + 3] = 1e-40; // subnormal: copied, not flushed
    const kept = new Uint32Array(numRows * stride).fill(0xffffffff);
    const counts = new Uint32Array(numRows);
    lengths.forEach((n, r) => {
      const list = Array.from({ length: n }, (_, t) => t).filter(() => random() < 0.5);
      kept.set(list, r * stride);
      counts[r] = list.length;
    });
    const b = {
      stats: createStorageBuffer(gpu, 'stats', stats),
      kept: createStorageBuffer(gpu, 'kept', kept),
      keptCounts: createStorageBuffer(gpu, 'counts', counts),
      out: createStorageBuffer(gpu, 'out', new Float32Array(numRows * stride).fill(7)),
    };
    await gpu.withErrorScope(() => {
      const encoder = gpu.device.createCommandEncoder();
      new GatherStatsKernel(gpu).encode(encoder, { ...b, numRows, stride });
      gpu.submit([encoder.finish()]);
    });
    const got = new Uint32Array(await readBuffer(gpu, b.out));
    const statBits = new Uint32Array(stats.buffer);
    const expected = new Uint32Array(numRows * stride);
    for (let r = 0; r < numRows; r++) {
      for (let j = 0; j < (counts[r] ?? 0); j++) expected[r * stride + j] = statBits[r * stride + (kept[r * stride + j] ?? 0)] ?? 0;
    }
    expect(got).toEqual(expected);
    for (const buffer of Object.values(b)) buffer.destroy();
  });
});
