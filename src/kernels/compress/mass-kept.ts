import massKeptBody from '../../../shaders/mass_kept.wgsl';
import { InvalidArgumentError } from '../../errors.js';
import type { GpuContext } from '../../gpu/context.js';
import { encodeDispatch, kernelPipeline, type KernelSpec } from '../../gpu/kernel.js';
import { UniformLayout } from '../../gpu/uniforms.js';

const PARAMS = new UniformLayout('MassKeptParams', [
  { name: 'first_row', type: 'u32' },
  { name: 'num_rows', type: 'u32' },
  { name: 'max_tokens', type: 'u32' },
  { name: 'out_base', type: 'u32' },
]);

/**
 * One run of {@link MassKeptKernel}.
 */
export interface MassKeptRun {
  readonly firstRow: number;
  readonly numRows: number;
  readonly maxTokens: number;
  /** f32 [row][maxTokens]: attention mass per token. */
  readonly mass: GPUBuffer;
  /** u32 [row]: tokens per row before compression. */
  readonly lengths: GPUBuffer;
  readonly keptIndex: GPUBuffer;
  readonly keptCount: GPUBuffer;
  /** f32 [outBase + numRows][2]: (total mass, kept mass). */
  readonly sums: GPUBuffer;
  /** First pair of `sums` this run writes (default 0). */
  readonly outBase?: number;
}

/**
 * Sums attention mass over all tokens and over kept tokens of each row, so a compression report can say how much
 * of the attention it kept without moving per-token scores to the CPU.
 *
 * @example
 * ```ts
 * new MassKeptKernel(gpu).encode(encoder, { firstRow, numRows, maxTokens, mass, lengths, keptIndex, keptCount, sums });
 * ```
 */
export class MassKeptKernel {
  readonly spec: KernelSpec = {
    name: 'mass_kept',
    body: massKeptBody,
    constants: { WORKGROUP_SIZE: { type: 'u32', value: 64 } },
    uniforms: [PARAMS],
  };

  constructor(private readonly gpu: GpuContext) {}

  /** Records the reduction. */
  encode(encoder: GPUCommandEncoder, run: MassKeptRun): void {
    const outBase = run.outBase ?? 0;
    if (run.sums.size < (outBase + run.numRows) * 8) {
      throw new InvalidArgumentError('sums', `needs ${(outBase + run.numRows) * 8} B; has ${run.sums.size}`);
    }
    const uniforms = this.gpu.uniformBuffer(
      'mass_kept:params',
      PARAMS.pack({ first_row: run.firstRow, num_rows: run.numRows, max_tokens: run.maxTokens, out_base: outBase }),
    );
    const pass = encoder.beginComputePass({ label: 'mass_kept' });
    encodeDispatch(
      this.gpu,
      pass,
      kernelPipeline(this.gpu, this.spec),
      [uniforms, run.mass, run.lengths, run.keptIndex, run.keptCount, run.sums],
      run.numRows,
    );
    pass.end();
  }
}
