import partialBody from '../../../shaders/flash_decode_partial.wgsl';
import mergeBody from '../../../shaders/flash_decode_merge.wgsl';
import statsBody from '../../../shaders/flash_decode_stats.wgsl';
import statsLibrary from '../../../shaders/attention_stats_common.wgsl';
import kvReadLibrary from '../../../shaders/kv_read.wgsl';
import reduceScanLibrary from '../../../shaders/flash_decode_reduce_scan.wgsl';
import reduceSubgroupLibrary from '../../../shaders/flash_decode_reduce_subgroup.wgsl';
import reduceWorkgroupLibrary from '../../../shaders/flash_decode_reduce_workgroup.wgsl';
import type { BlockLayout } from '../../format/layout.js';
import { InvalidArgumentError, LimitExceededError } from '../../errors.js';
import { createStorageBuffer } from '../../gpu/buffers.js';
import type { GpuContext } from '../../gpu/context.js';
import { encodeDispatch, kernelPipeline, type KernelSpec, recordPass } from '../../gpu/kernel.js';
import { UniformLayout } from '../../gpu/uniforms.js';
import { type AttentionQueryRun, attentionBindings, type AttentionStatsRun, checkQueries, checkStatsRun, positiveInteger } from './attention-run.js';
import { cacheConstants } from './cache-constants.js';

const FLASH_PARAMS = new UniformLayout('FlashParams', [
  { name: 'num_queries', type: 'u32' },
  { name: 'layer', type: 'u32' },
  { name: 'seq_slots', type: 'u32' },
  { name: 'max_blocks', type: 'u32' },
  { name: 'partitions', type: 'u32' },
  { name: 'partition_tokens', type: 'u32' },
  { name: 'tiles', type: 'u32' },
  { name: 'scale', type: 'f32' },
]);

const MERGE_PARAMS = new UniformLayout('MergeParams', [
  { name: 'num_queries', type: 'u32' },
  { name: 'partitions', type: 'u32' },
]);

const STATS_PARAMS = new UniformLayout('StatsParams', [
  { name: 'num_segments', type: 'u32' },
  { name: 'layer', type: 'u32' },
  { name: 'seq_slots', type: 'u32' },
  { name: 'max_blocks', type: 'u32' },
  { name: 'max_tokens', type: 'u32' },
  { name: 'tiles', type: 'u32' },
  { name: 'scale', type: 'f32' },
  { name: 'lse_base', type: 'u32' },
  { name: 'qpos_base', type: 'u32' },
]);

/**
 * Workgroups a run aims for before it shortens partitions: enough to fill a large GPU (132 SMs × a few) at batch 1.
 *
 * @example
 * ```ts
 * kernel.split(512, 16384); // a 512-query prefill chunk: one partition per (tile, KV head)
 * ```
 */
export const FLASH_TARGET_WORKGROUPS = 1024;

/**
 * How the partial kernel reduces a chunk's softmax maximum and the final sums across its threads: `subgroup`
 * (subgroupMax / subgroupAdd, needs the device feature `subgroups`) or `workgroup` (workgroup memory, everywhere).
 *
 * @example
 * ```ts
 * const variant: FlashReductions = FlashDecodeKernel.reductionVariants(gpu).at(-1) ?? 'workgroup';
 * ```
 */
export type FlashReductions = 'subgroup' | 'workgroup';

/** Workgroup memory the partial kernel may use: WebGPU's guaranteed minimum, so one shape runs on every device. */
const WORKGROUP_STORAGE_BUDGET = 16384;

/**
 * Statistics to accumulate during a {@link FlashDecodeRun}: the same increments AccumulateAttentionKernel adds
 * from a probability buffer (Σp and Σp² over the group's heads and the segment's queries, and the number of
 * queries that could see the token), computed here from the merged softmax instead.
 *
 * @example
 * ```ts
 * const stats: FlashDecodeStats = { segments, numSegments: 1, target: { attnSum, attnSqSum, attnCount } };
 * ```
 */
export type FlashDecodeStats = AttentionStatsRun;

