import { InvalidArgumentError } from '../errors.js';

/**
 * Storage formats of a KV block. `f32` and `f16` are the full formats (f16 packed two per u32 with
 * pack2x16float, since SwiftShader has no shader-f16); `int8`/`int4`/`int2` are KIVI-style quantized:
 * keys per channel (groups of G tokens), values per token (groups of G channels), asymmetric, with an
 * f16 scale and an f16 zero-point packed into one u32 per group.
 */
export type BlockFormat = 'f32' | 'f16' | 'int8' | 'int4' | 'int2';

/**
 * Bit widths a caller may ask for: 32 and 16 store full precision, 8/4/2 quantize.
 */
export type Bits = 32 | 16 | 8 | 4 | 2;

/**
 * Formats that hold full-precision values (where new tokens land).
 *
 * @example
 * ```ts
 * const full: FullFormat = 'f16';
 * const layout = blockLayout(full, { headDim: 128, blockSize: 16 }); // 516 bytes per token per head
 * ```
 */
export type FullFormat = 'f32' | 'f16';

/**
 * Formats that quantize.
 *
 * @example
 * ```ts
 * const quant: QuantFormat = 'int4';
 * const layout = blockLayout(quant, { headDim: 128, blockSize: 16 }); // group size 16, 196 bytes per token per head
 * ```
 */
export type QuantFormat = 'int8' | 'int4' | 'int2';

/**
 * Shape of one model's KV cache.
 *
 * @example
 * ```ts
 * const shape: CacheShape = { layers: 32, kvHeads: 8, headDim: 128, blockSize: 16 };
 * validateShape(shape);
 * ```
 */
export interface CacheShape {
  /** Transformer layers. */
  readonly layers: number;
  /** KV heads per layer (grouped-query attention: fewer than query heads). */
  readonly kvHeads: number;
  /** Channels per head. Must be even (f16 packs two channels per word). */
  readonly headDim: number;
  /** Tokens per block (default 16, as in vLLM). */
  readonly blockSize: number;
}

/**
 * Where each part of one block lives, in u32 words from the block's first word. One block holds the K and V
 * vectors of ONE KV head for up to `blockSize` tokens, plus each token's original position.
 *
 * Full formats: K is [blockSize][headDim] (f32 words, or f16 pairs along the channel axis), V likewise.
 * Quantized formats: K and V codes are [blockSize][headDim] values of `bits` bits packed little-end-first into
 * u32 words (value i of the flattened block sits at bit (i·bits) mod 32 of word ⌊i·bits/32⌋).
 * K parameters are [blockSize/G][headDim] words (per channel, a group = G consecutive tokens); V parameters are
 * [blockSize][headDim/G] words (per token, a group = G consecutive channels); each word is
 * pack2x16float(scale, zero), and a value is reconstructed as code·scale + zero.
 *
 * @example
 * ```ts
 * const layout: BlockLayout = blockLayout('f16', { headDim: 128, blockSize: 16 });
 * layout.vOffset; // 1024: K takes 16 tokens × 64 f16 pairs
 * ```
 */
export interface BlockLayout {
  readonly format: BlockFormat;
  readonly blockSize: number;
  readonly headDim: number;
  /** Quantization group size G (tokens for K, channels for V). Equal to blockSize for full formats. */
  readonly groupSize: number;
  /** Bits per stored value: 32, 16, 8, 4 or 2. */
  readonly bits: Bits;
  readonly kOffset: number;
  readonly vOffset: number;
  /** K scale/zero words (quantized formats only; equals positionsOffset otherwise, zero words long). */
  readonly kParamsOffset: number;
  /** V scale/zero words (quantized formats only). */
  readonly vParamsOffset: number;
  /** Original token positions, one u32 per slot. */
  readonly positionsOffset: number;
  /** Total words of one block. */
  readonly wordsPerBlock: number;
}

/**
 * Bits per value of a format.
 *
 * @example
 * ```ts
 * formatBits('int4'); // 4
 * formatBits('f32');  // 32
 * ```
 */
