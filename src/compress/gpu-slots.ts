import { InvalidArgumentError } from '../errors.js';
import { GPU_SLOT_CAPACITY, type GpuSlotState } from '../cache/gpu-slot-state.js';
import type { GpuKvStorage } from '../cache/gpu-storage.js';
import { createStorageBuffer } from '../gpu/buffers.js';
import type { ScratchBuffers } from '../gpu/scratch-buffers.js';
import { packMergeHeads } from '../kernels/compress/merge-values.js';
import { MergeSlotsKernel, slotStateWords } from '../kernels/compress/merge-slots.js';
import { packSlotIndexHeads, SlotIndexKernel, type SlotIndexHead } from '../kernels/compress/slot-index.js';
import { MERGE_WEIGHT_FLOOR } from './merge.js';
import type { ExecutionJob, SelectionJob } from './pipeline.js';

/** What the compaction submit reads instead of the selection's kept indices once the slots absorbed. */
export interface SlotsRun {
  /** u32 [row][stride]: compaction sources (slot tokens flagged, see shaders/slot_index.wgsl). */
  readonly compactIndex: GPUBuffer;
  /** u32 [row][stride]: statistics sources. */
  readonly gatherIndex: GPUBuffer;
  /** The slot state the compaction reads the new slot tokens from. */
  readonly slotSources: { readonly slots: number; readonly state: GPUBuffer };
  readonly heads: readonly SlotIndexHead[];
}

/** Per-token weights of the absorbed tokens: the window's means (already written), or Σp / count to compute. */
export type SlotsMass = { readonly buffer: GPUBuffer } | { readonly sum: GPUBuffer; readonly count: GPUBuffer; readonly out: GPUBuffer };

/**
 * Merge 'slots' on the GPU engine, the same semantics as the CPU stages (src/compress/cpu-stages.ts; docs/merge-slots.md):
 *
 * - select: after the policy's pass, each head's real-token scores move to the front of its row, so the budget pass
 *   (any budgetMode) shares B − M over the real tokens alone, as on the CPU engine; before the top-k they move back
 *   behind the slots (a head's first `count` logical tokens, counts from {@link GpuSlotState}), which score +Inf,
 *   so the top-k keeps them first (ties go to the lower index) and count + k in all. The counts returned include
 *   the slots after absorbing: min(M, count + evicted) + k.
 * - execute, inside the compaction submit: the slot state is loaded from the cache and the persistent masses
 *   (merge_slots with `load`), absorbs the evicted tokens weighted like the other modes, writes the masses back;
 *   slot_index rewrites each absorbing head's lists so the compaction writes [slots…, kept real tokens…] (the slot
 *   tokens read from the state) and the statistics move with their tokens; new slots' statistics are cleared.
 * - afterCommit: the new counts become the host's.
 *
 * Window policies score (and weigh) with the slot keys in the window softmax, where the CPU engine leaves them out:
 * their selections can differ slightly; statistics policies (h2o, …) match the CPU engine.
 */
export class GpuSlotsStage {
  private readonly indexKernel: SlotIndexKernel;
  private mergeKernel: { key: string; kernel: MergeSlotsKernel } | null = null;
  /** Per row of the last selection: its kept count (old slots included) when it evicts. */
  private readonly selected = new Map<number, number>();
  /** Per row of the current round: its slot count after absorbing, committed by afterCommit. */
  private readonly pending = new Map<number, number>();
  private lists: { compact: GPUBuffer; gather: GPUBuffer } | null = null;
  /** Rows of the last selection whose scores {@link shiftOut} moved: slots before, real tokens. */
  private shifted: { row: number; count: number; real: number }[] = [];

  constructor(
    private readonly storage: GpuKvStorage,
    readonly state: GpuSlotState,
    private readonly stride: number,
  ) {
    this.indexKernel = new SlotIndexKernel(storage.gpu);
  }