/**
 * One run of split-context paged attention: the fields of PagedAttentionRun without the probability buffer,
 * plus the longest context to size the partitions and an optional statistics target.
 *
 * @example
 * ```ts
 * const run: FlashDecodeRun = { cache, layer: 0, numQueries: 1, queries, querySlots, queryPositions, out, maxContext: 4096 };
 * ```
 */
export interface FlashDecodeRun extends AttentionQueryRun {
  /**
   * u32 [numQueries]: the sequence slot of each query. With `queryTile` > 1, the queries of one tile (consecutive
   * runs of `queryTile`) must belong to one slot, as a prefill chunk's do.
   */
  readonly querySlots: GPUBuffer;
  /** At least the longest context among the queried heads (what PagedAttentionRun calls probsStride). */
  readonly maxContext: number;
  /** Accumulate attention statistics into the cache's buffers; omit when the policy needs none. */
  readonly stats?: FlashDecodeStats;
}

/**
 * The shape of a {@link FlashDecodeKernel}. Defaults suit decode on real GPUs: 64 threads, chunks of 64 tokens,
 * partitions of 256 tokens, one query per tile. Prefill chunks go faster with `queryTile` 2–4 (every K/V word
 * then serves that many queries); tests shrink `partitionTokens` to exercise the merge.
 *
 * @example
 * ```ts
 * const shape: FlashDecodeShape = { nHeads: 32, kvHeads: 8, full, quant, partitionTokens: 512 };
 * ```
 */
export interface FlashDecodeShape {
  readonly nHeads: number;
  readonly kvHeads: number;
  readonly full: BlockLayout;
  readonly quant: BlockLayout | null;
  /** Threads per workgroup (default 64). */
  readonly workgroupSize?: number;
  /** Tokens per online-softmax step, a multiple of workgroupSize and of the block size (default workgroupSize). */
  readonly chunkTokens?: number;
  /** Tokens per context partition, a multiple of chunkTokens (default 4 chunks). */
  readonly partitionTokens?: number;
  /** Queries of one sequence per workgroup (default 1). */
  readonly queryTile?: number;
  /** Fold the K scale into q for quantized blocks (default: when the staging fits the workgroup memory). */
  readonly foldKScale?: boolean;
  /**
   * The row reductions' variant (default `subgroup` where the device has `subgroups`, else `workgroup`); asking
   * for `subgroup` on a device without the feature throws. Tests force each of {@link FlashDecodeKernel.reductionVariants}.
   */
  readonly reductions?: FlashReductions;
}

/**
 * Storage buffers the partial and statistics passes bind: 10, Chrome's per-stage limit (Dawn in Node gives 12 or
 * more). The run's outputs share one scratch binding to fit it (see {@link partialsLayout}).
 */
export const FLASH_DECODE_STORAGE_BUFFERS = 10;

/**
 * Where each output of a split-context run sits in the kernel's one scratch buffer, in f32 words: the V mixes
 * [n][nHeads][partitions][headDim], the partitions' (max, Σ) [n][nHeads][partitions][2], the merged (max, Σ)
 * [n][nHeads][2], the query positions (u32 bits) [n]. The shaders compute the same offsets.
 *
 * @example
 * ```ts
 * partialsLayout(1, 32, 4, 128); // { mlBase: 16384, lseBase: 16640, qposBase: 16704, words: 16705 }
 * ```
 */
export function partialsLayout(numQueries: number, nHeads: number, partitions: number, headDim: number): { mlBase: number; lseBase: number; qposBase: number; words: number } {
  const rows = numQueries * nHeads;
  const mlBase = rows * partitions * headDim;
  const lseBase = mlBase + rows * partitions * 2;
  const qposBase = lseBase + rows * 2;
  return { mlBase, lseBase, qposBase, words: qposBase + numQueries };
}

