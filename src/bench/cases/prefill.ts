import { InvalidArgumentError } from '../../errors.js';
import { createStorageBuffer } from '../../gpu/buffers.js';
import type { GpuContext } from '../../gpu/context.js';
import { AccumulateAttentionKernel, attentionSegments } from '../../kernels/cache/accumulate-attention.js';
import { FlashDecodeKernel } from '../../kernels/cache/flash-decode.js';
import { PagedAttentionKernel } from '../../kernels/cache/paged-attention.js';
import { PrefillAttentionKernel } from '../../kernels/cache/prefill-attention.js';
import { randomFloats } from '../fixture.js';
import type { BenchCase, BenchSuite, PreparedCase, SkippedCase } from '../harness.js';
import { formatBytes, formatTokens } from '../units.js';
import { ATTENTION_SHAPE, decodeBenchCache } from './paged-attention-decode.js';

/** A prefill chunk of `queries` new tokens at the end of a `context`-token cache (the chunk's own keys included). */
export interface PrefillBenchSize {
  readonly queries: number;
  readonly context: number;
}

const HARDWARE_SIZES: readonly PrefillBenchSize[] = [
  { queries: 512, context: 4096 },
  { queries: 512, context: 16384 },
];
// SwiftShader (2 cores) runs about 0.5 GFLOP/s: a 512-query chunk at 4K (34 GFLOP per kernel) would take minutes.
const SOFTWARE_SIZES: readonly PrefillBenchSize[] = [
  { queries: 32, context: 1024 },
  { queries: 64, context: 2048 },
];

/** Chunks above this many query × key pairs are skipped on a software adapter unless the environment names them. */
const SOFTWARE_PAIR_LIMIT = 64 * 2048;

/**
 * The chunk sizes of the rows: `KVCOMPACT_BENCH_PREFILL` (comma-separated `queriesxcontext`, e.g.
 * `512x4096,512x16384`) when set, else two small chunks (which a software adapter can run) and 512 queries at 4K
 * and 16K (which it skips); `--quick` keeps the first of each.
 *
 * @example
 * ```ts
 * prefillBenchSizes(false, '512x4096'); // [{ queries: 512, context: 4096 }]
 * ```
 */
export function prefillBenchSizes(quick: boolean, fromEnvironment: string | undefined): readonly PrefillBenchSize[] {
  if (fromEnvironment === undefined || fromEnvironment.trim() === '') {
    return quick ? [SOFTWARE_SIZES[0], HARDWARE_SIZES[0]].filter((size) => size !== undefined) : [...SOFTWARE_SIZES, ...HARDWARE_SIZES];
  }
  return fromEnvironment.split(',').map((text) => {
    const [queries, context] = text.trim().split('x').map(Number);
    if (!Number.isInteger(queries) || !Number.isInteger(context) || (queries ?? 0) <= 0 || (context ?? 0) < (queries ?? 0)) {
      throw new InvalidArgumentError('KVCOMPACT_BENCH_PREFILL', `expects sizes like 512x4096 (queries ≤ context); got "${text}"`);
    }
    return { queries: queries ?? 1, context: context ?? 1 };
  });
}

/** The kernels a row runs: one-pass with a probability buffer, split context, tiled prefill. */
export type PrefillVariant = 'paged' | 'flash' | 'prefill';

const VARIANT_LABEL: Record<PrefillVariant, string> = {
  paged: 'paged (probs buffer)',
  flash: 'flash-decode (split context)',
  prefill: 'prefill tiled',
};

function caseName(variant: PrefillVariant, stats: boolean, size: PrefillBenchSize): string {
  return `prefill/${variant}${stats ? '+stats' : ''}/${size.queries}q/${formatTokens(size.context)}`;
}

/**
 * Context partitions of FlashDecodeKernel.split at its default shape (64 tokens a chunk, 256 a partition, one
 * query a tile, 1024 target workgroups); setup checks it against the kernel's own answer.
 */
