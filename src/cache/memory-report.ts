import type { CacheMetadata, SlotUsage, UtilisationReport } from './cache-metadata.js';
import { baselineF16Bytes, decodeBlockRef } from '../format/layout.js';

/**
 * Memory of a cache, by the numbers.
 *
 * @example
 * ```ts
 * const { poolBytes, usedBytes, full }: CacheMemoryReport = memoryReport(cache.meta);
 * console.log(`${usedBytes} of ${poolBytes} B in use; ${full.free} full blocks free`);
 * ```
 */
export interface CacheMemoryReport {
  /** Bytes of both pools (allocated, free blocks included). */
  readonly poolBytes: number;
  /** Bytes of the blocks in use. */
  readonly usedBytes: number;
  /** Blocks in use / free, per pool. */
  readonly full: { used: number; free: number; bytesPerBlock: number };
  readonly quant: { used: number; free: number; bytesPerBlock: number };
}

/**
 * Pool bytes and block counts of a cache now; the GPU and the CPU cache share their metadata, so one function
 * serves both.
 *
 * @example
 * ```ts
 * memoryReport(cache.meta).usedBytes;
 * ```
 */
export function memoryReport(meta: CacheMetadata): CacheMemoryReport {
  const full = meta.poolUsage('full');
  const quant = meta.poolUsage('quant');
  return {
    poolBytes: full.bytes + quant.bytes,
    usedBytes: full.used * full.bytesPerBlock + quant.used * quant.bytesPerBlock,
    full: { used: full.used, free: full.free, bytesPerBlock: full.bytesPerBlock },
    quant: { used: quant.used, free: quant.free, bytesPerBlock: quant.bytesPerBlock },
  };
}

/**
 * Bytes of the blocks one sequence holds (shared blocks counted in full), its f16 all-token baseline and length.
 *
 * @example
 * ```ts
 * const { bytes, baselineF16 } = sequenceBytes(cache.meta, seq); // ratio = baselineF16 / bytes
 * ```
 */
export function sequenceBytes(meta: CacheMetadata, seqId: number): { bytes: number; baselineF16: number; tokens: number } {
  const full = meta.bytesPerBlock('full');
  const quant = meta.bytesPerBlock('quant');
  let bytes = 0;
  for (let layer = 0; layer < meta.shape.layers; layer++) {
    for (let head = 0; head < meta.shape.kvHeads; head++) {
      const entries = meta.tables.entryView(meta.rowOf(seqId, layer, head));
      for (let i = 0; i < entries.length; i++) bytes += decodeBlockRef(entries[i] ?? 0).pool === 'quant' ? quant : full;
    }
  }
  const tokens = meta.sequenceLength(seqId);
  return { bytes, baselineF16: baselineF16Bytes(meta.shape, tokens), tokens };
}

/**
 * Internal fragmentation of the pools (every layer's, summed): filled slots over allocated slots of the used blocks. A block's filled slots are
 * the most any referencing head fills, so blocks shared by forks count once.
 */
export function utilisationReport(meta: CacheMetadata): UtilisationReport {
  const { blockSize } = meta.shape;
  const filled = { full: new Map<number, number>(), quant: new Map<number, number>() };
  let logicalTokens = 0;
  for (const id of meta.sequenceIds()) {
    const slot = meta.slotOf(id);
    for (let layer = 0; layer < meta.shape.layers; layer++) {
      for (let head = 0; head < meta.shape.kvHeads; head++) {
        const row = meta.tables.row(slot, layer, head);
        const count = meta.tables.tokenCount(row);
        logicalTokens += count;
        const entries = meta.tables.entryView(row);
        for (let i = 0; i < entries.length; i++) {
          const { pool, block } = decodeBlockRef(entries[i] ?? 0);
          const inBlock = Math.min(blockSize, count - i * blockSize);
          const map = filled[pool];
          // Block ids are local to a layer's pool: the key names both.
          const key = layer * 0x8000_0000 + block;
          map.set(key, Math.max(map.get(key) ?? 0, inBlock));
        }
      }
    }
  }
  const usage = (blocks: number, used: number): SlotUsage => {
    const slotsAllocated = blocks * blockSize;
    return { blocks, slotsAllocated, slotsUsed: used, waste: slotsAllocated === 0 ? 0 : 1 - used / slotsAllocated };
  };
  const sum = (m: Map<number, number>): number => {
    let s = 0;
    for (const v of m.values()) s += v;
    return s;
  };
  const full = usage(meta.poolUsage('full').used, sum(filled.full));
  const quant = usage(meta.poolUsage('quant').used, sum(filled.quant));
  return { full, quant, total: usage(full.blocks + quant.blocks, full.slotsUsed + quant.slotsUsed), logicalTokens };
}
