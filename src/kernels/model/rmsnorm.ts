import rmsnormBody from '../../../shaders/rmsnorm.wgsl';
import { InvalidArgumentError } from '../../errors.js';
import type { GpuContext } from '../../gpu/context.js';
import { kernelPipeline, type KernelSpec } from '../../gpu/kernel.js';
import { UniformLayout } from '../../gpu/uniforms.js';
import { dispatchKernel, type SharedPass } from './dispatch-cache.js';
import { requirePositive, requireStorage } from './model-checks.js';

const RMSNORM_PARAMS = new UniformLayout('RmsNormParams', [
  { name: 'rows', type: 'u32' },
  { name: 'dim', type: 'u32' },
]);

/**
 * One RMSNorm of `rows` rows.
 */
export interface RmsNormRun {
  readonly rows: number;
  readonly dim: number;
  /** f32 [rows][dim]. */
  readonly x: GPUBuffer;
  /** f32 [dim]. */
  readonly weight: GPUBuffer;
  /** f32 [rows][dim]; must be a different buffer from `x`. */
  readonly out: GPUBuffer;
}

/**
 * RMSNorm per row (llama2.c: weight ⊙ x / √(mean(x²) + eps), eps 1e-5 by default), one workgroup per row.
 *
 * @example
 * ```ts
 * new RmsNormKernel(gpu).encode(encoder, { rows: n, dim: 64, x, weight, out });
 * ```
 */
export class RmsNormKernel {
  readonly spec: KernelSpec;

  constructor(
    private readonly gpu: GpuContext,
    options: { eps?: number; workgroupSize?: number } = {},
  ) {
    const workgroupSize = options.workgroupSize ?? 64;
    // The tree reduction halves the stride each step.
    if (!Number.isInteger(Math.log2(workgroupSize)) || workgroupSize > gpu.limits.maxComputeInvocationsPerWorkgroup) {
      throw new InvalidArgumentError('workgroupSize', `must be a power of two ≤ the device limit; got ${workgroupSize}`);
    }
    this.spec = {
      name: 'rmsnorm',
      body: rmsnormBody,
      constants: {
        WORKGROUP_SIZE: { type: 'u32', value: workgroupSize },
        EPS: { type: 'f32', value: options.eps ?? 1e-5 },
      },
      uniforms: [RMSNORM_PARAMS],
    };
  }

  /** Records the normalisation into `encoder`. */
  encode(encoder: GPUCommandEncoder, run: RmsNormRun, shared?: SharedPass): void {
    requirePositive('rows', run.rows);
    requirePositive('dim', run.dim);
    if (run.x === run.out) throw new InvalidArgumentError('out', 'rmsnorm cannot run in place; use another buffer');
    requireStorage('x', run.x, run.rows * run.dim * 4);
    requireStorage('weight', run.weight, run.dim * 4);
    requireStorage('out', run.out, run.rows * run.dim * 4);
    const params = RMSNORM_PARAMS.pack({ rows: run.rows, dim: run.dim });
    dispatchKernel(this.gpu, encoder, kernelPipeline(this.gpu, this.spec), params, [run.x, run.weight, run.out], run.rows, shared);
  }
}