function flashPartitions(size: PrefillBenchSize): number {
  const cap = Math.max(1, Math.floor(1024 / (size.queries * ATTENTION_SHAPE.kvHeads)));
  const wanted = Math.ceil(size.context / 256);
  if (wanted <= cap) return wanted;
  return Math.ceil(size.context / (Math.ceil(Math.ceil(size.context / cap) / 64) * 64));
}

/**
 * GPU scratch a variant allocates for one run beyond the cache, the queries and the output, in bytes: the
 * probabilities (one-pass kernel), the partials and softmax sums (split context), the log-sum-exp (tiled).
 *
 * @example
 * ```ts
 * prefillScratchBytes('paged', { queries: 512, context: 16384 }); // 1 GiB
 * ```
 */
export function prefillScratchBytes(variant: PrefillVariant, size: PrefillBenchSize): number {
  const { nHeads, headDim } = ATTENTION_SHAPE;
  const rows = size.queries * nHeads;
  if (variant === 'paged') return rows * size.context * 4;
  if (variant === 'flash') return rows * flashPartitions(size) * (headDim + 2) * 4 + rows * 8;
  return size.queries * (nHeads + 1) * 4;
}

function isSoftware(gpu: GpuContext): boolean {
  return gpu.adapter.isFallbackAdapter || gpu.adapter.architecture === 'swiftshader';
}

/**
 * Prefill-chunk attention: the one-pass kernel that leaves every query's probabilities in an n × context buffer
 * (the old prefill path), the split-context kernel, and the tiled prefill kernel, each without and with the
 * attention statistics (H2O), at the same chunk in one run. Rows report their speedup over the one-pass kernel
 * and name their scratch bytes in the shape column.
 *
 * @example
 * ```ts
 * const report = await runBenchmarks(gpu, [prefillSuite], benchSettings(true));
 * ```
 */
export const prefillSuite: BenchSuite = {
  name: 'prefill',
  description:
    'prefill-chunk paged attention, causal by position (the chunk is the last n tokens of the context), ' +
    '32 query heads / 8 KV heads, head_dim 128, f16 blocks of 16, one layer; +stats adds Σp, Σp², counts per key',
  counts:
    "one layer's cache blocks read once + block table + queries, plus the output written once (the same for every " +
    'variant: scratch traffic is left out, its size is in the shape column)',
  cases: (settings) => {
    const named = (process.env.KVCOMPACT_BENCH_PREFILL ?? '').trim() !== '';
    return prefillBenchSizes(settings.quick, process.env.KVCOMPACT_BENCH_PREFILL).flatMap((size) =>
      (['paged', 'flash', 'prefill'] as const).flatMap((variant) =>
        [false, true].map(
          (stats): BenchCase => ({
            name: caseName(variant, stats, size),
            shape: `${size.queries}q · ctx ${formatTokens(size.context)} · 32q/8kv · d128 · f16 · scratch ${formatBytes(prefillScratchBytes(variant, size))}`,
            series: `${VARIANT_LABEL[variant]}${stats ? ' + stats' : ''}`,
            context: size.context,
            ...(variant === 'paged' ? {} : { baseline: caseName('paged', stats, size) }),
            setup: (gpu) => preparePrefill(gpu, size, variant, stats, named),
          }),
        ),
      ),
    );
  },
};

