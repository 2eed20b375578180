import accumulateBody from '../../../shaders/accumulate_attention.wgsl';
import statsLibrary from '../../../shaders/attention_stats_common.wgsl';
import kvReadLibrary from '../../../shaders/kv_read.wgsl';
import type { BlockLayout } from '../../format/layout.js';
import { InvalidArgumentError } from '../../errors.js';
import type { GpuContext } from '../../gpu/context.js';
import { encodeDispatch, kernelPipeline, type KernelSpec, recordPass } from '../../gpu/kernel.js';
import { UniformLayout } from '../../gpu/uniforms.js';
import { cacheConstants } from './cache-constants.js';
import { type AttentionStatsBuffers, checkStatsBuffers, type PagedCacheBindings } from './attention-run.js';

const ACCUMULATE_PARAMS = new UniformLayout('AccumulateParams', [
  { name: 'num_segments', type: 'u32' },
  { name: 'layer', type: 'u32' },
  { name: 'seq_slots', type: 'u32' },
  { name: 'max_blocks', type: 'u32' },
  { name: 'max_tokens', type: 'u32' },
  { name: 'probs_stride', type: 'u32' },
  { name: 'tiles', type: 'u32' },
]);

export type { AttentionStatsBuffers } from './attention-run.js';

/**
 * Groups the queries of an attention run into segments `u32 [n][3]` = (slot, first query, query count): one
 * per run of consecutive queries of the same slot. Throws when a slot has two separate runs, because their
 * threads would race on the same statistics.
 *
 * @example
 * ```ts
 * attentionSegments([0, 0, 0, 2, 1]); // Uint32Array [0, 0, 3,  2, 3, 1,  1, 4, 1]
 * ```
 */
export function attentionSegments(querySlots: ArrayLike<number>): Uint32Array {
  const out: number[] = [];
  const seen = new Set<number>();
  for (let i = 0; i < querySlots.length; i++) {
    const slot = querySlots[i] ?? 0;
    if (i > 0 && querySlots[i - 1] === slot) {
      out[out.length - 1] = (out[out.length - 1] ?? 0) + 1;
      continue;
    }
    if (seen.has(slot)) {
      throw new InvalidArgumentError('querySlots', `slot ${slot} appears in two separate runs; group a sequence's queries`);
    }
    seen.add(slot);
    out.push(slot, i, 1);
  }
  return Uint32Array.from(out);
}

/**
 * One accumulation, after a paged-attention run of the same layer.
 *
 * @example
 * ```ts
 * const run: AccumulateAttentionRun = { cache, layer: 0, probs, probsStride: 512, queryPositions, segments, numSegments: 1, stats };
 * ```
 */
export interface AccumulateAttentionRun {
  readonly cache: PagedCacheBindings;
  readonly layer: number;
  /** The attention run's probabilities, f32 [numQueries][nHeads][probsStride]. */
  readonly probs: GPUBuffer;
  readonly probsStride: number;
  /** The attention run's query positions, u32 [numQueries]. */
  readonly queryPositions: GPUBuffer;
  /** u32 [numSegments][3] from {@link attentionSegments}: no slot twice. */
  readonly segments: GPUBuffer;
  readonly numSegments: number;
  readonly stats: AttentionStatsBuffers;
  /** A compute pass the caller keeps open to record into (default: a pass of its own). */
  readonly pass?: GPUComputePassEncoder;
}

/**
 * Adds a paged-attention run's probabilities to the cache's per-token statistics: per (query's slot, kv head,
 * token) attnSum += Σ over the group's heads of p, attnSqSum += Σ p², attnCount += 1 if the token's position
 * is ≤ the query's. One thread owns a token and loops over its segment's queries, so there are no races and no
 * atomics; the probabilities never leave the GPU.
 *
 * @example
 * ```ts
 * const accumulate = new AccumulateAttentionKernel(gpu, { nHeads: 8, kvHeads: 2, full, quant });
 * accumulate.encode(encoder, { cache, layer, probs, probsStride, queryPositions, segments, numSegments: 1, stats });
 * ```
 */
export class AccumulateAttentionKernel {
  readonly spec: KernelSpec;
  private readonly workgroupSize: number;

  constructor(
    private readonly gpu: GpuContext,
    readonly shape: { nHeads: number; kvHeads: number; full: BlockLayout; quant: BlockLayout | null; workgroupSize?: number },
  ) {
    if (shape.nHeads % shape.kvHeads !== 0) {
      throw new InvalidArgumentError('nHeads', `${shape.nHeads} query heads are not a multiple of ${shape.kvHeads} KV heads`);
    }
    this.workgroupSize = shape.workgroupSize ?? 64;
    this.spec = {
      name: 'accumulate_attention',
      body: accumulateBody,
      libraries: [kvReadLibrary, statsLibrary],
      constants: {
        ...cacheConstants(shape.full, shape.quant),
        WORKGROUP_SIZE: { type: 'u32', value: this.workgroupSize },
        N_HEADS: { type: 'u32', value: shape.nHeads },
        KV_HEADS: { type: 'u32', value: shape.kvHeads },
      },
      uniforms: [ACCUMULATE_PARAMS],
    };
  }

  /** Records the accumulation into `encoder` (after the attention pass that wrote `probs`). */
  encode(encoder: GPUCommandEncoder, run: AccumulateAttentionRun): void {
    const { kvHeads, full } = this.shape;
    for (const [field, value] of [
      ['numSegments', run.numSegments],
      ['probsStride', run.probsStride],
    ] as const) {
      if (!Number.isInteger(value) || value <= 0) {
        throw new InvalidArgumentError(field, `must be a positive integer; got ${value}`);
      }
    }
    if (run.segments.size < run.numSegments * 12) {
      throw new InvalidArgumentError(
        'segments',
        `holds ${run.segments.size} B; ${run.numSegments} segments need ${run.numSegments * 12} B`,
      );
    }
    const maxTokens = checkStatsBuffers(run.stats, run.cache, run.layer, kvHeads, full.blockSize);
    const tiles = Math.ceil(run.probsStride / this.workgroupSize);
    const uniforms = this.gpu.uniformBuffer(
      'accumulate_attention:params',
      ACCUMULATE_PARAMS.pack({
        num_segments: run.numSegments,
        layer: run.layer,
        seq_slots: run.cache.seqSlots,
        max_blocks: run.cache.maxBlocksPerHead,
        max_tokens: maxTokens,
        probs_stride: run.probsStride,
        tiles,
      }),
    );
    recordPass(encoder, 'accumulate_attention', run.pass, undefined, (pass) =>
      encodeDispatch(
        this.gpu,
        pass,
        kernelPipeline(this.gpu, this.spec),
        [
          uniforms,
          run.probs,
          run.queryPositions,
          run.segments,
          run.cache.blockTable,
          run.cache.contextLens,
          run.cache.fullPool,
          run.cache.quantPool,
          run.stats.attnSum,
          run.stats.attnSqSum,
          run.stats.attnCount,
        ],
        run.numSegments * kvHeads * tiles,
      ),
    );
  }
}
