import snapkvLseBody from '../../../shaders/snapkv_lse.wgsl';
import kvReadLibrary from '../../../shaders/kv_read.wgsl';
import { snapkvFirstToken, snapkvUnrolledLse, snapkvKeyRead } from './snapkv-unrolled.js';
import type { BlockLayout } from '../../format/layout.js';
import { InvalidArgumentError } from '../../errors.js';
import type { GpuContext } from '../../gpu/context.js';
import { encodeDispatch, kernelPipeline, type KernelSpec } from '../../gpu/kernel.js';
import { UniformLayout } from '../../gpu/uniforms.js';
import { cacheConstants } from '../cache/cache-constants.js';
import type { PagedCacheBindings } from '../cache/paged-attention.js';
import { checkScoreTarget, type ObservationWindowBindings, type ScoreTarget } from './score-target.js';

/**
 * Uniforms of both SnapKV passes (shaders/snapkv_lse.wgsl, shaders/snapkv_score.wgsl).
 *
 * @example
 * ```ts
 * SNAPKV_PARAMS.byteSize; // 64
 * SNAPKV_PARAMS.wgsl();   // 'struct SnapKVParams {\n  layer: u32,\n ...'
 * ```
 */
export const SNAPKV_PARAMS = new UniformLayout('SnapKVParams', [
  { name: 'layer', type: 'u32' },
  { name: 'layer_count', type: 'u32' },
  { name: 'slot', type: 'u32' },
  { name: 'seq_slots', type: 'u32' },
  { name: 'max_blocks', type: 'u32' },
  { name: 'max_tokens', type: 'u32' },
  { name: 'window', type: 'u32' },
  { name: 'window_cap', type: 'u32' },
  { name: 'seq_len', type: 'u32' },
  { name: 'tiles', type: 'u32' },
  { name: 'sinks', type: 'u32' },
  { name: 'recent_start', type: 'u32' },
  { name: 'scale', type: 'f32' },
  { name: 'write_means', type: 'u32' },
  { name: 'partitions', type: 'u32' },
  { name: 'part_tokens', type: 'u32' },
]);

/**
 * Shape of the SnapKV kernels: query and KV heads and the cache's block layouts.
 */
export interface SnapKVShape {
  readonly nHeads: number;
  readonly kvHeads: number;
  readonly full: BlockLayout;
  readonly quant: BlockLayout | null;
  readonly workgroupSize?: number;
  /**
   * Tokens per partition of pass 1 (default 1024): more partitions, more workgroups; the score pass merges their
   * normalisers. The lse scratch bounds the count (see {@link snapkvLseBytes}); tests set it small.
   */
  readonly partitionTokens?: number;
  /**
   * Keys a thread of pass 2 holds as values (default {@link SNAPKV_KEY_BLOCK}): every query read from memory
   * serves that many keys; more need more registers (on SwiftShader, stack) and compile longer.
   */
  readonly keyTile?: number;
  /**
   * (Query, head) pairs a thread of pass 1 holds as values (default {@link SNAPKV_QUERY_BLOCK}): every key read
   * serves them.
   */
  readonly queryTile?: number;
  /**
   * Pass 1 stores every logit in `run.logits` (see {@link snapkvLogitBytes}) and pass 2 reads them back instead
   * of recomputing each (query, key) dot product: half the multiply-adds for window × heads × tokens × 4 bytes of
   * scratch. Same scores, bit for bit.
   */
  readonly storedLogits?: boolean;
  /**
   * Rows begin with tokens the window scoring leaves out (`run.firstTokens[row]` of them: merge slots): they take
   * no part in the softmax normalisers or the pooling, and their scores are left to the caller.
   */
  readonly skipsLeading?: boolean;
}

/**
 * Default keys per pass-2 thread. On SwiftShader (hd 128, 1K tokens) 8 ran 1.5–2.5× faster than 4; 16 was
 * slower again (spills) and compiled for many seconds.
 */
export const SNAPKV_KEY_BLOCK = 8;
/**
 * Default (query, head) pairs per pass-1 thread. 8 ran about 1.7× faster than 4 on SwiftShader but took about
 * 12 s of CPU to compile there (4: about 4 s), so 4 until that is understood.
 */
export const SNAPKV_QUERY_BLOCK = 4;

/** Checks a register block (keyTile or queryTile) and returns it, the default when absent. */
export function snapkvBlock(name: 'keyTile' | 'queryTile', value: number | undefined): number {
  const block = value ?? (name === 'keyTile' ? SNAPKV_KEY_BLOCK : SNAPKV_QUERY_BLOCK);
  if (!Number.isInteger(block) || block <= 0 || block > 32) {
    throw new InvalidArgumentError(name, `must be an integer in 1..32 (values a thread holds); got ${block}`);
  }
  return block;
}

/** Default partition size of pass 1 (tokens). */
export const SNAPKV_PARTITION_TOKENS = 1024;

