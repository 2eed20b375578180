import { CacheDestroyedError, InvalidArgumentError, NonFiniteValueError, SequenceBusyError } from '../errors.js';
import type { BlockLayout, CacheShape } from '../format/layout.js';
import { createStorageBuffer } from '../gpu/buffers.js';
import type { GpuContext } from '../gpu/context.js';
import { CacheMetadata } from '../cache/cache-metadata.js';
import { type PagedKvCacheOptions, resolveCacheOptions } from '../cache/cache-options.js';
import { GpuKvStorage } from '../cache/gpu-storage.js';
import { GpuSlotState } from '../cache/gpu-slot-state.js';
import { slotRows } from '../cache/slot-state.js';
import { checkInvariants } from '../cache/invariants.js';
import { type CacheMemoryReport, memoryReport, sequenceBytes } from '../cache/memory-report.js';
import type { GpuAttentionBackend, KvStep, LayerIo } from '../attention/backend.js';
import { PagedAttentionBackend } from '../attention/paged-backend.js';
import type { AutoCompressOptions, AutoCompressionReport } from '../compress/auto.js';
import { GpuCompressionStages } from '../compress/gpu-stages.js';
import type { CompressOptions, CompressionReport } from '../compress/options.js';
import { compressSequence, compressToRatio } from '../compress/pipeline.js';
import { checkKv, checkQuery } from './inputs.js';
import { COMPRESSOR, SequenceQueue } from './sequence-queue.js';
import type { SequenceSnapshot } from './sequence-snapshot.js';
import { exportPaged, importPaged } from './snapshot-io.js';

/**
 * A paged KV cache in GPU buffers: a full-precision pool where tokens land and a quantized pool, vLLM-style
 * block tables per (sequence, layer, KV head), attention that reads the pages directly, per-token attention
 * statistics for eviction policies, and compression on the GPU. It composes the storage
 * ({@link GpuKvStorage}), the attention backend ({@link PagedAttentionBackend}, which model runners drive
 * through this object) and the compression stages.
 *
 * @example
 * ```ts
 * const cache = PagedKvCache.create(gpu, { shape: { layers: 4, kvHeads: 8, headDim: 128 }, nHeads: 32, quantBits: 4 });
 * cache.addSequence(1);
 * await cache.append(1, keys, values);   // f32 [layers][tokens][kvHeads][headDim], RoPE applied
 * const report = await cache.compress(1, { budget: 64, bits: 4 });
 * console.log(report.ratio, report.bytesFreed, report.keptPerHead);
 * cache.destroy();
 * ```
 */
export class PagedKvCache implements GpuAttentionBackend {
  readonly storage: GpuKvStorage;
  readonly attention: PagedAttentionBackend;
  readonly shape: CacheShape;
  readonly nHeads: number;
  readonly observationWindow: number;
  readonly maxTokensPerHead: number;
  /** The bits given as `quantBits` at creation (the quantized pool is then fixed to them), else null. */
  private readonly fixedBits: number | null;
  private stages: GpuCompressionStages | null = null;
  /** Merge 'slots' state: counts per block-table row, masses in a small GPU buffer beside the pools. */
  private readonly slots: GpuSlotState;
  /** Operations take effect per sequence in call order (see {@link SequenceQueue}). */
  private readonly queue = new SequenceQueue();
  private destroyed = false;

  private constructor(gpu: GpuContext, options: PagedKvCacheOptions) {
    const resolved = resolveCacheOptions(options);
    this.storage = new GpuKvStorage(gpu, new CacheMetadata(resolved.metadata));
    this.attention = new PagedAttentionBackend(this.storage, {
      nHeads: resolved.nHeads,
      observationWindow: resolved.observationWindow,
      accumulateStats: options.accumulateStats ?? true,
      splitContext: (options.attentionKernel ?? 'auto') === 'auto',
    });
    this.shape = this.storage.meta.shape;
    this.nHeads = resolved.nHeads;
    this.observationWindow = resolved.observationWindow;
    this.maxTokensPerHead = this.storage.maxTokensPerHead;
    this.fixedBits = options.quantBits ?? null;
    this.slots = new GpuSlotState(gpu, this.storage.meta.tables.numRows);
  }

  /** Creates a cache, validating every option before any GPU object exists. */
  static create(gpu: GpuContext, options: PagedKvCacheOptions): PagedKvCache {
    return new PagedKvCache(gpu, options);
  }

