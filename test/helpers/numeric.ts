import { expect } from 'vitest';
import { seededRandom } from './gpu.js';

/** `count` floats uniform in (−scale, scale), the same for the same seed. */
export function randomFloats(count: number, seed: number, scale = 2): Float32Array {
  const random = seededRandom(seed);
  return Float32Array.from({ length: count }, () => (random() * 2 - 1) * scale);
}

/** Largest |a − b| / max(1, |b|): absolute error near zero, relative error elsewhere. */
export function maxError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const want = b[i] as number;
    worst = Math.max(worst, Math.abs((a[i] as number) - want) / Math.max(1, Math.abs(want)));
  }
  return worst;
}
