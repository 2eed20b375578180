import { describe, expect, it } from 'vitest';
import { InvalidArgumentError, LimitExceededError } from '../src/errors.js';
import { createStorageBuffer, readBuffer } from '../src/gpu/buffers.js';
import type { GpuContext } from '../src/gpu/context.js';
import {
  destroyMatvecWeight,
  type F16Path,
  MatvecKernel,
  matvecReference,
  packF16Rows,
  uploadMatvecWeight,
  type WeightPrecision,
} from '../src/kernels/model/matvec.js';
import { DispatchCache } from '../src/kernels/model/dispatch-cache.js';
import { RmsNormKernel } from '../src/kernels/model/rmsnorm.js';
import { testGpu } from './helpers/gpu.js';
import { maxError, randomFloats } from './helpers/numeric.js';

async function runMatvec(
  gpu: GpuContext,
  kernel: MatvecKernel,
  args: { rows: number; inDim: number; outDim: number; precision: WeightPrecision; xData: Float32Array; wData: Float32Array; initial: Float32Array; accumulate: boolean; maxBindingBytes?: number },
): Promise<{ got: Float32Array; parts: number }> {
  const { rows, inDim, outDim, precision } = args;
  const x = createStorageBuffer(gpu, 'x', args.xData);
  const out = createStorageBuffer(gpu, 'out', args.initial);
  const w = uploadMatvecWeight(gpu, 'w', args.wData, outDim, inDim, precision, args.maxBindingBytes);
  await gpu.withErrorScope(() => {
    const encoder = gpu.device.createCommandEncoder();
    kernel.encode(encoder, { rows, x, w, out, accumulate: args.accumulate });
    gpu.submit([encoder.finish()]);
  });
  const got = new Float32Array(await readBuffer(gpu, out, 0, rows * outDim * 4));
  kernel.clearCache();
  destroyMatvecWeight(w);
  x.destroy();
  out.destroy();
  return { got, parts: w.parts.length };
}

// (rows, in, out, accumulate): 1s, odd widths on both sides of 64, a 4097-wide input and a 4097-row weight, rows
// past the 8-row block and past the 64-row bind-group cache.
const cases = [
  [1, 1, 1, false],
  [1, 63, 65, false],
  [8, 65, 63, true],
  [9, 172, 64, false],
  [3, 4097, 5, true],
  [1, 64, 4097, false],
  [65, 63, 65, true],
] as const;

