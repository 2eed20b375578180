import { InvalidArgumentError } from '../errors.js';
import type { BlockLayout } from '../format/layout.js';
import { createStorageBuffer } from '../gpu/buffers.js';
import type { AppendPlan, TruncatePlan } from '../cache/cache-metadata.js';
import type { GpuKvStorage } from '../cache/gpu-storage.js';
import { planAppendWithGrowth } from '../cache/pool-growth.js';
import { AccumulateAttentionKernel, type AttentionStatsBuffers } from '../kernels/cache/accumulate-attention.js';
import type { WordRange } from '../kernels/cache/copy-ranges.js';
import { CopyRowsKernel } from '../kernels/cache/copy-rows.js';
import { FLASH_DECODE_STORAGE_BUFFERS, FlashDecodeKernel } from '../kernels/cache/flash-decode.js';
import { PagedAttentionKernel } from '../kernels/cache/paged-attention.js';
import { PrefillAttentionKernel } from '../kernels/cache/prefill-attention.js';
import type { GpuAttentionBackend, KvStep, LayerIo } from './backend.js';
import { DecodeBatches } from './decode-batch.js';
import { type AttendResult, attendOnce } from './attend-once.js';
import { ObservationWindow, type WindowBindings } from './observation-window.js';

/** One token range appended to a sequence, in flight between beginStep and endStep. */
interface StepState extends KvStep {
  readonly plan: AppendPlan;
  readonly destSlots: GPUBuffer;
  readonly positionsBuffer: GPUBuffer;
  readonly querySlots: GPUBuffer;
  /** u32 [1][3]: (slot, first query, query count) for the statistics kernel. */
  readonly segments: GPUBuffer;
  /** Acquired on the first attention of the step (appends without attention never need it). */
  probs: GPUBuffer | null;
  readonly probsStride: number;
  /** Set for a step of an open speculation: what it would add to the window and statistics, held back. */
  readonly provisional: ProvisionalRecord | null;
  /** Row lists of the window copies its layers recorded, released with the step (after the submit). */
  readonly windowRows: GPUBuffer[];
}

/** A provisional step's held-back inputs of the window and the statistics, until it settles. */
interface ProvisionalRecord {
  readonly slot: number;
  readonly firstPosition: number;
  readonly numTokens: number;
  readonly positions: Uint32Array;
  readonly positionsBuffer: GPUBuffer;
  readonly probsStride: number;
  /** One probabilities buffer per layer (a plain step reuses one: its statistics are added layer by layer). */
  readonly probs: (GPUBuffer | null)[];
  /** f32 [layers][n][nHeads][headDim]: the step's roped queries. */
  readonly queries: GPUBuffer;
}

/**
 * Attention served straight from the paged GPU storage: the model runner's {@link GpuAttentionBackend} (steps
 * that write K/V and attend causally by position), the observation window of recent roped queries (SnapKV/TOVA)
 * and the per-token attention statistics (H2O/KV-Compress), all in GPU buffers beside the storage.
 *
 * @example
 * ```ts
 * const backend = new PagedAttentionBackend(storage, { nHeads: 8, observationWindow: 32, accumulateStats: true });
 * const step = backend.beginStep(seq, 1);
 * backend.encodeLayer(encoder, step, layer, { keys, values, queries, out });
 * gpu.submit([encoder.finish()]);
 * backend.endStep(step);
 * ```
 */
