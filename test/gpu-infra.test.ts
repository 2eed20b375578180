import { describe, expect, it } from 'vitest';
import { InvalidArgumentError, LimitExceededError } from '../src/errors.js';
import { foldDispatch } from '../src/gpu/dispatch.js';
import { constantsKey, wgslPrelude } from '../src/gpu/prelude.js';
import { UniformLayout } from '../src/gpu/uniforms.js';
import { sizeClass } from '../src/gpu/buffer-pool.js';
import { readBuffer } from '../src/gpu/buffers.js';
import { GpuContext } from '../src/gpu/context.js';
import { kernelPipeline } from '../src/gpu/kernel.js';
import { testGpu } from './helpers/gpu.js';

describe('dispatch folding', () => {
  it.each([1, 65535, 65536, 70_000, 65535 * 65535, 65535 * 65535 + 1])('covers %i workgroups', (count) => {
    const [x, y, z] = foldDispatch(count, 65535);
    expect(x * y * z).toBeGreaterThanOrEqual(count);
    for (const d of [x, y, z]) expect(d).toBeLessThanOrEqual(65535);
    // no whole slab of useless workgroups
    expect(x * y * z - count).toBeLessThan(x * y);
  });
  it('rejects zero and impossible counts', () => {
    expect(() => foldDispatch(0, 65535)).toThrow(InvalidArgumentError);
    expect(() => foldDispatch(10 ** 16, 65535)).toThrow(LimitExceededError);
  });
});

describe('uniform packing follows WGSL alignment', () => {
  it('aligns vec4 to 16 and rounds the struct to 16', () => {
    const layout = new UniformLayout('P', [
      { name: 'a', type: 'u32' },
      { name: 'b', type: 'vec4<f32>' },
      { name: 'c', type: 'f32' },
      { name: 'd', type: 'vec2<u32>' },
    ]);
    expect([...layout.offsets.values()]).toEqual([0, 16, 32, 40]);
    expect(layout.byteSize).toBe(48);
    const view = new DataView(layout.pack({ a: 7, b: [1, 2, 3, 4], c: 0.5, d: [9, 10] }));
    expect(view.getUint32(0, true)).toBe(7);
    expect(view.getFloat32(28, true)).toBe(4);
    expect(view.getFloat32(32, true)).toBe(0.5);
    expect(view.getUint32(44, true)).toBe(10);
    expect(layout.wgsl()).toContain('b: vec4<f32>,');
  });
  it('rejects missing, negative and fractional integers', () => {
    const layout = new UniformLayout('P', [{ name: 'n', type: 'u32' }]);
    expect(() => layout.pack({ n: -1 })).toThrow(/not a valid u32/);
    expect(() => layout.pack({ n: 1.5 })).toThrow(/not a valid u32/);
    expect(() => layout.pack({} as { n: number })).toThrow(/expected 1 value/);
  });
});

describe('prelude', () => {
  it('generates typed constants in a stable order', () => {
    const text = wgslPrelude({ B: { type: 'f32', value: 2 }, A: { type: 'u32', value: 3 }, C: { type: 'bool', value: true } });
    expect(text).toContain('const A: u32 = 3u;\nconst B: f32 = 2.0f;\nconst C: bool = true;');
    expect(constantsKey({ A: { type: 'u32', value: 1 } })).not.toBe(constantsKey({ A: { type: 'u32', value: 2 } }));
    expect(() => wgslPrelude({ 'bad name': { type: 'u32', value: 1 } })).toThrow(InvalidArgumentError);
    expect(() => wgslPrelude({ N: { type: 'u32', value: -1 } })).toThrow(InvalidArgumentError);
  });
});

