import embeddingBody from '../../../shaders/embedding.wgsl';
import type { GpuContext } from '../../gpu/context.js';
import { kernelPipeline, type KernelSpec } from '../../gpu/kernel.js';
import { UniformLayout } from '../../gpu/uniforms.js';
import { dispatchKernel, type SharedPass } from './dispatch-cache.js';
import { requirePositive, requireStorage } from './model-checks.js';

const EMBEDDING_PARAMS = new UniformLayout('EmbeddingParams', [
  { name: 'num_tokens', type: 'u32' },
  { name: 'dim', type: 'u32' },
]);

/**
 * One embedding gather.
 */
export interface EmbeddingRun {
  readonly numTokens: number;
  readonly dim: number;
  /** u32 [numTokens] token ids; the caller checks they are below the vocabulary size. */
  readonly tokens: GPUBuffer;
  /** f32 [vocab][dim]. */
  readonly table: GPUBuffer;
  /** f32 [numTokens][dim]. */
  readonly out: GPUBuffer;
}

/**
 * Gathers the embedding rows of n tokens.
 *
 * @example
 * ```ts
 * new EmbeddingKernel(gpu).encode(encoder, { numTokens: 3, dim: 64, tokens, table, out });
 * ```
 */
export class EmbeddingKernel {
  readonly spec: KernelSpec;
  private readonly workgroupSize: number;

  constructor(
    private readonly gpu: GpuContext,
    options: { workgroupSize?: number } = {},
  ) {
    this.workgroupSize = options.workgroupSize ?? 64;
    this.spec = {
      name: 'embedding',
      body: embeddingBody,
      constants: { WORKGROUP_SIZE: { type: 'u32', value: this.workgroupSize } },
      uniforms: [EMBEDDING_PARAMS],
    };
  }

  /** Records the gather into `encoder`. */
  encode(encoder: GPUCommandEncoder, run: EmbeddingRun, shared?: SharedPass): void {
    requirePositive('numTokens', run.numTokens);
    requirePositive('dim', run.dim);
    requireStorage('tokens', run.tokens, run.numTokens * 4);
    requireStorage('table', run.table, run.dim * 4);
    requireStorage('out', run.out, run.numTokens * run.dim * 4);
    const params = EMBEDDING_PARAMS.pack({ num_tokens: run.numTokens, dim: run.dim });
    const workgroups = Math.ceil((run.numTokens * run.dim) / this.workgroupSize);
    dispatchKernel(this.gpu, encoder, kernelPipeline(this.gpu, this.spec), params, [run.tokens, run.table, run.out], workgroups, shared);
  }
}
