import { CopyKernel } from '../../kernels/cache/copy.js';
import { type BenchCase, type BenchSuite, prepareCopy } from '../harness.js';
import { formatBytes } from '../units.js';

const MIB = 1 << 20;

/**
 * The yardstick: the copy kernel moving buffers of several sizes. Its rows ARE the copy references of their
 * byte counts (ratio 1 by definition); other rows get a copy measured at their own byte count.
 *
 * @example
 * ```ts
 * const report = await runBenchmarks(gpu, [copySuite], benchSettings(true));
 * ```
 */
export const copySuite: BenchSuite = {
  name: 'copy',
  description: 'copy kernel (shaders/copy.wgsl), u32 words from one storage buffer to another',
  counts: 'bytes read + bytes written (2 × buffer size)',
  cases: (settings) => {
    const sizes = settings.quick ? [256 * 1024, 4 * MIB, 32 * MIB] : [64 * 1024, 256 * 1024, 4 * MIB, 32 * MIB, 128 * MIB];
    return sizes.map(
      (size): BenchCase => ({
        name: `copy/${formatBytes(size)}`,
        shape: `${formatBytes(size)} → ${formatBytes(size)}`,
        copyReference: true,
        setup: (gpu) => prepareCopy(gpu, 2 * size, new CopyKernel(gpu)),
      }),
    );
  },
};
