// What the Generator reports about its compressed sequence, read from the cache.
import type { PagedKvCache } from '../engine/paged-kv-cache.js';
import { decodeBlockRef } from '../format/layout.js';
import type { CacheMemoryReport } from '../cache/memory-report.js';

/** The sequence of a Generator's cache that holds the compressed context. */
export const SEQ_COMPRESSED = 1;

/**
 * Memory of the generating sequence at one moment.
 *
 * @example
 * ```ts
 * console.log(`${memory.ratio.toFixed(2)}× smaller than f16`);
 * ```
 */
export interface GenerationMemory {
  /** Tokens appended so far (prompt + generated, minus the last sampled one, which is not cached yet). */
  readonly tokens: number;
  /** An f16 cache of every token: the baseline. */
  readonly bytesFull: number;
  /** Bytes of the blocks the sequence holds. */
  readonly bytesCompressed: number;
  /** bytesFull / bytesCompressed. */
  readonly ratio: number;
  /** Both pools, all sequences (the full-cache comparison included). */
  readonly pool: CacheMemoryReport;
}

/**
 * The blocks one (layer, KV head) holds.
 *
 * @example
 * ```ts
 * const head: HeadBlocks = { quant: 1, full: 2, tokens: 40 };
 * ```
 */
export interface HeadBlocks {
  readonly quant: number;
  readonly full: number;
  readonly tokens: number;
}

/** Memory of the compressed sequence: its bytes against an f16 cache of every token, and both pools. */
export function memoryOf(cache: PagedKvCache): GenerationMemory {
  const { bytes, baselineF16, tokens } = cache.sequenceBytes(SEQ_COMPRESSED);
  return {
    tokens,
    bytesFull: baselineF16,
    bytesCompressed: bytes,
    ratio: bytes > 0 ? baselineF16 / bytes : 1,
    pool: cache.memory(),
  };
}

/** Tokens each (layer, KV head) of the compressed sequence holds. */
export function keptPerHead(cache: PagedKvCache): number[][] {
  const { layers, kvHeads } = cache.shape;
  return Array.from({ length: layers }, (_, l) =>
    Array.from({ length: kvHeads }, (_, h) => cache.tokenCount(SEQ_COMPRESSED, l, h)),
  );
}

/** Quantized and full blocks each (layer, KV head) of the compressed sequence holds. */
export function headBlocksOf(cache: PagedKvCache): HeadBlocks[][] {
  const { layers, kvHeads } = cache.shape;
  return Array.from({ length: layers }, (_, l) =>
    Array.from({ length: kvHeads }, (_, h) => {
      let quant = 0;
      let full = 0;
      for (const entry of cache.meta.headBlocks(SEQ_COMPRESSED, l, h)) {
        if (decodeBlockRef(entry).pool === 'quant') quant++;
        else full++;
      }
      return { quant, full, tokens: cache.tokenCount(SEQ_COMPRESSED, l, h) };
    }),
  );
}
