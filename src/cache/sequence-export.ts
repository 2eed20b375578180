import { InvalidArgumentError, OutOfBlocksError } from '../errors.js';
import { decodeBlockRef, encodeBlockRef } from '../format/layout.js';
import type { CacheMetadata, PoolName } from './cache-metadata.js';
import { ensureFreeBlocks, reserveBlocks, type GrowPool } from './pool-growth.js';
import { slotRows } from './truncate-plan.js';

// The host-metadata half of a sequence snapshot: a sequence's block-table rows re-expressed against the
// snapshot's own block lists (so they mean the same in any cache), and the plan-then-commit that rebuilds them in
// another cache. The engines add the block words, the statistics and the window (src/engine/sequence-snapshot.ts).

/** One block-table entry of a snapshot: a pool and an index into the snapshot's block list of that pool. */
export interface SnapshotBlockRef {
  readonly pool: PoolName;
  readonly index: number;
}

/** One (layer, kv head) row of a snapshot, in the order layer · kvHeads + head. */
export interface SnapshotRow {
  readonly tokenCount: number;
  /** See `CacheMetadata.intactFrom`: what lets a restored sequence truncate exactly as the original. */
  readonly intactFrom: number;
  /** The row's blocks in table order (quantized first), as indices into the snapshot's block lists. */
  readonly entries: readonly SnapshotBlockRef[];
}

/** The rows of one sequence and the cache blocks behind the snapshot's block lists, each listed once. */
export interface ExportedRows {
  readonly sequenceLength: number;
  readonly rows: readonly SnapshotRow[];
  /** Cache block numbers of the full pool, in snapshot index order (first reference first). */
  readonly fullBlocks: readonly number[];
  readonly quantBlocks: readonly number[];
  /** The layer whose pool holds each of `fullBlocks` / `quantBlocks` (block ids are local to a layer). */
  readonly fullLayers: readonly number[];
  readonly quantLayers: readonly number[];
}

/**
 * The rows of a live sequence against snapshot-local block lists: a block several heads share is listed once.
 *
 * @example
 * ```ts
 * const { rows, fullBlocks } = exportRows(meta, seq); // copy the words of fullBlocks[i] into the snapshot
 * ```
 */
export function exportRows(meta: CacheMetadata, seqId: number): ExportedRows {
  const slot = meta.slotOf(seqId);
  const lists: Record<PoolName, number[]> = { full: [], quant: [] };
  const layersOf: Record<PoolName, number[]> = { full: [], quant: [] };
  const index: Record<PoolName, Map<number, number>> = { full: new Map(), quant: new Map() };
  const rows = slotRows(meta, slot).map((row): SnapshotRow => {
    const layer = meta.layerOfRow(row);
    const entries = [...meta.tables.entryView(row)].map((entry): SnapshotBlockRef => {
      const { pool, block } = decodeBlockRef(entry);
      const key = layer * 0x8000_0000 + block;
      let at = index[pool].get(key);
      if (at === undefined) {
        at = lists[pool].length;
        lists[pool].push(block);
        layersOf[pool].push(layer);
        index[pool].set(key, at);
      }
      return { pool, index: at };
    });
    return { tokenCount: meta.tables.tokenCount(row), intactFrom: 0, entries };
  });
  // slotRows lists the rows as layer · kvHeads + head, the snapshot's row order.
  const { kvHeads } = meta.shape;
  const withIntact = rows.map((r, i) => ({ ...r, intactFrom: meta.intactFrom(seqId, Math.floor(i / kvHeads), i % kvHeads) }));
  return { sequenceLength: meta.sequenceLength(seqId), rows: withIntact, fullBlocks: lists.full, quantBlocks: lists.quant, fullLayers: layersOf.full, quantLayers: layersOf.quant };
}

/** Where an import put the snapshot's blocks: the cache block of each snapshot index, per pool. */
export interface ImportedBlocks {
  readonly slot: number;
  readonly fullBlocks: readonly number[];
  readonly quantBlocks: readonly number[];
  /** The layer whose pool holds each of `fullBlocks` / `quantBlocks`. */
  readonly fullLayers: readonly number[];
  readonly quantLayers: readonly number[];
}

