import { GpuValidationError } from '../errors.js';
import { checkBufferSize } from './buffer-pool.js';
import type { GpuContext } from './context.js';

/** One region of a buffer to read back. */
export interface ReadbackRegion {
  readonly buffer: GPUBuffer;
  readonly offset?: number;
  readonly bytes: number;
}

/**
 * Named scratch buffers that live as long as their owner: each name keeps one buffer, reused by every later
 * call and replaced by a larger one (1.5× at least, so a slowly growing context reallocates O(log n) times) only
 * when a call needs more. Uploads go through `queue.writeBuffer`, which the queue orders after every earlier
 * submit, so a call may refill a buffer that work submitted by the previous call still reads, without waiting.
 * Callers must not use one arena from two overlapping calls (the compressor runs one compression at a time).
 *
 * @example
 * ```ts
 * const scratch = new ScratchBuffers(gpu, 'compress');
 * const members = scratch.upload('members', new Uint32Array([3, 64]));
 * const [words] = await scratch.readBack(encoder, [{ buffer: counts, bytes: 8 }]);
 * scratch.destroy();
 * ```
 */
export class ScratchBuffers {
  private readonly buffers = new Map<string, GPUBuffer>();
  private destroyed = false;
  /** Buffers (re)allocated so far: tests check that repeated calls of one size allocate nothing. */
  allocations = 0;

  constructor(
    private readonly gpu: GpuContext,
    private readonly label: string,
  ) {}

  /** A STORAGE | COPY_SRC | COPY_DST buffer of at least `bytes` bytes (contents undefined). */
  get(name: string, bytes: number): GPUBuffer {
    return this.sized(name, bytes, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST);
  }

  /** {@link get} holding `data` (a whole number of 4-byte words) from offset 0, in queue order. */
  upload(name: string, data: Uint32Array | Float32Array): GPUBuffer {
    const buffer = this.get(name, data.byteLength);
    if (data.byteLength > 0) this.gpu.device.queue.writeBuffer(buffer, 0, data.buffer, data.byteOffset, data.byteLength);
    return buffer;
  }

  /**
   * Copies every region into one staging buffer at the end of `encoder`, submits it and maps the staging buffer
   * once: one CPU wait for all of them. Returns each region's bytes (copies; the staging buffer is unmapped and
   * kept for the next call).
   */
  async readBack(encoder: GPUCommandEncoder, regions: readonly ReadbackRegion[]): Promise<ArrayBuffer[]> {
    const offsets: number[] = [];
    let total = 0;
    for (const region of regions) {
      offsets.push(total);
      total += Math.ceil(region.bytes / 4) * 4;
    }
    const staging = this.sized('readback', total, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST);
    regions.forEach((region, i) => {
      const bytes = Math.ceil(region.bytes / 4) * 4;
      if (bytes > 0) encoder.copyBufferToBuffer(region.buffer, region.offset ?? 0, staging, offsets[i] ?? 0, bytes);
    });
    this.gpu.submit([encoder.finish()]);
    try {
      await staging.mapAsync(GPUMapMode.READ, 0, Math.max(4, total));
    } catch (error) {
      // A lost device rejects the map with a bare, empty DOMException: say what happened instead.
      this.gpu.assertUsable();
      throw new GpuValidationError(`reading back ${this.label} scratch failed: ${error instanceof Error && error.message ? error.message : String(error)}`);
    }
    try {
      const mapped = staging.getMappedRange(0, Math.max(4, total));
      return regions.map((region, i) => mapped.slice(offsets[i] ?? 0, (offsets[i] ?? 0) + region.bytes));
    } finally {
      staging.unmap();
    }
  }

  /** Destroys every buffer; the arena must not be used afterwards. */
  destroy(): void {
    this.destroyed = true;
    for (const buffer of this.buffers.values()) buffer.destroy();
    this.buffers.clear();
  }

  private sized(name: string, bytes: number, usage: GPUBufferUsageFlags): GPUBuffer {
    if (this.destroyed) throw new GpuValidationError(`the ${this.label} scratch buffers were destroyed`);
    const need = Math.max(16, Math.ceil(bytes / 16) * 16);
    const current = this.buffers.get(name);
    if (current && current.size >= need) return current;
    const size = Math.max(need, current ? Math.ceil((current.size * 1.5) / 16) * 16 : 0);
    checkBufferSize(this.gpu.limits, size, (usage & GPUBufferUsage.STORAGE) !== 0);
    // Destroying the old buffer is safe while SUBMITTED work still reads it (WebGPU defers it to that work's end);
    // a name must not grow while an encoder not yet submitted uses it, which one request per name and call ensures.
    current?.destroy();
    const buffer = this.gpu.device.createBuffer({ label: `${this.label}:${name}`, size, usage });
    this.buffers.set(name, buffer);
    this.allocations++;
    return buffer;
  }
}
