import type { PagedKvCacheOptions } from '../cache/cache-options.js';
import { InvalidArgumentError } from '../errors.js';
import type { FullFormat, Bits } from '../format/layout.js';
import type { LlamaConfig } from './checkpoint.js';

/**
 * The attention shape of a model a cache is built for (a {@link LlamaConfig} has it).
 */
export type ModelAttentionShape = Pick<LlamaConfig, 'nLayers' | 'nHeads' | 'nKvHeads' | 'headSize'>;

/**
 * What a cache holds besides the model's shape: its storage bits and sizes. Everything else of
 * {@link PagedKvCacheOptions} (pools, byte limit, statistics) passes through unchanged.
 */
export interface ModelCacheSettings extends Omit<PagedKvCacheOptions, 'shape' | 'nHeads' | 'quantBits' | 'fullFormat'> {
  /** 32: f32 blocks; 16: f16 blocks; 8/4/2: f16 blocks plus a quantized pool of these bits (default 16). */
  readonly bits?: Bits;
  /** Format new tokens land in (default f32 for bits 32, else f16); f32 with bits 8/4/2 quantizes from f32. */
  readonly fullFormat?: FullFormat;
  /** Tokens per block (default 16). */
  readonly blockSize?: number;
}

/**
 * The options of a KV cache (PagedKvCache.create or CpuKvCache.create) for a model: its layers, KV heads, head
 * size and query heads, with the storage the settings ask for. The one place a cache is shaped after a model.
 *
 * @throws InvalidArgumentError for bits other than 32, 16, 8, 4, 2, or bits 32 with an f16 full format.
 * @example
 * ```ts
 * const cache = PagedKvCache.create(gpu, cacheOptionsForModel(checkpoint.config, { bits: 4, seqSlots: 3, maxTokensPerHead: 512 }));
 * ```
 */
export function cacheOptionsForModel(model: ModelAttentionShape, settings: ModelCacheSettings = {}): PagedKvCacheOptions {
  const { bits = 16, fullFormat, blockSize = 16, ...rest } = settings;
  if (![32, 16, 8, 4, 2].includes(bits)) throw new InvalidArgumentError('bits', `must be 32, 16, 8, 4 or 2; got ${String(bits)}`);
  if (bits === 32 && fullFormat === 'f16') {
    throw new InvalidArgumentError('fullFormat', 'bits 32 stores f32 blocks; drop fullFormat or use bits 16');
  }
  return {
    ...rest,
    shape: { layers: model.nLayers, kvHeads: model.nKvHeads, headDim: model.headSize, blockSize },
    nHeads: model.nHeads,
    fullFormat: fullFormat ?? (bits === 32 ? 'f32' : 'f16'),
    ...(bits < 16 ? { quantBits: bits as 8 | 4 | 2 } : {}),
  };
}
