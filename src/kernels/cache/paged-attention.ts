import attentionBody from '../../../shaders/paged_attention.wgsl';
import kvReadLibrary from '../../../shaders/kv_read.wgsl';
import type { BlockLayout } from '../../format/layout.js';
import { InvalidArgumentError } from '../../errors.js';
import type { GpuContext } from '../../gpu/context.js';
import { encodeDispatch, kernelPipeline, type KernelSpec } from '../../gpu/kernel.js';
import { UniformLayout } from '../../gpu/uniforms.js';
import { cacheConstants } from './cache-constants.js';

const ATTENTION_PARAMS = new UniformLayout('AttentionParams', [
  { name: 'num_queries', type: 'u32' },
  { name: 'layer', type: 'u32' },
  { name: 'seq_slots', type: 'u32' },
  { name: 'max_blocks', type: 'u32' },
  { name: 'probs_stride', type: 'u32' },
  { name: 'scale', type: 'f32' },
]);

/**
 * The GPU buffers of a paged cache that kernels read, for ONE layer: the block table and context lengths cover every
 * layer, the pools are that layer's own (block ids in its table rows are local to them). A kernel run with these
 * reads only the table rows of that layer.
 *
 * @example
 * ```ts
 * const bindings: PagedCacheBindings = cache.storage.bindings(3); // layer 3's pools of a PagedKvCache
 * attention.encode(encoder, { cache: bindings, layer: 3, numQueries: 1, queries, querySlots, queryPositions, out, probs, probsStride: 512 });
 * ```
 */
export interface PagedCacheBindings {
  readonly blockTable: GPUBuffer;
  readonly contextLens: GPUBuffer;
  /** The layer's full pool. */
  readonly fullPool: GPUBuffer;
  /** The layer's quantized pool; a 4-byte placeholder when the cache has no quantized pool. */
  readonly quantPool: GPUBuffer;
  readonly seqSlots: number;
  readonly maxBlocksPerHead: number;
}

/**
 * One run of paged attention.
 *
 * @example
 * ```ts
 * const run: PagedAttentionRun = { cache: cache.storage.bindings(0), layer: 0, numQueries: 1, queries, querySlots, queryPositions, out, probs, probsStride: 512 };
 * ```
 */
export interface PagedAttentionRun {
  readonly cache: PagedCacheBindings;
  readonly layer: number;
  readonly numQueries: number;
  /** f32 [numQueries][nHeads][headDim], RoPE applied. */
  readonly queries: GPUBuffer;
  /** u32 [numQueries]: the sequence slot of each query. */
  readonly querySlots: GPUBuffer;
  /** u32 [numQueries]: each query's position; it sees cached tokens at positions ≤ it. */
  readonly queryPositions: GPUBuffer;
  /** f32 [numQueries][nHeads][headDim] output. */
  readonly out: GPUBuffer;
  /** f32 [numQueries][nHeads][probsStride]: softmax probabilities per cached token (logical order). */
  readonly probs: GPUBuffer;
  /** At least the longest context among the queried heads. */
  readonly probsStride: number;
  /** Default 1/√headDim. */
  readonly scale?: number;
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
    if (!Number.isInteger(run.numQueries) || run.numQueries <= 0) {
      throw new InvalidArgumentError('numQueries', `must be a positive integer; got ${run.numQueries}`);
    }
    const needProbs = run.numQueries * nHeads * run.probsStride * 4;
    if (run.probs.size < needProbs) {
      throw new InvalidArgumentError('probs', `holds ${run.probs.size} B; ${needProbs} B needed`);
    }
    const needQ = run.numQueries * nHeads * full.headDim * 4;
    if (run.queries.size < needQ || run.out.size < needQ) {
      throw new InvalidArgumentError('queries', `queries and out need ${needQ} B`);
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
    const pass = encoder.beginComputePass(
      timestampWrites ? { label: 'paged_attention', timestampWrites } : { label: 'paged_attention' },
    );
    encodeDispatch(
      this.gpu,
      pass,
      kernelPipeline(this.gpu, this.spec),
      [
        uniforms,
        run.queries,
        run.querySlots,
        run.queryPositions,
        run.cache.blockTable,
        run.cache.contextLens,
        run.cache.fullPool,
        run.cache.quantPool,
        run.out,
        run.probs,
      ],
      run.numQueries * nHeads,
    );
    pass.end();
  }
}