describe('matvec kernels (f32 and f16 weights) vs the TS reference', () => {
  it('picks the native f16 path only where the device has shader-f16, and says which path the f16 tests ran', async () => {
    const gpu = await testGpu();
    const kernel = new MatvecKernel(gpu);
    const hasF16 = gpu.has('shader-f16');
    expect(kernel.f16Path).toBe(hasF16 ? 'native' : 'packed');
    expect(kernel.strategy).toBe(gpu.adapter.isFallbackAdapter ? 'column' : 'workgroup');
    expect(() => new MatvecKernel(gpu, { strategy: 'workgroup', workgroupSize: 48 })).toThrow(/power of two/);
    if (!hasF16) {
      expect(() => new MatvecKernel(gpu, { f16Path: 'native' })).toThrow(InvalidArgumentError);
      console.log(`adapter "${gpu.adapter.description}" lacks shader-f16: the packed path is tested here, the native f16 path is NOT`);
    }
    expect(new MatvecKernel(gpu, { f16Path: 'packed' }).f16Path).toBe('packed');
  });

  const paths = async (gpu: GpuContext): Promise<F16Path[]> => (gpu.has('shader-f16') ? ['native', 'packed'] : ['packed']);

  // f32 accumulation over `in` terms vs the reference's double (with the same f16-rounded weights): ~√in ulp.
  it.each((['f32', 'f16'] as const).flatMap((p) => cases.map((c) => [p, ...c] as const)))(
    'matvec (%s weights, column and workgroup strategies) rows %i in %i out %i (accumulate %s) within 1e-5 (1e-4 at in 4097) of the reference',
    async (precision, rows, inDim, outDim, accumulate) => {
      const gpu = await testGpu();
      const xData = randomFloats(rows * inDim, rows * 7 + inDim);
      const wData = randomFloats(outDim * inDim, outDim, 0.5);
      const initial = randomFloats(rows * outDim, 99);
      const want = matvecReference(xData, wData, { rows, inDim, outDim, precision }, accumulate ? initial.slice() : undefined);
      const tolerance = inDim > 1000 ? 1e-4 : 1e-5;
      for (const strategy of ['column', 'workgroup'] as const) {
        for (const f16Path of precision === 'f16' ? await paths(gpu) : (['packed'] as const)) {
          const { got } = await runMatvec(gpu, new MatvecKernel(gpu, { f16Path, strategy }), { rows, inDim, outDim, precision, xData, wData, initial, accumulate });
          expect(maxError(got, want), `${strategy}/${f16Path}`).toBeLessThan(tolerance);
        }
      }
    },
  );

  // Rounding each weight to f16 moves it by ≤ 2⁻¹¹ of itself, so an output moves by ≤ 2⁻¹¹ Σ|x·w| (plus f32 noise).
  it.each([
    [1, 288, 768],
    [8, 768, 288],
  ])('f16 weights stay within 2⁻¹¹ Σ|x·w| of the f32 product (rows %i, in %i, out %i)', async (rows, inDim, outDim) => {
    const gpu = await testGpu();
    const xData = randomFloats(rows * inDim, 3);
    const wData = randomFloats(outDim * inDim, 4, 0.1);
    const exact = matvecReference(xData, wData, { rows, inDim, outDim, precision: 'f32' });
    const { got } = await runMatvec(gpu, new MatvecKernel(gpu), { rows, inDim, outDim, precision: 'f16', xData, wData, initial: new Float32Array(rows * outDim), accumulate: false });
    let changed = 0;
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < outDim; c++) {
        let mass = 0;
        for (let k = 0; k < inDim; k++) mass += Math.abs((xData[r * inDim + k] as number) * (wData[c * inDim + k] as number));
        const diff = Math.abs((got[r * outDim + c] as number) - (exact[r * outDim + c] as number));
        expect(diff).toBeLessThanOrEqual(2 ** -11 * mass + 1e-5);
        if (diff > 1e-6) changed++;
      }
    }
    // The bound is not vacuous: f16 does change the result.
    expect(changed).toBeGreaterThan(0);
  });

  it.each(['f32', 'f16'] as const)('a %s weight split by rows across buffers gives the same outputs as one buffer', async (precision) => {
    const gpu = await testGpu();
    const [rows, inDim, outDim] = [3, 65, 1000];
    const xData = randomFloats(rows * inDim, 11);
    const wData = randomFloats(outDim * inDim, 12, 0.5);
    const initial = new Float32Array(rows * outDim);
    const kernel = new MatvecKernel(gpu, { strategy: 'workgroup' });
    const whole = await runMatvec(gpu, kernel, { rows, inDim, outDim, precision, xData, wData, initial, accumulate: false });
    const rowBytes = (precision === 'f16' ? 33 : 65) * 4;
    const split = await runMatvec(gpu, kernel, { rows, inDim, outDim, precision, xData, wData, initial, accumulate: false, maxBindingBytes: 333 * rowBytes });
    expect(whole.parts).toBe(1);
    expect(split.parts).toBe(4); // 333 + 333 + 333 + 1 rows
    expect(split.got).toEqual(whole.got);
  });

  it('writes a column range of a wider output (outOffset, outStride) and leaves the rest alone', async () => {
    const gpu = await testGpu();
    const [rows, inDim, outDim, stride, offset] = [2, 5, 3, 8, 4];
    const xData = randomFloats(rows * inDim, 1);
    const wData = randomFloats(outDim * inDim, 2);
    const x = createStorageBuffer(gpu, 'x', xData);
    const out = createStorageBuffer(gpu, 'out', new Float32Array(rows * stride).fill(7));
    const w = uploadMatvecWeight(gpu, 'w', wData, outDim, inDim, 'f16');
    const kernel = new MatvecKernel(gpu);
    await gpu.withErrorScope(() => {
      const encoder = gpu.device.createCommandEncoder();
      kernel.encode(encoder, { rows, x, w, out, outStride: stride, outOffset: offset });
      gpu.submit([encoder.finish()]);
    });
    const want = matvecReference(xData, wData, { rows, inDim, outDim, precision: 'f16', outStride: stride, outOffset: offset });
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < stride; c++) if (c < offset || c >= offset + outDim) want[r * stride + c] = 7;
    }
    expect(maxError(new Float32Array(await readBuffer(gpu, out, 0, rows * stride * 4)), want)).toBeLessThan(1e-5);
    expect(() => kernel.encode(gpu.device.createCommandEncoder(), { rows, x, w, out, outStride: stride, outOffset: 6 })).toThrow(/outOffset/);
    kernel.clearCache();
  });

  it('rejects a row past the binding limit and an out-of-range f16 weight, naming the tensor', async () => {
    const gpu = await testGpu();
    expect(() => uploadMatvecWeight(gpu, 'wcls', new Float32Array(4 * 100), 4, 100, 'f32', 396)).toThrow(LimitExceededError);
    expect(() => uploadMatvecWeight(gpu, 'wcls', new Float32Array(4 * 100), 4, 100, 'f32', 396)).toThrow(/wcls/);
    expect(() => packF16Rows(Float32Array.from([1, 70000]), 1, 2, 'wq')).toThrow(/wq.*\[0, 1\]/s);
    expect(packF16Rows(Float32Array.from([1, 2, 3]), 1, 3, 'w')).toHaveLength(2);
  });
});