export class PagedAttentionBackend implements GpuAttentionBackend {
  /** encodeLayer and encodeLayerBatch record into `io.pass` when given: no buffer copies, no passes of their own. */
  readonly recordsIntoPass = true;
  readonly nHeads: number;
  readonly observationWindow: number;
  /** Whether attention steps add to the per-token statistics. */
  accumulateStats: boolean;
  /** Model steps may take the split-context kernel (see PagedKvCacheOptions.attentionKernel). */
  private readonly splitContext: boolean;
  /** f32 [row][maxTokensPerHead] each: Σ p, Σ p², visible-query count, by logical token index. */
  readonly statistics: AttentionStatsBuffers;
  readonly window: WindowBindings;
  private readonly observation: ObservationWindow;
  /** Settled-later steps of each open speculation, by sequence id. */
  private readonly speculations = new Map<number, ProvisionalRecord[]>();
  private readonly steps = new WeakMap<KvStep, StepState>();
  private readonly batches: DecodeBatches<StepState>;
  /** Window records and provisional steps' query copies, by dispatches, so a forward stays one compute pass. */
  private readonly copyRows: CopyRowsKernel;
  private kernels: {
    quant: BlockLayout | null;
    attention: PagedAttentionKernel;
    accumulate: AccumulateAttentionKernel;
    /** Tiled attention of multi-token steps (prefill chunks): no probability buffer, statistics opt-in. */
    prefill: PrefillAttentionKernel;
    /** The split-context kernel model steps use, where the block layouts allow it (see FlashDecodeKernel.supports). */
    flash: FlashDecodeKernel | null;
  } | null = null;

  constructor(
    readonly storage: GpuKvStorage,
    options: { readonly nHeads: number; readonly observationWindow: number; readonly accumulateStats: boolean; readonly splitContext?: boolean },
  ) {
    const { gpu, meta } = storage;
    this.nHeads = options.nHeads;
    this.observationWindow = options.observationWindow;
    this.accumulateStats = options.accumulateStats;
    this.splitContext = options.splitContext ?? true;
    const { layers } = meta.shape;
    this.batches = new DecodeBatches(gpu, layers, meta.shape.kvHeads);
    this.copyRows = new CopyRowsKernel(gpu);
    const statsBytes = meta.tables.numRows * storage.maxTokensPerHead * 4;
    this.statistics = {
      attnSum: createStorageBuffer(gpu, 'kv:attn-sum', statsBytes),
      attnSqSum: createStorageBuffer(gpu, 'kv:attn-sq-sum', statsBytes),
      attnCount: createStorageBuffer(gpu, 'kv:attn-count', statsBytes),
    };
    this.observation = new ObservationWindow(storage, this.copyRows, options.nHeads, options.observationWindow);
    this.window = this.observation.bindings;
  }

  /** The attention kernels for the storage's current layouts (the quantized layout appears on first quantization). */
  private attentionKernels(): NonNullable<PagedAttentionBackend['kernels']> {
    const { meta } = this.storage;
    if (this.kernels === null || this.kernels.quant !== meta.quantLayout) {
      this.kernels?.flash?.destroy();
      this.kernels?.prefill.destroy();
      const shape = { nHeads: this.nHeads, kvHeads: meta.shape.kvHeads, full: meta.fullLayout, quant: meta.quantLayout };
      this.kernels = {
        quant: meta.quantLayout,
        attention: new PagedAttentionKernel(this.storage.gpu, shape),
        accumulate: new AccumulateAttentionKernel(this.storage.gpu, shape),
        prefill: new PrefillAttentionKernel(this.storage.gpu, shape),
        flash: this.flashFits() ? new FlashDecodeKernel(this.storage.gpu, shape) : null,
      };
    }
    return this.kernels;
  }

  /** The split-context kernel serves the block layouts and the device binds enough storage buffers per stage. */
  private flashFits(): boolean {
    const { meta, gpu } = this.storage;
    return this.splitContext && FlashDecodeKernel.supports(meta.fullLayout, meta.quantLayout) && gpu.limits.maxStorageBuffersPerShaderStage >= FLASH_DECODE_STORAGE_BUFFERS;
  }

  /** How many of the newest queries of (sequence, layer) the observation window holds. */
  windowCount(seqId: number, layer: number): number {
    return this.observation.state(this.storage.meta.slotOf(seqId), layer).valid;
  }

  /** The window bookkeeping of (slot, layer): valid queries and one past the newest position (for snapshots). */
  windowState(slot: number, layer: number): { valid: number; end: number } {
    return this.observation.state(slot, layer);
  }

  /** Sets the window bookkeeping of (slot, layer) after its ring was uploaded (a restored snapshot). */
  setWindowState(slot: number, layer: number, valid: number, end: number): void {
    this.observation.setState(slot, layer, valid, end);
  }

  // ------------------------------------------------------------------ steps

