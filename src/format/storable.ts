import { NonFiniteValueError } from '../errors.js';
import { F16_MAX, roundToF16 } from './f16.js';
import type { FullFormat } from './layout.js';

/**
 * Rejects what a full pool of `format` cannot hold: NaN, ±Inf and, for f16, values that round past ±65504.
 * Throws NonFiniteValueError naming the first bad value; the caller writes nothing.
 *
 * @example
 * ```ts
 * checkStorable('keys', keys, 'f16'); // throws for 1e6: an f16 pool would store +Inf
 * ```
 */
export function checkStorable(field: string, data: Float32Array, format: FullFormat): void {
  const f16 = format === 'f16';
  for (let i = 0; i < data.length; i++) {
    const value = data[i] ?? 0;
    if (!Number.isFinite(value) || (f16 && Math.abs(roundToF16(value)) > F16_MAX)) {
      const range = f16 ? ` and within ±${F16_MAX} for an f16 cache (or create it with fullFormat f32)` : '';
      throw new NonFiniteValueError(`${field}[${i}] is ${value}: values must be finite${range}; the cache was not changed`);
    }
  }
}
