import appendBody from '../../../shaders/kv_append.wgsl';
import type { BlockLayout } from '../../format/layout.js';
import { InvalidArgumentError } from '../../errors.js';
import type { GpuContext } from '../../gpu/context.js';
import { encodeDispatch, kernelPipeline, type KernelSpec, recordPass } from '../../gpu/kernel.js';
import { UniformLayout } from '../../gpu/uniforms.js';
import { cacheConstants } from './cache-constants.js';

const APPEND_PARAMS = new UniformLayout('AppendParams', [
  { name: 'num_tokens', type: 'u32' },
  { name: 'layer', type: 'u32' },
]);

/**
 * One append of a layer's new tokens.
 *
 * @example
 * ```ts
 * const run: KvAppendRun = { layer: 0, numTokens: 1, keys, values, destSlots, positions, fullPool, flags };
 * ```
 */
export interface KvAppendRun {
  readonly layer: number;
  readonly numTokens: number;
  /** f32 [numTokens][kvHeads][headDim]. */
  readonly keys: GPUBuffer;
  readonly values: GPUBuffer;
  /** u32 [layers][numTokens][kvHeads]: destination slot = block × blockSize + slot in block. */
  readonly destSlots: GPUBuffer;
  /** u32 [numTokens]. */
  readonly positions: GPUBuffer;
  readonly fullPool: GPUBuffer;
  /** u32 [1]: set to 1 when an input value is NaN or ±Inf. */
  readonly flags: GPUBuffer;
  /** A compute pass the caller keeps open to record into (default: a pass of its own). */
  readonly pass?: GPUComputePassEncoder;
}

/**
 * Scatters new K/V tokens into their full-pool slots (f32 or f16), with positions.
 *
 * @example
 * ```ts
 * new KvAppendKernel(gpu, { kvHeads: 4, full }).encode(encoder, { layer, numTokens, keys, values, destSlots, positions, fullPool, flags });
 * ```
 */
export class KvAppendKernel {
  readonly spec: KernelSpec;

  constructor(
    private readonly gpu: GpuContext,
    readonly shape: { kvHeads: number; full: BlockLayout },
  ) {
    this.spec = {
      name: 'kv_append',
      body: appendBody,
      constants: {
        ...cacheConstants(shape.full, null),
        KV_HEADS: { type: 'u32', value: shape.kvHeads },
        WORKGROUP_SIZE: { type: 'u32', value: 64 },
      },
      uniforms: [APPEND_PARAMS],
    };
  }

  /** Records the scatter. */
  encode(encoder: GPUCommandEncoder, run: KvAppendRun): void {
    const { kvHeads, full } = this.shape;
    const bytes = run.numTokens * kvHeads * full.headDim * 4;
    if (run.keys.size < bytes || run.values.size < bytes) {
      throw new InvalidArgumentError('keys', `K and V buffers need ${bytes} B for ${run.numTokens} tokens`);
    }
    const uniforms = this.gpu.uniformBuffer(
      'kv_append:params',
      APPEND_PARAMS.pack({ num_tokens: run.numTokens, layer: run.layer }),
    );
    recordPass(encoder, 'kv_append', run.pass, undefined, (pass) =>
      encodeDispatch(
        this.gpu,
        pass,
        kernelPipeline(this.gpu, this.spec),
        [uniforms, run.keys, run.values, run.destSlots, run.positions, run.fullPool, run.flags],
        Math.ceil((run.numTokens * kvHeads * (full.headDim / 2)) / 64),
      ),
    );
  }
}