/**
 * Paged attention split over the context ("flash-decoding"): a partial pass with one workgroup per (query tile,
 * KV head, partition) that serves every query head of the GQA group, then a log-sum-exp merge. No probability
 * buffer: when statistics are asked for, a third pass recomputes each token's probabilities from the merged
 * softmax. Decode and prefill chunks (causal by position) are the same kernel; the cache may mix full and
 * quantized blocks per head, as PagedAttentionKernel reads them.
 *
 * Needs head_dim a multiple of 8 and full blocks and their V regions on 16-byte boundaries, quantized groups a
 * multiple of 8 channels (the defaults of block size 16 satisfy all three); {@link FlashDecodeKernel.supports}
 * says whether a layout qualifies, so a caller can keep PagedAttentionKernel for the rest. It binds 10 storage
 * buffers per stage (maxStorageBuffersPerShaderStage ≥ 10: Chrome's limit; SwiftShader and desktop Dawn give 12+).
 *
 * Swapping it in for PagedAttentionKernel + AccumulateAttentionKernel: pass `maxContext` where the old run took
 * `probsStride`, drop the probability buffer, and give `stats: { segments, numSegments, target }` instead of the
 * accumulate pass (omit it when statistics are off). Runs that need the probabilities themselves (a caller reading
 * them back) keep the old kernel.
 *
 * @example
 * ```ts
 * const attention = new FlashDecodeKernel(gpu, { nHeads: 32, kvHeads: 8, full, quant });
 * attention.encode(encoder, { cache, layer, numQueries: 1, queries, querySlots, queryPositions, out, maxContext: 4096 });
 * ```
 */
export class FlashDecodeKernel {
  readonly partialSpec: KernelSpec;
  readonly mergeSpec: KernelSpec;
  readonly statsSpec: KernelSpec;
  readonly workgroupSize: number;
  readonly chunkTokens: number;
  readonly partitionTokens: number;
  readonly queryTile: number;
  /**
   * Quantized K: whether q·scale is staged per (group, row) so a code costs one FMA per row (true when that fits
   * the workgroup memory, as at decode); otherwise the chunk's scale/zero are staged and each code dequantised.
   */
  readonly foldsKScale: boolean;
  /** The reductions variant compiled into the partial kernel (part of its pipeline cache key). */
  readonly reductions: FlashReductions;
  /** The run's outputs ({@link partialsLayout}), reused by every run. */
  private partials: GPUBuffer | null = null;
  /** Layout of the last encoded run's partials (the statistics pass reads its merged sums and positions). */
  private lastLayout: ReturnType<typeof partialsLayout> | null = null;
  private readonly retired: GPUBuffer[] = [];

  /** Why a layout cannot be read by this kernel, or null when it can. */
  static unsupported(full: BlockLayout, quant: BlockLayout | null): string | null {
    if (full.headDim % 8 !== 0) return `head_dim ${full.headDim} is not a multiple of 8`;
    if (full.wordsPerBlock % 4 !== 0 || full.vOffset % 4 !== 0) return 'full blocks are not 16-byte aligned';
    if (quant) {
      if (quant.wordsPerBlock % 4 !== 0) return 'quantized blocks are not 16-byte aligned';
      if (quant.groupSize % 8 !== 0) return `quantization group ${quant.groupSize} is not a multiple of 8`;
    }
    return null;
  }

  /** The reductions variants this device can run: always `workgroup`, plus `subgroup` with the `subgroups` feature. */
  static reductionVariants(gpu: GpuContext): FlashReductions[] {
    return gpu.has('subgroups') ? ['workgroup', 'subgroup'] : ['workgroup'];
  }

  /** True when {@link FlashDecodeKernel.unsupported} finds nothing. */
  static supports(full: BlockLayout, quant: BlockLayout | null): boolean {
    return FlashDecodeKernel.unsupported(full, quant) === null;
  }