  get gpu(): GpuContext {
    return this.storage.gpu;
  }

  /** The host metadata: pools, block tables, sequences. */
  get meta(): CacheMetadata {
    return this.storage.meta;
  }

  /** The full-format block layout (where tokens land). */
  get fullLayout(): BlockLayout {
    return this.meta.fullLayout;
  }

  /** The quantized block layout, or null while the cache has no quantized pool. */
  get quantLayout(): BlockLayout | null {
    return this.meta.quantLayout;
  }

  // ------------------------------------------------------------------ sequences

  /**
   * Registers a sequence (its statistics and window start empty). SequenceBusyError while an earlier operation on
   * the id (a freeSequence not yet run) is queued: await it first.
   */
  addSequence(id: number): void {
    this.assertUsable();
    if (this.queue.busy(id)) throw new SequenceBusyError(id);
    const slot = this.meta.addSequence(id);
    this.attention.clearSlot(slot);
    this.slots.clearRows(this.rowsOfSlot(slot));
    this.storage.uploadDirtyRows();
  }

  /** The block-table rows of a sequence slot, layer · kvHeads + head order. */
  private rowsOfSlot(slot: number): number[] {
    return slotRows(this.meta.shape, slot, (s, layer, head) => this.meta.tables.row(s, layer, head));
  }

  /**
   * Merge slots (merge 'slots') at the front of one head: how many of its first logical tokens are slots, read
   * back with their masses (one GPU readback; f32 masses widened to f64, as the CPU engine reports them).
   */
  async mergeSlots(seqId: number, layer: number, kvHead: number): Promise<Float64Array> {
    const row = this.meta.rowOf(seqId, layer, kvHead);
    return (await this.slots.exportRows([row]))?.mass ?? new Float64Array(0);
  }

  /** Bytes of one sequence's merge-slot masses on the GPU (0 without slots). */
  slotStateBytes(seqId: number): number {
    return this.slots.bytes(this.rowsOfSlot(this.meta.slotOf(seqId)));
  }

  /**
   * Frees a sequence: every block it held alone returns to the pool. It takes effect after the sequence's earlier
   * operations (a compression in flight completes first); at once when there are none.
   */
  freeSequence(id: number): Promise<void> {
    return this.queue.run([id], () => {
      this.assertUsable();
      this.attention.dropSpeculation(id);
      this.slots.clearRows(this.rowsOfSlot(this.meta.slotOf(id)));
      this.meta.freeSequence(id);
      this.storage.uploadDirtyRows();
    });
  }

  /**
   * Forks `srcId` into `dstId`: blocks are shared by reference count and copied on the next write. Takes effect
   * after `srcId`'s earlier operations.
   */
  fork(srcId: number, dstId: number): Promise<void> {
    return this.queue.run([srcId, dstId], () => {
      this.assertUsable();
      this.attention.settleSpeculation(srcId, Number.POSITIVE_INFINITY);
      const srcSlot = this.meta.slotOf(srcId);
      const dstSlot = this.meta.fork(srcId, dstId);
      this.attention.copySlot(srcSlot, dstSlot);
      this.slots.copyRows(this.rowsOfSlot(srcSlot), this.rowsOfSlot(dstSlot));
      this.storage.uploadDirtyRows();
    });
  }

  /** True when the sequence is live. */
  hasSequence(id: number): boolean {
    return this.meta.hasSequence(id);
  }

  /** Tokens ever appended to a sequence (the position of its next token). */
  sequenceLength(id: number): number {
    return this.meta.sequenceLength(id);
  }

  /** Tokens a head holds now (after eviction, fewer than sequenceLength). */
  tokenCount(id: number, layer: number, kvHead: number): number {
    return this.meta.tokenCount(id, layer, kvHead);
  }

  // ------------------------------------------------------------------ the attention backend of model runners

  /**
   * See {@link PagedAttentionBackend.beginStep}. SequenceBusyError while the sequence has queued or in-flight
   * operations (await them first: a step is synchronous and cannot wait).
   */
  beginStep(seqId: number, numTokens: number): KvStep {
    this.assertUsable();
    if (this.queue.busy(seqId)) throw new SequenceBusyError(seqId);
    return this.attention.beginStep(seqId, numTokens);
  }

  /** See {@link PagedAttentionBackend.recordsIntoPass}. */
  readonly recordsIntoPass = true;

