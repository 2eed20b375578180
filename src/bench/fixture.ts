// Paged caches for benchmarks, built straight from random words. test/helpers/paged-fixture.ts runs the reference
// codec per block so results can be checked; a benchmark only needs the right layout and sane values, and the
// codec would take minutes at 64K tokens × 4 layers × 8 heads.
import {
  type BlockLayout,
  blockLayout,
  bytesPerBlock,
  encodeBlockRef,
  type FullFormat,
  type QuantFormat,
} from '../format/layout.js';
import { InvalidArgumentError } from '../errors.js';
import { checkBufferSize } from '../gpu/buffer-pool.js';
import { createStorageBuffer } from '../gpu/buffers.js';
import type { GpuContext } from '../gpu/context.js';
import type { PagedCacheBindings } from '../kernels/cache/paged-attention.js';

/**
 * Shape and formats of a benchmark cache: every head of every layer holds `context` tokens of slot 0.
 */
export interface BenchCacheOptions {
  readonly layers: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly blockSize: number;
  /** Tokens per head. */
  readonly context: number;
  readonly full: FullFormat;
  /** Quantized format of the older blocks; null or absent: every block is full. */
  readonly quant?: QuantFormat | null;
  /**
   * Tokens at the end of each head that stay in full blocks (KIVI's residual window), default 128. The
   * quantized blocks are the whole blocks before it, as the cache keeps them: quantized first, full after.
   */
  readonly recent?: number;
  readonly seed?: number;
}

/**
 * Block counts and bytes of a benchmark cache, computed without a GPU.
 *
 * @example
 * ```ts
 * const { quantBlocksPerHead, fullBlocksPerHead } = benchCacheSize(options); // 248 and 8 at 4K tokens, int4 + 128 f16
 * ```
 */
export interface BenchCacheSize {
  readonly full: BlockLayout;
  readonly quant: BlockLayout | null;
  /** Blocks per head in the quantized and the full pool. */
  readonly quantBlocksPerHead: number;
  readonly fullBlocksPerHead: number;
  readonly maxBlocksPerHead: number;
  /** Bytes of one layer's blocks (K, V, quantization parameters, positions). */
  readonly blockBytesPerLayer: number;
  /** Bytes of one layer's block table and context lengths. */
  readonly tableBytesPerLayer: number;
}

/**
 * Block counts and byte sizes of the cache {@link buildBenchCache} would build.
 *
 * @example
 * ```ts
 * benchCacheSize({ layers: 1, kvHeads: 8, headDim: 128, blockSize: 16, context: 4096, full: 'f16', quant: 'int4' });
 * // { quantBlocksPerHead: 248, fullBlocksPerHead: 8, ... }
 * ```
 */
export function benchCacheSize(options: BenchCacheOptions): BenchCacheSize {
  const { kvHeads, headDim, blockSize, context } = options;
  if (!Number.isInteger(context) || context <= 0) {
    throw new InvalidArgumentError('context', `must be a positive integer; got ${context}`);
  }
  const full = blockLayout(options.full, { headDim, blockSize });
  const quant = options.quant ? blockLayout(options.quant, { headDim, blockSize }) : null;
  const blocksPerHead = Math.ceil(context / blockSize);
  const window = options.recent ?? 128;
  const quantBlocksPerHead = quant ? Math.max(0, Math.floor((context - window) / blockSize)) : 0;
  const fullBlocksPerHead = blocksPerHead - quantBlocksPerHead;
  return {
    full,
    quant,
    quantBlocksPerHead,
    fullBlocksPerHead,
    maxBlocksPerHead: blocksPerHead,
    blockBytesPerLayer:
      kvHeads * (fullBlocksPerHead * bytesPerBlock(full) + (quant ? quantBlocksPerHead * bytesPerBlock(quant) : 0)),
    tableBytesPerLayer: kvHeads * (blocksPerHead + 1) * 4,
  };
}

/**
 * A paged cache on the GPU with random contents in the right layout.
 *
 * @example
 * ```ts
 * const cache: BenchCache = buildBenchCache(gpu, options);
 * attention.encode(encoder, { cache: cache.bindings, layer: 0, numQueries: 1, queries, querySlots, queryPositions, out, probs, probsStride: 4096 });
 * cache.destroy();
 * ```
 */
export interface BenchCache extends BenchCacheSize {
  readonly bindings: PagedCacheBindings;
  destroy(): void;
}

/** xorshift32: fast enough to fill hundreds of MB, and reproducible. */
function xorshift(seed: number): () => number {
  let state = seed >>> 0 || 0x9e3779b9;
  return () => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state;
  };
}

// Masks that keep random words finite and small: a cleared exponent MSB means |x| < 1 (f16 halves) or < 0.5
// (f32), and never NaN or Inf, which would change the kernels' control flow (a 0 probability skips a token).
const F16_PAIR_MASK = 0xbbff_bbff;
const F32_MASK = 0xbeff_ffff;
/** pack2x16float(scale, zero): scale in [0, 1), zero in (−1, 1). */
const PARAM_MASK = 0xbbff_3bff;

