import { InvalidArgumentError } from '../../errors.js';
import { requireUsage } from '../../gpu/buffers.js';

/**
 * Throws InvalidArgumentError unless `value` is a positive integer: the sizes the model kernels take.
 *
 * @example
 * ```ts
 * requirePositive('rows', rows);
 * ```
 */
export function requirePositive(field: string, value: number): void {
  if (!Number.isInteger(value) || value <= 0) {
    throw new InvalidArgumentError(field, `must be a positive integer; got ${value}`);
  }
}

/**
 * Throws before encoding when a storage buffer is too small or lacks STORAGE usage, so the caller sees which
 * operand is wrong instead of a robust-access read of zeros.
 *
 * @example
 * ```ts
 * requireStorage('x', x, rows * dim * 4);
 * ```
 */
export function requireStorage(field: string, buffer: GPUBuffer, bytes: number): void {
  requireUsage(buffer, GPUBufferUsage.STORAGE, field);
  if (buffer.size < bytes) {
    throw new InvalidArgumentError(field, `buffer "${buffer.label}" holds ${buffer.size} B; ${bytes} B needed`);
  }
}
