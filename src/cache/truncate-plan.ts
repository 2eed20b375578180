import { InvalidArgumentError, TruncateCompressedError } from '../errors.js';
import { decodeBlockRef } from '../format/layout.js';
import type { BlockAllocator } from './block-allocator.js';
import type { BlockTables } from './block-tables.js';
import type { HeadTruncate, PoolName } from './metadata-types.js';

// The host side of truncate(seq, length), apart from CacheMetadata so that each file stays one concept. Positions
// are not stored on the host: per block-table row, `intactFrom` is the original position from which the head holds
// every token, in order, at the end of its list (0 until a compaction evicts from the head, then the sequence
// length at that compaction), so the last `sequenceLength − intactFrom` tokens of a head have consecutive positions
// and a cut at or after intactFrom is a cut at a known logical index. Quantized blocks stay full: a cut inside one
// is refused.

/** What of a CacheMetadata truncation reads and edits (its public surface). */
interface TruncatableMetadata {
  readonly shape: { readonly layers: number; readonly kvHeads: number; readonly blockSize: number };
  readonly tables: BlockTables;
  pool(pool: PoolName, layer: number): BlockAllocator;
  layerOfRow(row: number): number;
}

/** The block-table rows of a slot, in (layer, head) order. */
export function slotRows(meta: TruncatableMetadata, slot: number): number[] {
  const rows: number[] = [];
  for (let layer = 0; layer < meta.shape.layers; layer++) {
    for (let head = 0; head < meta.shape.kvHeads; head++) rows.push(meta.tables.row(slot, layer, head));
  }
  return rows;
}

/** Quantized entries of a row (they come first). */
function quantEntries(tables: BlockTables, row: number): number {
  let n = 0;
  for (const entry of tables.entryView(row)) {
    if (decodeBlockRef(entry).pool !== 'quant') break;
    n++;
  }
  return n;
}

/**
 * The shortest length a sequence can be truncated to: every head must cut at or after its intactFrom and keep its
 * quantized blocks full.
 *
 * @example
 * ```ts
 * meta.truncate(seq, Math.max(length, meta.minTruncateLength(seq)));
 * ```
 */
export function minTruncateLength(meta: TruncatableMetadata, slot: number, sequenceLength: number, intactFrom: Uint32Array): number {
  let min = 0;
  for (const row of slotRows(meta, slot)) {
    const intact = intactFrom[row] ?? 0;
    const firstIntact = meta.tables.tokenCount(row) - (sequenceLength - intact);
    const quantTokens = quantEntries(meta.tables, row) * meta.shape.blockSize;
    min = Math.max(min, intact + Math.max(0, quantTokens - firstIntact));
  }
  return min;
}

/**
 * Cuts every head of a sequence to the tokens at positions < `length`: validates every row first (state unchanged
 * on a throw), then releases the entries past each head's new end (a block a fork shares stays allocated; the next
 * append copies a shared partly filled block) and sets the rows. The caller sets the sequence length.
 *
 * @throws InvalidArgumentError when `length` is not in [0, sequence length]; TruncateCompressedError when a head
 *   would cut among compacted tokens (before its intactFrom) or inside a quantized block.
 * @example
 * ```ts
 * const heads = truncateRows(meta, { id, slot, length: 40 }, 32, intactFrom);
 * ```
 */
export function truncateRows(
  meta: TruncatableMetadata,
  sequence: { readonly id: number; readonly slot: number; readonly length: number },
  length: number,
  intactFrom: Uint32Array,
): HeadTruncate[] {
  const { id, slot } = sequence;
  if (!Number.isSafeInteger(length) || length < 0 || length > sequence.length) {
    throw new InvalidArgumentError('length', `must be an integer in [0, ${sequence.length}] (the sequence's length); got ${length}`);
  }
  const { blockSize, kvHeads } = meta.shape;
  const removed = sequence.length - length;
  const minLength = (): number => minTruncateLength(meta, slot, sequence.length, intactFrom);
  const targets = slotRows(meta, slot).map((row) => {
    const before = meta.tables.tokenCount(row);
    const intact = intactFrom[row] ?? 0;
    if (length < intact) {
      throw new TruncateCompressedError(id, length, minLength(), `a compaction evicted tokens before position ${intact}, so the host no longer knows which of them come later`);
    }
    const after = before - removed;
    const keep = Math.ceil(after / blockSize);
    if (after % blockSize !== 0 && keep <= quantEntries(meta.tables, row)) {
      throw new TruncateCompressedError(id, length, minLength(), 'a quantized block would be left partly filled');
    }
    return { row, before, after, keep };
  });
  return targets.map(({ row, before, after, keep }, i) => {
    const entries = meta.tables.entries(row);
    const dropped = entries.slice(keep);
    for (const entry of dropped) {
      const { pool, block } = decodeBlockRef(entry);
      meta.pool(pool, meta.layerOfRow(row)).release(block);
    }
    if (dropped.length > 0 || after !== before) meta.tables.setRow(row, entries.slice(0, keep), after);
    return { layer: Math.floor(i / kvHeads), head: i % kvHeads, row, tokensBefore: before, tokensAfter: after, dropped };
  });
}
