import copyBody from '../../../shaders/copy.wgsl';
import { InvalidArgumentError } from '../../errors.js';
import { requireUsage } from '../../gpu/buffers.js';
import type { GpuContext } from '../../gpu/context.js';
import { encodeDispatch, kernelPipeline, type KernelSpec } from '../../gpu/kernel.js';
import { UniformLayout } from '../../gpu/uniforms.js';

const COPY_PARAMS = new UniformLayout('CopyParams', [{ name: 'count', type: 'u32' }]);

/**
 * Tuning of the copy kernel; each value is a pipeline-cache key.
 *
 * @example
 * ```ts
 * const copy = new CopyKernel(gpu, { workgroupSize: 128, wordsPerThread: 8 });
 * ```
 */
export interface CopyKernelOptions {
  /** Threads per workgroup (default 256). */
  readonly workgroupSize?: number;
  /** Words each thread moves (default 4). */
  readonly wordsPerThread?: number;
}

/**
 * The copy kernel: reads a storage buffer and writes another, word for word. Every benchmark divides its
 * throughput by this kernel's, measured in the same run on the same adapter.
 *
 * @example
 * ```ts
 * const copy = new CopyKernel(gpu);
 * const encoder = gpu.device.createCommandEncoder();
 * copy.encode(encoder, src, dst, words);
 * gpu.submit([encoder.finish()]);
 * ```
 */
export class CopyKernel {
  readonly spec: KernelSpec;
  private readonly wordsPerWorkgroup: number;

  constructor(
    private readonly gpu: GpuContext,
    options: CopyKernelOptions = {},
  ) {
    const workgroupSize = options.workgroupSize ?? 256;
    const wordsPerThread = options.wordsPerThread ?? 4;
    if (workgroupSize > gpu.limits.maxComputeInvocationsPerWorkgroup) {
      throw new InvalidArgumentError(
        'workgroupSize',
        `${workgroupSize} > maxComputeInvocationsPerWorkgroup ${gpu.limits.maxComputeInvocationsPerWorkgroup}`,
      );
    }
    this.wordsPerWorkgroup = workgroupSize * wordsPerThread;
    this.spec = {
      name: 'copy',
      body: copyBody,
      constants: {
        WORKGROUP_SIZE: { type: 'u32', value: workgroupSize },
        WORDS_PER_THREAD: { type: 'u32', value: wordsPerThread },
      },
      uniforms: [COPY_PARAMS],
    };
  }

  /**
   * Records a copy of `words` u32 words from `src` to `dst` into `encoder`. Validates before recording.
   * `timestampWrites` (optional) is passed to the compute pass so a benchmark can time exactly this pass.
   */
  encode(
    encoder: GPUCommandEncoder,
    src: GPUBuffer,
    dst: GPUBuffer,
    words: number,
    timestampWrites?: GPUComputePassTimestampWrites,
  ): void {
    if (!Number.isInteger(words) || words <= 0) {
      throw new InvalidArgumentError('words', `copy needs a positive word count; got ${words}`);
    }
    requireUsage(src, GPUBufferUsage.STORAGE, 'copy source');
    requireUsage(dst, GPUBufferUsage.STORAGE, 'copy destination');
    for (const [name, buffer] of [['src', src], ['dst', dst]] as const) {
      if (buffer.size < words * 4) {
        throw new InvalidArgumentError(name, `buffer "${buffer.label}" holds ${buffer.size} B < ${words * 4} B`);
      }
    }
    const pipeline = kernelPipeline(this.gpu, this.spec);
    const uniforms = this.gpu.uniformBuffer('copy:params', COPY_PARAMS.pack({ count: words }));
    const pass = encoder.beginComputePass(timestampWrites ? { label: 'copy', timestampWrites } : { label: 'copy' });
    encodeDispatch(this.gpu, pass, pipeline, [uniforms, src, dst], Math.ceil(words / this.wordsPerWorkgroup));
    pass.end();
  }

  /** Copies and submits at once. */
  run(src: GPUBuffer, dst: GPUBuffer, words: number): void {
    const encoder = this.gpu.device.createCommandEncoder({ label: 'copy' });
    this.encode(encoder, src, dst, words);
    this.gpu.submit([encoder.finish()]);
  }
}