  /**
   * Reserves slots for `numTokens` new tokens of a sequence in every layer and head, growing the full pool within
   * the byte budget if needed, runs copy-on-write copies and uploads the changed table rows. OutOfBlocksError
   * (state unchanged) when even the budget cannot hold them.
   */
  beginStep(seqId: number, numTokens: number): KvStep {
    const { meta } = this.storage;
    const before = meta.snapshot();
    const plan = planAppendWithGrowth(meta, seqId, numTokens, (pool, layer, blocks) => this.storage.growPool(pool, layer, blocks));
    try {
      return this.stepFromPlan(plan);
    } catch (error) {
      meta.restore(before);
      this.storage.uploadDirtyRows();
      throw error;
    }
  }

  private stepFromPlan(plan: AppendPlan): StepState {
    this.storage.copyBlocks(plan.copies);
    const positions = Uint32Array.from({ length: plan.numTokens }, (_, t) => plan.firstPosition + t);
    let step: StepState = {
      seqId: plan.seqId,
      numTokens: plan.numTokens,
      positions,
      plan,
      destSlots: this.storage.gpu.buffers.upload(plan.destSlots, 'kv:dest-slots'),
      positionsBuffer: this.storage.gpu.buffers.upload(positions, 'kv:positions'),
      querySlots: this.storage.gpu.buffers.upload(new Uint32Array(plan.numTokens).fill(plan.slot), 'kv:query-slots'),
      segments: this.storage.gpu.buffers.upload(new Uint32Array([plan.slot, 0, plan.numTokens]), 'kv:segments'),
      probs: null,
      probsStride: Math.max(1, this.longestHead(plan.seqId)),
      provisional: null,
      windowRows: [],
    };
    const speculation = this.speculations.get(plan.seqId);
    if (speculation) {
      const { layers, headDim } = this.storage.meta.shape;
      const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
      step = {
        ...step,
        provisional: {
          slot: plan.slot,
          firstPosition: plan.firstPosition,
          numTokens: plan.numTokens,
          positions,
          positionsBuffer: step.positionsBuffer,
          probsStride: step.probsStride,
          probs: Array.from({ length: layers }, () => null),
          queries: this.storage.gpu.buffers.acquire(layers * plan.numTokens * this.nHeads * headDim * 4, usage, 'kv:provisional-queries'),
        },
      };
    }
    this.storage.uploadDirtyRows();
    this.steps.set(step, step);
    return step;
  }

  private longestHead(seqId: number): number {
    const { meta } = this.storage;
    let longest = 0;
    for (let layer = 0; layer < meta.shape.layers; layer++) {
      for (let head = 0; head < meta.shape.kvHeads; head++) longest = Math.max(longest, meta.tokenCount(seqId, layer, head));
    }
    return longest;
  }

  private state(step: KvStep): StepState {
    const state = this.steps.get(step);
    if (!state) throw new InvalidArgumentError('step', 'not a step of this cache (use beginStep)');
    return state;
  }

  /** Encodes the K/V write of one layer of a step (appends that do not attend). */
  encodeWrite(encoder: GPUCommandEncoder, step: KvStep, layer: number, keys: GPUBuffer, values: GPUBuffer, pass?: GPUComputePassEncoder): void {
    const state = this.state(step);
    this.checkLayer(layer);
    this.storage.encodeAppend(encoder, {
      layer,
      numTokens: state.numTokens,
      keys,
      values,
      destSlots: state.destSlots,
      positions: state.positionsBuffer,
      ...(pass ? { pass } : {}),
    });
  }

