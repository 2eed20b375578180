import scoreStatsBody from '../../../shaders/score_stats.wgsl';
import kvReadLibrary from '../../../shaders/kv_read.wgsl';
import scoreCommonLibrary from '../../../shaders/score_common.wgsl';
import type { BlockLayout } from '../../format/layout.js';
import { InvalidArgumentError } from '../../errors.js';
import type { GpuContext } from '../../gpu/context.js';
import { encodeDispatch, kernelPipeline, type KernelSpec } from '../../gpu/kernel.js';
import { UniformLayout } from '../../gpu/uniforms.js';
import type { AttentionStatsBuffers } from '../cache/accumulate-attention.js';
import { cacheConstants } from '../cache/cache-constants.js';
import type { PagedCacheBindings } from '../cache/paged-attention.js';
import { checkScoreTarget, type ScoreTarget } from './score-target.js';

const SCORE_STATS_PARAMS = new UniformLayout('ScoreStatsParams', [
  { name: 'layer', type: 'u32' },
  { name: 'layer_count', type: 'u32' },
  { name: 'slot', type: 'u32' },
  { name: 'seq_slots', type: 'u32' },
  { name: 'max_blocks', type: 'u32' },
  { name: 'max_tokens', type: 'u32' },
  { name: 'tiles', type: 'u32' },
  { name: 'sinks', type: 'u32' },
  { name: 'recent_start', type: 'u32' },
  { name: 'seed', type: 'u32' },
]);

/**
 * The policies scored in one pass by shaders/score_stats.wgsl (the value is its POLICY constant).
 *
 * @example
 * ```ts
 * new ScoreStatsKernel(gpu, { policy: 'h2o', kvHeads: 2, full, quant: null });
 * ```
 */
export const STATS_POLICIES = { h2o: 0, kvcompress: 1, knorm: 2, streaming: 3, random: 4 } as const;

/**
 * A policy of {@link STATS_POLICIES}.
 *
 * @example
 * ```ts
 * const policy: StatsPolicy = 'knorm';
 * ```
 */
export type StatsPolicy = keyof typeof STATS_POLICIES;

/**
 * One scoring run of {@link ScoreStatsKernel}.
 *
 * @example
 * ```ts
 * const run: ScoreStatsRun = { cache, target: { layer: 0, layerCount: 1, slot: 0, seqLen: 100, sinks: 4, recent: 32 }, stats, scores };
 * ```
 */
export interface ScoreStatsRun {
  readonly cache: PagedCacheBindings;
  readonly target: ScoreTarget;
  /** Needed by h2o (attnSum, attnCount) and kvcompress (attnSqSum). */
  readonly stats?: AttentionStatsBuffers;
  /** f32 [row][maxTokensPerHead]; only the target's rows, tokens < context length, are written. */
  readonly scores: GPUBuffer;
  /** random: the seed (taken as u32, as the reference's `^` takes it as int32 bits). */
  readonly seed?: number;
}

/**
 * Scores h2o (attnSum / attnCount), kvcompress (attnSqSum), knorm (−‖k‖), streaming (position) or random (the
 * reference's mulberry32 draws, bit for bit) for one (layer range, slot), protection included. One thread per
 * token, no barriers.
 *
 * @example
 * ```ts
 * const h2o = new ScoreStatsKernel(gpu, { policy: 'h2o', kvHeads: 2, full, quant });
 * h2o.encode(encoder, { cache, target: { layer: 0, layerCount: 1, slot: 0, seqLen: 100, sinks: 4, recent: 32 }, stats, scores });
 * ```
 */
export class ScoreStatsKernel {
  readonly spec: KernelSpec;
  private readonly workgroupSize: number;

  constructor(
    private readonly gpu: GpuContext,
    readonly shape: { policy: StatsPolicy; kvHeads: number; full: BlockLayout; quant: BlockLayout | null; workgroupSize?: number },
  ) {
    const policy: number | undefined = STATS_POLICIES[shape.policy];
    if (policy === undefined) {
      throw new InvalidArgumentError('policy', `${String(shape.policy)} is not one of ${Object.keys(STATS_POLICIES).join(', ')}`);
    }
    this.workgroupSize = shape.workgroupSize ?? 64;
    this.spec = {
      name: 'score_stats',
      body: scoreStatsBody,
      libraries: [kvReadLibrary, scoreCommonLibrary],
      constants: {
        ...cacheConstants(shape.full, shape.quant),
        WORKGROUP_SIZE: { type: 'u32', value: this.workgroupSize },
        KV_HEADS: { type: 'u32', value: shape.kvHeads },
        POLICY: { type: 'u32', value: policy },
      },
      uniforms: [SCORE_STATS_PARAMS],
    };
  }

  /** Records the scoring pass into `encoder`. */
  encode(encoder: GPUCommandEncoder, run: ScoreStatsRun): void {
    const { policy, kvHeads, full } = this.shape;
    const { recentStart, maxTokens } = checkScoreTarget(run.target, run.cache, full.blockSize, run.scores, kvHeads);
    const needsStats = policy === 'h2o' || policy === 'kvcompress';
    if (needsStats && !run.stats) {
      throw new InvalidArgumentError('stats', `${policy} needs the accumulated attention statistics`);
    }
    // Unused stat bindings get a read-only placeholder: aliasing read-only bindings is allowed.
    const statA = policy === 'h2o' ? run.stats?.attnSum : policy === 'kvcompress' ? run.stats?.attnSqSum : undefined;
    const statB = policy === 'h2o' ? run.stats?.attnCount : undefined;
    const tiles = Math.ceil(maxTokens / this.workgroupSize);
    const uniforms = this.gpu.uniformBuffer(
      'score_stats:params',
      SCORE_STATS_PARAMS.pack({
        layer: run.target.layer,
        layer_count: run.target.layerCount,
        slot: run.target.slot,
        seq_slots: run.cache.seqSlots,
        max_blocks: run.cache.maxBlocksPerHead,
        max_tokens: maxTokens,
        tiles,
        sinks: Math.min(run.target.sinks, 0xffff_ffff),
        recent_start: Math.min(recentStart, 0xffff_ffff),
        seed: (run.seed ?? 0) >>> 0,
      }),
    );
    const pass = encoder.beginComputePass({ label: `score_stats:${policy}` });
    encodeDispatch(
      this.gpu,
      pass,
      kernelPipeline(this.gpu, this.spec),
      [
        uniforms,
        run.cache.blockTable,
        run.cache.contextLens,
        run.cache.fullPool,
        run.cache.quantPool,
        statA ?? run.cache.contextLens,
        statB ?? run.cache.contextLens,
        run.scores,
      ],
      run.target.layerCount * kvHeads * tiles,
    );
    pass.end();
  }
}