  /** See {@link PagedAttentionBackend.encodeLayer}. */
  encodeLayer(encoder: GPUCommandEncoder, step: KvStep, layer: number, io: LayerIo): void {
    this.attention.encodeLayer(encoder, step, layer, io);
  }

  /** See {@link PagedAttentionBackend.encodeLayerBatch}. */
  encodeLayerBatch(encoder: GPUCommandEncoder, steps: readonly KvStep[], layer: number, io: LayerIo): boolean {
    return this.attention.encodeLayerBatch(encoder, steps, layer, io);
  }

  /** See {@link PagedAttentionBackend.endStep}. */
  endStep(step: KvStep): void {
    this.attention.endStep(step);
  }

  // ------------------------------------------------------------------ appending

  /**
   * Appends tokens from typed arrays: K and V f32 `[layers][tokens][kvHeads][headDim]`, RoPE applied. Validates
   * shape and finiteness first (NonFiniteValueError, cache unchanged), then writes every layer in one submit.
   * Plain appends record no observation-window queries (window policies then need a model run; the default
   * policy works either way).
   */
  async append(seqId: number, keys: Float32Array, values: Float32Array): Promise<void> {
    this.assertUsable();
    const numTokens = checkKv(this.shape, keys, values, this.meta.fullFormat);
    return this.queue.run([seqId], () => this.appendNow(seqId, keys, values, numTokens));
  }

  private async appendNow(seqId: number, keys: Float32Array, values: Float32Array, numTokens: number): Promise<void> {
    this.assertUsable();
    this.attention.settleSpeculation(seqId, Number.POSITIVE_INFINITY);
    const { layers, kvHeads, headDim } = this.shape;
    const step = this.attention.beginStep(seqId, numTokens);
    const layerFloats = numTokens * kvHeads * headDim;
    const encoder = this.gpu.device.createCommandEncoder({ label: 'kv:append' });
    const buffers: GPUBuffer[] = [];
    for (let layer = 0; layer < layers; layer++) {
      const k = createStorageBuffer(this.gpu, 'kv:append-k', keys.subarray(layer * layerFloats, (layer + 1) * layerFloats));
      const v = createStorageBuffer(this.gpu, 'kv:append-v', values.subarray(layer * layerFloats, (layer + 1) * layerFloats));
      buffers.push(k, v);
      this.attention.encodeWrite(encoder, step, layer, k, v);
    }
    this.gpu.submit([encoder.finish()]);
    this.endStep(step);
    try {
      await this.gpu.idle();
      this.assertUsable();
    } finally {
      for (const buffer of buffers) buffer.destroy();
    }
  }

  /**
   * Appends tokens whose K and V already live in GPU buffers: one buffer per layer, f32
   * `[numTokens][kvHeads][headDim]`. The append kernel checks every value; if any is NaN or ±Inf the append is
   * rolled back (the slots it wrote become unreferenced again) and NonFiniteValueError is thrown, so the cache is
   * exactly as before. The check costs one small readback per call.
   */
  async appendBuffers(seqId: number, keys: readonly GPUBuffer[], values: readonly GPUBuffer[], numTokens: number): Promise<void> {
    this.assertUsable();
    if (!Number.isInteger(numTokens) || numTokens <= 0) {
      throw new InvalidArgumentError('numTokens', `must be a positive integer; got ${numTokens}`);
    }
    return this.queue.run([seqId], () => this.appendBuffersNow(seqId, keys, values, numTokens));
  }

  private async appendBuffersNow(seqId: number, keys: readonly GPUBuffer[], values: readonly GPUBuffer[], numTokens: number): Promise<void> {
    this.assertUsable();
    const { layers, kvHeads, headDim } = this.shape;
    if (keys.length !== layers || values.length !== layers) {
      throw new InvalidArgumentError('keys', `need one K and one V buffer per layer (${layers}); got ${keys.length} and ${values.length}`);
    }
    const bytes = numTokens * kvHeads * headDim * 4;
    for (const buffer of [...keys, ...values]) {
      if (buffer.size < bytes) {
        throw new InvalidArgumentError('keys', `buffer "${buffer.label}" holds ${buffer.size} B; ${numTokens} tokens need ${bytes} B`);
      }
    }
    this.attention.settleSpeculation(seqId, Number.POSITIVE_INFINITY);
    const before = this.meta.snapshot();
    this.storage.clearNonFiniteFlag();
    const step = this.attention.beginStep(seqId, numTokens);
    const encoder = this.gpu.device.createCommandEncoder({ label: 'kv:append-buffers' });
    for (let layer = 0; layer < layers; layer++) {
      this.attention.encodeWrite(encoder, step, layer, keys[layer] as GPUBuffer, values[layer] as GPUBuffer);
    }
    this.gpu.submit([encoder.finish()]);
    this.endStep(step);
    const nonFinite = await this.storage.takeNonFiniteFlag();
    this.assertUsable();
    if (nonFinite) {
      this.meta.restore(before);
      this.storage.uploadDirtyRows();
      throw new NonFiniteValueError('a K or V value in the GPU buffers is NaN, ±Inf or past the pool format’s range; the append was rolled back');
    }
  }

