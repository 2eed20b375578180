/**
 * Plain-TS encoder/decoder of ONE cache block (one KV head, up to `blockSize` tokens) in every
 * {@link BlockFormat}. GPU append/quantize/attention kernels are tested against it, and it is the CPU fallback.
 *
 * Quantization follows the KIVI rule of CONTRIBUTING.md exactly. Arithmetic is done in f32 (`Math.fround`
 * after each step) in the order a shader evaluates it, so a GPU result differs only where WGSL's division
 * (2.5 ulp) or an fma lands on the other side of a rounding boundary: codes within ±1, parameters exact.
 */
import { InvalidArgumentError, NonFiniteValueError } from '../errors.js';
import { type BlockLayout, type Bits, isQuantized } from './layout.js';
import { F16_MAX, f32Bits, f32FromBits, pack2x16float, roundToF16, unpack2x16float } from './f16.js';

const fround = Math.fround;

/**
 * Decoded contents of a block: `k`/`v` are `[n][headDim]`, `positions` is `[n]`.
 *
 * @example
 * ```ts
 * const { k, v, positions }: DecodedBlock = decodeBlock(layout, words, n);
 * ```
 */
export interface DecodedBlock {
  readonly k: Float32Array;
  readonly v: Float32Array;
  readonly positions: Uint32Array;
}

/**
 * Scale and zero-point of one quantization group, already rounded to f16, and their packed word.
 *
 * @example
 * ```ts
 * const { scale, zero, word } = quantParams(-1, 2, 2); // 1, -1, 0xbc003c00
 * ```
 */
export interface QuantParams {
  readonly scale: number;
  readonly zero: number;
  /** `pack2x16float(scale, zero)`: scale in the low half. */
  readonly word: number;
}

/**
 * KIVI group parameters for a group with minimum `min` and maximum `max`:
 * scaleH = f16((max − min) / (2^bits − 1)), zeroH = f16(min).
 *
 * @example
 * ```ts
 * quantParams(-1, 2, 2); // { scale: 1, zero: -1, word: pack2x16float(1, -1) }
 * ```
 */
export function quantParams(min: number, max: number, bits: Bits): QuantParams {
  const levels = 2 ** bits - 1;
  const scale = roundToF16(fround(fround(fround(max) - fround(min)) / levels));
  const zero = roundToF16(min);
  return { scale, zero, word: pack2x16float(scale, zero) };
}

/**
 * The KIVI code of `x`: clamp(floor((x − zero) / scale + 0.5), 0, 2^bits − 1), and 0 when scale is 0.
 *
 * @example
 * ```ts
 * quantizeCode(0.6, 1, -1, 2); // floor(1.6 + 0.5) = 2
 * ```
 */
export function quantizeCode(x: number, scale: number, zero: number, bits: Bits): number {
  if (scale === 0) return 0;
  const levels = 2 ** bits - 1;
  const code = Math.floor(fround(fround(fround(fround(x) - zero) / scale) + 0.5));
  return Math.min(Math.max(code, 0), levels);
}

/**
 * Reconstructs a value: code · scale + zero (in f32).
 *
 * @example
 * ```ts
 * dequantizeCode(2, 1, -1); // 1
 * ```
 */
export function dequantizeCode(code: number, scale: number, zero: number): number {
  return fround(fround(code * scale) + zero);
}

/**
 * Worst-case |x − x̂| for a group with minimum `min` and maximum `max` in a quantized layout: half a step, plus
 * what f16 rounding of the zero-point and of the scale (times the top code) can add, plus f32 slack.
 * For full formats it is the f16 rounding error of the largest magnitude (f16) or 0 (f32).
 *
 * @example
 * ```ts
 * const layout = blockLayout('int4', { headDim: 8, blockSize: 16 });
 * quantizationErrorBound(layout, -1, 1); // ≈ (2/15)/2 plus f16 rounding terms
 * ```
 */
export function quantizationErrorBound(layout: BlockLayout, min: number, max: number): number {
  const maxAbs = Math.max(Math.abs(min), Math.abs(max));
  const f32Slack = maxAbs * 2 ** -22;
  if (layout.format === 'f32') return 0;
  if (layout.format === 'f16') return Math.abs(roundToF16(maxAbs) - maxAbs) + f32Slack;
  const levels = 2 ** layout.bits - 1;
  const { scale, zero } = quantParams(min, max, layout.bits);
  const exactScale = (max - min) / levels;
  return scale / 2 + Math.abs(zero - min) + levels * Math.abs(scale - exactScale) + f32Slack + 4 * 2 ** -24;
}