  constructor(
    private readonly gpu: GpuContext,
    readonly shape: FlashDecodeShape,
  ) {
    const { nHeads, kvHeads, full, quant } = shape;
    if (nHeads % kvHeads !== 0) {
      throw new InvalidArgumentError('nHeads', `${nHeads} query heads are not a multiple of ${kvHeads} KV heads`);
    }
    const problem = FlashDecodeKernel.unsupported(full, quant);
    if (problem) {
      throw new InvalidArgumentError('full', `${problem}; use PagedAttentionKernel for this layout`);
    }
    this.workgroupSize = shape.workgroupSize ?? 64;
    this.chunkTokens = shape.chunkTokens ?? this.workgroupSize;
    this.partitionTokens = shape.partitionTokens ?? 4 * this.chunkTokens;
    this.queryTile = shape.queryTile ?? 1;
    for (const [field, value] of [
      ['workgroupSize', this.workgroupSize],
      ['chunkTokens', this.chunkTokens],
      ['partitionTokens', this.partitionTokens],
      ['queryTile', this.queryTile],
    ] as const) {
      positiveInteger(field, value);
    }
    if (this.chunkTokens % this.workgroupSize !== 0 || this.chunkTokens % full.blockSize !== 0) {
      throw new InvalidArgumentError(
        'chunkTokens',
        `must be a multiple of workgroupSize ${this.workgroupSize} and of the block size ${full.blockSize}; got ${this.chunkTokens}`,
      );
    }
    if (this.partitionTokens % this.chunkTokens !== 0) {
      throw new InvalidArgumentError('partitionTokens', `must be a multiple of chunkTokens ${this.chunkTokens}; got ${this.partitionTokens}`);
    }
    const variants = FlashDecodeKernel.reductionVariants(gpu);
    this.reductions = shape.reductions ?? (variants.includes('subgroup') ? 'subgroup' : 'workgroup');
    if (!variants.includes(this.reductions)) {
      throw new InvalidArgumentError('reductions', `the device lacks the 'subgroups' feature; use 'workgroup' (supported: ${variants.join(', ')})`);
    }
    const group = nHeads / kvHeads;
    const rows = this.queryTile * group;
    if (rows > this.workgroupSize) {
      throw new InvalidArgumentError('queryTile', `${rows} rows (queryTile × GQA group) exceed workgroupSize ${this.workgroupSize}`);
    }
    const headDim = full.headDim;
    const lanes = Math.min(headDim / 8, this.workgroupSize);
    const parts = Math.floor(this.workgroupSize / lanes);
    // Workgroup memory (bytes): q, logits, softmax state, then one scratch buffer for the K staging of a chunk
    // and the parts' V mixes at the end; the K scale folds into q when that staging fits.
    const quads = headDim / 4;
    const kGroups = quant ? this.chunkTokens / quant.groupSize : 0;
    // Mirrors ZERO_PARTS of the shader: threads per K group posting partial sums of q·zero.
    const zeroParts = Math.min(4, Math.max(1, Math.floor(this.workgroupSize / Math.max(1, kGroups))));
    // Mirrors ROW_VECTOR of the shader: up to four rows and one octet of channels per lane.
    const rowVector = rows <= 4 && headDim / 8 <= this.workgroupSize;
    const budget = Math.min(WORKGROUP_STORAGE_BUDGET, gpu.device.limits.maxComputeWorkgroupStorageSize);
    const mixVectors = parts * rows * quads;
    const stagingVectors = (fold: boolean) =>
      fold ? (rowVector ? kGroups * headDim : kGroups * rows * quads) : 2 * kGroups * quads;
    const layoutBytes = (fold: boolean) =>
      16 * (rows * quads + Math.max(mixVectors, stagingVectors(fold), 1)) +
      4 * (rows * this.chunkTokens + rows + this.queryTile + 1) +
      16 * (rowVector ? headDim : 1) +
      16 * (rowVector && fold ? kGroups * zeroParts : 1) +
      16 * (rowVector ? this.workgroupSize + 1 : 2) +
      4 * (fold && !rowVector ? kGroups * rows : 1);
    this.foldsKScale = quant !== null && (shape.foldKScale ?? layoutBytes(true) <= budget);
    const sharedBytes = layoutBytes(this.foldsKScale);
    if (sharedBytes > budget) {
      throw new LimitExceededError(
        'workgroup storage of flash_decode_partial',
        sharedBytes,
        budget,
        'use a smaller queryTile or chunkTokens',
      );
    }
    const scratchVectors = Math.max(mixVectors, stagingVectors(this.foldsKScale), 1);
    const u32 = (value: number) => ({ type: 'u32', value }) as const;
    const common = {
      ...cacheConstants(full, quant),
      N_HEADS: u32(nHeads),
      KV_HEADS: u32(kvHeads),
    };
    const subgroups = this.reductions === 'subgroup';
    this.partialSpec = {
      name: 'flash_decode_partial',
      body: partialBody,
      libraries: [reduceScanLibrary, subgroups ? reduceSubgroupLibrary : reduceWorkgroupLibrary],
      ...(subgroups ? { enables: ['subgroups'] } : {}),
      constants: {
        ...common,
        // The library differs per variant; this constant puts it in the pipeline cache key.
        SUBGROUPS: { type: 'bool', value: subgroups },
        WORKGROUP_SIZE: u32(this.workgroupSize),
        CHUNK_TOKENS: u32(this.chunkTokens),
        QUERY_TILE: u32(this.queryTile),
        SCRATCH_VECTORS: u32(scratchVectors),
        Q_ZERO_SLOTS: u32(this.foldsKScale ? kGroups * rows : 1),
        FOLD_K_SCALE: { type: 'bool', value: this.foldsKScale },
      },
      uniforms: [FLASH_PARAMS],
    };
    this.mergeSpec = {
      name: 'flash_decode_merge',
      body: mergeBody,
      constants: { HEAD_DIM: u32(headDim), N_HEADS: u32(nHeads), WORKGROUP_SIZE: u32(64) },
      uniforms: [MERGE_PARAMS],
    };
    this.statsSpec = {
      name: 'flash_decode_stats',
      body: statsBody,
      libraries: [kvReadLibrary, statsLibrary],
      constants: { ...common, WORKGROUP_SIZE: u32(64) },
      uniforms: [STATS_PARAMS],
    };
  }

