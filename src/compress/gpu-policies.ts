/**
 * The GPU side of the scoring policies: what a policy needs to score one (layer range, sequence slot) of a paged
 * cache on the GPU, and the shared plumbing that encodes the kernels. Scores never travel to the CPU: they land
 * in f32 `[row][maxTokensPerHead]` (CONTRIBUTING.md) for the selection kernels.
 *
 * A policy describes itself with a {@link GpuScorePlan}, plain data in its own file (a per-token WGSL score and
 * the statistics it reads, or the observation-window parameters); `BasePolicy.scoreGpu()` turns the plan plus its
 * protection options into kernels via {@link encodeGpuScores}. No kernel knows a policy by name.
 */
import type { BlockLayout } from '../format/layout.js';
import { InvalidArgumentError } from '../errors.js';
import type { GpuContext } from '../gpu/context.js';
import type { AttentionStatsBuffers } from '../kernels/cache/accumulate-attention.js';
import type { PagedCacheBindings } from '../kernels/cache/paged-attention.js';
import { ScoreStatsKernel, type TokenScoreFunction } from '../kernels/compress/score-stats.js';
import type { ObservationWindowBindings, ScoreTarget } from '../kernels/compress/score-target.js';
import { SnapKVLseKernel, snapkvLogitBytes, snapkvLseBytes, type SnapKVShape } from '../kernels/compress/snapkv-lse.js';
import { SnapKVScoreKernel } from '../kernels/compress/snapkv-score.js';

/**
 * Everything a policy may read to score one (layer range, sequence slot) on the GPU.
 *
 * @example
 * ```ts
 * const input: ScoreGpuInput = {
 *   gpu, cache: bindings, full, quant, nHeads: 8, kvHeads: 2, layer: 0, layerCount: 32, slot: 0, seqLen: 900,
 *   stats, window: { queries, positions, capacity: 32, valid: 32 }, scratch, scores,
 * };
 * policy.scoreGpu(encoder, input);
 * ```
 */
export interface ScoreGpuInput {
  readonly gpu: GpuContext;
  readonly cache: PagedCacheBindings;
  /** Block layouts of the cache's pools (kernel constants); maxTokensPerHead = maxBlocksPerHead × full.blockSize. */
  readonly full: BlockLayout;
  readonly quant: BlockLayout | null;
  readonly nHeads: number;
  readonly kvHeads: number;
  /** First layer scored. */
  readonly layer: number;
  /** Layers scored from `layer` on (default 1). */
  readonly layerCount?: number;
  readonly slot: number;
  /** Tokens the sequence has seen (its next position): protection is relative to it. */
  readonly seqLen: number;
  /** Accumulated attention statistics (token plans that read statistics). */
  readonly stats?: AttentionStatsBuffers;
  /** Observation window (window plans). */
  readonly window?: ObservationWindowBindings;
  /**
   * Scratch of at least {@link scoreScratchBytes} bytes, STORAGE usage (window plans). The caller owns it and
   * keeps it alive until the encoder's submission completes; its contents never matter between runs.
   */
  readonly scratch?: GPUBuffer;
  /**
   * Window plans, optional: scratch for the logits of every (window query, head, token) (see
   * {@link logitScratchBytes}). When it is large enough for the run the second pass reads the logits the first
   * one stored instead of recomputing them (same scores, about half the work); otherwise it is ignored.
   */
  readonly logits?: GPUBuffer;
  /**
   * Window plans, optional: u32 per cache row, the first token the scoring sees (merge slots: the slots lead a
   * row and are left out of the window softmax and the pooling, as on the CPU engine; their scores are not
   * written). Token plans score every token on their own and ignore it.
   */
  readonly firstTokens?: GPUBuffer;
  /** f32 [row][maxTokensPerHead]; the target rows' tokens < context length are written. */
  readonly scores: GPUBuffer;
  /** Seed a token plan's `token.seed` carries (default: the plan's, else 0). */
  readonly seed?: number;
  /** Attention logit scale for window policies, default 1/√headDim. */
  readonly scale?: number;
  /** Window policies: also write each token's unpooled window probability, summed over the pairs, here (f32 [row][maxTokens]). */
  readonly means?: GPUBuffer;
  /**
   * Window policies: workgroup size, partition and tile sizes of the two passes (defaults suit any adapter);
   * tests set them small so that several partitions and tiles are merged at small sizes.
   */
  readonly tiling?: Pick<SnapKVShape, 'workgroupSize' | 'partitionTokens' | 'keyTile' | 'queryTile'>;
}

/**
 * A policy scored in one pass over its tokens: a WGSL `token_score` and the statistics it reads
 * ({@link TokenScoreFunction}), optionally a default seed for `token.seed`.
 *
 * @example
 * ```ts
 * const kvcompress: TokenScorePlan = {
 *   kind: 'token',
 *   statistics: ['attnSqSum'],
 *   wgsl: 'fn token_score(token: ScoredToken) -> f32 { return token.attn_sq_sum; }',
 * };
 * ```
 */
export interface TokenScorePlan extends TokenScoreFunction {
  readonly kind: 'token';
  readonly seed?: number;
}

/**
 * A policy scored from the observation window: mean attention probability of the newest `window` queries (and
 * the group's query heads), pooled along token order.
 */