function preparePrefill(gpu: GpuContext, size: PrefillBenchSize, variant: PrefillVariant, stats: boolean, named: boolean): PreparedCase | SkippedCase {
  const { nHeads, kvHeads, headDim } = ATTENTION_SHAPE;
  if (isSoftware(gpu) && !named && size.queries * size.context > SOFTWARE_PAIR_LIMIT) {
    return { skip: 'too slow on a software adapter (minutes per kernel); KVCOMPACT_BENCH_PREFILL=512x4096 runs it anyway' };
  }
  const probsBytes = prefillScratchBytes('paged', size);
  if (variant === 'paged' && probsBytes > Math.min(gpu.limits.maxStorageBufferBindingSize, gpu.limits.maxBufferSize)) {
    return { skip: `its probability buffer needs ${formatBytes(probsBytes)}, past this device's binding limit` };
  }
  const cache = decodeBenchCache(gpu, size.context, null);
  const shape = { nHeads, kvHeads, full: cache.full, quant: cache.quant };
  const qFloats = size.queries * nHeads * headDim;
  const queries = createStorageBuffer(gpu, 'bench:q', randomFloats(qFloats, size.context));
  const querySlots = createStorageBuffer(gpu, 'bench:q-slots', new Uint32Array(size.queries));
  const queryPositions = createStorageBuffer(
    gpu,
    'bench:q-pos',
    Uint32Array.from({ length: size.queries }, (_, i) => size.context - size.queries + i),
  );
  const segments = createStorageBuffer(gpu, 'bench:segments', attentionSegments(new Uint32Array(size.queries)));
  const out = createStorageBuffer(gpu, 'bench:out', qFloats * 4);
  const statsBytes = kvHeads * cache.maxBlocksPerHead * cache.full.blockSize * 4;
  const target = {
    attnSum: createStorageBuffer(gpu, 'bench:attn-sum', statsBytes),
    attnSqSum: createStorageBuffer(gpu, 'bench:attn-sq', statsBytes),
    attnCount: createStorageBuffer(gpu, 'bench:attn-count', statsBytes),
  };
  const buffers = [queries, querySlots, queryPositions, segments, out, ...Object.values(target)];
  const common = { cache: cache.bindings, layer: 0, numQueries: size.queries, queries, querySlots, queryPositions, out };
  const statsRun = { segments, numSegments: 1, target };
  let encode: (encoder: GPUCommandEncoder) => void;
  let destroyKernel: () => void = () => undefined;
  if (variant === 'paged') {
    const attention = new PagedAttentionKernel(gpu, shape);
    const accumulate = new AccumulateAttentionKernel(gpu, shape);
    const probs = createStorageBuffer(gpu, 'bench:probs', probsBytes);
    buffers.push(probs);
    encode = (encoder) => {
      attention.encode(encoder, { ...common, probs, probsStride: size.context });
      if (stats) accumulate.encode(encoder, { cache: cache.bindings, layer: 0, probs, probsStride: size.context, queryPositions, segments, numSegments: 1, stats: target });
    };
  } else if (variant === 'flash') {
    const flash = new FlashDecodeKernel(gpu, shape);
    if (flash.split(size.queries, size.context).partitions !== flashPartitions(size)) {
      throw new InvalidArgumentError('flashPartitions', 'the bench mirror of FlashDecodeKernel.split disagrees with the kernel: update it');
    }
    encode = (encoder) => flash.encode(encoder, { ...common, maxContext: size.context, ...(stats ? { stats: statsRun } : {}) });
    destroyKernel = () => flash.destroy();
  } else {
    const prefill = new PrefillAttentionKernel(gpu, shape);
    if (prefill.scratchBytes(size.queries) !== prefillScratchBytes('prefill', size)) {
      throw new InvalidArgumentError('prefillScratchBytes', 'disagrees with PrefillAttentionKernel.scratchBytes: update it');
    }
    encode = (encoder) => prefill.encode(encoder, { ...common, maxContext: size.context, ...(stats ? { stats: statsRun } : {}) });
    destroyKernel = () => prefill.destroy();
  }
  const qBytes = qFloats * 4;
  return {
    bytes: cache.blockBytesPerLayer + cache.tableBytesPerLayer + qBytes + size.queries * 8 + qBytes,
    items: { count: size.queries, unit: 'query' },
    // The harness's bracket times every variant the same way (the one-pass + accumulate row is two passes).
    encode: (encoder) => encode(encoder),
    destroy: () => {
      destroyKernel();
      cache.destroy();
      for (const b of buffers) b.destroy();
    },
  };
}