  /**
   * Encodes one layer of a step: the new tokens' K/V (f32 [n][kvHeads][headDim], RoPE applied) into their slots,
   * the newest queries into the observation window, then paged attention of the n queries (causal by position).
   * Values are not checked here (a model's own activations, on the hot path); untrusted K/V go through the
   * cache's append() or appendBuffers(), which reject NaN, ±Inf and values the pool format cannot hold.
   * With `io.pass` every dispatch goes into that open pass.
   */
  encodeLayer(encoder: GPUCommandEncoder, step: KvStep, layer: number, io: LayerIo): void {
    const state = this.state(step);
    const pass = io.pass ? { pass: io.pass } : {};
    const window = (): void => {
      const rows = this.observation.encodeRecord(encoder, io.pass, layer, io.queries, [{ slot: state.plan.slot, firstRow: 0, positions: state.positions }]);
      if (rows) state.windowRows.push(rows);
    };
    this.encodeWrite(encoder, step, layer, io.keys, io.values, io.pass);
    const { attention, accumulate, flash, prefill } = this.attentionKernels();
    const provisional = state.provisional;
    // Multi-token steps take the tiled prefill kernel (scratch grows with the chunk, never chunk × context);
    // one-token steps the split-context kernel (K/V read once per GQA group, no probability buffer, statistics
    // from their own pass). Provisional (speculative) steps keep the one-pass kernel below: their statistics
    // settle later, from the probabilities it leaves.
    const tiled = state.numTokens > 1 ? prefill : flash;
    if (tiled && !provisional) {
      window();
      tiled.encode(encoder, {
        ...pass,
        cache: this.storage.bindings(layer),
        layer,
        numQueries: state.numTokens,
        queries: io.queries,
        querySlots: state.querySlots,
        queryPositions: state.positionsBuffer,
        out: io.out,
        maxContext: state.probsStride,
        ...(this.accumulateStats ? { stats: { segments: state.segments, numSegments: 1, target: this.statistics } } : {}),
      });
      return;
    }
    const acquireProbs = (): GPUBuffer =>
      this.storage.gpu.buffers.acquire(
        state.numTokens * this.nHeads * state.probsStride * 4,
        GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
        'kv:probs',
      );
    let probs: GPUBuffer;
    if (provisional) {
      const queryWords = state.numTokens * this.nHeads * this.storage.meta.shape.headDim;
      this.copyRows.encodeRange(encoder, { src: io.queries, srcOffset: 0, dst: provisional.queries, dstOffset: layer * queryWords, words: queryWords, ...pass });
      probs = provisional.probs[layer] ?? acquireProbs();
      provisional.probs[layer] = probs;
    } else {
      window();
      state.probs ??= acquireProbs();
      probs = state.probs;
    }
    attention.encode(encoder, {
      ...pass,
      cache: this.storage.bindings(layer),
      layer,
      numQueries: state.numTokens,
      queries: io.queries,
      querySlots: state.querySlots,
      queryPositions: state.positionsBuffer,
      out: io.out,
      probs,
      probsStride: state.probsStride,
    });
    if (this.accumulateStats && !provisional) {
      accumulate.encode(encoder, {
        ...pass,
        cache: this.storage.bindings(layer),
        layer,
        probs,
        probsStride: state.probsStride,
        queryPositions: state.positionsBuffer,
        segments: state.segments,
        numSegments: 1,
        stats: this.statistics,
      });
    }
  }

  /**
   * One layer of a batched decode step (a token of each of `steps`, rows of `io` in order): one K/V append, one
   * split-context dispatch over every sequence. False, encoding nothing, without that kernel or for provisional
   * or multi-token steps (attend step by step then).
   */
  encodeLayerBatch(encoder: GPUCommandEncoder, steps: readonly KvStep[], layer: number, io: LayerIo): boolean {
    const states = steps.map((step) => this.state(step));
    const { flash } = this.attentionKernels();
    if (!flash || states.length === 0 || states.some((state) => state.numTokens !== 1 || state.provisional)) return false;
    this.checkLayer(layer);
    const member = (state: StepState) => ({ slot: state.plan.slot, position: state.positions[0] ?? 0, destSlots: state.plan.destSlots, longestHead: state.probsStride });
    const batch = this.batches.buffers(states, member);
    const pass = io.pass ? { pass: io.pass } : {};
    this.storage.encodeAppend(encoder, { layer, numTokens: batch.size, keys: io.keys, values: io.values, destSlots: batch.destSlots, positions: batch.positions, ...pass });
    const rows = this.observation.encodeRecord(encoder, io.pass, layer, io.queries, states.map((state, b) => ({ slot: state.plan.slot, firstRow: b, positions: state.positions })));
    if (rows) states[0]?.windowRows.push(rows);
    const { querySlots, positions: queryPositions, maxContext } = batch;
    flash.encode(encoder, {
      ...pass,
      ...{ cache: this.storage.bindings(layer), layer, numQueries: batch.size, queries: io.queries, querySlots, queryPositions, out: io.out, maxContext },
      ...(this.accumulateStats ? { stats: { segments: batch.segments, numSegments: batch.size, target: this.statistics } } : {}),
    });
    return true;
  }