/**
 * One run of either SnapKV pass over one (layer range, slot).
 */
export interface SnapKVRun {
  readonly cache: PagedCacheBindings;
  readonly target: ScoreTarget;
  readonly window: ObservationWindowBindings;
  /** Window queries that vote: the newest `rows` (1 ≤ rows ≤ window.valid). */
  readonly rows: number;
  /** Scratch f32 [layerCount][rows][nHeads][2]: written by the first pass, read by the second. */
  readonly lse: GPUBuffer;
  /** f32 [row][maxTokensPerHead]; the second pass writes the target's rows, tokens < context length. */
  readonly scores: GPUBuffer;
  /** Logit scale, default 1/√headDim (as the reference attention). */
  readonly scale?: number;
  /**
   * Optional f32 [row][maxTokensPerHead]: the second pass also writes each token's unpooled, unprotected window
   * probability here, summed over the (query, head) pairs (the attention mass a compression report measures and
   * the merge weight, in the CPU engine's unit), at no extra pass.
   */
  readonly means?: GPUBuffer;
  /** f32 scratch of {@link snapkvLogitBytes} bytes, for kernels whose shape has `storedLogits`. */
  readonly logits?: GPUBuffer;
  /** u32 per cache row, for kernels whose shape has `skipsLeading`: the row's first scored token. */
  readonly firstTokens?: GPUBuffer;
}

/**
 * Bytes of the lse scratch of a run: (max, Σ) per (layer, partition, window query, query head). Without
 * `maxTokens` it holds one partition; a run uses as many partitions (of `partitionTokens`) as its scratch holds.
 *
 * @example
 * ```ts
 * const lse = createStorageBuffer(gpu, 'lse', snapkvLseBytes(1, 32, 8, 65536)); // 64 partitions of 1024
 * ```
 */
export function snapkvLseBytes(layerCount: number, rows: number, nHeads: number, maxTokens = 1, partitionTokens = SNAPKV_PARTITION_TOKENS): number {
  return layerCount * Math.max(1, Math.ceil(maxTokens / partitionTokens)) * rows * nHeads * 2 * 4;
}

/**
 * Bytes of the stored-logits scratch of a run (`storedLogits`): one f32 per (layer, window query, query head,
 * token slot of a head).
 *
 * @example
 * ```ts
 * snapkvLogitBytes(1, 32, 32, 1024); // 4 MiB
 * ```
 */
export function snapkvLogitBytes(layerCount: number, rows: number, nHeads: number, maxTokens: number): number {
  return layerCount * rows * nHeads * maxTokens * 4;
}

/**
 * Validates a run and packs the uniforms both passes share. Returns them with the token tiles of the second pass.
 *
 * @example
 * ```ts
 * const { bytes, tiles } = packSnapKVParams(shape, run, 64);
 * ```
 */
export function packSnapKVParams(
  shape: SnapKVShape,
  run: SnapKVRun,
  tokensPerTile: number,
): { bytes: ArrayBuffer; tiles: number; partitions: number } {
  const { full, nHeads, kvHeads } = shape;
  const { target, window, rows } = run;
  const { recentStart, maxTokens } = checkScoreTarget(target, run.cache, full.blockSize, run.scores, kvHeads);
  if (!Number.isInteger(window.capacity) || window.capacity <= 0) {
    throw new InvalidArgumentError('window.capacity', `must be a positive integer; got ${window.capacity}`);
  }
  if (!Number.isInteger(window.valid) || window.valid < 0 || window.valid > Math.min(window.capacity, target.seqLen)) {
    throw new InvalidArgumentError('window.valid', `must be an integer in 0..min(capacity, seqLen); got ${window.valid}`);
  }
  if (!Number.isInteger(rows) || rows < 1 || rows > window.valid) {
    throw new InvalidArgumentError('rows', `must be in 1..${window.valid} (the valid window queries); got ${rows}`);
  }
  const ringEntries = (target.layer + target.layerCount) * run.cache.seqSlots * window.capacity;
  if (window.queries.size < ringEntries * nHeads * full.headDim * 4 || window.positions.size < ringEntries * 4) {
    const last = target.layer + target.layerCount - 1;
    throw new InvalidArgumentError('window', `the window buffers are too small for layers up to ${last}`);
  }
  if (run.lse.size < snapkvLseBytes(target.layerCount, rows, nHeads)) {
    throw new InvalidArgumentError('lse', `holds ${run.lse.size} B; ${snapkvLseBytes(target.layerCount, rows, nHeads)} B needed`);
  }
  if (shape.skipsLeading && !run.firstTokens) {
    throw new InvalidArgumentError('firstTokens', 'a skipsLeading kernel needs the rows\' first scored tokens');
  }
  if (shape.storedLogits) {
    const need = snapkvLogitBytes(target.layerCount, rows, nHeads, maxTokens);
    if (!run.logits || run.logits.size < need) {
      throw new InvalidArgumentError('logits', `a storedLogits kernel needs ${need} B of logit scratch; got ${run.logits?.size ?? 'none'}`);
    }
  }
  const tiles = Math.ceil(maxTokens / tokensPerTile);
  // As many partitions as the scratch holds, up to one per partitionTokens tokens.
  const partitionTokens = shape.partitionTokens ?? SNAPKV_PARTITION_TOKENS;
  if (!Number.isInteger(partitionTokens) || partitionTokens <= 0) {
    throw new InvalidArgumentError('partitionTokens', `must be a positive integer; got ${partitionTokens}`);
  }
  const held = Math.floor(run.lse.size / snapkvLseBytes(target.layerCount, rows, nHeads));
  const partitions = Math.max(1, Math.min(held, Math.ceil(maxTokens / partitionTokens)));
  const bytes = SNAPKV_PARAMS.pack({
    layer: target.layer,
    layer_count: target.layerCount,
    slot: target.slot,
    seq_slots: run.cache.seqSlots,
    max_blocks: run.cache.maxBlocksPerHead,
    max_tokens: maxTokens,
    window: rows,
    window_cap: window.capacity,
    seq_len: target.seqLen,
    tiles,
    sinks: Math.min(target.sinks, 0xffff_ffff),
    recent_start: Math.min(recentStart, 0xffff_ffff),
    scale: run.scale ?? 1 / Math.sqrt(full.headDim),
    write_means: run.means ? 1 : 0,
    partitions,
    part_tokens: Math.ceil(maxTokens / partitions),
  });
  return { bytes, tiles, partitions };
}