export function formatBits(format: BlockFormat): Bits {
  switch (format) {
    case 'f32':
      return 32;
    case 'f16':
      return 16;
    case 'int8':
      return 8;
    case 'int4':
      return 4;
    case 'int2':
      return 2;
  }
}

/**
 * The format that stores `bits` bits per value. Throws on anything but 32/16/8/4/2.
 *
 * @example
 * ```ts
 * formatForBits(8); // 'int8'
 * formatForBits(3); // throws InvalidArgumentError: bits: must be one of 32, 16, 8, 4, 2; got 3
 * ```
 */
export function formatForBits(bits: number): BlockFormat {
  switch (bits) {
    case 32:
      return 'f32';
    case 16:
      return 'f16';
    case 8:
      return 'int8';
    case 4:
      return 'int4';
    case 2:
      return 'int2';
    default:
      throw new InvalidArgumentError('bits', `must be one of 32, 16, 8, 4, 2; got ${bits}`);
  }
}

/**
 * True for int8/int4/int2.
 *
 * @example
 * ```ts
 * isQuantized('int2'); // true
 * isQuantized('f16');  // false
 * ```
 */
export function isQuantized(format: BlockFormat): format is QuantFormat {
  return format === 'int8' || format === 'int4' || format === 'int2';
}

function checkPositiveInteger(field: string, value: number): void {
  if (!Number.isInteger(value) || value <= 0) {
    throw new InvalidArgumentError(field, `must be a positive integer; got ${value}`);
  }
}

/**
 * Validates a cache shape: positive integers, even head_dim.
 *
 * @example
 * ```ts
 * validateShape({ layers: 5, kvHeads: 4, headDim: 7, blockSize: 16 }); // throws InvalidArgumentError (headDim must be even)
 * ```
 */
export function validateShape(shape: CacheShape): void {
  checkPositiveInteger('layers', shape.layers);
  checkPositiveInteger('kvHeads', shape.kvHeads);
  checkPositiveInteger('headDim', shape.headDim);
  checkPositiveInteger('blockSize', shape.blockSize);
  if (shape.headDim % 2 !== 0) {
    throw new InvalidArgumentError('headDim', `must be even (f16 packs channel pairs); got ${shape.headDim}`);
  }
}

/**
 * The default quantization group: 32, or the largest power of two dividing both head_dim and the block.
 *
 * @example
 * ```ts
 * defaultGroupSize(128, 16); // 16
 * defaultGroupSize(64, 64);  // 32
 * ```
 */
export function defaultGroupSize(headDim: number, blockSize: number): number {
  let group = 32;
  while (group > 1 && (headDim % group !== 0 || blockSize % group !== 0)) group /= 2;
  return group;
}

/**
 * Computes the word layout of one block.
 *
 * @example
 * ```ts
 * const layout = blockLayout('int4', { headDim: 128, blockSize: 16 }, 16);
 * layout.wordsPerBlock; // K codes 256 + V codes 256 + K params 128 + V params 128 + positions 16
 * ```
 */