  /** The probabilities buffer of a step's last encoded layer: f32 [n][nHeads][probsStride]. */
  stepProbs(step: KvStep): { buffer: GPUBuffer; stride: number } | null {
    const state = this.state(step);
    return state.probs ? { buffer: state.probs, stride: state.probsStride } : null;
  }

  /** Releases a step's scratch buffers (after its command buffer was submitted); a provisional step keeps what it settles with. */
  endStep(step: KvStep): void {
    const state = this.state(step);
    this.batches.release(state);
    const keep = state.provisional;
    for (const buffer of [state.destSlots, state.querySlots, state.segments, state.probs, keep ? null : state.positionsBuffer, ...state.windowRows]) {
      if (buffer) this.storage.gpu.buffers.release(buffer);
    }
    if (keep) this.speculations.get(state.seqId)?.push(keep);
    this.steps.delete(step);
  }

  // ------------------------------------------------------------------ speculation and truncation

  /** True while a speculation of the sequence is open. */
  inSpeculation(seqId: number): boolean {
    return this.speculations.has(seqId);
  }

  /**
   * Makes the sequence's next steps provisional until {@link settleSpeculation}: they write K/V and attend as
   * usual, but keep their queries and per-layer probabilities instead of adding them to the window and the
   * statistics, so a rollback drops them exactly. An open speculation is settled first, keeping every token.
   */
  beginSpeculation(seqId: number): void {
    this.storage.meta.slotOf(seqId);
    this.settleSpeculation(seqId, Number.POSITIVE_INFINITY);
    this.speculations.set(seqId, []);
  }

  /**
   * Ends a speculation: the queries of its steps at positions < `length` go into the window and their
   * probabilities into the statistics, one query per accumulation in step order, exactly as plain one-token steps
   * would have added them (masked later tokens add 0); later positions are dropped. No-op without a speculation.
   */
  settleSpeculation(seqId: number, length: number): void {
    const records = this.speculations.get(seqId);
    if (!records) return;
    this.speculations.delete(seqId);
    const { gpu, meta } = this.storage;
    const encoder = gpu.device.createCommandEncoder({ label: 'kv:settle-speculation' });
    const scratch: GPUBuffer[] = [];
    for (const record of records) {
      const kept = Math.max(0, Math.min(record.numTokens, length - record.firstPosition));
      const segments = Array.from({ length: kept }, (_, t) => this.storage.gpu.buffers.upload(new Uint32Array([record.slot, t, 1]), 'kv:segments'));
      scratch.push(...segments);
      for (let layer = 0; layer < meta.shape.layers && kept > 0; layer++) {
        const rows = this.observation.encodeRecord(encoder, undefined, layer, record.queries, [
          { slot: record.slot, firstRow: layer * record.numTokens, positions: record.positions.subarray(0, kept) },
        ]);
        if (rows) scratch.push(rows);
        const probs = record.probs[layer];
        if (!this.accumulateStats || !probs) continue;
        for (const segment of segments) {
          this.attentionKernels().accumulate.encode(encoder, {
            cache: this.storage.bindings(layer),
            layer,
            probs,
            probsStride: record.probsStride,
            queryPositions: record.positionsBuffer,
            segments: segment,
            numSegments: 1,
            stats: this.statistics,
          });
        }
      }
    }
    gpu.submit([encoder.finish()]);
    for (const record of records) this.releaseRecord(record);
    for (const buffer of scratch) gpu.buffers.release(buffer);
  }

  /** Forgets a sequence's open speculation (the sequence was freed). */
  dropSpeculation(seqId: number): void {
    for (const record of this.speculations.get(seqId) ?? []) this.releaseRecord(record);
    this.speculations.delete(seqId);
  }

