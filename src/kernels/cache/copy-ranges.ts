import copyRangesBody from '../../../shaders/copy_ranges.wgsl';
import { InvalidArgumentError } from '../../errors.js';
import { createStorageBuffer } from '../../gpu/buffers.js';
import type { GpuContext } from '../../gpu/context.js';
import { encodeDispatch, kernelPipeline, type KernelSpec } from '../../gpu/kernel.js';
import { UniformLayout } from '../../gpu/uniforms.js';

const PARAMS = new UniformLayout('CopyRangesParams', [
  { name: 'num_ranges', type: 'u32' },
  { name: 'words_per_range', type: 'u32' },
]);

/**
 * One range to copy, in u32 words from the buffer's start.
 *
 * @example
 * ```ts
 * const ranges: WordRange[] = [{ src: 64, dst: 640 }, { src: 128, dst: 704 }];
 * new CopyRangesKernel(gpu).encode(encoder, pool, ranges, 64);
 * ```
 */
export interface WordRange {
  readonly src: number;
  readonly dst: number;
}

/**
 * Copies equal-length ranges of u32 words inside one buffer, which `copyBufferToBuffer` cannot do. Used for
 * copy-on-write of blocks and for forking a sequence's statistics.
 *
 * @example
 * ```ts
 * new CopyRangesKernel(gpu).encode(encoder, pool, [{ src: 64, dst: 640 }], 64);
 * ```
 */
export class CopyRangesKernel {
  readonly spec: KernelSpec = {
    name: 'copy_ranges',
    body: copyRangesBody,
    constants: { WORKGROUP_SIZE: { type: 'u32', value: 64 } },
    uniforms: [PARAMS],
  };

  constructor(private readonly gpu: GpuContext) {}

  /** Records the copies; returns the ranges buffer, which the caller destroys after the submit completes. */
  encode(encoder: GPUCommandEncoder, buffer: GPUBuffer, ranges: readonly WordRange[], wordsPerRange: number): GPUBuffer | null {
    if (ranges.length === 0) return null;
    if (!Number.isInteger(wordsPerRange) || wordsPerRange <= 0) {
      throw new InvalidArgumentError('wordsPerRange', `must be a positive integer; got ${wordsPerRange}`);
    }
    const words = new Uint32Array(ranges.length * 2);
    ranges.forEach((range, i) => {
      for (const at of [range.src, range.dst]) {
        if (!Number.isInteger(at) || at < 0 || (at + wordsPerRange) * 4 > buffer.size) {
          throw new InvalidArgumentError('ranges', `range at word ${at} (+${wordsPerRange}) is outside "${buffer.label}"`);
        }
      }
      if (Math.abs(range.src - range.dst) < wordsPerRange) {
        throw new InvalidArgumentError('ranges', `source ${range.src} and destination ${range.dst} overlap`);
      }
      words[2 * i] = range.src;
      words[2 * i + 1] = range.dst;
    });
    const rangesBuffer = createStorageBuffer(this.gpu, 'copy_ranges:ranges', words);
    const uniforms = this.gpu.uniformBuffer(
      'copy_ranges:params',
      PARAMS.pack({ num_ranges: ranges.length, words_per_range: wordsPerRange }),
    );
    const pass = encoder.beginComputePass({ label: 'copy_ranges' });
    encodeDispatch(this.gpu, pass, kernelPipeline(this.gpu, this.spec), [uniforms, rangesBuffer, buffer], ranges.length);
    pass.end();
    return rangesBuffer;
  }
}
