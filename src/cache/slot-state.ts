/**
 * The state MergeMode 'slots' keeps between compressions, beside the cache. A head's slot tokens are ordinary cache
 * tokens (attention, quantization and memory reports need nothing special): they are the first `count` logical
 * indices of the head, which every later compression leaves at the front (the selection never sees them, and kept
 * tokens keep their order). What the blocks cannot hold is each slot's accumulated attention mass W, which the
 * recurrence (src/compress/merge-slots.ts) needs to fold later evictions in with the right weight; this store keeps
 * it per block-table row, `count` f64 masses (none: no slots).
 *
 * Fork copies a sequence's rows, free and import clear them, a snapshot carries them (`slots` of a
 * SequenceSnapshot). Truncation never reaches slots: they are compacted tokens, below `minTruncateLength`.
 */
import { InvalidArgumentError } from '../errors.js';
import type { CacheShape } from '../format/layout.js';

/** Bytes the host keeps per slot (one f64 mass). */
export const SLOT_STATE_BYTES_PER_SLOT = 8;

/**
 * A snapshot's slot state: per (layer, kv head), index layer · kvHeads + head, how many leading tokens are slots,
 * and their masses, rows in order, concatenated.
 */
export interface SnapshotSlots {
  readonly counts: Uint32Array;
  readonly mass: Float64Array;
}

/**
 * Masses of the merge slots of every block-table row.
 *
 * @example
 * ```ts
 * const slots = new SlotStateStore();
 * slots.set(row, Float64Array.of(0.5, 1.25));
 * slots.count(row); // 2
 * ```
 */
export class SlotStateStore {
  readonly bytesPerSlot = SLOT_STATE_BYTES_PER_SLOT;
  readonly #rows = new Map<number, Float64Array>();

  /** Slot tokens at the front of the row (0 without slots). */
  count(row: number): number {
    return this.#rows.get(row)?.length ?? 0;
  }

  /** The row's slot masses (a copy; empty without slots). */
  masses(row: number): Float64Array {
    return Float64Array.from(this.#rows.get(row) ?? []);
  }

  /** Sets a row's slots: `masses.length` leading tokens are slots with these masses (none clears the row). */
  set(row: number, masses: ArrayLike<number>): void {
    for (let i = 0; i < masses.length; i++) {
      const m = masses[i] ?? Number.NaN;
      if (!(m >= 0) || !Number.isFinite(m)) throw new InvalidArgumentError('slot mass', `must be a finite number ≥ 0; got ${m} at slot ${i}`);
    }
    if (masses.length === 0) this.#rows.delete(row);
    else this.#rows.set(row, Float64Array.from(masses));
  }

  clearRow(row: number): void {
    this.#rows.delete(row);
  }

  /** Copies each `from[i]` row's slots to `to[i]` (a fork). */
  copyRows(from: readonly number[], to: readonly number[]): void {
    from.forEach((src, i) => {
      const dst = to[i];
      if (dst === undefined) return;
      const masses = this.#rows.get(src);
      if (masses) this.#rows.set(dst, Float64Array.from(masses));
      else this.#rows.delete(dst);
    });
  }

  clearRows(rows: readonly number[]): void {
    for (const row of rows) this.#rows.delete(row);
  }

  /** Host bytes the masses take (what a memory report adds for the slot state). */
  bytes(): number {
    let slots = 0;
    for (const masses of this.#rows.values()) slots += masses.length;
    return slots * SLOT_STATE_BYTES_PER_SLOT;
  }

  /** The slots of `rows` (layer · kvHeads + head order) as a snapshot section, or undefined when none has any. */
  exportRows(rows: readonly number[]): SnapshotSlots | undefined {
    const counts = Uint32Array.from(rows, (row) => this.count(row));
    if (counts.every((c) => c === 0)) return undefined;
    const mass = new Float64Array(counts.reduce((a, b) => a + b, 0));
    let at = 0;
    for (const row of rows) {
      const masses = this.#rows.get(row);
      if (!masses) continue;
      mass.set(masses, at);
      at += masses.length;
    }
    return { counts, mass };
  }

  /** Sets `rows` from a snapshot section (undefined clears them); checked first, all or nothing. */
  importRows(rows: readonly number[], slots: SnapshotSlots | undefined): void {
    if (slots) checkSnapshotSlots(slots, rows.length, null);
    this.clearRows(rows);
    if (!slots) return;
    let at = 0;
    rows.forEach((row, i) => {
      const count = slots.counts[i] ?? 0;
      this.set(row, slots.mass.subarray(at, at + count));
      at += count;
    });
  }
}

/** The block-table rows of one sequence slot, layer · kvHeads + head order (`rowOf` = the tables' row rule). */
export function slotRows(shape: CacheShape, slot: number, rowOf: (slot: number, layer: number, head: number) => number): number[] {
  const rows: number[] = [];
  for (let layer = 0; layer < shape.layers; layer++) for (let head = 0; head < shape.kvHeads; head++) rows.push(rowOf(slot, layer, head));
  return rows;
}

/**
 * Checks a snapshot's slot section: one count per row, each at most the row's token count (when given), masses
 * finite and ≥ 0, as many as the counts add up to. InvalidArgumentError naming the first field that is not.
 */
export function checkSnapshotSlots(slots: SnapshotSlots, rows: number, tokenCounts: readonly number[] | null): void {
  if (slots.counts.length !== rows) throw new InvalidArgumentError('slots.counts', `expected ${rows} counts (layers × kvHeads); got ${slots.counts.length}`);
  let total = 0;
  slots.counts.forEach((count, i) => {
    const tokens = tokenCounts?.[i];
    if (tokens !== undefined && count > tokens) throw new InvalidArgumentError(`slots.counts[${i}]`, `${count} slots in a row of ${tokens} tokens`);
    total += count;
  });
  if (slots.mass.length !== total) throw new InvalidArgumentError('slots.mass', `expected ${total} masses (the counts' sum); got ${slots.mass.length}`);
  slots.mass.forEach((m, i) => {
    if (!(m >= 0) || !Number.isFinite(m)) throw new InvalidArgumentError(`slots.mass[${i}]`, `must be a finite number ≥ 0; got ${m}`);
  });
}