  private releaseRecord(record: ProvisionalRecord): void {
    for (const buffer of [record.positionsBuffer, record.queries, ...record.probs]) {
      if (buffer) this.storage.gpu.buffers.release(buffer);
    }
  }

  /**
   * After `CacheMetadata.truncate` (and the rows' upload): zeroes the statistics of the removed logical indices
   * and drops the window's queries of removed positions (settle the speculation first).
   */
  truncated(plan: TruncatePlan): void {
    const { gpu } = this.storage;
    const encoder = gpu.device.createCommandEncoder({ label: 'kv:truncate' });
    const stride = this.storage.maxTokensPerHead;
    for (const head of plan.heads) {
      if (head.tokensAfter === head.tokensBefore) continue;
      for (const stats of Object.values(this.statistics)) {
        encoder.clearBuffer(stats, (head.row * stride + head.tokensAfter) * 4, (head.tokensBefore - head.tokensAfter) * 4);
      }
    }
    gpu.submit([encoder.finish()]);
    this.observation.truncated(plan.slot, plan.lengthAfter);
  }

  // ------------------------------------------------------------------ host attention

  /**
   * Attention of one query (f32 [nHeads][headDim], RoPE applied) against a sequence's cached tokens in `layer`;
   * returns the output and the probabilities per KV head (summed over the group). For tests and tools; the model
   * runner encodes attention itself. Adds nothing to the statistics.
   */
  attend(seqId: number, layer: number, query: Float32Array): Promise<AttendResult> {
    this.checkLayer(layer);
    return attendOnce(this.storage, this.attentionKernels().attention, this.nHeads, seqId, layer, query);
  }

  // ------------------------------------------------------------------ per-slot state

  /** Empties a slot's statistics and window (a new sequence starts with none). */
  clearSlot(slot: number): void {
    const { meta, gpu } = this.storage;
    const encoder = gpu.device.createCommandEncoder({ label: 'kv:clear-slot' });
    const statsRowBytes = meta.shape.kvHeads * this.storage.maxTokensPerHead * 4;
    this.observation.clearSlot(slot);
    for (let layer = 0; layer < meta.shape.layers; layer++) {
      const offset = (layer * meta.seqSlots + slot) * statsRowBytes;
      for (const stats of Object.values(this.statistics)) encoder.clearBuffer(stats, offset, statsRowBytes);
    }
    gpu.submit([encoder.finish()]);
  }

  /** Copies a slot's statistics and window to another slot (a fork inherits what its source observed). */
  copySlot(srcSlot: number, dstSlot: number): void {
    const { meta, gpu } = this.storage;
    const encoder = gpu.device.createCommandEncoder({ label: 'kv:fork' });
    const statsRowWords = meta.shape.kvHeads * this.storage.maxTokensPerHead;
    const statsRanges: WordRange[] = [];
    for (let layer = 0; layer < meta.shape.layers; layer++) {
      statsRanges.push({ src: (layer * meta.seqSlots + srcSlot) * statsRowWords, dst: (layer * meta.seqSlots + dstSlot) * statsRowWords });
    }
    const scratch = [
      ...Object.values(this.statistics).map((stats) => this.storage.encodeCopyRanges(encoder, stats, statsRanges, statsRowWords)),
      ...this.observation.encodeCopySlot(encoder, srcSlot, dstSlot),
    ];
    gpu.submit([encoder.finish()]);
    this.storage.destroyAfterSubmit(scratch);
  }

  private checkLayer(layer: number): void {
    const layers = this.storage.meta.shape.layers;
    if (!Number.isInteger(layer) || layer < 0 || layer >= layers) {
      throw new InvalidArgumentError('layer', `must be in [0, ${layers}); got ${layer}`);
    }
  }

  /** Destroys the statistics and window buffers. */
  destroy(): void {
    this.copyRows.destroy();
    this.kernels?.flash?.destroy();
    this.kernels?.prefill.destroy();
    for (const seqId of [...this.speculations.keys()]) this.dropSpeculation(seqId);
    for (const buffer of Object.values(this.statistics)) buffer.destroy();
    this.observation.destroy();
  }
}
