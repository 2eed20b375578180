import copyRowsBody from '../../../shaders/copy_rows.wgsl';
import { InvalidArgumentError } from '../../errors.js';
import { createStorageBuffer } from '../../gpu/buffers.js';
import type { GpuContext } from '../../gpu/context.js';
import { encodeDispatch, kernelPipeline, type KernelSpec, recordPass } from '../../gpu/kernel.js';
import { UniformLayout } from '../../gpu/uniforms.js';

const PARAMS = new UniformLayout('CopyRowsParams', [
  { name: 'num_rows', type: 'u32' },
  { name: 'words_per_row', type: 'u32' },
  { name: 'src_offset', type: 'u32' },
  { name: 'dst_offset', type: 'u32' },
]);

/**
 * One copy of {@link CopyRowsKernel}: `numRows` (source row, destination row) pairs, u32 [numRows][2] in `rows`,
 * each row `wordsPerRow` u32 words counted from `srcOffset` / `dstOffset` words into its buffer.
 *
 * @example
 * ```ts
 * const run: CopyRowsRun = { src: queries, dst: window, rows, numRows: 1, wordsPerRow: 64, dstOffset: layer * 4096 };
 * ```
 */
export interface CopyRowsRun {
  readonly src: GPUBuffer;
  readonly dst: GPUBuffer;
  readonly rows: GPUBuffer;
  readonly numRows: number;
  readonly wordsPerRow: number;
  /** Words before row 0 of src (default 0). */
  readonly srcOffset?: number;
  /** Words before row 0 of dst (default 0). */
  readonly dstOffset?: number;
  /** A compute pass the caller keeps open to record into (default: a pass of its own). */
  readonly pass?: GPUComputePassEncoder;
}

/**
 * The CPU reference of {@link CopyRowsKernel}: `dst` after the copy (a new array).
 *
 * @example
 * ```ts
 * copyRowsReference(new Uint32Array([1, 2, 3, 4]), new Uint32Array(4), [[1, 0]], 2); // [3, 4, 0, 0]
 * ```
 */
export function copyRowsReference(
  src: Uint32Array,
  dst: Uint32Array,
  rows: readonly (readonly [number, number])[],
  wordsPerRow: number,
  srcOffset = 0,
  dstOffset = 0,
): Uint32Array {
  const out = dst.slice();
  for (const [from, to] of rows) {
    out.set(src.subarray(srcOffset + from * wordsPerRow, srcOffset + (from + 1) * wordsPerRow), dstOffset + to * wordsPerRow);
  }
  return out;
}

/**
 * Copies rows of u32 words between two buffers in a compute dispatch: what copyBufferToBuffer did inside a model
 * forward (roped queries into the observation window, rows into one-row buffers), so that the forward records
 * into one compute pass. One workgroup per row; rows of one run must not overlap in dst.
 *
 * @example
 * ```ts
 * const copy = new CopyRowsKernel(gpu);
 * copy.encodeRange(encoder, { src, srcOffset: 64, dst, dstOffset: 0, words: 64, pass });
 * ```
 */
export class CopyRowsKernel {
  readonly spec: KernelSpec = {
    name: 'copy_rows',
    body: copyRowsBody,
    constants: { WORKGROUP_SIZE: { type: 'u32', value: 64 } },
    uniforms: [PARAMS],
  };
  /** The one pair (0, 0): a single range is row 0 after the offsets. */
  private identity: GPUBuffer | null = null;

  constructor(private readonly gpu: GpuContext) {}

  /** Records the copy; validates the offsets and sizes (not the row indices, which live on the GPU). */
  encode(encoder: GPUCommandEncoder, run: CopyRowsRun): void {
    const srcOffset = run.srcOffset ?? 0;
    const dstOffset = run.dstOffset ?? 0;
    for (const [field, value] of [
      ['numRows', run.numRows],
      ['wordsPerRow', run.wordsPerRow],
    ] as const) {
      if (!Number.isInteger(value) || value <= 0) throw new InvalidArgumentError(field, `must be a positive integer; got ${value}`);
    }
    for (const [field, value, buffer] of [
      ['srcOffset', srcOffset, run.src],
      ['dstOffset', dstOffset, run.dst],
    ] as const) {
      if (!Number.isInteger(value) || value < 0 || (value + run.wordsPerRow) * 4 > buffer.size) {
        throw new InvalidArgumentError(field, `row 0 at word ${value} (+${run.wordsPerRow}) is outside "${buffer.label}"`);
      }
    }
    if (run.src === run.dst) throw new InvalidArgumentError('dst', 'copies within one buffer go through CopyRangesKernel');
    if (run.rows.size < run.numRows * 8) throw new InvalidArgumentError('rows', `holds ${run.rows.size} B; ${run.numRows} rows need ${run.numRows * 8} B`);
    const uniforms = this.gpu.uniformBuffer(
      'copy_rows:params',
      PARAMS.pack({ num_rows: run.numRows, words_per_row: run.wordsPerRow, src_offset: srcOffset, dst_offset: dstOffset }),
    );
    recordPass(encoder, 'copy_rows', run.pass, undefined, (pass) =>
      encodeDispatch(this.gpu, pass, kernelPipeline(this.gpu, this.spec), [uniforms, run.rows, run.src, run.dst], run.numRows),
    );
  }

  /** Records one copy of `words` words from `src` at word `srcOffset` to `dst` at word `dstOffset`. */
  encodeRange(
    encoder: GPUCommandEncoder,
    range: { src: GPUBuffer; srcOffset: number; dst: GPUBuffer; dstOffset: number; words: number; pass?: GPUComputePassEncoder },
  ): void {
    this.identity ??= createStorageBuffer(this.gpu, 'copy_rows:identity', new Uint32Array(2));
    const { pass, ...rest } = range;
    this.encode(encoder, { ...rest, rows: this.identity, numRows: 1, wordsPerRow: range.words, ...(pass ? { pass } : {}) });
  }

  /** Frees the identity pair; it is made again when next used. */
  destroy(): void {
    this.identity?.destroy();
    this.identity = null;
  }
}
