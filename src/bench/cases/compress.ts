import { bytesPerBlock, blockLayout, type Bits } from '../../format/layout.js';
import { PagedKvCache } from '../../engine/paged-kv-cache.js';
import type { BudgetMode } from '../../compress/budgets.js';
import type { MergeMode } from '../../compress/options.js';
import { OutOfBlocksError } from '../../errors.js';
import { createStorageBuffer } from '../../gpu/buffers.js';
import type { GpuContext } from '../../gpu/context.js';
import { KvAppendKernel } from '../../kernels/cache/kv-append.js';
import { cacheOptionsForModel } from '../../model/cache-options.js';
import { randomFloats } from '../fixture.js';
import type { BenchCase, BenchSettings, BenchSuite, PreparedCase, SkippedCase } from '../harness.js';
import { formatBytes, formatTokens } from '../units.js';

/**
 * The cache of the end-to-end rows: 4 layers × 8 KV heads × head_dim 128, 32 query heads (GQA 4), f16 blocks of
 * 16, an observation window of 32 queries.
 *
 * @example
 * ```ts
 * const cache = PagedKvCache.create(gpu, { shape: COMPRESS_SHAPE, nHeads: COMPRESS_SHAPE.nHeads, ... });
 * ```
 */
export const COMPRESS_SHAPE = { layers: 4, kvHeads: 8, headDim: 128, blockSize: 16, nHeads: 32, window: 32 } as const;

/**
 * Contexts (tokens per KV head) of the end-to-end rows; `--quick` keeps the first two.
 *
 * @example
 * ```ts
 * COMPRESS_CONTEXTS.map(formatTokens); // ['1K', '4K', '16K', '64K']
 * ```
 */
export const COMPRESS_CONTEXTS = [1024, 4096, 16384, 65536] as const;
const QUICK_CONTEXTS = [1024, 4096] as const;

/**
 * One end-to-end variant: what `cache.compress()` is asked to do, and on which cache.
 */
export interface CompressVariant {
  readonly policy: 'snapkv' | 'h2o';
  readonly budgetMode: BudgetMode;
  readonly bits: Extract<Bits, 16 | 4>;
  /**
   * Whether the cache holds an observation window (as after decoding). SnapKV scores with it (and reports its
   * attention mass from the same pass); h2o scores with the accumulated statistics either way, so its -nowin rows
   * show that the window costs it nothing.
   */
  readonly window: boolean;
  /** What evicted tokens become (default 'none'; the merge suite times the others against it). */
  readonly merge?: MergeMode;
  /**
   * Tokens each KV head evicts: `eighth` keeps context/8 (the default: one compression after a prefill), `block`
   * evicts one block of 16 per head, as each compression of the decode schedule does (budget − slack, slack = one
   * block once the budget is 64 or more: src/compress/decode-schedule.ts).
   */
  readonly evict?: 'eighth' | 'block';
}

/**
 * Every variant of the full run: snapkv and h2o, uniform and adakv budgets, kept in f16 or quantized to int4, on
 * a cache with an observation window; plus h2o on a cache without one (everything but the window attention).
 *
 * @example
 * ```ts
 * COMPRESS_VARIANTS.length; // 10
 * ```
 */
export const COMPRESS_VARIANTS: readonly CompressVariant[] = [
  ...(['snapkv', 'h2o'] as const).flatMap((policy) =>
    (['uniform', 'adakv'] as const).flatMap((budgetMode) =>
      ([16, 4] as const).map((bits): CompressVariant => ({ policy, budgetMode, bits, window: true })),
    ),
  ),
  ...noWindowVariants(),
];

function noWindowVariants(): CompressVariant[] {
  return [
    { policy: 'h2o', budgetMode: 'uniform', bits: 16, window: false },
    { policy: 'h2o', budgetMode: 'adakv', bits: 4, window: false },
  ];
}

/**
 * The variants `--quick` runs: one window variant per policy (the cheapest pairing for one, the dearest for the
 * other, so both scorers, budget modes and formats appear) and the two window-less ones.
 */