/**
 * Adds sequence `seqId` holding `rows` (already validated against this cache: see `validateSnapshot`), allocating
 * `fullCount` full and `quantCount` quantized blocks (growing the pools within maxBytes by the shared rule) and
 * taking one reference per row that lists a block. All or nothing: OutOfBlocksError (or the addSequence error)
 * with the metadata exactly as before. The caller writes the blocks' words, then uploads the dirty rows.
 *
 * @example
 * ```ts
 * const placed = importRows(meta, 9, snapshot.sequenceLength, snapshot.rows, 3, 1, grow);
 * // write snapshot block i of the full pool into cache block placed.fullBlocks[i]
 * ```
 */
export function importRows(
  meta: CacheMetadata,
  seqId: number,
  sequenceLength: number,
  rows: readonly SnapshotRow[],
  fullCount: number,
  quantCount: number,
  grow: GrowPool,
): ImportedBlocks {
  const before = meta.snapshot();
  try {
    const slot = meta.addSequence(seqId);
    const counts: Record<PoolName, number> = { full: fullCount, quant: quantCount };
    const placed: Record<PoolName, number[]> = { full: [], quant: [] };
    const layersOf = snapshotBlockLayers(meta, rows, counts);
    for (const pool of ['full', 'quant'] as const) {
      for (let layer = 0; layer < meta.shape.layers; layer++) {
        const indices = layersOf[pool].flatMap((l, i) => (l === layer ? [i] : []));
        if (indices.length === 0) continue;
        // Like an append, an import never grows into the bytes kept for compaction.
        const keep = reserveBlocks(meta) * meta.bytesPerBlock('full');
        if (!ensureFreeBlocks(meta, pool, layer, indices.length, grow, keep)) {
          throw new OutOfBlocksError(pool, indices.length, meta.pool(pool, layer).numFree, 'free or compress a sequence, or raise maxBytes, before importing this snapshot');
        }
        const blocks = meta.allocateBlocksOrThrow(pool, layer, indices.length);
        indices.forEach((at, i) => (placed[pool][at] = blocks[i] ?? 0));
      }
    }
    // allocateMany handed one reference per block; every further row listing it takes another.
    const used: Record<PoolName, Uint8Array> = { full: new Uint8Array(fullCount), quant: new Uint8Array(quantCount) };
    const tableRows = slotRows(meta, slot);
    rows.forEach((row, i) => {
      const layer = Math.floor(i / meta.shape.kvHeads);
      const words = row.entries.map(({ pool, index }) => {
        const block = placed[pool][index] ?? 0;
        if (used[pool][index] === 1) meta.pool(pool, layer).retain(block);
        used[pool][index] = 1;
        return encodeBlockRef(pool, block);
      });
      meta.tables.setRow(tableRows[i] ?? 0, words, row.tokenCount);
    });
    // The sequence length and each row's intactFrom have no setter (they only ever follow appends); the metadata's
    // own snapshot/restore sets them exactly, and marks nothing the rows above did not.
    const state = meta.snapshot();
    const intactFrom = state.intactFrom.slice();
    tableRows.forEach((row, i) => (intactFrom[row] = rows[i]?.intactFrom ?? 0));
    meta.restore({
      ...state,
      sequences: state.sequences.map(([id, s, length]) => [id, s, id === seqId ? sequenceLength : length] as const),
      intactFrom,
    });
    return { slot, fullBlocks: placed.full, quantBlocks: placed.quant, fullLayers: layersOf.full, quantLayers: layersOf.quant };
  } catch (error) {
    meta.restore(before);
    throw error;
  }
}

/**
 * The layer of each snapshot block: that of the rows listing it (row i is layer ⌊i / kvHeads⌋). A block listed by
 * no row stays in layer 0; one listed by rows of two layers cannot be placed (each layer has its own pools).
 */
function snapshotBlockLayers(meta: CacheMetadata, rows: readonly SnapshotRow[], counts: Record<PoolName, number>): Record<PoolName, number[]> {
  const out: Record<PoolName, number[]> = { full: new Array<number>(counts.full).fill(-1), quant: new Array<number>(counts.quant).fill(-1) };
  rows.forEach((row, i) => {
    const layer = Math.floor(i / meta.shape.kvHeads);
    for (const { pool, index } of row.entries) {
      const seen = out[pool][index];
      if (seen !== undefined && seen !== -1 && seen !== layer) {
        throw new InvalidArgumentError('snapshot', `${pool} block ${index} is listed by rows of layers ${seen} and ${layer}; each layer has its own pool`);
      }
      out[pool][index] = layer;
    }
  });
  for (const pool of ['full', 'quant'] as const) out[pool] = out[pool].map((l) => Math.max(0, l));
  return out;
}