  /**
   * How a run splits the context: partitions of `partitionTokens` (the shape's), except that a run with many
   * query tiles (a prefill chunk) gets fewer, longer partitions, so that the workgroups stay near
   * {@link FLASH_TARGET_WORKGROUPS} and the partials (numQueries × nHeads × partitions × (headDim + 2) floats)
   * near the size of the output instead of growing with numQueries × context.
   */
  split(numQueries: number, maxContext: number): { partitions: number; partitionTokens: number } {
    const tiles = Math.ceil(numQueries / this.queryTile);
    const wanted = Math.max(1, Math.ceil(maxContext / this.partitionTokens));
    const cap = Math.max(1, Math.floor(FLASH_TARGET_WORKGROUPS / (tiles * this.shape.kvHeads)));
    if (wanted <= cap) return { partitions: wanted, partitionTokens: this.partitionTokens };
    const partitionTokens = Math.ceil(Math.ceil(maxContext / cap) / this.chunkTokens) * this.chunkTokens;
    return { partitions: Math.max(1, Math.ceil(maxContext / partitionTokens)), partitionTokens };
  }

  /** Context partitions of a decode run (one query per tile) whose longest head holds `maxContext` tokens. */
  partitions(maxContext: number): number {
    return this.split(1, maxContext).partitions;
  }

  private scratch(current: GPUBuffer | null, label: string, bytes: number): GPUBuffer {
    if (current && current.size >= bytes) return current;
    // Commands recorded but not yet submitted may still name the smaller buffer: destroying it now would fail
    // their submit, so it lives until destroy().
    if (current) this.retired.push(current);
    return createStorageBuffer(this.gpu, label, Math.max(bytes, (current?.size ?? 0) * 2));
  }

