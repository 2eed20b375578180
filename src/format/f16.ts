/**
 * IEEE-754 binary16 conversions, bit-exact, as the plain-TS twin of WGSL's `pack2x16float` /
 * `unpack2x16float`. The cache stores f16 as pairs in u32 words because SwiftShader (our CI GPU) has no
 * `shader-f16`, so every f16 that a kernel writes goes through these two builtins.
 *
 * Conversion rounds to nearest, ties to even, produces subnormals, and overflows to ±Infinity. WGSL only
 * promises "a neighbouring value" for inexact conversions (and an indeterminate result out of range), so GPU
 * tests compare f16 results within one f16 ulp; in range, real drivers round to nearest even like this code.
 */

// One shared scratch word: reading an f32's bits without allocating per call.
const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/**
 * Largest finite f16 value.
 *
 * @example
 * ```ts
 * roundToF16(70000) > F16_MAX; // true: Infinity
 * ```
 */
export const F16_MAX = 65504;

/**
 * Smallest positive normal f16 value, 2^-14.
 *
 * @example
 * ```ts
 * f32ToF16Bits(F16_MIN_NORMAL); // 0x0400
 * ```
 */
export const F16_MIN_NORMAL = 2 ** -14;

/**
 * Smallest positive subnormal f16 value, 2^-24.
 *
 * @example
 * ```ts
 * f32ToF16Bits(F16_MIN_SUBNORMAL); // 0x0001
 * ```
 */
export const F16_MIN_SUBNORMAL = 2 ** -24;

/**
 * The raw bits of `x` as an f32 (x is rounded to f32 first, as a shader would hold it).
 *
 * @example
 * ```ts
 * f32Bits(1); // 0x3f800000
 * ```
 */
export function f32Bits(x: number): number {
  scratchF32[0] = x;
  return scratchU32[0] ?? 0;
}

/**
 * The f32 whose raw bits are `bits` (a u32).
 *
 * @example
 * ```ts
 * f32FromBits(0x3f800000); // 1
 * ```
 */
export function f32FromBits(bits: number): number {
  scratchU32[0] = bits >>> 0;
  return scratchF32[0] ?? 0;
}

/**
 * Converts a number to f16 bits: first to f32 (a shader's value is an f32), then to binary16 with
 * round-to-nearest-even. Subnormals are kept, values past the f16 range become ±Infinity (0x7c00/0xfc00),
 * NaN becomes a quiet NaN carrying the top payload bits.
 *
 * @example
 * ```ts
 * f32ToF16Bits(1);      // 0x3c00
 * f32ToF16Bits(65504);  // 0x7bff
 * f32ToF16Bits(65520);  // 0x7c00 (rounds up to Infinity)
 * f32ToF16Bits(2 ** -24); // 0x0001
 * ```
 */
export function f32ToF16Bits(x: number): number {
  const bits = f32Bits(x);
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  const mant = bits & 0x7fffff;
  if (exp === 0xff) {
    // Inf stays Inf; NaN must stay NaN even if its payload's top 10 bits are zero, hence the quiet bit.
    return mant === 0 ? sign | 0x7c00 : sign | 0x7c00 | 0x200 | (mant >>> 13);
  }
  const e = exp - 112; // rebias 127 → 15
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Subnormal result (or zero). Values below half the smallest subnormal round to zero; at most shift 24
    // keeps the round-half-even logic below exact for the 2^-25 tie.
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    let q = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (q & 1) === 1)) q += 1; // a carry into 0x400 is the smallest normal
    return sign | q;
  }
  let q = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  // A carry out of the mantissa bumps the exponent, and from 0x7bff lands on 0x7c00 = Infinity: both correct.
  if (rem > 0x1000 || (rem === 0x1000 && (q & 1) === 1)) q += 1;
  return sign | q;
}

/**
 * Converts f16 bits (the low 16 bits of `h`) to a number (exactly representable as f32).
 *
 * @example
 * ```ts
 * f16BitsToF32(0x3c00); // 1
 * f16BitsToF32(0x0001); // 5.960464477539063e-8
 * ```
 */
export function f16BitsToF32(h: number): number {
  const sign = (h & 0x8000) !== 0 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * F16_MIN_SUBNORMAL;
  if (exp === 0x1f) return mant === 0 ? sign * Infinity : NaN;
  return sign * (1024 + mant) * 2 ** (exp - 25);
}

/**
 * Rounds a number to the nearest f16 value (round-to-nearest-even), returned as a number.
 *
 * @example
 * ```ts
 * roundToF16(0.1); // 0.0999755859375
 * ```
 */
export function roundToF16(x: number): number {
  return f16BitsToF32(f32ToF16Bits(x));
}

/**
 * WGSL `pack2x16float(vec2(a, b))`: `a` in bits 0..15, `b` in bits 16..31. Returns an unsigned u32 value.
 *
 * @example
 * ```ts
 * pack2x16float(1, -2); // 0xc0003c00
 * ```
 */
export function pack2x16float(a: number, b: number): number {
  return (f32ToF16Bits(a) | (f32ToF16Bits(b) << 16)) >>> 0;
}

/**
 * WGSL `unpack2x16float(w)`: `[low half, high half]` as numbers.
 *
 * @example
 * ```ts
 * unpack2x16float(0xc0003c00); // [1, -2]
 * ```
 */
export function unpack2x16float(w: number): [number, number] {
  return [f16BitsToF32(w & 0xffff), f16BitsToF32((w >>> 16) & 0xffff)];
}
