import ropeBody from '../../../shaders/rope.wgsl';
import { InvalidArgumentError } from '../../errors.js';
import type { GpuContext } from '../../gpu/context.js';
import { kernelPipeline, type KernelSpec } from '../../gpu/kernel.js';
import { UniformLayout } from '../../gpu/uniforms.js';
import { dispatchKernel, type SharedPass } from './dispatch-cache.js';
import { requirePositive, requireStorage } from './model-checks.js';

const ROPE_PARAMS = new UniformLayout('RopeParams', [
  { name: 'num_tokens', type: 'u32' },
  { name: 'table_rows', type: 'u32' },
]);

/**
 * The cos/sin table the RoPE kernel reads: f32 [positions][headDim/2][2] = (cos, sin) of
 * pos · 10000^(−2i/headDim), computed exactly as the fp32 reference (src/model/reference-forward.ts `rope`,
 * llama2.c `powf`/`cosf`/`sinf`): every intermediate rounded to f32. Angles are host-computed because WGSL's
 * sin/cos carry no accuracy guarantee outside [−π, π] and angles reach `pos` radians.
 *
 * @example
 * ```ts
 * const table = ropeCosSinTable(8, 512); // 512 × 4 × 2 floats
 * ```
 */
export function ropeCosSinTable(headDim: number, positions: number, theta = 10000): Float32Array {
  requirePositive('headDim', headDim);
  requirePositive('positions', positions);
  if (headDim % 2 !== 0) throw new InvalidArgumentError('headDim', `must be even for RoPE; got ${headDim}`);
  const half = headDim / 2;
  const table = new Float32Array(positions * half * 2);
  const freqs = Array.from({ length: half }, (_, i) =>
    Math.fround(1 / Math.fround(Math.pow(theta, Math.fround((2 * i) / headDim)))),
  );
  for (let pos = 0; pos < positions; pos++) {
    for (let i = 0; i < half; i++) {
      const angle = Math.fround(pos * (freqs[i] as number));
      table[(pos * half + i) * 2] = Math.cos(angle);
      table[(pos * half + i) * 2 + 1] = Math.sin(angle);
    }
  }
  return table;
}

/**
 * One RoPE application.
 */
export interface RopeRun {
  readonly numTokens: number;
  /** u32 [numTokens]: each token's position; every one must be below `tableRows`. */
  readonly positions: GPUBuffer;
  /** {@link ropeCosSinTable} of `tableRows` positions. */
  readonly table: GPUBuffer;
  readonly tableRows: number;
  /** f32 [numTokens][nHeads][headDim], rotated in place. */
  readonly q: GPUBuffer;
  /** f32 [numTokens][kvHeads][headDim], rotated in place. */
  readonly k: GPUBuffer;
}

/**
 * Rotary position embedding of queries and keys in one dispatch, in place, at per-token positions.
 *
 * @example
 * ```ts
 * const rope = new RopeKernel(gpu, { nHeads: 8, kvHeads: 4, headDim: 8 });
 * rope.encode(encoder, { numTokens: n, positions, table, tableRows: 512, q, k });
 * ```
 */
export class RopeKernel {
  readonly spec: KernelSpec;
  private readonly workgroupSize: number;

  constructor(
    private readonly gpu: GpuContext,
    readonly shape: { nHeads: number; kvHeads: number; headDim: number; workgroupSize?: number },
  ) {
    requirePositive('nHeads', shape.nHeads);
    requirePositive('kvHeads', shape.kvHeads);
    requirePositive('headDim', shape.headDim);
    if (shape.headDim % 2 !== 0) throw new InvalidArgumentError('headDim', `must be even for RoPE; got ${shape.headDim}`);
    this.workgroupSize = shape.workgroupSize ?? 64;
    this.spec = {
      name: 'rope',
      body: ropeBody,
      constants: {
        WORKGROUP_SIZE: { type: 'u32', value: this.workgroupSize },
        N_HEADS: { type: 'u32', value: shape.nHeads },
        KV_HEADS: { type: 'u32', value: shape.kvHeads },
        HEAD_DIM: { type: 'u32', value: shape.headDim },
      },
      uniforms: [ROPE_PARAMS],
    };
  }

  /** Records the rotation into `encoder`. */
  encode(encoder: GPUCommandEncoder, run: RopeRun, shared?: SharedPass): void {
    const { nHeads, kvHeads, headDim } = this.shape;
    requirePositive('numTokens', run.numTokens);
    requirePositive('tableRows', run.tableRows);
    if (run.q === run.k) throw new InvalidArgumentError('k', 'q and k must be different buffers');
    requireStorage('positions', run.positions, run.numTokens * 4);
    requireStorage('table', run.table, run.tableRows * headDim * 4);
    requireStorage('q', run.q, run.numTokens * nHeads * headDim * 4);
    requireStorage('k', run.k, run.numTokens * kvHeads * headDim * 4);
    const params = ROPE_PARAMS.pack({ num_tokens: run.numTokens, table_rows: run.tableRows });
    const pairs = (run.numTokens * (nHeads + kvHeads) * headDim) / 2;
    const buffers = [run.positions, run.table, run.q, run.k];
    dispatchKernel(this.gpu, encoder, kernelPipeline(this.gpu, this.spec), params, buffers, Math.ceil(pairs / this.workgroupSize), shared);
  }
}
