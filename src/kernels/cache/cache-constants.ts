import type { BlockLayout } from '../../format/layout.js';
import type { WgslConstants } from '../../gpu/prelude.js';

/**
 * The compile-time constants of shaders/kv_read.wgsl for a cache with these two block layouts. Every kernel that
 * reads the cache includes them, so its pipeline cache key changes exactly when the layout does.
 *
 * @example
 * ```ts
 * const constants = { ...cacheConstants(full, quant), WORKGROUP_SIZE: { type: 'u32', value: 64 } };
 * ```
 */
export function cacheConstants(full: BlockLayout, quant: BlockLayout | null): WgslConstants {
  const u32 = (value: number) => ({ type: 'u32', value }) as const;
  return {
    HEAD_DIM: u32(full.headDim),
    BLOCK_SIZE: u32(full.blockSize),
    FULL_F16: { type: 'bool', value: full.format === 'f16' },
    FULL_WORDS_PER_BLOCK: u32(full.wordsPerBlock),
    FULL_V_OFFSET: u32(full.vOffset),
    FULL_POS_OFFSET: u32(full.positionsOffset),
    HAS_QUANT: { type: 'bool', value: quant !== null },
    QUANT_BITS: u32(quant?.bits ?? 8),
    QUANT_GROUP: u32(quant?.groupSize ?? 1),
    QUANT_WORDS_PER_BLOCK: u32(quant?.wordsPerBlock ?? 1),
    QUANT_V_OFFSET: u32(quant?.vOffset ?? 0),
    QUANT_KP_OFFSET: u32(quant?.kParamsOffset ?? 0),
    QUANT_VP_OFFSET: u32(quant?.vParamsOffset ?? 0),
    QUANT_POS_OFFSET: u32(quant?.positionsOffset ?? 0),
  };
}