function checkInputs(
  layout: BlockLayout,
  k: Float32Array,
  v: Float32Array,
  positions: Uint32Array,
  n: number,
): void {
  if (!Number.isInteger(n) || n < 0 || n > layout.blockSize) {
    throw new InvalidArgumentError('n', `must be an integer in [0, ${layout.blockSize}]; got ${n}`);
  }
  const need = n * layout.headDim;
  if (k.length < need) throw new InvalidArgumentError('k', `needs ${need} values ([n][headDim]); got ${k.length}`);
  if (v.length < need) throw new InvalidArgumentError('v', `needs ${need} values ([n][headDim]); got ${v.length}`);
  if (positions.length < n) {
    throw new InvalidArgumentError('positions', `needs ${n} entries; got ${positions.length}`);
  }
  const limited = layout.format !== 'f32';
  for (const [name, data] of [['k', k] as const, ['v', v] as const]) {
    for (let i = 0; i < need; i++) {
      const x = data[i] ?? 0;
      if (!Number.isFinite(x)) {
        throw new NonFiniteValueError(`${name}[${i}] is ${x}; the cache only stores finite K/V values`);
      }
      // Past 65519.99… an f16 rounds to Infinity: refuse instead of storing a value that poisons attention.
      if (limited && Math.abs(roundToF16(x)) > F16_MAX) {
        throw new InvalidArgumentError(
          name,
          `value ${x} at ${i} is outside the f16 range (±${F16_MAX}) needed by ${layout.format}; use f32 blocks`,
        );
      }
    }
  }
}

/** Writes `bits`-bit codes little-end-first: value i at bit (i·bits) mod 32 of word ⌊i·bits/32⌋. */
function putCode(words: Uint32Array, base: number, index: number, bits: number, code: number): void {
  const bit = index * bits;
  const w = base + Math.floor(bit / 32);
  words[w] = ((words[w] ?? 0) | (code << bit % 32)) >>> 0;
}

function getCode(words: Uint32Array, base: number, index: number, bits: number): number {
  const bit = index * bits;
  const mask = bits === 32 ? 0xffffffff : (1 << bits) - 1;
  return ((words[base + Math.floor(bit / 32)] ?? 0) >>> bit % 32) & mask;
}

/**
 * Encodes the first `n` tokens of one KV head into one block's words. Slots `n..blockSize-1` stay zero and do
 * not take part in K's per-channel min/max.
 *
 * - f32: raw bits. f16: `pack2x16float(x[c], x[c+1])` per channel pair (channel c even in the low half).
 * - int8/int4/int2 (KIVI): K per channel over groups of G tokens, V per token over groups of G channels;
 *   parameter words `pack2x16float(scaleH, zeroH)`; a group without filled tokens has parameter word 0.
 *
 * @throws NonFiniteValueError for NaN/±Inf values; InvalidArgumentError for bad sizes or (f16/int formats)
 *   values outside the f16 range.
 * @example
 * ```ts
 * const layout = blockLayout('int4', { headDim: 8, blockSize: 16 });
 * const words = encodeBlock(layout, k, v, new Uint32Array([0, 1, 2]), 3);
 * const { k: k2 } = decodeBlock(layout, words, 3);
 * ```
 */
