import { describe, expect, it } from 'vitest';
import { BufferUsageError, InvalidArgumentError, LimitExceededError } from '../src/errors.js';
import { createStorageBuffer, readBuffer } from '../src/gpu/buffers.js';
import { CopyKernel } from '../src/kernels/cache/copy.js';
import { copyReference } from '../src/kernels/cache/copy-reference.js';
import { seededRandom, testGpu } from './helpers/gpu.js';

function randomWords(count: number, seed: number): Uint32Array {
  const random = seededRandom(seed);
  return Uint32Array.from({ length: count }, () => Math.floor(random() * 0xffff_ffff));
}

describe('copy kernel', () => {
  it.each([1, 63, 65, 4097])('copies %i words exactly like the CPU reference', async (words) => {
    const gpu = await testGpu();
    const input = randomWords(words, words);
    const src = createStorageBuffer(gpu, 'src', input);
    const dst = createStorageBuffer(gpu, 'dst', words * 4);
    await gpu.withErrorScope(() => new CopyKernel(gpu).run(src, dst, words));
    const output = new Uint32Array(await readBuffer(gpu, dst, 0, words * 4));
    expect(output).toEqual(copyReference(input));
    src.destroy();
    dst.destroy();
  });

  // A dispatch past the real limit (65,535 workgroups) takes 25 s on SwiftShader; lowering the context's
  // per-dimension cap exercises the same folding code in 2-D and 3-D at a fraction of the cost.
  it.each([
    [8, 4097],
    [5, 4097],
  ])('folds a dispatch past %i workgroups per dimension (%i words)', async (cap, words) => {
    const gpu = await testGpu();
    const kernel = new CopyKernel(gpu, { workgroupSize: 64, wordsPerThread: 1 });
    const input = randomWords(words, cap);
    const src = createStorageBuffer(gpu, 'src', input);
    const dst = createStorageBuffer(gpu, 'dst', words * 4);
    const saved = gpu.maxWorkgroupsPerDimension;
    gpu.maxWorkgroupsPerDimension = cap;
    try {
      await gpu.withErrorScope(() => kernel.run(src, dst, words));
    } finally {
      gpu.maxWorkgroupsPerDimension = saved;
    }
    const output = new Uint32Array(await readBuffer(gpu, dst, 0, words * 4));
    expect(output).toEqual(copyReference(input));
    src.destroy();
    dst.destroy();
  });

  it('rejects bad input with typed errors before submitting', async () => {
    const gpu = await testGpu();
    const kernel = new CopyKernel(gpu);
    const src = createStorageBuffer(gpu, 'src', 64);
    const encoder = gpu.device.createCommandEncoder();
    expect(() => kernel.encode(encoder, src, src, 0)).toThrow(InvalidArgumentError);
    expect(() => kernel.encode(encoder, src, src, 17)).toThrow(/holds 64 B < 68 B/);
    const mapped = gpu.device.createBuffer({ size: 64, usage: GPUBufferUsage.COPY_DST | GPUBufferUsage.MAP_READ });
    expect(() => kernel.encode(encoder, src, mapped, 4)).toThrow(BufferUsageError);
    expect(() => createStorageBuffer(gpu, 'huge', gpu.limits.maxStorageBufferBindingSize + 4)).toThrow(
      LimitExceededError,
    );
    expect(() => new CopyKernel(gpu, { workgroupSize: 4096 })).toThrow(/maxComputeInvocationsPerWorkgroup/);
    expect(gpu.lastSubmitted).toBeGreaterThanOrEqual(0);
    src.destroy();
    mapped.destroy();
  });
});