  /** InvalidArgumentError (nothing touched) for what the GPU path does not run. */
  check(job: SelectionJob): void {
    const { options } = job;
    if (options.mergeSlots > GPU_SLOT_CAPACITY) {
      throw new InvalidArgumentError('mergeSlots', `the GPU engine holds at most ${GPU_SLOT_CAPACITY} slots per head; got ${options.mergeSlots}`);
    }
  }

  /** The lengths the budget pass shares B − M over: each head's real tokens. */
  /**
   * The window scoring's first token of every cache row (u32 [rows]: the row's slot count; 0 for other rows),
   * uploaded to `arena`; null when this sequence holds no slot yet (then nothing is skipped).
   */
  firstTokens(job: SelectionJob, rows: readonly (readonly number[])[], numRows: number, arena: ScratchBuffers): GPUBuffer | null {
    const first = new Uint32Array(numRows);
    rows.forEach((heads, l) => heads.forEach((row, h) => (first[row] = job.slotCounts[l]?.[h] ?? 0)));
    return first.some((n) => n > 0) ? arena.upload('slots:first-tokens', first) : null;
  }

  realLengths(job: SelectionJob): number[][] {
    return job.lengths.map((heads, l) => heads.map((n, h) => n - (job.slotCounts[l]?.[h] ?? 0)));
  }

  /**
   * Records, after the scoring passes, the shift of every head's real-token scores to the front of its row, so
   * the budget pass (any mode) sees exactly what the CPU engine scores: the real tokens alone, over the real
   * lengths. {@link shiftIn} puts them back before the top-k. WebGPU copies never have one buffer at both ends:
   * through a scratch buffer.
   */
  shiftOut(encoder: GPUCommandEncoder, job: SelectionJob, rows: readonly (readonly number[])[], scores: GPUBuffer, arena: ScratchBuffers): void {
    this.shifted = [];
    rows.forEach((heads, l) =>
      heads.forEach((row, h) => {
        const count = job.slotCounts[l]?.[h] ?? 0;
        const n = job.lengths[l]?.[h] ?? 0;
        if (count > 0 && n > count) this.shifted.push({ row, count, real: n - count });
      }),
    );
    if (this.shifted.length === 0) return;
    const temp = arena.get('slots:scores', this.shifted.length * this.stride * 4);
    const at = (row: number, t: number): number => (row * this.stride + t) * 4;
    this.shifted.forEach((r, i) => encoder.copyBufferToBuffer(scores, at(r.row, r.count), temp, i * this.stride * 4, r.real * 4));
    this.shifted.forEach((r, i) => encoder.copyBufferToBuffer(temp, i * this.stride * 4, scores, at(r.row, 0), r.real * 4));
  }

  /**
   * Records the real-token scores' return behind the slots and the slots' +Inf (before the top-k): the top-k then
   * keeps every slot (ties go to the lower index) and the same real tokens as the budget pass counted.
   */
  shiftIn(encoder: GPUCommandEncoder, scores: GPUBuffer, arena: ScratchBuffers): void {
    if (this.shifted.length === 0) return;
    const temp = arena.get('slots:scores', this.shifted.length * this.stride * 4);
    const at = (row: number, t: number): number => (row * this.stride + t) * 4;
    const inf = arena.upload('slots:inf', new Float32Array(Math.max(...this.shifted.map((r) => r.count))).fill(Number.POSITIVE_INFINITY));
    this.shifted.forEach((r, i) => encoder.copyBufferToBuffer(scores, at(r.row, 0), temp, i * this.stride * 4, r.real * 4));
    this.shifted.forEach((r, i) => {
      encoder.copyBufferToBuffer(temp, i * this.stride * 4, scores, at(r.row, r.count), r.real * 4);
      encoder.copyBufferToBuffer(inf, 0, scores, at(r.row, 0), r.count * 4);
    });
  }

