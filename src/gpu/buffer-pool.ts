import { InvalidArgumentError, LimitExceededError } from '../errors.js';

interface PendingRelease {
  readonly buffer: GPUBuffer;
  readonly serial: number;
}

/** The smallest size class: WebGPU binding offsets align to 256 bytes anyway. */
const MIN_CLASS_BYTES = 256;

/**
 * The size class a request falls in: the next power of two, at least 256 bytes.
 *
 * @example
 * ```ts
 * sizeClass(100);  // 256
 * sizeClass(1000); // 1024
 * ```
 */
export function sizeClass(bytes: number): number {
  let size = MIN_CLASS_BYTES;
  while (size < bytes) size *= 2;
  return size;
}

/**
 * Checks a buffer size against the device limits before anything is created, naming the limit and the value.
 *
 * @example
 * ```ts
 * checkBufferSize(gpu.limits, 2 ** 31, true); // throws LimitExceededError('maxStorageBufferBindingSize', ...)
 * ```
 */
export function checkBufferSize(limits: GPUSupportedLimits, bytes: number, storage: boolean): void {
  if (!Number.isInteger(bytes) || bytes <= 0) {
    throw new InvalidArgumentError('size', `a buffer needs a positive integer byte size; got ${bytes}`);
  }
  if (bytes > limits.maxBufferSize) {
    throw new LimitExceededError('maxBufferSize', bytes, limits.maxBufferSize);
  }
  if (storage && bytes > limits.maxStorageBufferBindingSize) {
    throw new LimitExceededError(
      'maxStorageBufferBindingSize',
      bytes,
      limits.maxStorageBufferBindingSize,
      'split the data or use a smaller pool',
    );
  }
}

/**
 * What the pool needs of its GPU context: the device, its limits and the submission serials (the context
 * implements it; the interface keeps the pool below the context instead of importing it back).
 */
export interface SubmissionClock {
  readonly device: GPUDevice;
  readonly limits: GPUSupportedLimits;
  /** Serial of the latest submit. */
  readonly lastSubmitted: number;
  /** Serial of the latest submit known to have completed. */
  readonly lastCompleted: number;
}

/**
 * Reuses GPU buffers by size class and usage. A released buffer goes back to the free lists only after the
 * submission that last used it has completed, so the GPU never reads a buffer we already rewrote.
 *
 * @example
 * ```ts
 * const scratch = gpu.buffers.acquire(4096, GPUBufferUsage.STORAGE, 'scores');
 * gpu.submit([encoder.finish()]);
 * gpu.buffers.release(scratch); // reusable once that submit completes
 * ```
 */
export class BufferPool {
  private readonly free = new Map<string, GPUBuffer[]>();
  private readonly pending: PendingRelease[] = [];
  private readonly owned = new Set<GPUBuffer>();

  constructor(private readonly gpu: SubmissionClock) {}

  /** A buffer of at least `bytes` bytes with exactly `usage`. */
  acquire(bytes: number, usage: GPUBufferUsageFlags, label = 'pooled'): GPUBuffer {
    const storage = (usage & GPUBufferUsage.STORAGE) !== 0;
    checkBufferSize(this.gpu.limits, bytes, storage);
    const size = sizeClass(bytes);
    const key = `${usage}:${size}`;
    const reused = this.free.get(key)?.pop();
    if (reused) {
      reused.label = label;
      return reused;
    }
    const maximum = storage ? this.gpu.limits.maxStorageBufferBindingSize : this.gpu.limits.maxBufferSize;
    const buffer = this.gpu.device.createBuffer({ label, size: Math.min(size, maximum), usage });
    this.owned.add(buffer);
    return buffer;
  }

  /**
   * A STORAGE | COPY_SRC | COPY_DST buffer holding `data` from offset 0 (at least 4 bytes, so empty data still
   * binds). The write goes through `queue.writeBuffer`, ordered before the next submit.
   */
  upload(data: Uint32Array, label = 'pooled'): GPUBuffer {
    const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
    const buffer = this.acquire(Math.max(4, data.byteLength), usage, label);
    this.gpu.device.queue.writeBuffer(buffer, 0, data as Uint32Array<ArrayBuffer>);
    return buffer;
  }

  /** Returns a buffer; it becomes reusable after the latest submission completes. */
  release(buffer: GPUBuffer): void {
    if (!this.owned.has(buffer)) {
      throw new InvalidArgumentError('buffer', `"${buffer.label}" was not acquired from this pool`);
    }
    this.pending.push({ buffer, serial: this.gpu.lastSubmitted });
    this.recycle(this.gpu.lastCompleted);
  }

  /** Moves released buffers whose last submission has completed to the free lists. */
  recycle(completedSerial: number): void {
    for (let i = this.pending.length - 1; i >= 0; i--) {
      const entry = this.pending[i];
      if (!entry || entry.serial > completedSerial) continue;
      this.pending.splice(i, 1);
      const key = `${entry.buffer.usage}:${entry.buffer.size}`;
      const list = this.free.get(key) ?? [];
      list.push(entry.buffer);
      this.free.set(key, list);
    }
  }

  /** Buffers waiting for their submission to complete. */
  get pendingCount(): number {
    return this.pending.length;
  }

  /** Buffers ready for reuse. */
  get freeCount(): number {
    let count = 0;
    for (const list of this.free.values()) count += list.length;
    return count;
  }

  /** Destroys every buffer this pool created. */
  destroy(): void {
    for (const buffer of this.owned) buffer.destroy();
    this.owned.clear();
    this.free.clear();
    this.pending.length = 0;
  }
}