describe('DispatchCache (uniforms and bind groups kept across steps)', () => {
  it('a repeated dispatch reuses its entry and computes what a fresh one does; past maxEntries it still runs', async () => {
    const gpu = await testGpu();
    const [rows, dim] = [3, 65];
    const xData = randomFloats(rows * dim, 21);
    const x = createStorageBuffer(gpu, 'x', xData);
    const weight = createStorageBuffer(gpu, 'w', randomFloats(dim, 22));
    const fresh = createStorageBuffer(gpu, 'fresh', rows * dim * 4);
    const kernel = new RmsNormKernel(gpu);
    await gpu.withErrorScope(() => {
      const encoder = gpu.device.createCommandEncoder();
      kernel.encode(encoder, { rows, dim, x, weight, out: fresh });
      gpu.submit([encoder.finish()]);
    });
    const want = new Float32Array(await readBuffer(gpu, fresh, 0, rows * dim * 4));
    for (const maxEntries of [8192, 0]) {
      const cache = new DispatchCache(gpu, maxEntries);
      for (let step = 0; step < 2; step++) {
        const out = createStorageBuffer(gpu, 'out', rows * dim * 4);
        await gpu.withErrorScope(() => {
          const encoder = gpu.device.createCommandEncoder();
          const pass = encoder.beginComputePass();
          // Same buffers twice in one pass: one entry.
          kernel.encode(encoder, { rows, dim, x, weight, out: fresh }, { pass, cache });
          kernel.encode(encoder, { rows, dim, x, weight, out: fresh }, { pass, cache });
          pass.end();
          encoder.copyBufferToBuffer(fresh, 0, out, 0, rows * dim * 4);
          gpu.submit([encoder.finish()]);
        });
        expect(new Float32Array(await readBuffer(gpu, out, 0, rows * dim * 4))).toEqual(want);
        expect(cache.size).toBe(maxEntries === 0 ? 0 : 1);
        out.destroy();
      }
      cache.clear();
      expect(cache.size).toBe(0);
    }
  });
});