  /** From the real tokens' counts: the counts the host plans with (slots after absorbing included). */
  counts(job: SelectionJob, rows: readonly (readonly number[])[], real: readonly Uint32Array[]): Uint32Array[] {
    const M = job.options.mergeSlots;
    this.selected.clear();
    return real.map((heads, l) =>
      Uint32Array.from(heads, (k, h) => {
        const count = job.slotCounts[l]?.[h] ?? 0;
        const n = job.lengths[l]?.[h] ?? 0;
        // As on the CPU engine, a head whose evictions fit its free slots holds as many tokens after: it stays whole.
        const after = Math.min(M, n - k) + k;
        if (after >= n) return n;
        this.selected.set(rows[l]?.[h] ?? 0, count + k);
        return after;
      }),
    );
  }

  /** The counts the top-k keeps (old slots included), [layer][head]. */
  selectionCounts(job: ExecutionJob, rows: readonly (readonly number[])[]): readonly (readonly number[])[] {
    return rows.map((heads, l) => heads.map((row, h) => this.selected.get(row) ?? job.counts[l]?.[h] ?? 0));
  }

  /**
   * Records the mass the attention-mass report sums, with every slot's entry 0 (the report then measures the real
   * tokens alone, as on the CPU engine): `mass` itself when it is the `scratch` buffer, else a copy of the
   * sequence's rows of it into `scratch` (its later uses, the window means or the mean attention, are written
   * after the report's pass).
   */
  massWithoutSlots(encoder: GPUCommandEncoder, mass: GPUBuffer, scratch: GPUBuffer, rows: readonly (readonly number[])[]): GPUBuffer {
    if (this.shifted.length === 0) return mass;
    const rowBytes = this.stride * 4;
    if (mass !== scratch) {
      for (const layerRows of rows) {
        const first = layerRows[0] ?? 0;
        encoder.copyBufferToBuffer(mass, first * rowBytes, scratch, first * rowBytes, layerRows.length * rowBytes);
      }
    }
    for (const r of this.shifted) encoder.clearBuffer(scratch, r.row * rowBytes, r.count * 4);
    return scratch;
  }

  private kernel(slots: number): MergeSlotsKernel {
    const { meta } = this.storage;
    const key = `${slots}/${meta.fullFormat}/${meta.quantFormat ?? ''}/${meta.quantLayout?.groupSize ?? 0}`;
    if (this.mergeKernel?.key !== key) {
      // One thread per channel (a power of two, ≤ 64): the kernel reduces over its threads once per token, which
      // is what it costs (a software adapter runs every barrier as a coroutine switch).
      const workgroupSize = Math.min(64, 2 ** Math.ceil(Math.log2(Math.max(1, meta.fullLayout.headDim))));
      const shape = { full: meta.fullLayout, quant: meta.quantLayout, slots, workgroupSize, load: { capacity: GPU_SLOT_CAPACITY } };
      this.mergeKernel = { key, kernel: new MergeSlotsKernel(this.storage.gpu, shape, { weightFloor: MERGE_WEIGHT_FLOOR }) };
    }
    return this.mergeKernel.kernel;
  }

  private indexLists(): { compact: GPUBuffer; gather: GPUBuffer } {
    const bytes = this.storage.meta.tables.numRows * this.stride * 4;
    if (!this.lists || this.lists.compact.size < bytes) {
      this.lists?.compact.destroy();
      this.lists?.gather.destroy();
      this.lists = { compact: createStorageBuffer(this.storage.gpu, 'slots:compact-index', bytes), gather: createStorageBuffer(this.storage.gpu, 'slots:gather-index', bytes) };
    }
    return this.lists;
  }

