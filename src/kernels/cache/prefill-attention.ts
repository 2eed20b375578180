import attentionBody from '../../../shaders/prefill_attention.wgsl';
import statsBody from '../../../shaders/prefill_stats.wgsl';
import statsLibrary from '../../../shaders/attention_stats_common.wgsl';
import kvReadLibrary from '../../../shaders/kv_read.wgsl';
import type { BlockLayout } from '../../format/layout.js';
import { InvalidArgumentError, LimitExceededError } from '../../errors.js';
import { createStorageBuffer } from '../../gpu/buffers.js';
import type { GpuContext } from '../../gpu/context.js';
import { encodeDispatch, kernelPipeline, type KernelSpec, recordPass } from '../../gpu/kernel.js';
import { UniformLayout } from '../../gpu/uniforms.js';
import { type AttentionQueryRun, attentionBindings, type AttentionStatsRun, checkQueries, checkStatsRun, positiveInteger } from './attention-run.js';
import { cacheConstants } from './cache-constants.js';

const PREFILL_PARAMS = new UniformLayout('PrefillParams', [
  { name: 'num_queries', type: 'u32' },
  { name: 'layer', type: 'u32' },
  { name: 'seq_slots', type: 'u32' },
  { name: 'max_blocks', type: 'u32' },
  { name: 'tiles', type: 'u32' },
  { name: 'scale', type: 'f32' },
]);

const STATS_PARAMS = new UniformLayout('PrefillStatsParams', [
  { name: 'num_segments', type: 'u32' },
  { name: 'layer', type: 'u32' },
  { name: 'seq_slots', type: 'u32' },
  { name: 'max_blocks', type: 'u32' },
  { name: 'max_tokens', type: 'u32' },
  { name: 'key_tiles', type: 'u32' },
  { name: 'scale', type: 'f32' },
]);

/** Workgroup memory a pass may use: WebGPU's guaranteed minimum, so one shape runs on every device. */
const WORKGROUP_STORAGE_BUDGET = 16384;

/** Query rows (queries × GQA group) a workgroup aims for: each staged K/V word then serves that many rows. */
const TARGET_ROWS = 16;

/**
 * The shape of a {@link PrefillAttentionKernel}. Every field is optional: by default a workgroup of 64 threads
 * takes ⌊16 / group⌋ queries (at least one) and the largest key tile that fits 16 KiB of workgroup memory.
 *
 * @example
 * ```ts
 * const shape: PrefillAttentionShape = { nHeads: 32, kvHeads: 8, full, quant, queryTile: 4, keyTile: 16 };
 * ```
 */
export interface PrefillAttentionShape {
  readonly nHeads: number;
  readonly kvHeads: number;
  readonly full: BlockLayout;
  readonly quant: BlockLayout | null;
  /** Threads per workgroup of both passes (default 64). */
  readonly workgroupSize?: number;
  /** Queries per attention workgroup (default ⌊16 / group⌋, at least 1). */
  readonly queryTile?: number;
  /** Keys staged per step of the attention pass (default: the largest power of two ≤ 32 that fits). */
  readonly keyTile?: number;
  /** Keys per statistics workgroup, a divisor of workgroupSize (default: the largest power of two ≤ 16 that fits). */
  readonly statsKeys?: number;
  /** Queries staged per step of the statistics pass (default: as many as fit beside the keys, at most 16). */
  readonly statsQueries?: number;
  /** Workgroup memory the default tiles may fill, capped by the device's limit (default 16 KiB, WebGPU's minimum). */
  readonly workgroupStorageBytes?: number;
}

/**
 * Statistics to accumulate during a {@link PrefillAttentionRun} (the increments AccumulateAttentionKernel adds
 * from a probability buffer: Σp and Σp² over the group's heads and the segment's queries, and how many queries
 * see each key).
 *
 * @example
 * ```ts
 * const stats: PrefillStats = { segments, numSegments: 1, target: { attnSum, attnSqSum, attnCount } };
 * ```
 */
export type PrefillStats = AttentionStatsRun;

/**
 * One run of tiled prefill attention.
 *
 * @example
 * ```ts
 * const run: PrefillAttentionRun = { cache, layer: 0, numQueries: 512, queries, querySlots, queryPositions, out, maxContext: 16384 };
 * ```
 */
export interface PrefillAttentionRun extends AttentionQueryRun {
  /** u32 [numQueries]: each query's slot; the queries of one tile (runs of `queryTile`) share a slot. */
  readonly querySlots: GPUBuffer;
  /** At least the longest context among the queried heads (sizes the statistics dispatch). */
  readonly maxContext: number;
  /** Opt-in: add the run's statistics to the cache's buffers (a second pass); omit when the policy needs none. */
  readonly stats?: PrefillStats;
}

/** Largest power of two ≤ `cap` for which `fits` holds, or 0. */
function largestPowerOfTwo(cap: number, fits: (value: number) => boolean): number {
  for (let value = 1 << Math.floor(Math.log2(cap)); value >= 1; value >>= 1) if (fits(value)) return value;
  return 0;
}