const QUICK_VARIANTS: readonly CompressVariant[] = [
  { policy: 'snapkv', budgetMode: 'uniform', bits: 16, window: true },
  { policy: 'h2o', budgetMode: 'adakv', bits: 4, window: true },
  ...noWindowVariants(),
];

/** Tokens appended per GPU submit while filling (setup, not timed). */
const FILL_CHUNK = 1024;
/** Sequence ids: the filled source, and the fork each timed run compresses. */
const SOURCE = 0;
const FORK = 1;

/**
 * The name of a variant in case names and series: policy[-nowin]/budgets/storage[/step][+merge] (`step`: one
 * block evicted per head, as a decode-schedule compression does).
 *
 * @example
 * ```ts
 * compressVariantName({ policy: 'h2o', budgetMode: 'adakv', bits: 4, window: true, merge: 'nearest' }); // 'h2o/adakv/int4+nearest'
 * compressVariantName({ policy: 'h2o', budgetMode: 'uniform', bits: 16, window: true, evict: 'block', merge: 'cam' }); // 'h2o/uniform/f16/step+cam'
 * ```
 */
export function compressVariantName(v: CompressVariant): string {
  const merge = v.merge === undefined || v.merge === 'none' ? '' : `+${v.merge}`;
  const step = v.evict === 'block' ? '/step' : '';
  return `${v.policy}${v.window ? '' : '-nowin'}/${v.budgetMode}/${v.bits === 16 ? 'f16' : 'int4'}${step}${merge}`;
}

const variantName = compressVariantName;

/**
 * End-to-end `cache.compress()` of one sequence: score → per-head budgets → top-k → compaction (and KIVI int4 of
 * the blocks older than the recent window) → old blocks freed, with every submit, wait and readback the call
 * makes. Budget = context / 8 tokens per head. Each timed run compresses a fresh fork of the filled sequence (a
 * fork shares every block, so compressing it writes new blocks and never destroys the source); the fork and its
 * freeing are outside the clock.
 *
 * @example
 * ```ts
 * const report = await runBenchmarks(gpu, [compressSuite], benchSettings(true));
 * report.rows.map((r) => r.perItem?.us); // µs per token: flat when the cost is linear in the context
 * ```
 */
export const compressSuite: BenchSuite = compressSuiteFor();

/**
 * The compress suite restricted to given contexts and variants (default: the full run's, or `--quick`'s): a run of
 * the 64K rows alone, or of two variants at every size, without timing the others.
 *
 * @example
 * ```ts
 * const suite = compressSuiteFor({ contexts: [1024, 65536], variants: [{ policy: 'h2o', budgetMode: 'uniform', bits: 16, window: true }] });
 * await runBenchmarks(gpu, [suite], benchSettings(false));
 * ```
 */
export function compressSuiteFor(only: { readonly contexts?: readonly number[]; readonly variants?: readonly CompressVariant[] } = {}): BenchSuite {
  return {
  name: 'compress',
  description:
    'end-to-end cache.compress() (wall clock, host orchestration and readbacks included), 4 layers × 8 KV heads × ' +
    'head_dim 128, 32 query heads, f16 blocks of 16, window 32, budget = context/8 per head',
  counts:
    "the sequence's f16 blocks read once (K, V, positions; the least any compression must read); what it writes " +
    '(≤ 1/8 of that) is left out so every variant at one context shares one copy reference. Timed by wall clock ' +
    'from the call until the GPU has done its work: scoring, the budget readback, selection, compaction, ' +
    'statistics gather and the table upload, on a fork of the filled sequence',
  cases: (settings) =>
    (only.contexts ?? (settings.quick ? QUICK_CONTEXTS : COMPRESS_CONTEXTS)).flatMap((context) =>
      (only.variants ?? (settings.quick ? QUICK_VARIANTS : COMPRESS_VARIANTS)).map(
        (variant): BenchCase => ({
          name: `compress/${variantName(variant)}/${formatTokens(context)}`,
          shape:
            `ctx ${formatTokens(context)} · 4L · 32q/8kv · d128 · ${variant.policy} ${variant.budgetMode} · keep 1/8 · ` +
            `${variant.bits === 16 ? 'f16' : 'int4 + 32 f16'}${variant.window ? '' : ' · no window'}`,
          series: `compress ${variantName(variant)}`,
          context,
          setup: (gpu, settings) => prepareCompress(gpu, settings, context, variant),
        }),
      ),
    ),
  };
}

