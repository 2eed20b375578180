import attentionBody from '../../../shaders/paged_attention.wgsl';
import kvReadLibrary from '../../../shaders/kv_read.wgsl';
import type { BlockLayout } from '../../format/layout.js';
import { InvalidArgumentError } from '../../errors.js';
import type { GpuContext } from '../../gpu/context.js';
import { encodeDispatch, kernelPipeline, type KernelSpec, recordPass } from '../../gpu/kernel.js';
import { UniformLayout } from '../../gpu/uniforms.js';
import { type AttentionQueryRun, attentionBindings, checkQueries } from './attention-run.js';
import { cacheConstants } from './cache-constants.js';

const ATTENTION_PARAMS = new UniformLayout('AttentionParams', [
  { name: 'num_queries', type: 'u32' },
  { name: 'layer', type: 'u32' },
  { name: 'seq_slots', type: 'u32' },
  { name: 'max_blocks', type: 'u32' },
  { name: 'probs_stride', type: 'u32' },
  { name: 'scale', type: 'f32' },
]);

export type { PagedCacheBindings } from './attention-run.js';

/**
 * One run of paged attention.
 *
 * @example
 * ```ts
 * const run: PagedAttentionRun = { cache: cache.storage.bindings(0), layer: 0, numQueries: 1, queries, querySlots, queryPositions, out, probs, probsStride: 512 };
 * ```
 */
export interface PagedAttentionRun extends AttentionQueryRun {
  /** f32 [numQueries][nHeads][probsStride]: softmax probabilities per cached token (logical order). */
  readonly probs: GPUBuffer;
  /** At least the longest context among the queried heads. */
  readonly probsStride: number;
}

/**
 * Paged attention over the block table: decode (one query per sequence) and prefill chunks (many queries of one
 * sequence, causal by position) are the same kernel. Reads full and quantized blocks, dequantizing on the fly,
 * and leaves the attention probabilities in `probs` for scoring.
 *
 * @example
 * ```ts
 * const attention = new PagedAttentionKernel(gpu, { nHeads: 8, kvHeads: 4, full, quant: null });
 * attention.encode(encoder, { cache, layer: 0, numQueries: 1, queries, querySlots, queryPositions, out, probs, probsStride: 512 });
 * ```
 */
export class PagedAttentionKernel {
  readonly spec: KernelSpec;

  constructor(
    private readonly gpu: GpuContext,
    readonly shape: { nHeads: number; kvHeads: number; full: BlockLayout; quant: BlockLayout | null; workgroupSize?: number },
  ) {
    if (shape.nHeads % shape.kvHeads !== 0) {
      throw new InvalidArgumentError('nHeads', `${shape.nHeads} query heads are not a multiple of ${shape.kvHeads} KV heads`);
    }
    const workgroupSize = shape.workgroupSize ?? 64;
    this.spec = {
      name: 'paged_attention',
      body: attentionBody,
      libraries: [kvReadLibrary],
      constants: {
        ...cacheConstants(shape.full, shape.quant),
        WORKGROUP_SIZE: { type: 'u32', value: workgroupSize },
        N_HEADS: { type: 'u32', value: shape.nHeads },
        KV_HEADS: { type: 'u32', value: shape.kvHeads },
      },
      uniforms: [ATTENTION_PARAMS],
    };
  }

  /**
   * Records the attention pass into `encoder`. `timestampWrites` (optional) is passed to the compute pass so a
   * benchmark can time exactly this pass.
   */
  encode(encoder: GPUCommandEncoder, run: PagedAttentionRun, timestampWrites?: GPUComputePassTimestampWrites): void {
    const { nHeads, full } = this.shape;
    checkQueries(run, nHeads, full.headDim);
    const needProbs = run.numQueries * nHeads * run.probsStride * 4;
    if (run.probs.size < needProbs) {
      throw new InvalidArgumentError('probs', `holds ${run.probs.size} B; ${needProbs} B needed`);
    }
    const uniforms = this.gpu.uniformBuffer(
      'paged_attention:params',
      ATTENTION_PARAMS.pack({
        num_queries: run.numQueries,
        layer: run.layer,
        seq_slots: run.cache.seqSlots,
        max_blocks: run.cache.maxBlocksPerHead,
        probs_stride: run.probsStride,
        scale: run.scale ?? 1 / Math.sqrt(full.headDim),
      }),
    );
    recordPass(encoder, 'paged_attention', run.pass, timestampWrites, (pass) =>
      encodeDispatch(
        this.gpu,
        pass,
        kernelPipeline(this.gpu, this.spec),
        attentionBindings(uniforms, run, run.cache.quantPool, run.out, run.probs),
        run.numQueries * nHeads,
      ),
    );
  }
}
