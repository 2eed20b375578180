import type { BlockAllocatorSnapshot } from './block-allocator.js';
import type { BlockTablesSnapshot } from './block-tables.js';
import type { CacheShape, FullFormat, QuantFormat } from '../format/layout.js';

// The data types of the host metadata (CacheMetadata): its options, the plans it hands out, its reports and
// snapshots. Apart from the class so that each file stays one concept.

/**
 * Which pool a block lives in.
 */
export type PoolName = 'full' | 'quant';

/**
 * Options of a {@link CacheMetadata}.
 *
 * @example
 * ```ts
 * const options: CacheMetadataOptions = {
 *   shape: { layers: 2, kvHeads: 2, headDim: 64, blockSize: 16 },
 *   fullFormat: 'f16', quantFormat: 'int4',
 *   initialFullBlocks: 256, initialQuantBlocks: 64, maxBytes: 64 << 20,
 *   seqSlots: 8, maxBlocksPerHead: 128,
 * };
 * ```
 */
export interface CacheMetadataOptions {
  readonly shape: CacheShape;
  /** Format of the full pool, where new tokens land. */
  readonly fullFormat: FullFormat;
  /** Format of the quantized pool; without it the quantized pool stays empty and cannot grow. */
  readonly quantFormat?: QuantFormat;
  /** Quantization group size (default: `defaultGroupSize`). */
  readonly groupSize?: number;
  /** Usable full blocks at start IN EACH LAYER's pool, NOT counting the null block (each has one more). May be 0. */
  readonly initialFullBlocks: number;
  /** Usable quantized blocks at start in each layer's pool, NOT counting the null block. 0 without `quantFormat`. */
  readonly initialQuantBlocks: number;
  /** Byte budget of every layer's pools together, null blocks included. */
  readonly maxBytes: number;
  /**
   * Bytes one layer's pool may hold, null block included (default: no cap; a GPU storage lowers it to its
   * device's per-binding limit). Growth stops there; the budget above still covers all layers together.
   */
  readonly maxPoolBytes?: number;
  /** Sequences that can be live at once (rows of the block tables). */
  readonly seqSlots: number;
  /** Width of a block-table row: the most blocks one (sequence, layer, kv head) may hold. */
  readonly maxBlocksPerHead: number;
  /**
   * Full blocks kept for compaction in each layer (default 0 here; the caches default to min(16, maxBlocksPerHead)):
   * an append fails rather than leave any layer fewer than this many blocks free or growable, so a compression that releases each
   * head's blocks before the next head allocates always finds room.
   */
  readonly compactionReserve?: number;
}

/**
 * A whole-block copy the GPU must execute before writing new tokens (copy-on-write of a shared partly filled
 * block): copy the `wordsPerBlock` words of block `src` to block `dst` of the same pool.
 *
 * @example
 * ```ts
 * for (const c of plan.copies) copyBlock(poolBuffer(c.pool), c.src, c.dst);
 * ```
 */
export interface BlockCopy {
  readonly pool: PoolName;
  /** The layer whose pool holds both blocks. */
  readonly layer: number;
  readonly src: number;
  readonly dst: number;
}

/**
 * What an append did to one (layer, kv head) of the sequence.
 *
 * @example
 * ```ts
 * const h: HeadAppend = plan.heads[layer * shape.kvHeads + head]!;
 * h.tokensAfter - h.tokensBefore === plan.numTokens; // always
 * ```
 */
export interface HeadAppend {
  readonly layer: number;
  readonly head: number;
  /** Block-table row of this head. */
  readonly row: number;
  readonly tokensBefore: number;
  readonly tokensAfter: number;
  /** Blocks of this layer's full pool newly allocated for this head, in table order (a copy-on-write destination first). */
  readonly newBlocks: readonly number[];
  /** The copy-on-write this head needs, or null. */
  readonly copy: BlockCopy | null;
}

/**
 * The result of a successful {@link CacheMetadata.planAppend}: the metadata already reflects the append; the GPU
 * layer must run `copies`, then scatter K/V (and positions `firstPosition + t`) into `destSlots`, then upload
 * the dirty table rows. If the GPU work fails, restore the snapshot taken before planning.
 *
 * @example
 * ```ts
 * const before = meta.snapshot();
 * const plan = meta.planAppend(seq, k.length / (kvHeads * headDim));
 * if (plan === null) throw new OutOfBlocksError('full', 1, meta.poolUsage('full').free);
 * try { await gpuAppend(plan); } catch (err) { meta.restore(before); throw err; }
 * ```
 */
