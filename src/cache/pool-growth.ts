import { OutOfBlocksError } from '../errors.js';
import { decodeBlockRef } from '../format/layout.js';
import type { AppendPlan, CacheMetadata, PoolName } from './cache-metadata.js';

/**
 * Grows one layer's pool storage by `blocks` blocks: the engine's half of growth (a bigger GPU buffer, or bigger
 * arrays), after which the metadata holds the new count. Both engines pass one to the planners below, which decide
 * how much.
 */
export type GrowPool = (pool: PoolName, layer: number, blocks: number) => void;

/**
 * Blocks to add to one layer's `pool` so that `needed` blocks are free: nothing when they already are, else at least
 * half that pool's size (amortised growth: a long sequence appended token by token grows O(log n) times) and never
 * past the byte budget or the per-pool cap. Null when even those cannot hold them. The one growth rule of both engines.
 *
 * @example
 * ```ts
 * const blocks = growthFor(meta, 'full', 0, 12);
 * if (blocks) storage.growPool('full', 0, blocks);
 * ```
 */
export function growthFor(meta: CacheMetadata, pool: PoolName, layer: number, needed: number, keepBytes = 0): number | null {
  const allocator = meta.pool(pool, layer);
  const short = needed - allocator.numFree;
  if (short <= 0) return 0;
  const growable = meta.growableBlocks(pool, layer, keepBytes);
  if (growable < short) return null;
  return Math.min(growable, Math.max(short, Math.ceil(allocator.numBlocks / 2)));
}

/**
 * Ensures `needed` free blocks in one layer's `pool` by the rule of {@link growthFor}, leaving `keepBytes` of the
 * budget unallocated; false when the budget cannot.
 */
export function ensureFreeBlocks(meta: CacheMetadata, pool: PoolName, layer: number, needed: number, grow: GrowPool, keepBytes = 0): boolean {
  const blocks = growthFor(meta, pool, layer, needed, keepBytes);
  if (blocks === null) return false;
  if (blocks > 0) grow(pool, layer, blocks);
  return true;
}

/**
 * Full blocks an append of `numTokens` to a sequence may allocate in each layer (index = layer): the blocks each
 * head grows by, plus one per head for a copy-on-write of a shared partly filled last block.
 */
export function appendBlocksNeeded(meta: CacheMetadata, seqId: number, numTokens: number): number[] {
  const { layers, kvHeads, blockSize } = meta.shape;
  const needed = new Array<number>(layers).fill(0);
  for (let layer = 0; layer < layers; layer++) {
    for (let head = 0; head < kvHeads; head++) {
      const count = meta.tokenCount(seqId, layer, head);
      const blocks = meta.tables.numEntries(meta.rowOf(seqId, layer, head));
      needed[layer] = (needed[layer] ?? 0) + Math.max(0, Math.ceil((count + numTokens) / blockSize) - blocks) + 1;
    }
  }
  return needed;
}

/**
 * `meta.planAppend`, growing each layer's full pool by the shared rule when it is short. All or nothing:
 * OutOfBlocksError (naming the full pool) with the metadata exactly as before when even the byte budget cannot hold
 * the tokens.
 *
 * @example
 * ```ts
 * const plan = planAppendWithGrowth(meta, seq, 16, (pool, layer, blocks) => storage.growPool(pool, layer, blocks));
 * ```
 */
export function planAppendWithGrowth(meta: CacheMetadata, seqId: number, numTokens: number, grow: GrowPool): AppendPlan {
  const before = meta.snapshot();
  let plan = meta.planAppend(seqId, numTokens);
  const needed = plan === null ? appendBlocksNeeded(meta, seqId, numTokens) : [];
  // Appends never grow into the reserve's bytes (a compaction may spend them on either pool) and leave the reserve
  // free or growable in every layer, so compressing can always release before allocating.
  const reserveBytes = meta.compactionReserve * meta.bytesPerBlock('full');
  if (plan === null && needed.every((n, layer) => ensureFreeBlocks(meta, 'full', layer, n, grow, reserveBytes))) plan = meta.planAppend(seqId, numTokens);
  const short = shortestLayer(meta);
  if (plan !== null && short.free + meta.growableBlocks('full', short.layer) >= meta.compactionReserve) return plan;
  meta.restore(before);
  const reserve = meta.compactionReserve > 0 ? ` (${meta.compactionReserve} kept free for compression)` : '';
  const most = Math.max(1, ...needed);
  throw new OutOfBlocksError('full', most + meta.compactionReserve, shortestLayer(meta).free, `compress or free a sequence, or raise maxBytes${reserve}`);
}

/** The layer whose full pool has the fewest blocks free or growable, and its free count. */
function shortestLayer(meta: CacheMetadata): { layer: number; free: number } {
  let best = { layer: 0, free: Number.POSITIVE_INFINITY, room: Number.POSITIVE_INFINITY };
  for (let layer = 0; layer < meta.shape.layers; layer++) {
    const free = meta.pool('full', layer).numFree;
    const room = free + meta.growableBlocks('full', layer);
    if (room < best.room) best = { layer, free, room };
  }
  return { layer: best.layer, free: best.free };
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