  /**
   * Records the partial, merge and (with `run.stats`) statistics dispatches into one compute pass of `encoder`;
   * `timestampWrites` (optional) times that pass. The partials live in scratch buffers of this kernel, reused by
   * every run (runs in one command buffer execute in order, so layers may share them).
   */
  encode(encoder: GPUCommandEncoder, run: FlashDecodeRun, timestampWrites?: GPUComputePassTimestampWrites): void {
    const { nHeads, kvHeads, full } = this.shape;
    const headDim = full.headDim;
    checkQueries(run, nHeads, headDim);
    positiveInteger('maxContext', run.maxContext);
    // Without a quantized pool the cache binds a 4-byte placeholder, too small for a vec4 binding; the kernel
    // never reads it then, so the full pool stands in.
    const quantPool = this.shape.quant ? run.cache.quantPool : run.cache.fullPool;
    for (const [name, pool] of [
      ['fullPool', run.cache.fullPool],
      ['quantPool', quantPool],
    ] as const) {
      if (pool.size % 16 !== 0) {
        throw new InvalidArgumentError(name, `is read as 16-byte words; its size ${pool.size} B is not a multiple of 16`);
      }
    }
    const { partitions, partitionTokens } = this.split(run.numQueries, run.maxContext);
    const tiles = Math.ceil(run.numQueries / this.queryTile);
    const rows = run.numQueries * nHeads;
    const layout = partialsLayout(run.numQueries, nHeads, partitions, headDim);
    this.partials = this.scratch(this.partials, 'flash_decode:partials', layout.words * 4);
    this.lastLayout = layout;
    const scale = run.scale ?? 1 / Math.sqrt(headDim);
    const partialUniforms = this.gpu.uniformBuffer(
      'flash_decode_partial:params',
      FLASH_PARAMS.pack({
        num_queries: run.numQueries,
        layer: run.layer,
        seq_slots: run.cache.seqSlots,
        max_blocks: run.cache.maxBlocksPerHead,
        partitions,
        partition_tokens: partitionTokens,
        tiles,
        scale,
      }),
    );
    const mergeUniforms = this.gpu.uniformBuffer(
      'flash_decode_merge:params',
      MERGE_PARAMS.pack({ num_queries: run.numQueries, partitions }),
    );
    const partials = this.partials;
    recordPass(encoder, 'flash_decode', run.pass, timestampWrites, (pass) => {
      encodeDispatch(
        this.gpu,
        pass,
        kernelPipeline(this.gpu, this.partialSpec),
        attentionBindings(partialUniforms, run, quantPool, partials, quantPool, run.cache.fullPool),
        tiles * kvHeads * partitions,
      );
      encodeDispatch(
        this.gpu,
        pass,
        kernelPipeline(this.gpu, this.mergeSpec),
        [mergeUniforms, partials, run.out],
        Math.ceil((rows * headDim) / 64),
      );
      if (run.stats) this.encodeStats(pass, run, run.stats, scale);
    });
  }

  private encodeStats(pass: GPUComputePassEncoder, run: FlashDecodeRun, stats: FlashDecodeStats, scale: number): void {
    const { kvHeads, full } = this.shape;
    const maxTokens = checkStatsRun(stats, run.cache, run.layer, kvHeads, full.blockSize);
    const tiles = Math.ceil(run.maxContext / 64);
    const layout = this.lastLayout;
    if (!this.partials || !layout) throw new InvalidArgumentError('stats', 'encodeStats runs after the merge pass');
    const uniforms = this.gpu.uniformBuffer(
      'flash_decode_stats:params',
      STATS_PARAMS.pack({
        num_segments: stats.numSegments,
        layer: run.layer,
        seq_slots: run.cache.seqSlots,
        max_blocks: run.cache.maxBlocksPerHead,
        max_tokens: maxTokens,
        tiles,
        scale,
        lse_base: layout.lseBase,
        qpos_base: layout.qposBase,
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
        this.partials,
        stats.target.attnSum,
        stats.target.attnSqSum,
        stats.target.attnCount,
      ],
      stats.numSegments * kvHeads * tiles,
    );
  }

  /** Frees the scratch buffers (partials and softmax sums); the kernel allocates them again when next used. */
  destroy(): void {
    for (const buffer of [this.partials, ...this.retired.splice(0)]) buffer?.destroy();
    this.partials = null;
    this.lastLayout = null;
  }
}
