import { describe, expect, it } from 'vitest';
import { type BlockFormat, blockLayout } from '../src/format/layout.js';
import { InvalidArgumentError, NonFiniteValueError } from '../src/errors.js';
import {
  decodeBlock,
  dequantizeCode,
  encodeBlock,
  quantParams,
  quantizationErrorBound,
  quantizeCode,
} from '../src/format/block-codec.js';
import { roundToF16 } from '../src/format/f16.js';
import { mulberry32 } from '../src/random.js';

const headDim = 8;
const blockSize = 16;

function data(n: number, seed: number, spread = 3): Float32Array {
  const next = mulberry32(seed);
  return Float32Array.from({ length: n * headDim }, () => (next() * 2 - 1) * spread);
}

const formats: BlockFormat[] = ['f32', 'f16', 'int8', 'int4', 'int2'];

describe.each(formats)('block codec %s', (format) => {
  for (const groupSize of format.startsWith('int') ? [4, 8] : [undefined]) {
    const layout = blockLayout(format, { headDim, blockSize }, groupSize);
    it.each([1, 15, 16])(`round trips n = %i (group ${groupSize ?? '-'})`, (n) => {
      const k = data(n, 1 + n);
      const v = data(n, 100 + n, 5);
      const positions = Uint32Array.from({ length: n }, (_, i) => 1000 + 3 * i);
      const words = encodeBlock(layout, k, v, positions, n);
      expect(words.length).toBe(layout.wordsPerBlock);
      const out = decodeBlock(layout, words, n);
      expect(Array.from(out.positions)).toEqual(Array.from(positions));
      expect(out.k.length).toBe(n * headDim);
      // Unfilled slots stay zero.
      for (let t = n; t < blockSize; t++) expect(words[layout.positionsOffset + t]).toBe(0);

      if (format === 'f32') {
        expect(out.k).toEqual(k);
        expect(out.v).toEqual(v);
        return;
      }
      if (format === 'f16') {
        for (let i = 0; i < n * headDim; i++) {
          expect(out.k[i]).toBe(roundToF16(k[i] ?? 0));
          expect(out.v[i]).toBe(roundToF16(v[i] ?? 0));
        }
        return;
      }
      const g = layout.groupSize;
      // K: per channel over groups of G tokens (only filled tokens).
      for (let c = 0; c < headDim; c++) {
        for (let t0 = 0; t0 < n; t0 += g) {
          const idx = Array.from({ length: Math.min(g, n - t0) }, (_, j) => (t0 + j) * headDim + c);
          const xs = idx.map((i) => k[i] ?? 0);
          const bound = quantizationErrorBound(layout, Math.min(...xs), Math.max(...xs));
          for (const i of idx) expect(Math.abs((out.k[i] ?? 0) - (k[i] ?? 0))).toBeLessThanOrEqual(bound);
        }
      }
      // V: per token over groups of G channels.
      for (let t = 0; t < n; t++) {
        for (let c0 = 0; c0 < headDim; c0 += g) {
          const idx = Array.from({ length: g }, (_, j) => t * headDim + c0 + j);
          const xs = idx.map((i) => v[i] ?? 0);
          const bound = quantizationErrorBound(layout, Math.min(...xs), Math.max(...xs));
          for (const i of idx) expect(Math.abs((out.v[i] ?? 0) - (v[i] ?? 0))).toBeLessThanOrEqual(bound);
        }
      }
    });
  }
});

describe('quantized layout details', () => {
  it('packs codes little-end-first and params as pack2x16float(scale, zero)', () => {
    const layout = blockLayout('int2', { headDim, blockSize }, 8);
    // K channel 0 over tokens 0..3 = -1, 0, 1, 2 → scale 1, zero -1, codes 0,1,2,3.
    const n = 4;
    const k = new Float32Array(n * headDim);
    const v = new Float32Array(n * headDim);
    for (let t = 0; t < n; t++) k[t * headDim] = t - 1;
    const words = encodeBlock(layout, k, v, new Uint32Array(n), n);
    const p = quantParams(-1, 2, 2);
    expect(p.scale).toBe(1);
    expect(p.zero).toBe(-1);
    expect(words[layout.kParamsOffset]).toBe(p.word);
    expect(p.word).toBe(0xbc003c00);
    // Value i = t·headDim + 0 sits at bit 2i: t=0 → bit 0 of word 0; t=1 → bit 16 of word 0; t=2 → word 1 bit 0.
    expect((words[layout.kOffset] ?? 0) & 3).toBe(0);
    expect(((words[layout.kOffset] ?? 0) >>> 16) & 3).toBe(1);
    expect((words[layout.kOffset + 1] ?? 0) & 3).toBe(2);
    expect(((words[layout.kOffset + 1] ?? 0) >>> 16) & 3).toBe(3);
    // Token groups without filled tokens keep parameter word 0 (group 1 = tokens 8..15 with G = 8).
    expect(words[layout.kParamsOffset + headDim]).toBe(0);
  });

  it('excludes unfilled slots from K min/max', () => {
    const layout = blockLayout('int8', { headDim: 16, blockSize }, 16);
    const n = 3;
    const k = new Float32Array(n * 16).fill(5); // constant: scale 0, reconstructs exactly
    for (let c = 0; c < 16; c++) k[2 * 16 + c] = 6; // token 2: channel range [5, 6]
    const words = encodeBlock(layout, k, new Float32Array(n * 16), new Uint32Array(n), n);
    // Were the 13 empty (zero) slots counted, zero would be 0, not 5.
    expect(words[layout.kParamsOffset]).toBe(quantParams(5, 6, 8).word);
    const out = decodeBlock(layout, words, n);
    expect(out.k[0]).toBe(5);
    expect(Math.abs((out.k[2 * 16] ?? 0) - 6)).toBeLessThanOrEqual(quantizationErrorBound(layout, 5, 6));
  });

  it('code 0 when the scale is 0; clamps to the code range', () => {
    expect(quantizeCode(3, 0, 3, 4)).toBe(0);
    expect(quantizeCode(100, 1, 0, 4)).toBe(15);
    expect(quantizeCode(-100, 1, 0, 4)).toBe(0);
    expect(dequantizeCode(15, 0.5, -1)).toBe(6.5);
  });

  it('rejects non-finite values, out-of-f16-range values and bad n', () => {
    const layout = blockLayout('int4', { headDim, blockSize });
    const k = new Float32Array(headDim);
    const bad = new Float32Array(headDim);
    bad[3] = NaN;
    expect(() => encodeBlock(layout, bad, k, new Uint32Array(1), 1)).toThrow(NonFiniteValueError);
    const big = new Float32Array(headDim).fill(70000);
    expect(() => encodeBlock(layout, big, k, new Uint32Array(1), 1)).toThrow(InvalidArgumentError);
    expect(() => encodeBlock(blockLayout('f32', { headDim, blockSize }), big, k, new Uint32Array(1), 1)).not.toThrow();
    expect(() => encodeBlock(layout, k, k, new Uint32Array(1), 17)).toThrow(InvalidArgumentError);
    expect(() => encodeBlock(layout, k, k, new Uint32Array(1), 2)).toThrow(InvalidArgumentError);
  });
});