/**
 * Blocks and bytes a case needs, to size the pools up front (growth inside a timed run would be timed too). Each
 * layer has its own pools (one buffer each): the block counts and pool bytes are those of ONE layer.
 *
 * @example
 * ```ts
 * const { fullPoolBytes, quantPoolBytes } = compressCacheSize(4096, 4); // 17,312,832 and 831,040 bytes per layer
 * ```
 */
export interface CompressCacheSize {
  /** Usable blocks of one layer's full pool. */
  readonly fullBlocks: number;
  readonly quantBlocks: number;
  /** Bytes of one layer's full pool (its null block included). */
  readonly fullPoolBytes: number;
  readonly quantPoolBytes: number;
  /** Bytes of every layer's pools: the cache's byte budget. */
  readonly totalBytes: number;
  /** Bytes of one per-token statistics buffer (three exist), f32 [layers][2 slots][kvHeads][context]. */
  readonly statsBytes: number;
  /** Bytes of the source sequence's blocks: what the rows count. */
  readonly sourceBytes: number;
}

/**
 * Pool sizes of an end-to-end case at `context` tokens, per layer: the source's full blocks, plus what one
 * compression of a fork writes (budget context/8; with int4, whole blocks older than the 32 recent tokens
 * quantized), plus one block per head of slack.
 *
 * @example
 * ```ts
 * compressCacheSize(65536, 16).fullPoolBytes; // 3.04e8 per layer (totalBytes 1.22e9: past 1 GiB in one buffer)
 * ```
 */
export function compressCacheSize(context: number, bits: 16 | 4, budget = Math.floor(context / 8)): CompressCacheSize {
  const { layers, kvHeads, headDim, blockSize } = COMPRESS_SHAPE;
  const full = blockLayout('f16', { headDim, blockSize });
  const quant = blockLayout('int4', { headDim, blockSize });
  const sourceBlocks = kvHeads * Math.ceil(context / blockSize);
  // adakv may give one head up to its whole context: bound the output by the whole budget of its layer.
  const keptPerLayer = budget * kvHeads;
  const outFull = bits === 16 ? Math.ceil(keptPerLayer / blockSize) + kvHeads : kvHeads * 4 + kvHeads;
  const outQuant = bits === 4 ? Math.ceil(keptPerLayer / blockSize) + kvHeads : 0;
  const fullBlocks = sourceBlocks + outFull + kvHeads;
  const quantBlocks = outQuant;
  const fullPoolBytes = (fullBlocks + 1) * bytesPerBlock(full);
  const quantPoolBytes = bits === 4 ? (quantBlocks + 1) * bytesPerBlock(quant) : 0;
  return {
    fullBlocks,
    quantBlocks,
    fullPoolBytes,
    quantPoolBytes,
    totalBytes: layers * (fullPoolBytes + quantPoolBytes),
    statsBytes: layers * 2 * kvHeads * context * 4,
    sourceBytes: layers * sourceBlocks * bytesPerBlock(full),
  };
}

function tooBig(gpu: GpuContext, size: CompressCacheSize): string | null {
  const { maxStorageBufferBindingSize, maxBufferSize } = gpu.limits;
  const limit = Math.min(maxStorageBufferBindingSize, maxBufferSize);
  for (const [what, bytes] of [
    ["one layer's full pool", size.fullPoolBytes],
    ["one layer's quantized pool", size.quantPoolBytes],
    ['statistics buffer', size.statsBytes],
    ['copy reference', size.sourceBytes / 2],
  ] as const) {
    if (bytes > limit) {
      return (
        `its ${what} needs ${formatBytes(bytes)} in one buffer, past this adapter's ` +
        `min(maxStorageBufferBindingSize, maxBufferSize) = ${formatBytes(limit)}`
      );
    }
  }
  return null;
}

