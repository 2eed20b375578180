import { blockLayout, bytesPerBlock, encodeBlockRef, type QuantFormat } from '../../format/layout.js';
import { createStorageBuffer } from '../../gpu/buffers.js';
import type { GpuContext } from '../../gpu/context.js';
import { CompactBlocksKernel, type CompactJob, IDENTITY_INDEX_BASE, packCompactJobs } from '../../kernels/compress/compact-blocks.js';
import { buildBenchCache } from '../fixture.js';
import type { BenchCase, BenchSuite, PreparedCase } from '../harness.js';
import { formatTokens } from '../units.js';

const KV_HEADS = 8;
const HEAD_DIM = 128;
const BLOCK_SIZE = 16;
const CONTEXTS = [1024, 4096, 16384] as const;
const QUICK_CONTEXTS = [1024] as const;
const FORMATS: readonly QuantFormat[] = ['int8', 'int4', 'int2'];

function caseName(format: QuantFormat, context: number): string {
  return `quantize/${format}/${formatTokens(context)}`;
}

/**
 * KIVI quantization of whole f16 blocks (one layer, 8 KV heads, head_dim 128, blocks of 16, default group 16)
 * into int8, int4 or int2 blocks: compact_blocks with identity jobs (every source block to a fresh quantized
 * block), what compress() runs on blocks older than the recent window, with `sources: 'full'` (they are f16
 * blocks) and `destinations: 'quant'`; one more int4 row (full runs) runs the kernel variant for any source format. int4 and int2 rows compare with
 * int8 at the same context. Repeatable: sources are only read.
 *
 * @example
 * ```ts
 * const report = await runBenchmarks(gpu, [quantizeSuite], benchSettings(true));
 * ```
 */
export const quantizeSuite: BenchSuite = {
  name: 'quantize',
  description: 'KIVI quantization of f16 blocks (identity compaction jobs), one layer, 8 KV heads, head_dim 128, group 16',
  counts:
    'f16 blocks read whole (K, V, positions) + block-table entries and jobs read + quantized blocks written ' +
    '(codes, one scale/zero word per group, positions)',
  cases: (settings) =>
    (settings.quick ? QUICK_CONTEXTS : CONTEXTS).flatMap((context) => [
      ...FORMATS.map(
        (format): BenchCase => ({
          name: caseName(format, context),
          shape: `ctx ${formatTokens(context)} · 8kv · d128 · f16 → ${format} g16`,
          series: `quantize ${format}`,
          context,
          ...(format !== 'int8' ? { baseline: caseName('int8', context) } : {}),
          setup: (gpu) => prepareQuantize(gpu, context, format, 'full'),
        }),
      ),
      // The same int4 work through the kernel variant that can also read quantized sources (what a caller
      // gets without `sources: 'full'`); speedup = the 'full' row's time ÷ this one's. Full runs only.
      ...(settings.quick ? [] : [anySourcesCase(context)]),
    ]),
};

function anySourcesCase(context: number): BenchCase {
  return {
    name: `quantize/int4-any-sources/${formatTokens(context)}`,
    shape: `ctx ${formatTokens(context)} · 8kv · d128 · f16 → int4 g16, kernel for any source format`,
    series: 'quantize int4 (any-source kernel)',
    context,
    baseline: caseName('int4', context),
    setup: (gpu) => prepareQuantize(gpu, context, 'int4', 'any'),
  };
}

function prepareQuantize(gpu: GpuContext, context: number, format: QuantFormat, sources: 'full' | 'any'): PreparedCase {
  const cache = buildBenchCache(gpu, {
    layers: 1,
    kvHeads: KV_HEADS,
    headDim: HEAD_DIM,
    blockSize: BLOCK_SIZE,
    context,
    full: 'f16',
    seed: context + format.length,
  });
  const quant = blockLayout(format, { headDim: HEAD_DIM, blockSize: BLOCK_SIZE });
  const blocksPerHead = cache.maxBlocksPerHead;
  const jobs: CompactJob[] = [];
  for (let row = 0; row < KV_HEADS; row++) {
    for (let b = 0; b < blocksPerHead; b++) {
      jobs.push({
        row,
        destEntry: encodeBlockRef('quant', 1 + row * blocksPerHead + b),
        count: BLOCK_SIZE,
        indexBase: IDENTITY_INDEX_BASE,
        identityStart: b * BLOCK_SIZE,
      });
    }
  }
  const quantPool = createStorageBuffer(gpu, 'bench:quant-pool', (1 + jobs.length) * bytesPerBlock(quant));
  const jobBuffer = createStorageBuffer(gpu, 'bench:jobs', packCompactJobs(jobs));
  // Identity jobs never read an index list, but the binding needs a buffer.
  const noIndices = createStorageBuffer(gpu, 'bench:no-indices', 4);
  const kernel = new CompactBlocksKernel(gpu, { full: cache.full, quant });
  const bindings = { ...cache.bindings, quantPool };
  return {
    bytes: jobs.length * (bytesPerBlock(cache.full) + 4 + 5 * 4 + bytesPerBlock(quant)),
    items: { count: context, unit: 'token' },
    encode: (encoder) =>
      kernel.encode(encoder, {
        cache: bindings,
        jobs: jobBuffer,
        numJobs: jobs.length,
        indices: noIndices,
        sources,
        // Every job here writes a quantized block, as compress() says when it only quantizes; the any-sources row
        // stays the kernel for any source and destination.
        destinations: sources === 'full' ? 'quant' : 'any',
      }),
    destroy: () => {
      cache.destroy();
      for (const b of [quantPool, jobBuffer, noIndices]) b.destroy();
    },
  };
}