  // ------------------------------------------------------------------ speculation and rollback

  /**
   * Opens a speculation: the sequence's next steps (drafts being verified, e.g. one multi-token
   * `GpuLlama.forward`) write K/V and attend as usual, but their queries' contributions to the observation window
   * and the attention statistics are held back until {@link truncate} keeps or drops them, so rolling back rejected
   * drafts leaves the cache exactly as if they never ran. Any other operation on the sequence (append, fork,
   * compress, another speculation) first keeps every provisional token. Holds each provisional step's
   * probabilities per layer (layers × tokens × nHeads × context × 4 B) until it settles. SequenceBusyError while
   * the sequence has queued or in-flight operations.
   *
   * @example
   * ```ts
   * cache.beginSpeculation(seq);
   * const logits = await model.forward(seq, [last, ...drafts], { allLogits: true });
   * await cache.truncate(seq, start + accepted); // rejected drafts leave no trace
   * ```
   */
  beginSpeculation(seqId: number): void {
    this.assertUsable();
    if (this.queue.busy(seqId)) throw new SequenceBusyError(seqId);
    this.attention.beginSpeculation(seqId);
  }

  /**
   * Rolls a sequence back to its first `length` tokens by original position: every head drops its tokens at
   * positions ≥ length (tokens a compression evicted stay evicted), blocks past each head's new end are released,
   * their statistics cleared and their window queries removed, and sequenceLength becomes `length`. An open
   * speculation is settled: its kept tokens' window queries and statistics are added as plain steps would have
   * added them, the dropped ones' never are, so the state equals a run that never saw the dropped tokens. Outside a
   * speculation the dropped tokens' queries' past contributions to the statistics of earlier tokens stay (they were
   * summed in). Tokens appended since the sequence's last compression can always be dropped;
   * TruncateCompressedError (cache unchanged) below `meta.minTruncateLength(seq)` (among compacted tokens, or
   * inside a quantized block). Takes effect after the sequence's earlier operations.
   */
  truncate(seqId: number, length: number): Promise<void> {
    this.assertUsable();
    return this.queue.run([seqId], () => {
      this.assertUsable();
      const plan = this.meta.truncate(seqId, length);
      this.storage.uploadDirtyRows();
      this.attention.settleSpeculation(seqId, length);
      this.attention.truncated(plan);
    });
  }

  // ------------------------------------------------------------------ reading

  /**
   * Attention of one query (f32 [nHeads][headDim], RoPE applied) against a sequence's cached tokens in `layer`;
   * the output and the probabilities per KV head (summed over the group). For tests and tools.
   */
  async attend(seqId: number, layer: number, query: Float32Array): Promise<{ out: Float32Array; probsPerKvHead: Float32Array[] }> {
    this.assertUsable();
    checkQuery(query, this.nHeads * this.shape.headDim);
    return this.queue.run([seqId], async () => {
      this.assertUsable();
      const result = await this.attention.attend(seqId, layer, query);
      this.assertUsable();
      return result;
    });
  }

  /** One head read back and decoded: K, V `[tokens][headDim]` and original positions, in logical order. */
  async readHead(seqId: number, layer: number, kvHead: number): Promise<{ keys: Float32Array; values: Float32Array; positions: Uint32Array }> {
    this.assertUsable();
    return this.queue.run([seqId], async () => {
      this.assertUsable();
      const head = await this.storage.readHead(seqId, layer, kvHead);
      this.assertUsable();
      return head;
    });
  }

  // ------------------------------------------------------------------ snapshots