function shuffled(count: number, next: () => number): Uint32Array {
  const order = Uint32Array.from({ length: count }, (_, i) => i + 1);
  for (let i = count - 1; i > 0; i--) {
    const j = next() % (i + 1);
    const a = order[i] ?? 0;
    order[i] = order[j] ?? 0;
    order[j] = a;
  }
  return order;
}

function createMappedStorage(gpu: GpuContext, label: string, words: number): { buffer: GPUBuffer; data: Uint32Array } {
  const size = Math.max(4, words * 4);
  checkBufferSize(gpu.limits, size, true);
  const buffer = gpu.device.createBuffer({
    label,
    size,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    mappedAtCreation: true,
  });
  return { buffer, data: new Uint32Array(buffer.getMappedRange()) };
}

/**
 * Builds a paged cache of random words for benchmarks: all layers and KV heads of sequence slot 0 hold `context`
 * tokens at positions 0..context−1; older whole blocks are quantized when `quant` is set; blocks are scattered
 * over the pools in shuffled order, as a cache that has been running a while would have them.
 *
 * @example
 * ```ts
 * const cache = buildBenchCache(gpu, { layers: 1, kvHeads: 8, headDim: 128, blockSize: 16, context: 4096, full: 'f16', quant: 'int4' });
 * attention.encode(encoder, { cache: cache.bindings, layer: 0, ... });
 * cache.destroy();
 * ```
 */
export function buildBenchCache(gpu: GpuContext, options: BenchCacheOptions): BenchCache {
  const size = benchCacheSize(options);
  const { full, quant, quantBlocksPerHead, fullBlocksPerHead, maxBlocksPerHead } = size;
  const { layers, kvHeads, blockSize, context } = options;
  const next = xorshift(options.seed ?? 1);
  const rows = layers * kvHeads;
  const fullOrder = shuffled(rows * fullBlocksPerHead, next);
  const quantOrder = shuffled(rows * quantBlocksPerHead, next);
  const table = new Uint32Array(rows * maxBlocksPerHead);
  const contextLens = new Uint32Array(rows).fill(context);
  const fullPool = createMappedStorage(gpu, 'bench:full-pool', (1 + fullOrder.length) * full.wordsPerBlock);
  const quantPool = createMappedStorage(gpu, 'bench:quant-pool', quant ? (1 + quantOrder.length) * quant.wordsPerBlock : 1);
  const fill = (data: Uint32Array, from: number, to: number, mask: number) => {
    for (let i = from; i < to; i++) data[i] = next() & mask;
  };
  try {
    for (let row = 0; row < rows; row++) {
      for (let b = 0; b < maxBlocksPerHead; b++) {
        const isQuant = b < quantBlocksPerHead;
        const layout = isQuant && quant ? quant : full;
        const physical = isQuant
          ? (quantOrder[row * quantBlocksPerHead + b] ?? 0)
          : (fullOrder[row * fullBlocksPerHead + (b - quantBlocksPerHead)] ?? 0);
        table[row * maxBlocksPerHead + b] = encodeBlockRef(isQuant ? 'quant' : 'full', physical);
        const data = isQuant ? quantPool.data : fullPool.data;
        const base = physical * layout.wordsPerBlock;
        if (isQuant) {
          fill(data, base, base + layout.kParamsOffset, 0xffff_ffff);
          fill(data, base + layout.kParamsOffset, base + layout.positionsOffset, PARAM_MASK);
        } else {
          fill(data, base, base + layout.positionsOffset, layout.format === 'f16' ? F16_PAIR_MASK : F32_MASK);
        }
        for (let s = 0; s < blockSize; s++) data[base + layout.positionsOffset + s] = b * blockSize + s;
      }
    }
  } finally {
    fullPool.buffer.unmap();
    quantPool.buffer.unmap();
  }
  const bindings: PagedCacheBindings = {
    blockTable: createStorageBuffer(gpu, 'bench:block-table', table),
    contextLens: createStorageBuffer(gpu, 'bench:context-lens', contextLens),
    fullPool: fullPool.buffer,
    quantPool: quantPool.buffer,
    seqSlots: 1,
    maxBlocksPerHead,
  };
  return {
    ...size,
    bindings,
    destroy() {
      for (const b of [bindings.blockTable, bindings.contextLens, bindings.fullPool, bindings.quantPool]) b.destroy();
    },
  };
}

/**
 * Random f32 values in (−1, 1), for queries and new K/V in benchmarks.
 *
 * @example
 * ```ts
 * const queries = createStorageBuffer(gpu, 'q', randomFloats(32 * 128, 7));
 * ```
 */
export function randomFloats(count: number, seed: number): Float32Array {
  const next = xorshift(seed);
  return Float32Array.from({ length: count }, () => next() / 0x8000_0000 - 1);
}