export function blockLayout(
  format: BlockFormat,
  shape: Pick<CacheShape, 'headDim' | 'blockSize'>,
  groupSize?: number,
): BlockLayout {
  const { headDim, blockSize } = shape;
  checkPositiveInteger('headDim', headDim);
  checkPositiveInteger('blockSize', blockSize);
  const bits = formatBits(format);
  const values = blockSize * headDim;
  if (!isQuantized(format)) {
    if (format === 'f16' && headDim % 2 !== 0) {
      throw new InvalidArgumentError('headDim', `must be even for f16; got ${headDim}`);
    }
    const codeWords = (values * bits) / 32;
    const kOffset = 0;
    const vOffset = codeWords;
    const positionsOffset = 2 * codeWords;
    return {
      format,
      blockSize,
      headDim,
      groupSize: blockSize,
      bits,
      kOffset,
      vOffset,
      kParamsOffset: positionsOffset,
      vParamsOffset: positionsOffset,
      positionsOffset,
      wordsPerBlock: positionsOffset + blockSize,
    };
  }
  const group = groupSize ?? defaultGroupSize(headDim, blockSize);
  checkPositiveInteger('groupSize', group);
  if (headDim % group !== 0) {
    throw new InvalidArgumentError('groupSize', `must divide head_dim ${headDim}; got ${group}`);
  }
  if (blockSize % group !== 0) {
    throw new InvalidArgumentError('groupSize', `must divide the block size ${blockSize}; got ${group}`);
  }
  if ((values * bits) % 32 !== 0) {
    throw new InvalidArgumentError('blockSize', `blockSize × headDim × bits must fill whole u32 words`);
  }
  const codeWords = (values * bits) / 32;
  const kParamWords = (blockSize / group) * headDim;
  const vParamWords = blockSize * (headDim / group);
  const kOffset = 0;
  const vOffset = codeWords;
  const kParamsOffset = 2 * codeWords;
  const vParamsOffset = kParamsOffset + kParamWords;
  const positionsOffset = vParamsOffset + vParamWords;
  return {
    format,
    blockSize,
    headDim,
    groupSize: group,
    bits,
    kOffset,
    vOffset,
    kParamsOffset,
    vParamsOffset,
    positionsOffset,
    wordsPerBlock: positionsOffset + blockSize,
  };
}

/**
 * Bytes of one block in this layout.
 *
 * @example
 * ```ts
 * bytesPerBlock(blockLayout('f16', { headDim: 128, blockSize: 16 })); // 8256: K 1024 + V 1024 + positions 16 words
 * ```
 */
export function bytesPerBlock(layout: BlockLayout): number {
  return layout.wordsPerBlock * 4;
}

/**
 * Bytes one token costs per KV head when stored in full blocks of this layout (positions and quantization
 * parameters included).
 *
 * @example
 * ```ts
 * bytesPerTokenPerHead(blockLayout('int4', { headDim: 128, blockSize: 16 })); // 196 (f16: 516)
 * ```
 */
export function bytesPerTokenPerHead(layout: BlockLayout): number {
  return bytesPerBlock(layout) / layout.blockSize;
}

/**
 * The baseline every ratio is measured against: an f16 cache of all tokens, K and V, no positions, no padding.
 *
 * @example
 * ```ts
 * baselineF16Bytes({ layers: 5, kvHeads: 4, headDim: 8, blockSize: 16 }, 512); // 5·4·512·2·8·2 = 327,680
 * ```
 */
export function baselineF16Bytes(shape: CacheShape, tokens: number): number {
  return shape.layers * shape.kvHeads * tokens * 2 * shape.headDim * 2;
}

/**
 * A block-table entry: the physical block index, with the top bit set when the block lives in the quantized
 * pool. Index 0 of each pool is the null block and is never handed out.
 *
 * @example
 * ```ts
 * const pool = entry >= QUANT_POOL_BIT ? 'quant' : 'full';
 * ```
 */
export const QUANT_POOL_BIT = 0x8000_0000;

/**
 * Encodes a block-table entry.
 *
 * @example
 * ```ts
 * encodeBlockRef('quant', 12); // 0x8000000c
 * encodeBlockRef('full', 7);   // 7
 * ```
 */
export function encodeBlockRef(pool: 'full' | 'quant', block: number): number {
  return (pool === 'quant' ? QUANT_POOL_BIT : 0) + block;
}

/**
 * Decodes a block-table entry.
 *
 * @example
 * ```ts
 * decodeBlockRef(0x8000_000c); // { pool: 'quant', block: 12 }
 * decodeBlockRef(7);           // { pool: 'full', block: 7 }
 * ```
 */
export function decodeBlockRef(entry: number): { pool: 'full' | 'quant'; block: number } {
  return entry >= QUANT_POOL_BIT
    ? { pool: 'quant', block: entry - QUANT_POOL_BIT }
    : { pool: 'full', block: entry };
}
