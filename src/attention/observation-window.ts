import { createStorageBuffer } from '../gpu/buffers.js';
import type { GpuKvStorage } from '../cache/gpu-storage.js';
import type { WordRange } from '../kernels/cache/copy-ranges.js';
import type { CopyRowsKernel } from '../kernels/cache/copy-rows.js';

/** The observation window of one sequence as kernels bind it. */
export interface WindowBindings {
  /** f32 [layers][seqSlots][window][nHeads][headDim], ring by position mod window. */
  readonly queries: GPUBuffer;
  /** u32 [layers][seqSlots][window]. */
  readonly positions: GPUBuffer;
  readonly capacity: number;
}

/** Queries a step adds to a window: rows of the queries buffer from `firstRow`, one per position. */
export interface WindowSource {
  readonly slot: number;
  readonly firstRow: number;
  readonly positions: Uint32Array;
}

/**
 * The observation window of the paged backend: per (layer, slot), a ring of the newest roped queries by position
 * mod capacity (what SnapKV/TOVA score with), in GPU buffers beside the storage, and the host's bookkeeping of how
 * many the ring holds and where it ends.
 *
 * @example
 * ```ts
 * const window = new ObservationWindow(storage, copyRows, 8, 32);
 * const rows = window.encodeRecord(encoder, undefined, layer, queries, [{ slot, firstRow: 0, positions }]);
 * gpu.submit([encoder.finish()]);
 * if (rows) gpu.buffers.release(rows);
 * ```
 */
export class ObservationWindow {
  readonly bindings: WindowBindings;
  /** How many newest queries each (layer, slot) window holds. */
  private readonly valid = new Map<number, number>();
  /** One past the newest position each (layer, slot) window recorded. */
  private readonly end = new Map<number, number>();

  constructor(
    private readonly storage: GpuKvStorage,
    /** Records roped queries into the ring by a dispatch, so a forward stays one compute pass (owned by the caller). */
    private readonly copyRows: CopyRowsKernel,
    private readonly nHeads: number,
    readonly capacity: number,
  ) {
    const { gpu, meta } = storage;
    const ring = meta.shape.layers * meta.seqSlots * capacity;
    this.bindings = {
      queries: createStorageBuffer(gpu, 'kv:window-queries', ring * nHeads * meta.shape.headDim * 4),
      positions: createStorageBuffer(gpu, 'kv:window-positions', ring * 4),
      capacity,
    };
  }

  private key(slot: number, layer: number): number {
    return layer * this.storage.meta.seqSlots + slot;
  }

  /** The bookkeeping of (slot, layer): valid queries and one past the newest position. */
  state(slot: number, layer: number): { valid: number; end: number } {
    const key = this.key(slot, layer);
    return { valid: this.valid.get(key) ?? 0, end: this.end.get(key) ?? 0 };
  }

  /** Sets the bookkeeping of (slot, layer) after its ring was uploaded (a restored snapshot). */
  setState(slot: number, layer: number, valid: number, end: number): void {
    const key = this.key(slot, layer);
    this.valid.set(key, valid);
    this.end.set(key, end);
  }

  /**
   * Records into `layer`'s ring the newest queries of each source, in one copy dispatch. Returns its row list,
   * which the caller releases after the submit.
   */
  encodeRecord(encoder: GPUCommandEncoder, pass: GPUComputePassEncoder | undefined, layer: number, queries: GPUBuffer, sources: readonly WindowSource[]): GPUBuffer | null {
    const { meta, gpu } = this.storage;
    const window = this.capacity;
    const rows: number[] = [];
    for (const { slot, firstRow, positions: stepPositions } of sources) {
      const base = this.key(slot, layer);
      const numTokens = stepPositions.length;
      if (numTokens === 0) continue;
      for (let t = Math.max(0, numTokens - window); t < numTokens; t++) {
        const position = stepPositions[t] ?? 0;
        const ring = position % window;
        rows.push(firstRow + t, base * window + ring);
        gpu.device.queue.writeBuffer(this.bindings.positions, (base * window + ring) * 4, new Uint32Array([position]));
      }
      this.valid.set(base, Math.min(window, (this.valid.get(base) ?? 0) + numTokens));
      this.end.set(base, (stepPositions[numTokens - 1] ?? 0) + 1);
    }
    if (rows.length === 0) return null;
    const rowList = gpu.buffers.upload(Uint32Array.from(rows), 'kv:window-rows');
    const wordsPerRow = this.nHeads * meta.shape.headDim;
    this.copyRows.encode(encoder, { src: queries, dst: this.bindings.queries, rows: rowList, numRows: rows.length / 2, wordsPerRow, ...(pass ? { pass } : {}) });
    return rowList;
  }

  /** Drops the queries of positions ≥ `lengthAfter` from every layer's ring of the slot (a truncation). */
  truncated(slot: number, lengthAfter: number): void {
    for (let layer = 0; layer < this.storage.meta.shape.layers; layer++) {
      const key = this.key(slot, layer);
      const end = this.end.get(key) ?? 0;
      if (end <= lengthAfter) continue;
      // The ring holds the queries of the positions just before `end`; the scoring kernels read it that way.
      this.valid.set(key, Math.max(0, (this.valid.get(key) ?? 0) - (end - lengthAfter)));
      this.end.set(key, lengthAfter);
    }
  }

  /** Empties the slot's rings (their contents are dead once nothing is valid). */
  clearSlot(slot: number): void {
    for (let layer = 0; layer < this.storage.meta.shape.layers; layer++) {
      this.valid.delete(this.key(slot, layer));
      this.end.delete(this.key(slot, layer));
    }
  }

  /**
   * Encodes the copy of a slot's rings to another slot and copies their bookkeeping (a fork). Returns the scratch
   * buffers to destroy after the submit (GpuKvStorage.destroyAfterSubmit).
   */
  encodeCopySlot(encoder: GPUCommandEncoder, srcSlot: number, dstSlot: number): (GPUBuffer | null)[] {
    const windowWords = this.capacity * this.nHeads * this.storage.meta.shape.headDim;
    const queryRanges: WordRange[] = [];
    const positionRanges: WordRange[] = [];
    for (let layer = 0; layer < this.storage.meta.shape.layers; layer++) {
      const from = this.key(srcSlot, layer);
      const to = this.key(dstSlot, layer);
      queryRanges.push({ src: from * windowWords, dst: to * windowWords });
      positionRanges.push({ src: from * this.capacity, dst: to * this.capacity });
      const valid = this.valid.get(from);
      if (valid !== undefined) this.valid.set(to, valid);
      const end = this.end.get(from);
      if (end !== undefined) this.end.set(to, end);
    }
    return [
      this.storage.encodeCopyRanges(encoder, this.bindings.queries, queryRanges, windowWords),
      this.storage.encodeCopyRanges(encoder, this.bindings.positions, positionRanges, this.capacity),
    ];
  }

  /** Destroys the ring buffers. */
  destroy(): void {
    this.bindings.queries.destroy();
    this.bindings.positions.destroy();
  }
}
