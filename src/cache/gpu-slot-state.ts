/**
 * The merge-'slots' state of the GPU engine (the counterpart of SlotStateStore, src/cache/slot-state.ts): each
 * block-table row's slot count on the host (the host plans with it, as it plans with token counts) and its slot
 * masses on the GPU, f32 [rows][GPU_SLOT_CAPACITY] in one small buffer beside the pools, so a compression reads
 * and updates them inside its own submit (src/compress/gpu-slots.ts) with no readback. Fork copies a sequence's
 * rows (a GPU copy), free and addSequence clear them (counts only: a mass past a row's count is never read),
 * snapshots read them back and upload them, in SnapshotSlots form (f64 masses, as the CPU engine exports).
 */
import { InvalidArgumentError } from '../errors.js';
import { createStorageBuffer, readBuffer } from '../gpu/buffers.js';
import type { GpuContext } from '../gpu/context.js';
import { checkSnapshotSlots, type SnapshotSlots } from './slot-state.js';

/** Slots a row can hold on the GPU engine (the merge_slots kernel's limit): the mass buffer's row width. */
export const GPU_SLOT_CAPACITY = 16;

/** Bytes the GPU keeps per slot in use (one f32 mass). */
export const GPU_SLOT_STATE_BYTES_PER_SLOT = 4;

/**
 * Slot counts (host) and masses (GPU) of every block-table row of a PagedKvCache.
 *
 * @example
 * ```ts
 * const slots = new GpuSlotState(gpu, meta.tables.numRows);
 * slots.count(row); // 0
 * ```
 */
export class GpuSlotState {
  readonly bytesPerSlot = GPU_SLOT_STATE_BYTES_PER_SLOT;
  /** f32 [rows][GPU_SLOT_CAPACITY]: row r's first count(r) words are its slot masses. */
  readonly masses: GPUBuffer;
  readonly #counts = new Map<number, number>();

  constructor(
    private readonly gpu: GpuContext,
    readonly rows: number,
  ) {
    this.masses = createStorageBuffer(gpu, 'slots:masses', Math.max(1, rows) * GPU_SLOT_CAPACITY * 4);
  }

  /** Slot tokens at the front of the row (0 without slots). */
  count(row: number): number {
    return this.#counts.get(row) ?? 0;
  }

  /** Sets a row's slot count (its masses are already on the GPU: the compaction wrote them). */
  setCount(row: number, count: number): void {
    if (!Number.isInteger(count) || count < 0 || count > GPU_SLOT_CAPACITY) {
      throw new InvalidArgumentError('slot count', `must be an integer in [0, ${GPU_SLOT_CAPACITY}]; got ${count}`);
    }
    if (count === 0) this.#counts.delete(row);
    else this.#counts.set(row, count);
  }

  clearRow(row: number): void {
    this.#counts.delete(row);
  }

  clearRows(rows: readonly number[]): void {
    for (const row of rows) this.#counts.delete(row);
  }

  /**
   * Copies each `from[i]` row's slots to `to[i]` (a fork): counts at once, masses by GPU copies submitted now
   * (through a temporary buffer: WebGPU copies never have one buffer at both ends).
   */
  copyRows(from: readonly number[], to: readonly number[]): void {
    const rowBytes = GPU_SLOT_CAPACITY * 4;
    const pairs: [number, number][] = [];
    from.forEach((src, i) => {
      const dst = to[i];
      if (dst === undefined) return;
      const count = this.count(src);
      this.setCount(dst, count);
      if (count > 0) pairs.push([src, dst]);
    });
    if (pairs.length === 0) return;
    const temp = this.gpu.device.createBuffer({ label: 'slots:fork', size: pairs.length * rowBytes, usage: GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
    const encoder = this.gpu.device.createCommandEncoder({ label: 'slots:fork' });
    pairs.forEach(([src], i) => encoder.copyBufferToBuffer(this.masses, src * rowBytes, temp, i * rowBytes, rowBytes));
    pairs.forEach(([, dst], i) => encoder.copyBufferToBuffer(temp, i * rowBytes, this.masses, dst * rowBytes, rowBytes));
    this.gpu.submit([encoder.finish()]);
    // Destroying after the submit is safe: WebGPU defers it until the copies ran.
    temp.destroy();
  }

  /** Bytes of the masses in use (what a memory report adds for the slot state). */
  bytes(rows?: readonly number[]): number {
    let slots = 0;
    if (rows) for (const row of rows) slots += this.count(row);
    else for (const count of this.#counts.values()) slots += count;
    return slots * GPU_SLOT_STATE_BYTES_PER_SLOT;
  }

  /** The slots of `rows` as a snapshot section (one readback), or undefined when none has any. */
  async exportRows(rows: readonly number[]): Promise<SnapshotSlots | undefined> {
    const counts = Uint32Array.from(rows, (row) => this.count(row));
    if (counts.every((c) => c === 0)) return undefined;
    const words = new Float32Array(await readBuffer(this.gpu, this.masses));
    const mass = new Float64Array(counts.reduce((a, b) => a + b, 0));
    let at = 0;
    rows.forEach((row, i) => {
      const count = counts[i] ?? 0;
      for (let s = 0; s < count; s++) mass[at++] = words[row * GPU_SLOT_CAPACITY + s] ?? 0;
    });
    return { counts, mass };
  }

  /** Sets `rows` from a snapshot section (undefined clears them); checked first, all or nothing. */
  importRows(rows: readonly number[], slots: SnapshotSlots | undefined): void {
    if (slots) {
      checkSnapshotSlots(slots, rows.length, null);
      const most = Math.max(0, ...slots.counts);
      if (most > GPU_SLOT_CAPACITY) throw new InvalidArgumentError('slots.counts', `the GPU engine holds at most ${GPU_SLOT_CAPACITY} slots per head; the snapshot has ${most}`);
    }
    this.clearRows(rows);
    if (!slots) return;
    let at = 0;
    rows.forEach((row, i) => {
      const count = slots.counts[i] ?? 0;
      if (count === 0) return;
      this.gpu.device.queue.writeBuffer(this.masses, row * GPU_SLOT_CAPACITY * 4, Float32Array.from(slots.mass.subarray(at, at + count)));
      at += count;
      this.setCount(row, count);
    });
  }

  destroy(): void {
    this.masses.destroy();
  }
}