/**
 * Fills sequence SOURCE of `cache` with `context` tokens in every layer and head, fast enough for 64K tokens:
 * with a window, 32 tokens through `beginStep`/`encodeLayer` first (records the observation window and runs the
 * statistics path once; attention over 32 tokens is cheap, over the whole context it would be quadratic), then
 * the rest straight through the metadata's append plan and the append kernel from one random
 * GPU chunk reused for every chunk and layer. (`append()` would do, but its `beginStep` acquires a probabilities
 * buffer of tokens × query heads × context × 4 bytes it never uses: 4 GiB for a 512-token chunk at 64K.)
 * Then the window's positions are moved to the newest 32 tokens (a window query only attends to tokens at or
 * before its position, so positions 0..31 would leave the window attention almost nothing to do) and the
 * statistics get random values, as a long decode would leave them.
 */
async function fillSource(gpu: GpuContext, cache: PagedKvCache, context: number, withWindow: boolean): Promise<void> {
  const { layers, kvHeads, headDim, window } = COMPRESS_SHAPE;
  cache.addSequence(SOURCE);
  const first = withWindow ? Math.min(window, context) : 0;
  if (first > 0) await fillWindow(gpu, cache, first);
  const chunkFloats = FILL_CHUNK * kvHeads * headDim;
  const keys = createStorageBuffer(gpu, 'bench:fill-k', randomFloats(chunkFloats, 24));
  const values = createStorageBuffer(gpu, 'bench:fill-v', randomFloats(chunkFloats, 25));
  const flags = createStorageBuffer(gpu, 'bench:fill-flags', 4);
  const append = new KvAppendKernel(gpu, { kvHeads, full: cache.fullLayout });
  try {
    for (let done = first; done < context; ) {
      const n = Math.min(FILL_CHUNK, context - done);
      const plan = cache.meta.planAppend(SOURCE, n);
      if (plan === null) throw new OutOfBlocksError('full', n, cache.meta.poolUsage('full').free, 'bench: the pool was sized too small');
      const destSlots = createStorageBuffer(gpu, 'bench:fill-dest', plan.destSlots);
      const positions = createStorageBuffer(
        gpu,
        'bench:fill-pos',
        Uint32Array.from({ length: n }, (_, t) => plan.firstPosition + t),
      );
      const enc = gpu.device.createCommandEncoder({ label: 'bench:fill' });
      for (let layer = 0; layer < layers; layer++) {
        append.encode(enc, { layer, numTokens: n, keys, values, destSlots, positions, fullPool: cache.storage.poolBuffer('full', layer), flags });
      }
      gpu.submit([enc.finish()]);
      await gpu.idle();
      destSlots.destroy();
      positions.destroy();
      done += n;
    }
  } finally {
    keys.destroy();
    values.destroy();
    flags.destroy();
  }
  cache.storage.uploadDirtyRows();

  const slot = cache.meta.slotOf(SOURCE);
  const seqSlots = cache.meta.seqSlots;
  for (let layer = 0; layer < layers; layer++) {
    const base = layer * seqSlots + slot;
    if (withWindow) {
      const ring = new Uint32Array(window);
      for (let p = context - window; p < context; p++) ring[p % window] = p;
      gpu.device.queue.writeBuffer(cache.attention.window.positions, base * window * 4, ring);
    }
    const words = kvHeads * cache.maxTokensPerHead;
    const offset = base * words * 4;
    const sums = randomFloats(words, 31 + layer).map(Math.abs);
    gpu.device.queue.writeBuffer(cache.attention.statistics.attnSum, offset, sums);
    gpu.device.queue.writeBuffer(cache.attention.statistics.attnSqSum, offset, sums.map((x) => x * x));
    gpu.device.queue.writeBuffer(cache.attention.statistics.attnCount, offset, randomFloats(words, 41 + layer).map((x) => 1 + Math.abs(x) * 200));
  }
  await gpu.idle();
}