  /**
   * Records the absorption of this round's evicting heads and the rewritten lists; null when no head evicts.
   * `scratch` collects this call's buffers (destroyed by the caller after the submit).
   */
  encode(
    encoder: GPUCommandEncoder,
    job: ExecutionJob,
    io: { rows: readonly (readonly number[])[]; keptIndex: GPUBuffer; keptCount: GPUBuffer; mass: SlotsMass; arena: ScratchBuffers; scratch: GPUBuffer[] },
  ): SlotsRun | null {
    const M = job.options.mergeSlots;
    const { headDim, kvHeads } = this.storage.meta.shape;
    const heads: (SlotIndexHead & { layer: number; tokens: number })[] = [];
    for (const head of job.plan.heads) {
      const kept = this.selected.get(head.row);
      if (head.kept >= head.before || kept === undefined) continue;
      const count = this.state.count(head.row);
      heads.push({ row: head.row, layer: head.layer, tokens: head.before, count, kept, countAfter: head.kept - (kept - count) });
    }
    if (heads.length === 0) return null;
    const { gpu } = this.storage;
    const words = slotStateWords(M, headDim);
    const initial = new Uint32Array(heads.length * words);
    heads.forEach((h, i) => (initial[i * words + words - 1] = h.count));
    const state = createStorageBuffer(gpu, 'slots:state', initial);
    io.scratch.push(state);
    const mergeHeads = (list: typeof heads): Uint32Array =>
      packMergeHeads(list.map((h) => ({ row: h.row, tokens: h.tokens, kept: h.kept, outBase: heads.indexOf(h) })));
    let mass: GPUBuffer;
    if ('buffer' in io.mass) mass = io.mass.buffer;
    else {
      mass = io.mass.out;
      const all = io.arena.upload('slots:mean-heads', mergeHeads(heads));
      this.indexKernel.encodeMean(encoder, { heads: all, numHeads: heads.length, maxTokens: Math.max(...heads.map((h) => h.tokens)), stride: this.stride, sum: io.mass.sum, count: io.mass.count, out: mass });
    }
    // Each layer's pools are buffers of their own: one absorption per layer, into the one state buffer.
    for (let layer = 0; layer < this.storage.meta.shape.layers; layer++) {
      const ofLayer = heads.filter((h) => h.layer === layer);
      if (ofLayer.length === 0) continue;
      const headsBuffer = createStorageBuffer(gpu, 'slots:merge-heads', mergeHeads(ofLayer));
      io.scratch.push(headsBuffer);
      this.kernel(M).encode(encoder, { cache: this.storage.bindings(layer), heads: headsBuffer, numHeads: ofLayer.length, stride: this.stride, keptIndex: io.keptIndex, mass, state, slotMasses: this.state.masses });
    }
    const lists = this.indexLists();
    // Heads that keep their lists (nothing evicted) read them unchanged: copy the sequence's rows, then rewrite.
    const rowBytes = this.stride * 4;
    for (const layerRows of io.rows) {
      const first = layerRows[0] ?? 0;
      for (const out of [lists.compact, lists.gather]) encoder.copyBufferToBuffer(io.keptIndex, first * rowBytes, out, first * rowBytes, kvHeads * rowBytes);
    }
    this.indexKernel.encode(encoder, {
      heads: io.arena.upload('slots:index-heads', packSlotIndexHeads(heads)),
      numHeads: heads.length,
      stride: this.stride,
      slots: M,
      keptIndex: io.keptIndex,
      keptCounts: io.keptCount,
      compactIndex: lists.compact,
      gatherIndex: lists.gather,
    });
    for (const h of heads) this.pending.set(h.row, h.countAfter);
    return { compactIndex: lists.compact, gatherIndex: lists.gather, slotSources: { slots: M, state }, heads };
  }

  /** Records the clearing of the new slots' statistics (after the gathers: a new slot starts at 0). */
  clearNewSlotStats(encoder: GPUCommandEncoder, run: SlotsRun, stats: readonly GPUBuffer[]): void {
    for (const h of run.heads) {
      if (h.countAfter <= h.count) continue;
      for (const buffer of stats) encoder.clearBuffer(buffer, (h.row * this.stride + h.count) * 4, (h.countAfter - h.count) * 4);
    }
  }

  /** The round's new slot counts become the host's (its masses are already on the GPU). */
  afterCommit(): void {
    for (const [row, count] of this.pending) this.state.setCount(row, count);
    this.pending.clear();
  }

  /** A failed round: its counts are not committed. */
  abandon(): void {
    this.pending.clear();
  }

  destroy(): void {
    this.lists?.compact.destroy();
    this.lists?.gather.destroy();
  }
}
