import { InvalidArgumentError } from '../errors.js';
import { checkStorable } from '../format/storable.js';
import type { CacheShape, FullFormat } from '../format/layout.js';

/**
 * Checks K/V handed to `append` before any state changes: Float32Array (not a plain array, whose values would
 * be lost, nor another typed array, whose bytes would be reinterpreted; convert with `Float32Array.from`), the
 * same length, whole tokens of `[layers][tokens][kvHeads][headDim]`, every value finite and storable in the full
 * pool's format (an f16 pool holds what rounds to at most ±65504). Returns the token count.
 */
export function checkKv(shape: CacheShape, keys: unknown, values: unknown, format: FullFormat): number {
  const { layers, kvHeads, headDim } = shape;
  for (const [field, data] of [['keys', keys], ['values', values]] as const) {
    if (!(data instanceof Float32Array)) {
      throw new InvalidArgumentError(field, `must be a Float32Array (got ${describe(data)}); convert with Float32Array.from(...)`);
    }
  }
  const k = keys as Float32Array;
  const v = values as Float32Array;
  const perToken = layers * kvHeads * headDim;
  if (k.length !== v.length || k.length === 0 || k.length % perToken !== 0) {
    throw new InvalidArgumentError(
      'keys',
      `K and V must both be f32 [layers=${layers}][tokens][kvHeads=${kvHeads}][headDim=${headDim}]; got ${k.length} and ${v.length} values`,
    );
  }
  checkStorable('keys', k, format);
  checkStorable('values', v, format);
  return k.length / perToken;
}

/** Checks an attention query: a Float32Array of `expected` finite values. */
export function checkQuery(query: unknown, expected: number): void {
  if (!(query instanceof Float32Array)) {
    throw new InvalidArgumentError('query', `must be a Float32Array (got ${describe(query)}); convert with Float32Array.from(...)`);
  }
  if (query.length !== expected) throw new InvalidArgumentError('query', `expected ${expected} values; got ${query.length}`);
  checkStorable('query', query, 'f32');
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a plain array';
  if (ArrayBuffer.isView(value)) return `a ${value.constructor.name}`;
  return typeof value;
}
