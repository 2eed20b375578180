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
 * An accumulated attention statistic a per-token score may read (a buffer of {@link AttentionStatsBuffers}).
 *
 * @example
 * ```ts
 * const h2oReads: AttentionStatistic[] = ['attnSum', 'attnCount'];
 * ```
 */
export type AttentionStatistic = keyof AttentionStatsBuffers;

/**
 * Every {@link AttentionStatistic}, with the WGSL constant that turns its read on in shaders/score_stats.wgsl.
 *
 * @example
 * ```ts
 * Object.keys(ATTENTION_STATISTICS); // ['attnSum', 'attnSqSum', 'attnCount']
 * ```
 */
export const ATTENTION_STATISTICS: Readonly<Record<AttentionStatistic, string>> = {
  attnSum: 'READS_ATTN_SUM',
  attnSqSum: 'READS_ATTN_SQ_SUM',
  attnCount: 'READS_ATTN_COUNT',
};

/**
 * A policy's per-token score for {@link ScoreStatsKernel}: WGSL declaring `fn token_score(token: ScoredToken) -> f32`
 * (shaders/score_stats.wgsl documents `ScoredToken`, `token_key` and `token_value`; shaders/score_common.wgsl
 * has `mulberry32_draw` and `unit_interval`), and the statistics it reads (the others read as 0). Helpers of its
 * own may follow the function in `wgsl`.
 */
export interface TokenScoreFunction {
  readonly statistics: readonly AttentionStatistic[];
  readonly wgsl: string;
}

const TOKEN_SCORE_SIGNATURE = /\bfn\s+token_score\s*\(\s*\w+\s*:\s*ScoredToken\s*\)\s*->\s*f32\b/;

/**
 * One scoring run of {@link ScoreStatsKernel}.
 */
export interface ScoreStatsRun {
  readonly cache: PagedCacheBindings;
  readonly target: ScoreTarget;
  /** Needed when the score reads any statistic. */
  readonly stats?: AttentionStatsBuffers;
  /** f32 [row][maxTokensPerHead]; only the target's rows, tokens < context length, are written. */
  readonly scores: GPUBuffer;
  /** `token.seed` (taken as u32, as the CPU's `^` takes it as int32 bits). */
  readonly seed?: number;
}

/**
 * Scores one (layer range, slot) with a policy's {@link TokenScoreFunction}, protection included: one thread
 * per token, no barriers. The kernel knows no policy: the policy's WGSL is a declared function of the spec.
 *
 * @example
 * ```ts
 * const score = { statistics: [], wgsl: 'fn token_score(token: ScoredToken) -> f32 { return f32(token.position); }' };
 * const streaming = new ScoreStatsKernel(gpu, { label: 'streaming', score, kvHeads: 2, full, quant });
 * streaming.encode(encoder, { cache, target: { layer: 0, layerCount: 1, slot: 0, seqLen: 100, sinks: 4, recent: 32 }, scores });
 * ```
 */
export class ScoreStatsKernel {
  readonly spec: KernelSpec;
  private readonly workgroupSize: number;

  constructor(
    private readonly gpu: GpuContext,
    readonly shape: {
      /** Names the passes and errors (the policy's name). */
      label: string;
      score: TokenScoreFunction;
      kvHeads: number;
      full: BlockLayout;
      quant: BlockLayout | null;
      workgroupSize?: number;
    },
  ) {
    const { label, score } = shape;
    if (!TOKEN_SCORE_SIGNATURE.test(score.wgsl)) {
      throw new InvalidArgumentError('wgsl', `${label}: the GPU plan must declare "fn token_score(token: ScoredToken) -> f32"`);
    }
    for (const statistic of score.statistics) {
      if (!(statistic in ATTENTION_STATISTICS)) {
        throw new InvalidArgumentError('statistics', `${label}: ${String(statistic)} is not one of ${Object.keys(ATTENTION_STATISTICS).join(', ')}`);
      }
    }
    const reads = Object.fromEntries(
      Object.entries(ATTENTION_STATISTICS).map(([statistic, constant]) => [
        constant,
        { type: 'bool', value: score.statistics.includes(statistic as AttentionStatistic) } as const,
      ]),
    );
    this.workgroupSize = shape.workgroupSize ?? 64;
    this.spec = {
      name: 'score_stats',
      body: scoreStatsBody,
      libraries: [kvReadLibrary, scoreCommonLibrary],
      functions: [{ name: 'token_score', source: score.wgsl }],
      constants: {
        ...cacheConstants(shape.full, shape.quant),
        ...reads,
        WORKGROUP_SIZE: { type: 'u32', value: this.workgroupSize },
        KV_HEADS: { type: 'u32', value: shape.kvHeads },
      },
      uniforms: [SCORE_STATS_PARAMS],
    };
  }

  /** Records the scoring pass into `encoder`. */
  encode(encoder: GPUCommandEncoder, run: ScoreStatsRun): void {
    const { label, score, kvHeads, full } = this.shape;
    const { recentStart, maxTokens } = checkScoreTarget(run.target, run.cache, full.blockSize, run.scores, kvHeads);
    const { stats } = run;
    if (score.statistics.length > 0 && !stats) {
      throw new InvalidArgumentError(
        'stats',
        `${label} reads ${score.statistics.join(', ')}: pass the accumulated attention statistics`,
      );
    }
    // Unread statistics get a read-only placeholder: aliasing read-only bindings is allowed.
    const bound = (statistic: AttentionStatistic): GPUBuffer =>
      (stats && score.statistics.includes(statistic) ? stats[statistic] : undefined) ?? run.cache.contextLens;
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
    const pass = encoder.beginComputePass({ label: `score_stats:${label}` });
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
        bound('attnSum'),
        bound('attnSqSum'),
        bound('attnCount'),
        run.scores,
      ],
      run.target.layerCount * kvHeads * tiles,
    );
    pass.end();
  }
}