/**
 * Tiled paged attention for prefill chunks (FlashAttention-2 style): one workgroup per (query tile, KV head)
 * serves every query head of the GQA group, streams K/V tiles through workgroup memory with an online softmax and
 * writes the output once. Scratch is one f32 per (query, head) plus one per query (log-sum-exp and position): no
 * buffer grows with queries × context. With `run.stats` a second pass recomputes every visible key's
 * probability under the final normaliser and adds Σp, Σp² and the visible-query count to the cache's
 * statistics, one write per key. Reads full and quantized blocks through shaders/kv_read.wgsl, any layout.
 *
 * @example
 * ```ts
 * const prefill = new PrefillAttentionKernel(gpu, { nHeads: 32, kvHeads: 8, full, quant });
 * prefill.encode(encoder, { cache, layer, numQueries: 512, queries, querySlots, queryPositions, out, maxContext: 16384 });
 * prefill.scratchBytes(512); // 512 × 33 × 4 B
 * ```
 */
export class PrefillAttentionKernel {
  readonly attentionSpec: KernelSpec;
  readonly statsSpec: KernelSpec;
  readonly workgroupSize: number;
  readonly queryTile: number;
  readonly keyTile: number;
  readonly statsKeys: number;
  readonly statsQueries: number;
  /** Workgroup memory of the attention and statistics passes, in bytes. */
  readonly workgroupBytes: { readonly attention: number; readonly stats: number };
  private lse: GPUBuffer | null = null;
  private readonly retired: GPUBuffer[] = [];

  constructor(
    private readonly gpu: GpuContext,
    readonly shape: PrefillAttentionShape,
  ) {
    const { nHeads, kvHeads, full, quant } = shape;
    if (nHeads % kvHeads !== 0) {
      throw new InvalidArgumentError('nHeads', `${nHeads} query heads are not a multiple of ${kvHeads} KV heads`);
    }
    const group = nHeads / kvHeads;
    const headDim = full.headDim;
    const budget = Math.min(shape.workgroupStorageBytes ?? WORKGROUP_STORAGE_BUDGET, gpu.device.limits.maxComputeWorkgroupStorageSize);
    this.workgroupSize = shape.workgroupSize ?? 64;
    this.queryTile = shape.queryTile ?? Math.max(1, Math.floor(TARGET_ROWS / group));
    positiveInteger('workgroupSize', this.workgroupSize);
    positiveInteger('queryTile', this.queryTile);
    const rows = this.queryTile * group;
    const attentionBytes = (keys: number) => 4 * (rows * headDim + keys * headDim + rows * keys + 3 * rows + this.queryTile + keys + 1);
    this.keyTile = shape.keyTile ?? largestPowerOfTwo(32, (keys) => attentionBytes(keys) <= budget);
    if (this.keyTile <= 0 || attentionBytes(this.keyTile) > budget) {
      throw new LimitExceededError('workgroup storage of prefill_attention', attentionBytes(Math.max(1, this.keyTile)), budget, 'use a smaller queryTile or keyTile');
    }
    positiveInteger('keyTile', this.keyTile);
    const statsBytes = (keys: number, queries: number) =>
      4 * (keys * headDim + queries * group * (headDim + 1) + queries + keys + 3 * this.workgroupSize + 4);
    const keysCap = Math.min(16, this.workgroupSize);
    this.statsKeys =
      shape.statsKeys ?? largestPowerOfTwo(keysCap, (keys) => this.workgroupSize % keys === 0 && statsBytes(keys, 1) <= budget);
    positiveInteger('statsKeys', this.statsKeys);
    if (this.statsKeys > this.workgroupSize || this.workgroupSize % this.statsKeys !== 0) {
      throw new InvalidArgumentError('statsKeys', `must divide workgroupSize ${this.workgroupSize}; got ${this.statsKeys}`);
    }
    let fittingQueries = 0;
    while (fittingQueries < 16 && statsBytes(this.statsKeys, fittingQueries + 1) <= budget) fittingQueries++;
    this.statsQueries = shape.statsQueries ?? fittingQueries;
    positiveInteger('statsQueries', this.statsQueries);
    if (statsBytes(this.statsKeys, this.statsQueries) > budget) {
      throw new LimitExceededError('workgroup storage of prefill_stats', statsBytes(this.statsKeys, this.statsQueries), budget, 'use fewer statsKeys or statsQueries');
    }
    this.workgroupBytes = { attention: attentionBytes(this.keyTile), stats: statsBytes(this.statsKeys, this.statsQueries) };
    const u32 = (value: number) => ({ type: 'u32', value }) as const;
    const common = {
      ...cacheConstants(full, quant),
      N_HEADS: u32(nHeads),
      KV_HEADS: u32(kvHeads),
      WORKGROUP_SIZE: u32(this.workgroupSize),
    };
    this.attentionSpec = {
      name: 'prefill_attention',
      body: attentionBody,
      libraries: [kvReadLibrary],
      constants: { ...common, QUERY_TILE: u32(this.queryTile), KEY_TILE: u32(this.keyTile) },
      uniforms: [PREFILL_PARAMS],
    };
    this.statsSpec = {
      name: 'prefill_stats',
      body: statsBody,
      libraries: [kvReadLibrary, statsLibrary],
      constants: { ...common, STATS_KEYS: u32(this.statsKeys), STATS_QUERIES: u32(this.statsQueries) },
      uniforms: [STATS_PARAMS],
    };
  }

