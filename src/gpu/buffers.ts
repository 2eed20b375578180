import { BufferUsageError, GpuValidationError } from '../errors.js';
import { checkBufferSize } from './buffer-pool.js';
import type { GpuContext } from './context.js';

/**
 * Creates a storage buffer after checking the device limits, optionally filled with data.
 *
 * @example
 * ```ts
 * const input = createStorageBuffer(gpu, 'input', new Uint32Array([1, 2, 3]));
 * ```
 */
export function createStorageBuffer(
  gpu: GpuContext,
  label: string,
  contents: ArrayBufferView | number,
  extraUsage: GPUBufferUsageFlags = 0,
): GPUBuffer {
  const bytes = typeof contents === 'number' ? contents : contents.byteLength;
  const size = Math.max(4, Math.ceil(bytes / 4) * 4);
  checkBufferSize(gpu.limits, size, true);
  const buffer = gpu.device.createBuffer({
    label,
    size,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST | extraUsage,
    mappedAtCreation: typeof contents !== 'number',
  });
  if (typeof contents !== 'number') {
    new Uint8Array(buffer.getMappedRange()).set(
      new Uint8Array(contents.buffer, contents.byteOffset, contents.byteLength),
    );
    buffer.unmap();
  }
  return buffer;
}

/**
 * Throws BufferUsageError naming the missing flags, before any command is encoded.
 *
 * @example
 * ```ts
 * requireUsage(scores, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC, 'scores readback');
 * ```
 */
export function requireUsage(buffer: GPUBuffer, usage: GPUBufferUsageFlags, purpose: string): void {
  if ((buffer.usage & usage) !== usage) {
    const names = Object.entries({
      STORAGE: GPUBufferUsage.STORAGE,
      COPY_SRC: GPUBufferUsage.COPY_SRC,
      COPY_DST: GPUBufferUsage.COPY_DST,
      UNIFORM: GPUBufferUsage.UNIFORM,
      MAP_READ: GPUBufferUsage.MAP_READ,
    })
      .filter(([, flag]) => (usage & flag) !== 0 && (buffer.usage & flag) === 0)
      .map(([name]) => name);
    throw new BufferUsageError(`buffer "${buffer.label}" used as ${purpose} lacks usage ${names.join(' | ')}`);
  }
}

/**
 * Copies `bytes` bytes of a GPU buffer back to the CPU. The staging buffer is destroyed in `finally`, whatever
 * happens.
 *
 * @example
 * ```ts
 * const words = new Uint32Array(await readBuffer(gpu, output));
 * ```
 */
export async function readBuffer(gpu: GpuContext, source: GPUBuffer, offset = 0, bytes?: number): Promise<ArrayBuffer> {
  requireUsage(source, GPUBufferUsage.COPY_SRC, 'readback source');
  const size = bytes ?? source.size - offset;
  const staging = gpu.device.createBuffer({
    label: `${source.label}:readback`,
    size: Math.max(4, Math.ceil(size / 4) * 4),
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  try {
    const encoder = gpu.device.createCommandEncoder({ label: `${source.label}:readback` });
    encoder.copyBufferToBuffer(source, offset, staging, 0, staging.size);
    gpu.submit([encoder.finish()]);
    try {
      await staging.mapAsync(GPUMapMode.READ);
    } catch (error) {
      // A lost device rejects the map with a bare, empty DOMException: say what happened instead.
      gpu.assertUsable();
      throw new GpuValidationError(`reading back "${source.label}" failed: ${error instanceof Error && error.message ? error.message : String(error)}`);
    }
    return staging.getMappedRange().slice(0, size);
  } finally {
    staging.destroy();
  }
}
