import gatherBody from '../../../shaders/gather_stats.wgsl';
import { InvalidArgumentError } from '../../errors.js';
import { requireUsage } from '../../gpu/buffers.js';
import type { GpuContext } from '../../gpu/context.js';
import { encodeDispatch, kernelPipeline, type KernelSpec } from '../../gpu/kernel.js';
import { UniformLayout } from '../../gpu/uniforms.js';
import { type RowMap, rowMapUniforms } from './select.js';

const GATHER_STATS_PARAMS = new UniformLayout('GatherStatsParams', [
  { name: 'row_base', type: 'u32' },
  { name: 'group_rows', type: 'u32' },
  { name: 'group_stride', type: 'u32' },
  { name: 'num_rows', type: 'u32' },
  { name: 'stride', type: 'u32' },
]);

/**
 * One gather of a per-token statistic after compaction.
 */
export interface GatherStatsRun {
  /** f32 [row][stride] statistic by old logical index. */
  readonly stats: GPUBuffer;
  /** u32 [row][stride] kept old indices (ascending), from the top-k selection. */
  readonly kept: GPUBuffer;
  /** u32 [row]. */
  readonly keptCounts: GPUBuffer;
  /** f32 [row][stride] output (a different buffer from `stats`): new index j ← old kept[j], 0 past the count. */
  readonly out: GPUBuffer;
  readonly numRows: number;
  /** maxTokensPerHead. */
  readonly stride: number;
  /** Rows to gather; `out` is indexed by the map's index i. Default rows 0..numRows−1. */
  readonly rowMap?: RowMap;
}

/**
 * Moves per-token attention statistics (attnSum, attnSqSum, attnCount…) to the tokens' new logical indices after
 * compaction, bit for bit.
 *
 * @example
 * ```ts
 * new GatherStatsKernel(gpu).encode(encoder, { stats: attnSum, kept, keptCounts, out: attnSumNext, numRows, stride });
 * ```
 */
export class GatherStatsKernel {
  readonly spec: KernelSpec;

  constructor(
    private readonly gpu: GpuContext,
    private readonly workgroupSize = 256,
  ) {
    this.spec = {
      name: 'gather_stats',
      body: gatherBody,
      constants: { WORKGROUP_SIZE: { type: 'u32', value: workgroupSize } },
      uniforms: [GATHER_STATS_PARAMS],
    };
  }

  /** Records the gather. */
  encode(encoder: GPUCommandEncoder, run: GatherStatsRun): void {
    const elements = run.numRows * run.stride;
    if (!Number.isInteger(elements) || elements <= 0 || !Number.isInteger(run.numRows) || !Number.isInteger(run.stride)) {
      throw new InvalidArgumentError('numRows', `numRows × stride must be a positive integer; got ${run.numRows} × ${run.stride}`);
    }
    if (run.stats === run.out) {
      throw new InvalidArgumentError('out', 'must differ from stats: a row gathers from itself');
    }
    const { lastRow, ...map } = rowMapUniforms(run.rowMap, run.numRows);
    const rows = lastRow + 1;
    for (const [name, buffer, bytes] of [
      ['stats', run.stats, rows * run.stride * 4],
      ['kept', run.kept, rows * run.stride * 4],
      ['keptCounts', run.keptCounts, rows * 4],
      ['out', run.out, elements * 4],
    ] as const) {
      requireUsage(buffer, GPUBufferUsage.STORAGE, `gather_stats ${name}`);
      if (buffer.size < bytes) throw new InvalidArgumentError(name, `holds ${buffer.size} B; ${bytes} B needed`);
    }
    const uniforms = this.gpu.uniformBuffer(
      'gather_stats:params',
      GATHER_STATS_PARAMS.pack({ num_rows: run.numRows, stride: run.stride, ...map }),
    );
    const pass = encoder.beginComputePass({ label: 'gather_stats' });
    encodeDispatch(
      this.gpu,
      pass,
      kernelPipeline(this.gpu, this.spec),
      [uniforms, run.stats, run.kept, run.keptCounts, run.out],
      Math.ceil(elements / this.workgroupSize),
    );
    pass.end();
  }
}