export interface AppendPlan {
  readonly seqId: number;
  readonly slot: number;
  readonly numTokens: number;
  /** Original position of the first new token (sequence length before the append); token t has position firstPosition + t. */
  readonly firstPosition: number;
  readonly blockSize: number;
  readonly layers: number;
  readonly kvHeads: number;
  /** Copy-on-write copies, to run before any write. */
  readonly copies: readonly BlockCopy[];
  /** One entry per (layer, head), index layer·kvHeads + head. */
  readonly heads: readonly HeadAppend[];
  /**
   * Destination slot per (layer, token, head), `[layers][numTokens][kvHeads]` order: the slot index in that
   * layer's full pool, block·blockSize + slotInBlock, so block = ⌊s / blockSize⌋ and slot = s mod blockSize.
   */
  readonly destSlots: Uint32Array;
  /** Per layer, every block of that layer's full pool newly allocated by this append. */
  readonly allocated: readonly (readonly number[])[];
  /** Block-table rows this append changed (also marked dirty in the tables). */
  readonly rows: readonly number[];
}

/**
 * What a truncate did to one (layer, kv head) of the sequence.
 *
 * @example
 * ```ts
 * const h: HeadTruncate = plan.heads[layer * shape.kvHeads + head]!;
 * h.tokensBefore - h.tokensAfter === plan.lengthBefore - plan.lengthAfter; // every head held those tokens
 * ```
 */
export interface HeadTruncate {
  readonly layer: number;
  readonly head: number;
  readonly row: number;
  readonly tokensBefore: number;
  readonly tokensAfter: number;
  /** Block-table entries (`encodeBlockRef` words) the head dropped, in table order; a block shared by a fork stays allocated. */
  readonly dropped: readonly number[];
}

/**
 * The result of {@link CacheMetadata.truncate}: the metadata already reflects it. The storage layer clears the
 * statistics of logical indices [tokensAfter, tokensBefore) of each row and uploads the dirty rows.
 *
 * @example
 * ```ts
 * const plan = meta.truncate(seq, 40);
 * for (const h of plan.heads) clearStats(h.row, h.tokensAfter, h.tokensBefore);
 * ```
 */
export interface TruncatePlan {
  readonly seqId: number;
  readonly slot: number;
  readonly lengthBefore: number;
  readonly lengthAfter: number;
  /** One entry per (layer, head), index layer·kvHeads + head. */
  readonly heads: readonly HeadTruncate[];
}

/**
 * Usage of one pool.
 *
 * @example
 * ```ts
 * const { free, bytes } = meta.poolUsage('full');
 * ```
 */
export interface PoolUsage {
  readonly pool: PoolName;
  /** Blocks in the pool, null block included (the GPU buffer size in blocks). */
  readonly numBlocks: number;
  readonly used: number;
  readonly free: number;
  /** 0 for a quantized pool without a format. */
  readonly bytesPerBlock: number;
  /** numBlocks × bytesPerBlock. */
  readonly bytes: number;
}

/**
 * Slot occupancy of the used blocks of one pool (or both).
 *
 * @example
 * ```ts
 * utilisationReport(meta).total.waste; // fraction of allocated token slots that hold no token
 * ```
 */
export interface SlotUsage {
  readonly blocks: number;
  /** blocks × blockSize. */
  readonly slotsAllocated: number;
  /** Distinct filled slots (a block shared by forks counts once). */
  readonly slotsUsed: number;
  /** 1 − slotsUsed / slotsAllocated (0 when nothing is allocated): internal fragmentation. */
  readonly waste: number;
}

/**
 * Fragmentation report of the whole cache.
 *
 * @example
 * ```ts
 * const u: UtilisationReport = utilisationReport(meta);
 * console.log(`${(u.total.waste * 100).toFixed(1)}% of allocated slots empty`);
 * ```
 */
export interface UtilisationReport {
  readonly full: SlotUsage;
  readonly quant: SlotUsage;
  readonly total: SlotUsage;
  /** Sum of token counts over every head of every sequence (shared blocks counted per reference). */
  readonly logicalTokens: number;
}

/**
 * An exact copy of a {@link CacheMetadata}'s state.
 *
 * @example
 * ```ts
 * const s: CacheMetadataSnapshot = meta.snapshot();
 * meta.restore(s);
 * ```
 */
export interface CacheMetadataSnapshot {
  /** Per layer, its full pool's allocator. */
  readonly full: readonly BlockAllocatorSnapshot[];
  readonly quant: readonly BlockAllocatorSnapshot[];
  readonly tables: BlockTablesSnapshot;
  readonly sequences: ReadonlyArray<readonly [id: number, slot: number, length: number]>;
  readonly freeSlots: readonly number[];
  readonly quantFormat: QuantFormat | undefined;
  /** Per block-table row, the original position from which the head holds every token (see `intactFrom`). */
  readonly intactFrom: Uint32Array;
}