export function encodeBlock(
  layout: BlockLayout,
  k: Float32Array,
  v: Float32Array,
  positions: Uint32Array,
  n: number,
): Uint32Array {
  checkInputs(layout, k, v, positions, n);
  const { headDim, blockSize } = layout;
  const words = new Uint32Array(layout.wordsPerBlock);
  for (let t = 0; t < n; t++) words[layout.positionsOffset + t] = positions[t] ?? 0;
  const count = n * headDim;

  if (layout.format === 'f32') {
    for (let i = 0; i < count; i++) {
      words[layout.kOffset + i] = f32Bits(k[i] ?? 0);
      words[layout.vOffset + i] = f32Bits(v[i] ?? 0);
    }
    return words;
  }
  if (layout.format === 'f16') {
    for (let i = 0; i < count; i += 2) {
      words[layout.kOffset + i / 2] = pack2x16float(k[i] ?? 0, k[i + 1] ?? 0);
      words[layout.vOffset + i / 2] = pack2x16float(v[i] ?? 0, v[i + 1] ?? 0);
    }
    return words;
  }
  if (!isQuantized(layout.format)) throw new InvalidArgumentError('layout.format', `unknown ${layout.format}`);

  const { bits, groupSize: g } = layout;
  // K: per channel, over G consecutive tokens; only filled tokens count towards min/max.
  for (let group = 0; group < blockSize / g; group++) {
    const t0 = group * g;
    const t1 = Math.min(t0 + g, n);
    if (t1 <= t0) continue; // no filled token: parameters and codes stay 0
    for (let c = 0; c < headDim; c++) {
      let lo = Infinity;
      let hi = -Infinity;
      for (let t = t0; t < t1; t++) {
        const x = fround(k[t * headDim + c] ?? 0);
        lo = Math.min(lo, x);
        hi = Math.max(hi, x);
      }
      const p = quantParams(lo, hi, bits);
      words[layout.kParamsOffset + group * headDim + c] = p.word;
      for (let t = t0; t < t1; t++) {
        const code = quantizeCode(k[t * headDim + c] ?? 0, p.scale, p.zero, bits);
        putCode(words, layout.kOffset, t * headDim + c, bits, code);
      }
    }
  }
  // V: per token, over G consecutive channels.
  const groupsPerToken = headDim / g;
  for (let t = 0; t < n; t++) {
    for (let group = 0; group < groupsPerToken; group++) {
      let lo = Infinity;
      let hi = -Infinity;
      for (let c = group * g; c < (group + 1) * g; c++) {
        const x = fround(v[t * headDim + c] ?? 0);
        lo = Math.min(lo, x);
        hi = Math.max(hi, x);
      }
      const p = quantParams(lo, hi, bits);
      words[layout.vParamsOffset + t * groupsPerToken + group] = p.word;
      for (let c = group * g; c < (group + 1) * g; c++) {
        const code = quantizeCode(v[t * headDim + c] ?? 0, p.scale, p.zero, bits);
        putCode(words, layout.vOffset, t * headDim + c, bits, code);
      }
    }
  }
  return words;
}

/**
 * Decodes the first `n` tokens of a block encoded with {@link encodeBlock} (or by a GPU kernel).
 * `words` holds at least `layout.wordsPerBlock` words starting at the block (pass a `subarray` for a pool).
 *
 * @example
 * ```ts
 * const { k, v, positions } = decodeBlock(layout, pool.subarray(b * layout.wordsPerBlock), 16);
 * ```
 */
export function decodeBlock(layout: BlockLayout, words: Uint32Array, n: number): DecodedBlock {
  if (!Number.isInteger(n) || n < 0 || n > layout.blockSize) {
    throw new InvalidArgumentError('n', `must be an integer in [0, ${layout.blockSize}]; got ${n}`);
  }
  if (words.length < layout.wordsPerBlock) {
    throw new InvalidArgumentError('words', `needs ${layout.wordsPerBlock} words; got ${words.length}`);
  }
  const { headDim } = layout;
  const count = n * headDim;
  const k = new Float32Array(count);
  const v = new Float32Array(count);
  const positions = words.slice(layout.positionsOffset, layout.positionsOffset + n);

  if (layout.format === 'f32') {
    for (let i = 0; i < count; i++) {
      k[i] = f32FromBits(words[layout.kOffset + i] ?? 0);
      v[i] = f32FromBits(words[layout.vOffset + i] ?? 0);
    }
    return { k, v, positions };
  }
  if (layout.format === 'f16') {
    for (let i = 0; i < count; i += 2) {
      const [k0, k1] = unpack2x16float(words[layout.kOffset + i / 2] ?? 0);
      const [v0, v1] = unpack2x16float(words[layout.vOffset + i / 2] ?? 0);
      k[i] = k0;
      k[i + 1] = k1;
      v[i] = v0;
      v[i + 1] = v1;
    }
    return { k, v, positions };
  }

  const { bits, groupSize: g } = layout;
  const groupsPerToken = headDim / g;
  for (let t = 0; t < n; t++) {
    for (let c = 0; c < headDim; c++) {
      const i = t * headDim + c;
      const [ks, kz] = unpack2x16float(words[layout.kParamsOffset + Math.floor(t / g) * headDim + c] ?? 0);
      k[i] = dequantizeCode(getCode(words, layout.kOffset, i, bits), ks, kz);
      const [vs, vz] = unpack2x16float(words[layout.vParamsOffset + t * groupsPerToken + Math.floor(c / g)] ?? 0);
      v[i] = dequantizeCode(getCode(words, layout.vOffset, i, bits), vs, vz);
    }
  }
  return { k, v, positions };
}
