import { bytesPerBlock, encodeBlockRef } from '../../format/layout.js';
import { createStorageBuffer } from '../../gpu/buffers.js';
import type { GpuContext } from '../../gpu/context.js';
import { CompactBlocksKernel, type CompactJob, packCompactJobs } from '../../kernels/compress/compact-blocks.js';
import { type BenchCache, buildBenchCache, randomFloats } from '../fixture.js';
import type { BenchCase, BenchSuite, PreparedCase } from '../harness.js';
import { formatTokens } from '../units.js';

const KV_HEADS = 8;
const HEAD_DIM = 128;
const BLOCK_SIZE = 16;
const CONTEXTS = [1024, 4096, 16384] as const;
const QUICK_CONTEXTS = [1024] as const;
/** Tokens kept per head: 1/KEEP_DIVISOR of the context. */
const KEEP_DIVISOR = 8;

/**
 * The benchmark cache (one layer, f16 blocks, see {@link buildBenchCache}) moved into a full pool with `extra`
 * free blocks after its own, so compaction and quantization have fresh destination blocks: the fixture sizes
 * its pools exactly. Returns the bigger pool and the index of its first free block.
 *
 * @example
 * ```ts
 * const { fullPool, firstFree } = withFreeFullBlocks(gpu, cache, 64);
 * ```
 */
export function withFreeFullBlocks(
  gpu: GpuContext,
  cache: BenchCache,
  extra: number,
): { fullPool: GPUBuffer; firstFree: number } {
  const old = cache.bindings.fullPool;
  const blockBytes = bytesPerBlock(cache.full);
  const fullPool = createStorageBuffer(gpu, 'bench:full-pool+free', old.size + extra * blockBytes);
  const encoder = gpu.device.createCommandEncoder({ label: 'bench:grow-pool' });
  encoder.copyBufferToBuffer(old, 0, fullPool, 0, old.size);
  gpu.submit([encoder.finish()]);
  return { fullPool, firstFree: old.size / blockBytes };
}

/**
 * Compaction of the kept tokens (1/8 of each head, scattered) of one layer, 8 KV heads, head_dim 128, into
 * fresh f16 blocks of 16 (compact_blocks with index lists: what compress() runs after top-k at 16 bits).
 * Repeatable: sources are only read, and each run rewrites the same destination blocks with the same values.
 *
 * @example
 * ```ts
 * const report = await runBenchmarks(gpu, [compactionSuite], benchSettings(true));
 * ```
 */
export const compactionSuite: BenchSuite = {
  name: 'compaction',
  description: 'compaction of kept tokens (1/8 per head) into fresh f16 blocks of 16, one layer, 8 KV heads, head_dim 128',
  counts:
    "kept tokens' K, V (f16) and positions read + their kept indices and table entries read + the destination " +
    'blocks written whole (K, V, positions; the unused tail of a last block is zeroed)',
  cases: (settings) =>
    (settings.quick ? QUICK_CONTEXTS : CONTEXTS).map(
      (context): BenchCase => ({
        name: `compaction/f16/${formatTokens(context)}`,
        shape: `ctx ${formatTokens(context)} · 8kv · d128 · keep ${context / KEEP_DIVISOR} per head → f16`,
        series: 'compaction f16 keep 1/8',
        context,
        setup: (gpu) => prepareCompaction(gpu, context),
      }),
    ),
};

function prepareCompaction(gpu: GpuContext, context: number): PreparedCase {
  const cache = buildBenchCache(gpu, {
    layers: 1,
    kvHeads: KV_HEADS,
    headDim: HEAD_DIM,
    blockSize: BLOCK_SIZE,
    context,
    full: 'f16',
    seed: context + 7,
  });
  const keep = context / KEEP_DIVISOR;
  const blocksPerHead = Math.ceil(keep / BLOCK_SIZE);
  const { fullPool, firstFree } = withFreeFullBlocks(gpu, cache, KV_HEADS * blocksPerHead);
  const stride = cache.maxBlocksPerHead * BLOCK_SIZE;
  // One kept token in every run of 8, at a random offset: ascending, spread over every source block.
  const jitter = randomFloats(KV_HEADS * keep, context + 9);
  const indices = new Uint32Array(KV_HEADS * stride);
  const jobs: CompactJob[] = [];
  for (let row = 0; row < KV_HEADS; row++) {
    for (let i = 0; i < keep; i++) {
      indices[row * stride + i] = i * KEEP_DIVISOR + Math.floor(Math.abs(jitter[row * keep + i] ?? 0) * KEEP_DIVISOR);
    }
    for (let b = 0; b < blocksPerHead; b++) {
      jobs.push({
        row,
        destEntry: encodeBlockRef('full', firstFree + row * blocksPerHead + b),
        count: Math.min(BLOCK_SIZE, keep - b * BLOCK_SIZE),
        indexBase: row * stride + b * BLOCK_SIZE,
        identityStart: 0,
      });
    }
  }
  const kernel = new CompactBlocksKernel(gpu, { full: cache.full, quant: null });
  const jobBuffer = createStorageBuffer(gpu, 'bench:jobs', packCompactJobs(jobs));
  const indexBuffer = createStorageBuffer(gpu, 'bench:kept-indices', indices);
  const bindings = { ...cache.bindings, fullPool };
  const keptTokens = KV_HEADS * keep;
  return {
    bytes:
      keptTokens * (2 * HEAD_DIM * 2 + 4) + keptTokens * 4 + jobs.length * 4 + jobs.length * bytesPerBlock(cache.full),
    items: { count: context, unit: 'token' },
    encode: (encoder) => kernel.encode(encoder, { cache: bindings, jobs: jobBuffer, numJobs: jobs.length, indices: indexBuffer }),
    destroy: () => {
      cache.destroy();
      for (const b of [fullPool, jobBuffer, indexBuffer]) b.destroy();
    },
  };
}
