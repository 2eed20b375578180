import { describe, expect, it } from 'vitest';
import {
  f16BitsToF32,
  f32ToF16Bits,
  pack2x16float,
  roundToF16,
  unpack2x16float,
} from '../src/format/f16.js';

describe('f32ToF16Bits', () => {
  const cases: [number, number][] = [
    [0, 0x0000],
    [-0, 0x8000],
    [1, 0x3c00],
    [-2, 0xc000],
    [0.5, 0x3800],
    [65504, 0x7bff],
    [-65504, 0xfbff],
    [Infinity, 0x7c00],
    [-Infinity, 0xfc00],
    [2 ** -14, 0x0400], // smallest normal
    [2 ** -24, 0x0001], // smallest subnormal
    [1023 * 2 ** -24, 0x03ff], // largest subnormal
    [0.333251953125, 0x3555],
    [0.1, 0x2e66],
  ];
  it.each(cases)('%f → %#x', (x, bits) => {
    expect(f32ToF16Bits(x)).toBe(bits);
  });

  it('overflows to Infinity at and above 65520, stays finite just below', () => {
    expect(f32ToF16Bits(65519.99)).toBe(0x7bff);
    expect(f32ToF16Bits(65520)).toBe(0x7c00); // tie between 65504 and 65536 (odd mantissa) → Inf
    expect(f32ToF16Bits(1e10)).toBe(0x7c00);
    expect(f32ToF16Bits(-1e10)).toBe(0xfc00);
  });

  it('rounds ties to even', () => {
    // 1 + 2^-11 is halfway between 1 (0x3c00, even) and 1+2^-10 (0x3c01): → even.
    expect(f32ToF16Bits(1 + 2 ** -11)).toBe(0x3c00);
    // 1 + 3·2^-11 is halfway between 0x3c01 (odd) and 0x3c02: → 0x3c02.
    expect(f32ToF16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02);
    // Just above the tie rounds up.
    expect(f32ToF16Bits(1 + 2 ** -11 + 2 ** -20)).toBe(0x3c01);
    // Subnormal ties: 2^-25 is halfway between 0 and 2^-24 → 0; 3·2^-25 → 2·2^-24.
    expect(f32ToF16Bits(2 ** -25)).toBe(0x0000);
    expect(f32ToF16Bits(3 * 2 ** -25)).toBe(0x0002);
    expect(f32ToF16Bits(2 ** -25 + 2 ** -40)).toBe(0x0001);
    expect(f32ToF16Bits(2 ** -26)).toBe(0x0000);
    // Rounding up from the largest subnormal carries into the smallest normal.
    expect(f32ToF16Bits(2 ** -14 - 2 ** -26)).toBe(0x0400);
  });

  it('keeps NaN a NaN', () => {
    const h = f32ToF16Bits(NaN);
    expect((h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0).toBe(true);
    expect(f16BitsToF32(h)).toBeNaN();
  });

  it('round trips every finite f16 bit pattern exactly', () => {
    for (let h = 0; h < 0x10000; h++) {
      if ((h & 0x7c00) === 0x7c00) continue;
      const x = f16BitsToF32(h);
      expect(f32ToF16Bits(x)).toBe(h);
    }
  });

  it('is within half an ulp (relative 2^-11) for normal values', () => {
    for (const x of [3.14159, -123.456, 1e-3, 40000.5, 7e-5]) {
      expect(Math.abs(roundToF16(x) - x)).toBeLessThanOrEqual(Math.abs(x) * 2 ** -11);
    }
  });
});

describe('pack2x16float', () => {
  it('puts a in the low half, b in the high half', () => {
    expect(pack2x16float(1, -2)).toBe(0xc0003c00);
    expect(pack2x16float(0, 1)).toBe(0x3c000000);
    expect(unpack2x16float(0xc0003c00)).toEqual([1, -2]);
    expect(unpack2x16float(pack2x16float(65504, 2 ** -24))).toEqual([65504, 2 ** -24]);
  });
});
