import { InvalidArgumentError } from '../errors.js';
import type { CacheMetadataOptions } from './cache-metadata.js';
import { type CacheShape, type FullFormat, formatForBits, isQuantized } from '../format/layout.js';

/**
 * Options of {@link PagedKvCache.create}.
 *
 * @example
 * ```ts
 * const options: PagedKvCacheOptions = { shape: { layers: 32, kvHeads: 8, headDim: 128 }, nHeads: 32, quantBits: 4, maxBytes: 1 << 30 };
 * const cache = PagedKvCache.create(gpu, options);
 * ```
 */
export interface PagedKvCacheOptions {
  /** Layers, KV heads, head_dim, block size (tokens per block, default 16). */
  readonly shape: Omit<CacheShape, 'blockSize'> & { readonly blockSize?: number };
  /** Query heads (a multiple of kvHeads: grouped-query attention). */
  readonly nHeads: number;
  /** Where new tokens land: 'f32' or 'f16' (default 'f16'). */
  readonly fullFormat?: FullFormat;
  /** Bits of the quantized pool (8, 4 or 2); without it the cache never quantizes. */
  readonly quantBits?: 8 | 4 | 2;
  /** Quantization group size G (must divide head_dim and the block size). */
  readonly groupSize?: number;
  /** Sequences live at once (default 8). */
  readonly seqSlots?: number;
  /** The most tokens one (sequence, layer, KV head) may hold (default 4096). */
  readonly maxTokensPerHead?: number;
  /** Byte budget of both pools together (default 256 MiB). Pools grow on demand up to it, never past it. */
  readonly maxBytes?: number;
  /**
   * Bytes one layer's pool may hold (each layer has its own buffers). Default and ceiling: the device's
   * min(maxStorageBufferBindingSize, maxBufferSize); a lower value caps growth earlier (tests use it to stand in
   * for a small binding limit).
   */
  readonly maxPoolBytes?: number;
  /**
   * Full blocks to start with, all layers together (default: enough for one sequence of 256 tokens); each layer's
   * pool starts with ⌈initialFullBlocks / layers⌉.
   */
  readonly initialFullBlocks?: number;
  /** Quantized blocks to start with, all layers together (default: as many as full blocks when quantBits is set). */
  readonly initialQuantBlocks?: number;
  /**
   * Full blocks' worth of the byte budget, PER LAYER (each layer has its own pools, and the blocks a layer frees
   * stay in it), that appends never grow into and always leave free or growable in every layer, so that
   * compression fits (default min(16, maxTokensPerHead / blockSize)): compressing a sequence to at most
   * `compactionReserve × blockSize` tokens per head succeeds even with the pools at `maxBytes`, releasing each
   * head's old blocks before the next head allocates; a quantizing compression may spend the reserve's bytes on
   * quantized blocks. Its cost: appends fail that many blocks earlier. 0 turns it off.
   */
  readonly compactionReserve?: number;
  /** Queries kept per (layer, sequence) for SnapKV-style scoring (default 32). */
  readonly observationWindow?: number;
  /**
   * Accumulate per-token attention statistics (H2O, KV-Compress) on every attention step (default true; the
   * extra kernel reads the probabilities the attention already wrote).
   */
  readonly accumulateStats?: boolean;
  /**
   * The GPU engine's attention kernel for model steps: 'auto' (default) takes the split-context kernel where the
   * block layouts and the device allow it, 'one-pass' always the one-pass kernel (the kernel before split-context;
   * both fit Chrome's 10 storage buffers per stage). The CPU engine ignores it.
   */
  readonly attentionKernel?: 'auto' | 'one-pass';
}

/**
 * Options after validation: the metadata's options and what the cache itself keeps.
 *
 * @example
 * ```ts
 * const { metadata, nHeads, observationWindow } = resolveCacheOptions(options);
 * ```
 */
export interface ResolvedCacheOptions {
  readonly metadata: CacheMetadataOptions;
  readonly nHeads: number;
  readonly observationWindow: number;
}

/**
 * Validates cache options and fills in the defaults before any buffer exists; the GPU and the CPU cache share it,
 * so both accept and reject exactly the same options.
 *
 * @example
 * ```ts
 * const { metadata } = resolveCacheOptions({ shape: { layers: 5, kvHeads: 4, headDim: 8 }, nHeads: 8, quantBits: 4 });
 * metadata.maxBlocksPerHead; // 256 (4096 tokens / 16)
 * ```
 */
export function resolveCacheOptions(options: PagedKvCacheOptions): ResolvedCacheOptions {
  const blockSize = options.shape.blockSize ?? 16;
  const shape: CacheShape = {
    layers: options.shape.layers,
    kvHeads: options.shape.kvHeads,
    headDim: options.shape.headDim,
    blockSize,
  };
  if (!Number.isInteger(options.nHeads) || options.nHeads <= 0 || options.nHeads % shape.kvHeads !== 0) {
    throw new InvalidArgumentError('nHeads', `must be a positive multiple of kvHeads ${shape.kvHeads}; got ${options.nHeads}`);
  }
  const maxTokensPerHead = options.maxTokensPerHead ?? 4096;
  if (!Number.isInteger(maxTokensPerHead) || maxTokensPerHead <= 0) {
    throw new InvalidArgumentError('maxTokensPerHead', `must be a positive integer; got ${maxTokensPerHead}`);
  }
  const quantFormat = options.quantBits === undefined ? undefined : formatForBits(options.quantBits);
  if (quantFormat !== undefined && !isQuantized(quantFormat)) {
    throw new InvalidArgumentError('quantBits', `must be 8, 4 or 2; got ${options.quantBits}`);
  }
  const observationWindow = options.observationWindow ?? 32;
  if (!Number.isInteger(observationWindow) || observationWindow <= 0) {
    throw new InvalidArgumentError('observationWindow', `must be a positive integer; got ${observationWindow}`);
  }
  // The options count blocks over all layers; the metadata per layer (each layer has its own pools).
  const perLayer = (blocks: number): number => (Number.isSafeInteger(blocks) && blocks >= 0 && shape.layers > 0 ? Math.ceil(blocks / shape.layers) : blocks);
  const initialFullBlocks = perLayer(options.initialFullBlocks ?? shape.layers * shape.kvHeads * Math.ceil(256 / blockSize));
  return {
    metadata: {
      shape,
      fullFormat: options.fullFormat ?? 'f16',
      ...(quantFormat ? { quantFormat } : {}),
      ...(options.groupSize !== undefined ? { groupSize: options.groupSize } : {}),
      initialFullBlocks,
      initialQuantBlocks: quantFormat ? (options.initialQuantBlocks === undefined ? initialFullBlocks : perLayer(options.initialQuantBlocks)) : 0,
      maxBytes: options.maxBytes ?? 256 * 1024 * 1024,
      ...(options.maxPoolBytes !== undefined ? { maxPoolBytes: options.maxPoolBytes } : {}),
      seqSlots: options.seqSlots ?? 8,
      maxBlocksPerHead: Math.ceil(maxTokensPerHead / blockSize),
      compactionReserve: options.compactionReserve ?? Math.min(16, Math.ceil(maxTokensPerHead / blockSize)),
    },
    nHeads: options.nHeads,
    observationWindow,
  };
}
