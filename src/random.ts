// A shared leaf like errors.ts: every layer may draw seeded random numbers (policies, sampling, benchmarks).

/**
 * A seeded PRNG (mulberry32) returning floats in [0, 1); the same seed gives the same stream everywhere.
 *
 * @example
 * ```ts
 * const rng = mulberry32(42); rng(); // 0.6011037519201636
 * ```
 */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
