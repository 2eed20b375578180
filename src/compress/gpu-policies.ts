/**
 * The GPU side of the scoring policies: what a policy needs to score one (layer range, sequence slot) of a paged
 * cache on the GPU, and the shared plumbing that encodes the kernels. Scores never travel to the CPU: they land
 * in f32 `[row][maxTokensPerHead]` (CONTRIBUTING.md) for the selection kernels.
 *
 * A policy describes itself with a {@link GpuScorePlan} (policy files stay tiny) and `BasePolicy.scoreGpu()`
 * turns the plan plus its protection options into kernels via {@link encodeGpuScores}.
 */
import type { BlockLayout } from '../format/layout.js';
import { InvalidArgumentError } from '../errors.js';
import type { GpuContext } from '../gpu/context.js';
import type { AttentionStatsBuffers } from '../kernels/cache/accumulate-attention.js';
import type { PagedCacheBindings } from '../kernels/cache/paged-attention.js';
import { ScoreStatsKernel, type StatsPolicy } from '../kernels/compress/score-stats.js';
import type { ObservationWindowBindings, ScoreTarget } from '../kernels/compress/score-target.js';
import { SnapKVLseKernel, snapkvLseBytes } from '../kernels/compress/snapkv-lse.js';
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
  /** Accumulated attention statistics (h2o, kvcompress). */
  readonly stats?: AttentionStatsBuffers;
  /** Observation window (snapkv, tova). */
  readonly window?: ObservationWindowBindings;
  /**
   * Scratch of at least {@link scoreScratchBytes} bytes, STORAGE usage (snapkv, tova). The caller owns it and
   * keeps it alive until the encoder's submission completes; its contents never matter between runs.
   */
  readonly scratch?: GPUBuffer;
  /** f32 [row][maxTokensPerHead]; the target rows' tokens < context length are written. */
  readonly scores: GPUBuffer;
  /** Seed for random (default: the policy's). */
  readonly seed?: number;
  /** Attention logit scale for window policies, default 1/√headDim. */
  readonly scale?: number;
  /** Window policies: also write each token's unpooled mean window probability here (f32 [row][maxTokens]). */
  readonly means?: GPUBuffer;
}

/**
 * How a policy scores on the GPU: one pass over statistics/keys/positions, or the observation-window attention
 * (mean probability over the newest `window` queries, then pooling).
 *
 * @example
 * ```ts
 * const snapkv: GpuScorePlan = { kind: 'window', window: 32, kernelSize: 5, pooling: 'avg' };
 * const h2o: GpuScorePlan = { kind: 'stats', policy: 'h2o' };
 * ```
 */
export type GpuScorePlan =
  | { readonly kind: 'stats'; readonly policy: StatsPolicy; readonly seed?: number }
  | { readonly kind: 'window'; readonly window: number; readonly kernelSize: number; readonly pooling: 'avg' | 'max' };

/**
 * Bytes of scratch a window policy needs for `layerCount` layers, at most `windowCapacity` voting queries and
 * `nHeads` query heads (allocate once per cache: it is an upper bound for every window size).
 *
 * @example
 * ```ts
 * const scratch = createStorageBuffer(gpu, 'score-scratch', scoreScratchBytes(32, 32, 32));
 * ```
 */
export function scoreScratchBytes(layerCount: number, windowCapacity: number, nHeads: number): number {
  return snapkvLseBytes(layerCount, windowCapacity, nHeads);
}

/**
 * Encodes the kernels of `plan` into `encoder`, with sinks and the `recent` newest positions protected (+Inf).
 *
 * @example
 * ```ts
 * encodeGpuScores(encoder, input, { kind: 'stats', policy: 'knorm' }, { sinks: 4, recent: 32 });
 * ```
 */
export function encodeGpuScores(
  encoder: GPUCommandEncoder,
  input: ScoreGpuInput,
  plan: GpuScorePlan,
  protection: { readonly sinks: number; readonly recent: number },
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
  if (plan.kind === 'stats') {
    const kernel = new ScoreStatsKernel(gpu, { policy: plan.policy, kvHeads, full, quant });
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
    throw new InvalidArgumentError('window', 'this policy needs the observation-window queries (at least one valid)');
  }
  if (!scratch) {
    throw new InvalidArgumentError('scratch', `window policies need a scratch buffer of scoreScratchBytes() bytes`);
  }
  const shape = { nHeads, kvHeads, full, quant };
  const run = {
    cache,
    target,
    window,
    rows: Math.min(plan.window, window.valid),
    lse: scratch,
    scores: input.scores,
    ...(input.scale !== undefined ? { scale: input.scale } : {}),
    ...(input.means !== undefined ? { means: input.means } : {}),
  };
  // Kernel objects only hold a spec; the compiled pipelines are cached per device by their constants.
  new SnapKVLseKernel(gpu, shape).encode(encoder, run);
  new SnapKVScoreKernel(gpu, shape, { kernelSize: plan.kernelSize, mode: plan.pooling }).encode(encoder, run);
}