export interface WindowScorePlan {
  readonly kind: 'window';
  readonly window: number;
  /** Odd; 1 = no pooling. */
  readonly kernelSize: number;
  readonly pooling: 'avg' | 'max';
}

/**
 * How a policy scores on the GPU, as data.
 */
export type GpuScorePlan = TokenScorePlan | WindowScorePlan;

/**
 * Bytes of scratch a window policy needs for `layerCount` layers, at most `windowCapacity` voting queries and
 * `nHeads` query heads (allocate once per cache: it is an upper bound for every window size).
 *
 * @example
 * ```ts
 * const scratch = createStorageBuffer(gpu, 'score-scratch', scoreScratchBytes(32, 32, 32));
 * ```
 */
export function scoreScratchBytes(layerCount: number, windowCapacity: number, nHeads: number, maxTokens = 1): number {
  return snapkvLseBytes(layerCount, windowCapacity, nHeads, maxTokens);
}

/**
 * Bytes of the optional logit scratch ({@link ScoreGpuInput.logits}) that lets a window policy over `layerCount`
 * layers, up to `windowCapacity` voting queries, `nHeads` query heads and `maxTokens` token slots per head compute
 * each logit once. 4 MiB for 32 × 32 at 1K tokens, 256 MiB at 64K: callers allocate it up to a cap of their own
 * ({@link STORED_LOGITS_MAX_BYTES} in the compressor) and go without past it.
 *
 * @example
 * ```ts
 * const bytes = logitScratchBytes(1, 32, 32, 1024); // 4 MiB
 * ```
 */
export function logitScratchBytes(layerCount: number, windowCapacity: number, nHeads: number, maxTokens: number): number {
  return snapkvLogitBytes(layerCount, windowCapacity, nHeads, maxTokens);
}

/**
 * The largest logit scratch the compressor keeps: 16 MiB, 32 window queries × 32 heads up to 4K tokens. On
 * SwiftShader storing won up to 4K (1K: 226 vs 378 ms, 4K: 441 vs 727) and lost at 16K (64 MiB: 3.5 vs 2.8 s
 * wall), where writing and reading the logits costs more than the second round of dot products.
 */
export const STORED_LOGITS_MAX_BYTES = 16 * 1024 * 1024;

/**
 * Encodes the kernels of `plan` into `encoder`, with sinks and the `recent` newest positions protected (+Inf).
 * `policyName` names the passes and the errors.
 *
 * @example
 * ```ts
 * encodeGpuScores(encoder, input, { kind: 'window', window: 32, kernelSize: 5, pooling: 'avg' }, { sinks: 4, recent: 32 });
 * ```
 */
export function encodeGpuScores(
  encoder: GPUCommandEncoder,
  input: ScoreGpuInput,
  plan: GpuScorePlan,
  protection: { readonly sinks: number; readonly recent: number },
  policyName = 'this policy',
): void {
  const { gpu, cache, full, quant, kvHeads, nHeads } = input;
  const target: ScoreTarget = {
    layer: input.layer,
    layerCount: input.layerCount ?? 1,
    slot: input.slot,
    seqLen: input.seqLen,
    sinks: protection.sinks,
    recent: protection.recent,
  };
  if (plan.kind === 'token') {
    const kernel = new ScoreStatsKernel(gpu, { label: policyName, score: plan, kvHeads, full, quant });
    kernel.encode(encoder, {
      cache,
      target,
      scores: input.scores,
      ...(input.stats ? { stats: input.stats } : {}),
      seed: input.seed ?? plan.seed ?? 0,
    });
    return;
  }
  const { window, scratch } = input;
  if (!window || window.valid < 1) {
    throw new InvalidArgumentError('window', `${policyName} needs the observation-window queries (at least one valid)`);
  }
  if (!scratch) {
    throw new InvalidArgumentError('scratch', `${policyName} needs a scratch buffer of scoreScratchBytes() bytes`);
  }
  const rows = Math.min(plan.window, window.valid);
  const maxTokens = cache.maxBlocksPerHead * full.blockSize;
  const storedLogits = input.logits !== undefined && input.logits.size >= snapkvLogitBytes(target.layerCount, rows, nHeads, maxTokens);
  const shape: SnapKVShape = {
    nHeads,
    kvHeads,
    full,
    quant,
    ...input.tiling,
    ...(storedLogits ? { storedLogits } : {}),
    ...(input.firstTokens ? { skipsLeading: true } : {}),
  };
  const run = {
    cache,
    target,
    window,
    rows,
    lse: scratch,
    scores: input.scores,
    ...(input.scale !== undefined ? { scale: input.scale } : {}),
    ...(input.means !== undefined ? { means: input.means } : {}),
    ...(storedLogits && input.logits ? { logits: input.logits } : {}),
    ...(input.firstTokens ? { firstTokens: input.firstTokens } : {}),
  };
  // Kernel objects only hold a spec; the compiled pipelines are cached per device by their constants.
  new SnapKVLseKernel(gpu, shape).encode(encoder, run);
  new SnapKVScoreKernel(gpu, shape, { kernelSize: plan.kernelSize, mode: plan.pooling }).encode(encoder, run);
}