/** The first `first` tokens through the model-facing step API: records the observation window (32 queries). */
async function fillWindow(gpu: GpuContext, cache: PagedKvCache, first: number): Promise<void> {
  const { layers, kvHeads, headDim, nHeads } = COMPRESS_SHAPE;
  const kvFloats = first * kvHeads * headDim;
  const io = {
    keys: createStorageBuffer(gpu, 'bench:fill-k', randomFloats(kvFloats, 21)),
    values: createStorageBuffer(gpu, 'bench:fill-v', randomFloats(kvFloats, 22)),
    queries: createStorageBuffer(gpu, 'bench:fill-q', randomFloats(first * nHeads * headDim, 23)),
    out: createStorageBuffer(gpu, 'bench:fill-out', first * nHeads * headDim * 4),
  };
  const step = cache.beginStep(SOURCE, first);
  const encoder = gpu.device.createCommandEncoder({ label: 'bench:fill-window' });
  for (let layer = 0; layer < layers; layer++) cache.encodeLayer(encoder, step, layer, io);
  gpu.submit([encoder.finish()]);
  cache.endStep(step);
  await gpu.idle();
  for (const b of Object.values(io)) b.destroy();
}

/**
 * Builds one end-to-end case: a cache filled with `context` tokens and a run that compresses a fresh fork of it
 * with the variant's options (budget context/8, or context − 16 for `evict: 'block'`).
 *
 * @example
 * ```ts
 * const prepared = await prepareCompress(gpu, settings, 1024, { policy: 'h2o', budgetMode: 'uniform', bits: 16, window: true });
 * ```
 */
export async function prepareCompress(
  gpu: GpuContext,
  settings: BenchSettings,
  context: number,
  variant: CompressVariant,
): Promise<PreparedCase | SkippedCase> {
  const budget = variant.evict === 'block' ? context - COMPRESS_SHAPE.blockSize : Math.floor(context / 8);
  const size = compressCacheSize(context, variant.bits, budget);
  const reason = tooBig(gpu, size);
  if (reason) return { skip: `${formatTokens(context)} tokens: ${reason}` };
  if (variant.policy === 'snapkv' && gpu.adapter.isFallbackAdapter && (settings.quick || context > 1024)) {
    // SnapKV's window attention (32 queries × 32 heads × 4 layers) takes about 8 s per compress() at 1K on
    // SwiftShader (2 cores), linear in the context: the full run measures it at 1K only, --quick not at all.
    return {
      skip:
        'software adapter: the SnapKV window attention (32 queries × 32 heads × 4 layers) takes ≈ 8 s per 1K ' +
        'tokens here; measured at 1K in the full run only (the scoring suite times it per layer)',
    };
  }
  const { layers, kvHeads, headDim, blockSize, nHeads, window } = COMPRESS_SHAPE;
  const cache = PagedKvCache.create(
    gpu,
    cacheOptionsForModel(
      { nLayers: layers, nKvHeads: kvHeads, headSize: headDim, nHeads },
      {
        bits: variant.bits,
        blockSize,
        ...(variant.bits === 4 ? { initialQuantBlocks: layers * size.quantBlocks } : {}),
        seqSlots: 2,
        maxTokensPerHead: context,
        initialFullBlocks: layers * size.fullBlocks,
        maxBytes: size.totalBytes,
        observationWindow: window,
      },
    ),
  );
  try {
    await fillSource(gpu, cache, context, variant.window);
  } catch (error) {
    cache.destroy();
    throw error;
  }
  const options = { policy: variant.policy, budget, budgetMode: variant.budgetMode, bits: variant.bits, merge: variant.merge ?? 'none' };
  return {
    bytes: size.sourceBytes,
    items: { count: context, unit: 'token' },
    run: async (clock) => {
      cache.fork(SOURCE, FORK);
      try {
        // compress() resolves once its last work is submitted (its one wait, if any, is a readback): the clock
        // stops when the GPU has done that work, so every row times the whole compression.
        await clock(async () => {
          await cache.compress(FORK, options);
          await gpu.idle();
        });
      } finally {
        cache.freeSequence(FORK);
      }
    },
    destroy: () => cache.destroy(),
  };
}