  /**
   * Bytes of GPU scratch a run of `numQueries` needs: (nHeads + 1) f32 per query (log-sum-exp per head, then the
   * position), independent of the context.
   */
  scratchBytes(numQueries: number): number {
    return numQueries * (this.shape.nHeads + 1) * 4;
  }

  /** Bytes of the scratch buffers this kernel holds now (grown buffers kept until destroy() included). */
  allocatedBytes(): number {
    return [this.lse, ...this.retired].reduce((sum, buffer) => sum + (buffer?.size ?? 0), 0);
  }

  /**
   * Records the attention pass and (with `run.stats`) the statistics pass into one compute pass of `encoder`;
   * `timestampWrites` (optional) times that pass. The log-sum-exp scratch is this kernel's, reused by every run
   * (runs in one command buffer execute in order, so layers may share it).
   */
  encode(encoder: GPUCommandEncoder, run: PrefillAttentionRun, timestampWrites?: GPUComputePassTimestampWrites): void {
    const { nHeads, kvHeads, full } = this.shape;
    checkQueries(run, nHeads, full.headDim);
    positiveInteger('maxContext', run.maxContext);
    if (run.querySlots.size < run.numQueries * 4 || run.queryPositions.size < run.numQueries * 4) {
      throw new InvalidArgumentError('queryPositions', `querySlots and queryPositions need ${run.numQueries * 4} B`);
    }
    const bytes = this.scratchBytes(run.numQueries);
    if (!this.lse || this.lse.size < bytes) {
      // Commands recorded but not yet submitted may still name the smaller buffer: it lives until destroy().
      if (this.lse) this.retired.push(this.lse);
      this.lse = createStorageBuffer(this.gpu, 'prefill_attention:lse', Math.max(bytes, (this.lse?.size ?? 0) * 2));
    }
    const scale = run.scale ?? 1 / Math.sqrt(full.headDim);
    const tiles = Math.ceil(run.numQueries / this.queryTile);
    const uniforms = this.gpu.uniformBuffer(
      'prefill_attention:params',
      PREFILL_PARAMS.pack({
        num_queries: run.numQueries,
        layer: run.layer,
        seq_slots: run.cache.seqSlots,
        max_blocks: run.cache.maxBlocksPerHead,
        tiles,
        scale,
      }),
    );
    const lse = this.lse;
    recordPass(encoder, 'prefill_attention', run.pass, timestampWrites, (pass) => {
      encodeDispatch(
        this.gpu,
        pass,
        kernelPipeline(this.gpu, this.attentionSpec),
        attentionBindings(uniforms, run, run.cache.quantPool, run.out, lse),
        tiles * kvHeads,
      );
      if (run.stats) this.encodeStats(pass, run, run.stats, scale, lse);
    });
  }

  private encodeStats(pass: GPUComputePassEncoder, run: PrefillAttentionRun, stats: PrefillStats, scale: number, lse: GPUBuffer): void {
    const { kvHeads, full } = this.shape;
    const maxTokens = checkStatsRun(stats, run.cache, run.layer, kvHeads, full.blockSize);
    const keyTiles = Math.ceil(run.maxContext / this.statsKeys);
    const uniforms = this.gpu.uniformBuffer(
      'prefill_stats:params',
      STATS_PARAMS.pack({
        num_segments: stats.numSegments,
        layer: run.layer,
        seq_slots: run.cache.seqSlots,
        max_blocks: run.cache.maxBlocksPerHead,
        max_tokens: maxTokens,
        key_tiles: keyTiles,
        scale,
      }),
    );
    encodeDispatch(
      this.gpu,
      pass,
      kernelPipeline(this.gpu, this.statsSpec),
      [
        uniforms,
        run.queries,
        stats.segments,
        run.cache.blockTable,
        run.cache.contextLens,
        run.cache.fullPool,
        run.cache.quantPool,
        lse,
        stats.target.attnSum,
        stats.target.attnSqSum,
        stats.target.attnCount,
      ],
      stats.numSegments * kvHeads * keyTiles,
    );
  }

  /** Frees the scratch buffer; the kernel allocates it again when next used. */
  destroy(): void {
    for (const buffer of [this.lse, ...this.retired.splice(0)]) buffer?.destroy();
    this.lse = null;
  }
}