describe('GPU context', () => {
  it('reports the adapter and negotiates limits and features', async () => {
    const gpu = await testGpu();
    expect(gpu.adapter.vendor).not.toBe('');
    expect(typeof gpu.adapter.isFallbackAdapter).toBe('boolean');
    expect(gpu.limits.maxStorageBufferBindingSize).toBeGreaterThan(128 * 1024 * 1024);
    if (gpu.adapter.architecture === 'swiftshader') {
      expect(gpu.has('timestamp-query')).toBe(true);
      expect(gpu.has('subgroups')).toBe(true);
    }
    expect(gpu.keptAlive).toBeDefined();
  });

  it('recycles a pooled buffer only after the submit that used it completed', async () => {
    const gpu = await testGpu();
    const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST;
    const first = gpu.buffers.acquire(1000, usage, 'a');
    expect(first.size).toBe(sizeClass(1000));
    gpu.device.queue.writeBuffer(first, 0, new Uint32Array(4));
    gpu.submit([gpu.device.createCommandEncoder().finish()]);
    gpu.buffers.release(first);
    const second = gpu.buffers.acquire(1000, usage, 'b');
    expect(second).not.toBe(first);
    await gpu.idle();
    expect(gpu.buffers.acquire(1000, usage, 'c')).toBe(first);
  });

  it('uploads data into a pooled storage buffer, empty data into a bindable 4-byte one', async () => {
    const gpu = await testGpu();
    const buffer = gpu.buffers.upload(Uint32Array.of(7, 0xffff_ffff, 3), 'upload-test');
    expect(buffer.usage).toBe(GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC);
    expect([...new Uint32Array(await readBuffer(gpu, buffer, 0, 12))]).toEqual([7, 0xffff_ffff, 3]);
    const empty = gpu.buffers.upload(new Uint32Array(0));
    expect(empty.size).toBeGreaterThanOrEqual(4);
    for (const b of [buffer, empty]) gpu.buffers.release(b);
  });

  it('keys cached pipelines by the text of their libraries, not only their number', async () => {
    const gpu = await testGpu();
    const body = '@group(0) @binding(0) var<storage, read_write> out: array<u32>;\n@compute @workgroup_size(1) fn main() { out[0] = lib_value(); }';
    const spec = (value: number) => ({ name: 'library-key-test', body, constants: {}, uniforms: [], libraries: [`fn lib_value() -> u32 { return ${value}u; }`] });
    const first = kernelPipeline(gpu, spec(1));
    expect(kernelPipeline(gpu, spec(1))).toBe(first);
    expect(kernelPipeline(gpu, spec(2))).not.toBe(first);
  });

  it('keys cached pipelines by the text of their body too', async () => {
    const gpu = await testGpu();
    const body = (value: number) =>
      `@group(0) @binding(0) var<storage, read_write> out: array<u32>;\n@compute @workgroup_size(1) fn main() { out[0] = ${value}u; }`;
    const spec = (value: number) => ({ name: 'body-key-test', body: body(value), constants: {}, uniforms: [] });
    const first = kernelPipeline(gpu, spec(1));
    expect(kernelPipeline(gpu, spec(1))).toBe(first);
    expect(kernelPipeline(gpu, spec(2))).not.toBe(first);
  });

  it('captures validation errors in an error scope', async () => {
    const gpu = await testGpu();
    await expect(
      gpu.withErrorScope(() => {
        gpu.device.createBuffer({ size: 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.STORAGE });
      }),
    ).rejects.toThrow(/GpuValidationError|usage|Usage/);
  });
});

describe('device loss', () => {
  it('reports a loss we did not cause as DeviceLostError, and our own destroy() as null', async () => {
    const { createNodeGpu } = await import('../src/node/gpu.js');
    const { DeviceLostError } = await import('../src/errors.js');
    const external = await createNodeGpu();
    external.device.destroy(); // as if the driver took it away
    const lost = await external.lost;
    expect(lost).toBeInstanceOf(DeviceLostError);
    expect(() => external.assertUsable()).toThrow(DeviceLostError);
    expect(() => external.submit([])).toThrow(DeviceLostError);

    const ours = await createNodeGpu();
    await ours.destroy();
    expect(await ours.lost).toBeNull();
    expect(() => ours.assertUsable()).toThrow(/destroyed/);
  });

  it('adopts a caller device and never destroys it', async () => {
    const gpu = await testGpu();
    const adopted = GpuContext.adopt(gpu.device);
    expect(adopted.ownsDevice).toBe(false);
    await adopted.destroy();
    // the caller's device still works
    gpu.device.createBuffer({ size: 16, usage: GPUBufferUsage.STORAGE }).destroy();
    await gpu.idle();
  });
});