/**
 * SnapKV/TOVA pass 1: the partial softmax normalisers (max, Σ) of each (layer, window query, query head) over
 * the visible tokens of each partition of its KV head. One workgroup per (layer, KV head, chunk of
 * workgroupSize × queryTile (query, head) pairs, partition); a thread holds queryTile pairs' queries and reads
 * each key once for all of them, with no barrier.
 *
 * @example
 * ```ts
 * new SnapKVLseKernel(gpu, { nHeads: 8, kvHeads: 2, full, quant }).encode(encoder, run);
 * ```
 */
export class SnapKVLseKernel {
  readonly spec: KernelSpec;
  private readonly workgroupSize: number;
  /** (Query, head) pairs per thread. */
  private readonly pairBlock: number;

  constructor(
    private readonly gpu: GpuContext,
    readonly shape: SnapKVShape,
  ) {
    if (shape.nHeads % shape.kvHeads !== 0) {
      throw new InvalidArgumentError('nHeads', `${shape.nHeads} query heads are not a multiple of ${shape.kvHeads} KV heads`);
    }
    this.workgroupSize = shape.workgroupSize ?? 64;
    if (!Number.isInteger(this.workgroupSize) || this.workgroupSize <= 0) {
      throw new InvalidArgumentError('workgroupSize', `must be a positive integer; got ${this.workgroupSize}`);
    }
    this.pairBlock = snapkvBlock('queryTile', shape.queryTile);
    this.spec = {
      name: 'snapkv_lse',
      body: snapkvLseBody,
      libraries: [
        snapkvUnrolledLse(shape.full.headDim, this.pairBlock, snapkvKeyRead(shape.full.headDim, shape.full.format === 'f16', shape.quant !== null), shape.storedLogits),
        snapkvFirstToken(shape.skipsLeading ?? false),
        kvReadLibrary,
      ],
      constants: {
        ...cacheConstants(shape.full, shape.quant),
        WORKGROUP_SIZE: { type: 'u32', value: this.workgroupSize },
        N_HEADS: { type: 'u32', value: shape.nHeads },
        KV_HEADS: { type: 'u32', value: shape.kvHeads },
        PAIR_BLOCK: { type: 'u32', value: this.pairBlock },
      },
      uniforms: [SNAPKV_PARAMS],
    };
  }

  /** Records pass 1 into `encoder`. */
  encode(encoder: GPUCommandEncoder, run: SnapKVRun): void {
    const { bytes, partitions } = packSnapKVParams(this.shape, run, this.workgroupSize);
    const chunks = Math.ceil((run.rows * this.shape.nHeads) / this.shape.kvHeads / (this.workgroupSize * this.pairBlock));
    const uniforms = this.gpu.uniformBuffer('snapkv_lse:params', bytes);
    const pass = encoder.beginComputePass({ label: 'snapkv_lse' });
    encodeDispatch(
      this.gpu,
      pass,
      kernelPipeline(this.gpu, this.spec),
      [
        uniforms,
        run.window.queries,
        run.window.positions,
        run.cache.blockTable,
        run.cache.contextLens,
        run.cache.fullPool,
        run.cache.quantPool,
        run.lse,
        this.shape.storedLogits ? (run.logits ?? null) : null,
        this.shape.skipsLeading ? (run.firstTokens ?? null) : null,
      ],
      run.target.layerCount * this.shape.kvHeads * chunks * partitions,
    );
    pass.end();
  }
}
