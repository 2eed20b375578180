import swigluBody from '../../../shaders/swiglu.wgsl';
import type { GpuContext } from '../../gpu/context.js';
import { kernelPipeline, type KernelSpec } from '../../gpu/kernel.js';
import { UniformLayout } from '../../gpu/uniforms.js';
import { dispatchKernel, type SharedPass } from './dispatch-cache.js';
import { requirePositive, requireStorage } from './model-checks.js';

const SWIGLU_PARAMS = new UniformLayout('SwigluParams', [
  { name: 'rows', type: 'u32' },
  { name: 'width', type: 'u32' },
]);

/**
 * One SwiGLU gate.
 */
export interface SwigluRun {
  readonly rows: number;
  /** Hidden width (172 for stories260K). */
  readonly width: number;
  /** f32 [rows][2 · width]: per row the gate (w1·x) then the up projection (w3·x). */
  readonly gateUp: GPUBuffer;
  /** f32 [rows][width]. */
  readonly out: GPUBuffer;
}

/**
 * out = silu(gate) · up, per element, reading the output of the fused w1/w3 matmul.
 *
 * @example
 * ```ts
 * new SwigluKernel(gpu).encode(encoder, { rows: n, width: 172, gateUp, out });
 * ```
 */
export class SwigluKernel {
  readonly spec: KernelSpec;
  private readonly workgroupSize: number;

  constructor(
    private readonly gpu: GpuContext,
    options: { workgroupSize?: number } = {},
  ) {
    this.workgroupSize = options.workgroupSize ?? 64;
    this.spec = {
      name: 'swiglu',
      body: swigluBody,
      constants: { WORKGROUP_SIZE: { type: 'u32', value: this.workgroupSize } },
      uniforms: [SWIGLU_PARAMS],
    };
  }

  /** Records the gate into `encoder`. */
  encode(encoder: GPUCommandEncoder, run: SwigluRun, shared?: SharedPass): void {
    requirePositive('rows', run.rows);
    requirePositive('width', run.width);
    requireStorage('gateUp', run.gateUp, run.rows * 2 * run.width * 4);
    requireStorage('out', run.out, run.rows * run.width * 4);
    const params = SWIGLU_PARAMS.pack({ rows: run.rows, width: run.width });
    const workgroups = Math.ceil((run.rows * run.width) / this.workgroupSize);
    dispatchKernel(this.gpu, encoder, kernelPipeline(this.gpu, this.spec), params, [run.gateUp, run.out], workgroups, shared);
  }
}
