import { OutOfBlocksError } from '../errors.js';
import { decodeBlockRef } from '../format/layout.js';
import type { AppendPlan, CacheMetadata, PoolName } from './cache-metadata.js';

/**
 * Grows a pool's storage by `blocks` blocks: the engine's half of growth (a bigger GPU buffer, or bigger arrays),
 * after which the metadata holds the new count. Both engines pass one to the planners below, which decide how much.
 */
export type GrowPool = (pool: PoolName, blocks: number) => void;

/**
 * Blocks to add to `pool` so that `needed` blocks are free: nothing when they already are, else at least half the
 * pool's size (amortised growth: a long sequence appended token by token grows O(log n) times) and never past the
 * byte budget. Null when even the whole budget cannot hold them. The one growth rule of both engines.
 *
 * @example
 * ```ts
 * const blocks = growthFor(meta, 'full', 12);
 * if (blocks) storage.growPool('full', blocks);
 * ```
 */
export function growthFor(meta: CacheMetadata, pool: PoolName, needed: number, keepBytes = 0): number | null {
  const short = needed - meta.pool(pool).numFree;
  if (short <= 0) return 0;
  const per = meta.bytesPerBlock(pool);
  const growable = per === 0 ? 0 : Math.max(0, Math.floor((meta.maxBytes - keepBytes - meta.bytesAllocated) / per));
  if (growable < short) return null;
  return Math.min(growable, Math.max(short, Math.ceil(meta.pool(pool).numBlocks / 2)));
}

/**
 * Ensures `needed` free blocks in `pool` by the rule of {@link growthFor}, leaving `keepBytes` of the budget
 * unallocated; false when the budget cannot.
 */
export function ensureFreeBlocks(meta: CacheMetadata, pool: PoolName, needed: number, grow: GrowPool, keepBytes = 0): boolean {
  const blocks = growthFor(meta, pool, needed, keepBytes);
  if (blocks === null) return false;
  if (blocks > 0) grow(pool, blocks);
  return true;
}

/**
 * Full blocks an append of `numTokens` to a sequence may allocate: the blocks each head grows by, plus one per head
 * for a copy-on-write of a shared partly filled last block.
 */
export function appendBlocksNeeded(meta: CacheMetadata, seqId: number, numTokens: number): number {
  const { layers, kvHeads, blockSize } = meta.shape;
  let needed = 0;
  for (let layer = 0; layer < layers; layer++) {
    for (let head = 0; head < kvHeads; head++) {
      const count = meta.tokenCount(seqId, layer, head);
      const blocks = meta.tables.numEntries(meta.rowOf(seqId, layer, head));
      needed += Math.max(0, Math.ceil((count + numTokens) / blockSize) - blocks) + 1;
    }
  }
  return needed;
}

/**
 * `meta.planAppend`, growing the full pool by the shared rule when it is short. All or nothing: OutOfBlocksError
 * (naming the full pool) with the metadata exactly as before when even the byte budget cannot hold the tokens.
 *
 * @example
 * ```ts
 * const plan = planAppendWithGrowth(meta, seq, 16, (pool, blocks) => storage.growPool(pool, blocks));
 * ```
 */
export function planAppendWithGrowth(meta: CacheMetadata, seqId: number, numTokens: number, grow: GrowPool): AppendPlan {
  const before = meta.snapshot();
  let plan = meta.planAppend(seqId, numTokens);
  const needed = plan === null ? appendBlocksNeeded(meta, seqId, numTokens) : 0;
  // Appends never grow into the reserve's bytes (a compaction may spend them on either pool) and leave the reserve
  // free or growable, so compressing can always release before allocating.
  const reserveBytes = meta.compactionReserve * meta.bytesPerBlock('full');
  if (plan === null && ensureFreeBlocks(meta, 'full', needed, grow, reserveBytes)) plan = meta.planAppend(seqId, numTokens);
  if (plan !== null && meta.fullPool.numFree + meta.growableBlocks('full') >= meta.compactionReserve) return plan;
  meta.restore(before);
  const reserve = meta.compactionReserve > 0 ? ` (${meta.compactionReserve} kept free for compression)` : '';
  throw new OutOfBlocksError('full', Math.max(needed, 1) + meta.compactionReserve, meta.fullPool.numFree, `compress or free a sequence, or raise maxBytes${reserve}`);
}

/** True when any head of the sequence holds a quantized block. */
export function holdsQuantizedBlocks(meta: CacheMetadata, seqId: number): boolean {
  const { layers, kvHeads } = meta.shape;
  for (let layer = 0; layer < layers; layer++) {
    for (let head = 0; head < kvHeads; head++) {
      const entries = meta.tables.entryView(meta.rowOf(seqId, layer, head));
      for (let i = 0; i < entries.length; i++) if (decodeBlockRef(entries[i] ?? 0).pool === 'quant') return true;
    }
  }
  return false;
}
