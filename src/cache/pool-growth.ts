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
 * Ensures `needed[layer]` free blocks in every layer's `pool` at once. Each short layer grows by the rule of
 * {@link growthFor}; when the budget (less `keepBytes`) cannot give every short layer that much, what is left after
 * each layer's shortfall is shared evenly among them, so that no layer's amortised growth starves another's (an
 * append needs room in every layer). `exact` grows each layer by its shortfall alone. False, with nothing grown,
 * when the budget cannot cover the shortfalls.
 *
 * @example
 * ```ts
 * ensureFreeBlocksPerLayer(meta, 'full', [9, 9], (pool, layer, blocks) => storage.growPool(pool, layer, blocks));
 * ```
 */
export function ensureFreeBlocksPerLayer(meta: CacheMetadata, pool: PoolName, needed: readonly number[], grow: GrowPool, keepBytes = 0, exact = false): boolean {
  const shorts = needed.map((n, layer) => Math.max(0, n - meta.pool(pool, layer).numFree));
  const totalShort = shorts.reduce((a, b) => a + b, 0);
  if (totalShort === 0) return true;
  if (shorts.some((short, layer) => short > meta.growableBlocks(pool, layer, keepBytes))) return false;
  const budget = meta.growableBlocks(pool, undefined, keepBytes);
  if (totalShort > budget) return false;
  // Exact growth (a compaction: the blocks it releases stay in their layer) leaves the rest to the other layers.
  const wants = shorts.map((short, layer) => (short === 0 || exact ? short : (growthFor(meta, pool, layer, needed[layer] ?? 0, keepBytes) ?? short)));
  const shortLayers = shorts.filter((short) => short > 0).length;
  const share = Math.floor((budget - totalShort) / shortLayers);
  const fits = wants.reduce((a, b) => a + b, 0) <= budget;
  shorts.forEach((short, layer) => {
    if (short === 0) return;
    const blocks = fits ? (wants[layer] ?? short) : Math.min(wants[layer] ?? short, short + share);
    grow(pool, layer, blocks);
  });
  return true;
}

/**
 * Full blocks an append of `numTokens` to a sequence allocates in each layer (index = layer): the blocks each head
 * grows by, plus one for a head whose partly filled last block is shared (its copy-on-write).
 */
export function appendBlocksNeeded(meta: CacheMetadata, seqId: number, numTokens: number): number[] {
  const { layers, kvHeads, blockSize } = meta.shape;
  const needed = new Array<number>(layers).fill(0);
  for (let layer = 0; layer < layers; layer++) {
    for (let head = 0; head < kvHeads; head++) {
      const count = meta.tokenCount(seqId, layer, head);
      const entries = meta.tables.entryView(meta.rowOf(seqId, layer, head));
      const last = entries.length > 0 ? decodeBlockRef(entries[entries.length - 1] ?? 0) : null;
      const cow = count % blockSize !== 0 && last !== null && last.pool === 'full' && meta.pool('full', layer).refCount(last.block) > 1;
      needed[layer] = (needed[layer] ?? 0) + Math.max(0, Math.ceil((count + numTokens) / blockSize) - entries.length) + (cow ? 1 : 0);
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
  // free or growable IN EVERY LAYER, so compressing can release before allocating: the blocks a layer's heads
  // release stay in that layer's pool, so each layer needs its own reserve.
  const reserveBytes = reserveBlocks(meta) * meta.bytesPerBlock('full');
  if (plan === null && ensureFreeBlocksPerLayer(meta, 'full', needed, grow, reserveBytes)) plan = meta.planAppend(seqId, numTokens);
  if (plan !== null && reserveShortfall(meta) <= meta.growableBlocks('full')) return plan;
  meta.restore(before);
  const reserve = meta.compactionReserve > 0 ? ` (${meta.compactionReserve} per layer kept free for compression)` : '';
  const most = needed.reduce((a, b) => a + b, 0);
  throw new OutOfBlocksError('full', Math.max(most, 1) + meta.compactionReserve, meta.poolUsage('full').free, `compress or free a sequence, or raise maxBytes${reserve}`);
}
/** Full blocks of the byte budget that appends and imports never grow into: the compaction reserve of every layer. */
export function reserveBlocks(meta: CacheMetadata): number {
  return meta.compactionReserve * meta.shape.layers;
}

/** Blocks the budget must still be able to add so that every layer has its compaction reserve free or growable. */
function reserveShortfall(meta: CacheMetadata): number {
  let short = 0;
  for (let layer = 0; layer < meta.shape.layers; layer++) short += Math.max(0, meta.compactionReserve - meta.pool('full', layer).numFree);
  return short;
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