  /**
   * The whole paged state of one sequence as plain data (blocks, rows, statistics, window), read back in one
   * staging copy; it imports into either engine. Takes effect after the sequence's earlier operations.
   * InvalidArgumentError while a speculation is open (settle it with truncate first: a snapshot never holds
   * provisional state).
   */
  exportSequence(seqId: number): Promise<SequenceSnapshot> {
    this.assertUsable();
    return this.queue.run([seqId], async () => {
      this.assertUsable();
      const snapshot = await exportPaged(this.storage, this.attention, seqId, this.slots);
      this.assertUsable();
      return snapshot;
    });
  }

  /**
   * Adds sequence `seqId` holding a snapshot's state, so that it continues exactly as the exported sequence would
   * have. Validates everything first (SnapshotMismatchError naming the field), allocates every block or none
   * (growing the pools within maxBytes; OutOfBlocksError), sets the quantized format if the cache has none yet,
   * then uploads. On any error the cache is unchanged. Takes effect after `seqId`'s earlier operations.
   */
  importSequence(seqId: number, snapshot: SequenceSnapshot): Promise<void> {
    this.assertUsable();
    return this.queue.run([seqId], async () => {
      this.assertUsable();
      importPaged(this.storage, this.attention, seqId, snapshot, this.slots);
    });
  }

  // ------------------------------------------------------------------ compression

  private compressionStages(): GpuCompressionStages {
    this.stages ??= new GpuCompressionStages(this.storage, this.attention, this.slots);
    return this.stages;
  }

  /**
   * Compresses a sequence on the GPU: score, per-head budgets, top-k, compaction into fresh blocks (quantized when
   * `bits` < 16), old blocks freed. Budget B is the AVERAGE number of tokens kept per KV head. The policy
   * defaults to SnapKV when the sequence has observation-window queries, else K-norm.
   *
   * @example
   * ```ts
   * const report = await cache.compress(seq, { policy: 'snapkv', budget: 64, budgetMode: 'adakv', bits: 4 });
   * ```
   */
  async compress(seqId: number, options: CompressOptions = {}): Promise<CompressionReport> {
    this.assertUsable();
    return this.queue.run([seqId, COMPRESSOR], async () => {
      this.assertUsable();
      this.attention.settleSpeculation(seqId, Number.POSITIVE_INFINITY);
      return compressSequence(this.compressionStages(), seqId, options, this.fixedBits);
    });
  }

  /** Reaches a target memory ratio by choosing eviction and bits; `chosen` says which and why. */
  async compressAuto(seqId: number, targetRatio: number, options: AutoCompressOptions = {}): Promise<AutoCompressionReport> {
    this.assertUsable();
    return this.queue.run([seqId, COMPRESSOR], async () => {
      this.assertUsable();
      this.attention.settleSpeculation(seqId, Number.POSITIVE_INFINITY);
      return compressToRatio(this.compressionStages(), seqId, targetRatio, options, this.fixedBits);
    });
  }

  // ------------------------------------------------------------------ memory and health

  /**
   * Pool bytes and block counts now (merge slots are tokens in blocks, counted there), plus the bytes of the slots'
   * masses in use (`slotStateBytes`, one f32 each in a small GPU buffer beside the pools).
   */
  memory(): CacheMemoryReport & { readonly slotStateBytes: number } {
    return { ...memoryReport(this.meta), slotStateBytes: this.slots.bytes() };
  }

  /** Bytes of the blocks one sequence holds (shared blocks counted in full), and its f16 all-token baseline. */
  sequenceBytes(seqId: number): { bytes: number; baselineF16: number; tokens: number } {
    return sequenceBytes(this.meta, seqId);
  }

  /** Every violated invariant of the host metadata (empty when sound). */
  checkInvariants(): string[] {
    return checkInvariants(this.meta);
  }

  private assertUsable(): void {
    if (this.destroyed) throw new CacheDestroyedError('this PagedKvCache');
    this.gpu.assertUsable();
  }

  /**
   * Destroys every GPU buffer of the cache. Operations queued or in flight, and every later call, are rejected
   * with CacheDestroyedError.
   */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.queue.close(new CacheDestroyedError('this PagedKvCache'));
    this.stages?.destroy();
    this.attention.destroy();
    this.slots.destroy();
    this.storage.destroy();
  }
}

/** Re-exported so callers of the cache need one import for its options and reports. */
export type { CacheMemoryReport, PagedKvCacheOptions };
