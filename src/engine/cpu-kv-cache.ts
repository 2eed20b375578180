import { SequenceBusyError } from '../errors.js';
import type { BlockLayout, CacheShape } from '../format/layout.js';
import { CacheMetadata, type PoolName } from '../cache/cache-metadata.js';
import { type PagedKvCacheOptions, resolveCacheOptions } from '../cache/cache-options.js';
import { CpuKvStorage, type HeadContents } from '../cache/cpu-storage.js';
import { checkInvariants } from '../cache/invariants.js';
import { SLOT_STATE_BYTES_PER_SLOT, SlotStateStore, slotRows } from '../cache/slot-state.js';
import { type CacheMemoryReport, memoryReport, sequenceBytes } from '../cache/memory-report.js';
import type { AttentionHook } from '../attention/backend.js';
import { CpuAttentionBackend, type HeadStatistics } from '../attention/cpu-backend.js';
import type { AutoCompressOptions, AutoCompressionReport } from '../compress/auto.js';
import { CpuCompressionStages } from '../compress/cpu-stages.js';
import type { CompressOptions, CompressionReport } from '../compress/options.js';
import { compressSequence, compressToRatio } from '../compress/pipeline.js';
import { checkKv, checkQuery } from './inputs.js';
import { COMPRESSOR, SequenceQueue } from './sequence-queue.js';
import type { SequenceSnapshot } from './sequence-snapshot.js';
import { exportCpu, importCpu } from './snapshot-io.js';

/**
 * Options of {@link CpuKvCache.create}: the GPU cache's options, validated the same way and with the same
 * defaults, so one options object builds either engine.
 */
export type CpuKvCacheOptions = PagedKvCacheOptions;

/**
 * The paged KV cache on the CPU with the GPU cache's semantics and API: the same host metadata, pools as word
 * arrays laid out like the GPU buffers (so byte accounting is identical), copy-on-write forks, attention
 * statistics and an observation window, and the same compression pipeline with CPU stages on the TS references.
 * It is the working fallback when no WebGPU adapter exists and the fast path of evaluation sweeps, since a tiny
 * model on the CPU beats a GPU round trip per token.
 *
 * Drive it token by token with {@link CpuKvCache.attentionHook}, which plugs straight into `ReferenceLlama`.
 *
 * @example
 * ```ts
 * const cache = CpuKvCache.create({ shape: { layers: 5, kvHeads: 4, headDim: 8 }, nHeads: 8, fullFormat: 'f32' });
 * cache.addSequence(0);
 * const model = new ReferenceLlama(checkpoint, { attention: cache.attentionHook(0) });
 * for (let pos = 0; pos < 200; pos++) model.forward(ids[pos]!, pos);
 * const report = await cache.compress(0, { policy: 'snapkv', budget: 64, bits: 4 });
 * ```
 */
export class CpuKvCache {
  readonly storage: CpuKvStorage;
  readonly attention: CpuAttentionBackend;
  readonly shape: CacheShape;
  readonly nHeads: number;
  readonly observationWindow: number;
  readonly maxTokensPerHead: number;
  readonly #fixedBits: number | null;
  readonly #stages: CpuCompressionStages;
  /** Masses of the merge slots (merge 'slots'), per block-table row. */
  readonly #slots = new SlotStateStore();
  /** Operations take effect per sequence in call order (see {@link SequenceQueue}). */
  readonly #queue = new SequenceQueue();

  private constructor(options: CpuKvCacheOptions) {
    const resolved = resolveCacheOptions(options);
    this.storage = new CpuKvStorage(new CacheMetadata(resolved.metadata));
    this.attention = new CpuAttentionBackend(this.storage, { nHeads: resolved.nHeads, observationWindow: resolved.observationWindow });
    this.#stages = new CpuCompressionStages(this.storage, this.attention, this.#slots);
    this.shape = this.storage.meta.shape;
    this.nHeads = resolved.nHeads;
    this.observationWindow = resolved.observationWindow;
    this.maxTokensPerHead = this.storage.maxTokensPerHead;
    this.#fixedBits = options.quantBits ?? null;
  }

  /**
   * Creates a cache, validating every option as `PagedKvCache.create` does (same defaults: f16 full pool, block
   * size 16, 8 sequence slots, 4096 tokens per head, 256 MiB, observation window 32).
   */
  static create(options: CpuKvCacheOptions): CpuKvCache {
    return new CpuKvCache(options);
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

  /** The words of one layer's pool, laid out as its GPU buffer (`numBlocks × wordsPerBlock`). A live view: do not write. */
  poolWords(pool: PoolName, layer: number): Uint32Array {
    return this.storage.poolWords(pool, layer);
  }

  // ------------------------------------------------------------------ sequences

  /**
   * Registers a sequence; its statistics and observation window start empty. SequenceBusyError while an earlier
   * operation on the id (a freeSequence not yet run) is queued: await it first.
   */
  addSequence(id: number): void {
    if (this.#queue.busy(id)) throw new SequenceBusyError(id);
    const slot = this.meta.addSequence(id);
    this.attention.clearSlot(slot);
    this.#slots.clearRows(this.#rowsOfSlot(slot));
  }

  #rowsOfSlot(slot: number): number[] {
    return slotRows(this.shape, slot, (s, layer, head) => this.meta.tables.row(s, layer, head));
  }

  /**
   * Merge slots (merge 'slots') at the front of one head: how many of its first logical tokens are slots, and the
   * attention mass each has absorbed.
   */
  mergeSlots(seqId: number, layer: number, kvHead: number): Float64Array {
    return this.#slots.masses(this.meta.rowOf(seqId, layer, kvHead));
  }

  /**
   * Frees a sequence: every block it held alone returns to its pool. It takes effect after the sequence's earlier
   * operations (a compression in flight completes first); at once when there are none.
   */
  freeSequence(id: number): Promise<void> {
    return this.#queue.run([id], () => {
      this.attention.dropPendingStep(id);
      this.attention.dropSpeculation(id);
      const slot = this.meta.slotOf(id);
      this.meta.freeSequence(id);
      this.attention.clearSlot(slot);
      this.#slots.clearRows(this.#rowsOfSlot(slot));
    });
  }

  /**
   * Forks `srcId` into `dstId`: blocks are shared by reference count and copied on the next write. Takes effect
   * after `srcId`'s earlier operations.
   */
  fork(srcId: number, dstId: number): Promise<void> {
    return this.#queue.run([srcId, dstId], () => {
      this.attention.settleSpeculation(srcId, Number.POSITIVE_INFINITY);
      const srcSlot = this.meta.slotOf(srcId);
      const dstSlot = this.meta.fork(srcId, dstId);
      this.attention.copySlot(srcSlot, dstSlot);
      this.#slots.copyRows(this.#rowsOfSlot(srcSlot), this.#rowsOfSlot(dstSlot));
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

  /** Tokens one head holds now (after eviction, fewer than the sequence length). */
  tokenCount(id: number, layer: number, kvHead: number): number {
    return this.meta.tokenCount(id, layer, kvHead);
  }

  // ------------------------------------------------------------------ appending and attention

  /**
   * Appends tokens without attention (no statistics, no window queries): K and V f32
   * `[layers][tokens][kvHeads][headDim]` (RoPE applied), positions continuing the sequence. Validates shape and
   * values first (NonFiniteValueError / InvalidArgumentError, cache unchanged).
   */
  async append(seqId: number, keys: Float32Array, values: Float32Array): Promise<void> {
    // Errors reject, as on the GPU engine; an idle sequence still takes the tokens before this call returns.
    this.attention.assertNoPendingStep('append');
    const n = checkKv(this.shape, keys, values, this.meta.fullFormat);
    return this.#queue.run([seqId], () => {
      this.attention.settleSpeculation(seqId, Number.POSITIVE_INFINITY);
      const { layers, kvHeads, headDim } = this.shape;
      const plan = this.attention.planAppend(seqId, n);
      for (let layer = 0; layer < layers; layer++) {
        for (let t = 0; t < n; t++) this.storage.writeToken(plan, layer, t, keys, values, (layer * n + t) * kvHeads * headDim);
      }
    });
  }

  /**
   * One decode step of one layer (the {@link AttentionHook} contract); see {@link CpuAttentionBackend.step}.
   * SequenceBusyError while the sequence has queued or in-flight operations.
   */
  step(seqId: number, layer: number, pos: number, q: Float32Array, k: Float32Array, v: Float32Array): Float32Array {
    if (this.#queue.busy(seqId)) throw new SequenceBusyError(seqId);
    return this.attention.step(seqId, layer, pos, q, k, v);
  }

  /** The {@link AttentionHook} of one sequence, for `new ReferenceLlama(checkpoint, { attention })`. */
  attentionHook(seqId: number): AttentionHook {
    return (layer, pos, q, k, v) => this.step(seqId, layer, pos, q, k, v);
  }

  /**
   * Attention of one query `[nHeads][headDim]` over a sequence's cached tokens of `layer`, without touching the
   * statistics: the output and the probabilities per KV head (summed over the group). For tests and tools.
   * Synchronous, so it cannot wait: SequenceBusyError while the sequence has queued or in-flight operations (it
   * would read the state before them).
   */
  attend(seqId: number, layer: number, query: Float32Array): { out: Float32Array; probsPerKvHead: Float32Array[] } {
    checkQuery(query, this.nHeads * this.shape.headDim);
    if (this.#queue.busy(seqId)) throw new SequenceBusyError(seqId);
    this.meta.rowOf(seqId, layer, 0);
    return this.attention.attendSlot(this.meta.slotOf(seqId), layer, query, false);
  }

  /**
   * One head decoded: K, V `[tokens][headDim]` and original positions, in logical order. SequenceBusyError while
   * the sequence has queued or in-flight operations.
   */
  readHead(seqId: number, layer: number, kvHead: number): HeadContents {
    if (this.#queue.busy(seqId)) throw new SequenceBusyError(seqId);
    return this.storage.readRow(this.meta.rowOf(seqId, layer, kvHead));
  }

  /** Copies of one head's attention statistics, by logical token index. */
  stats(seqId: number, layer: number, kvHead: number): HeadStatistics {
    const row = this.meta.rowOf(seqId, layer, kvHead);
    const view = this.attention.statsView(row, this.meta.tables.tokenCount(row));
    return { attnSum: view.attnSum.slice(), attnSqSum: view.attnSqSum.slice(), attnCount: view.attnCount.slice() };
  }

  /** The recorded observation-window queries of one (sequence, layer), oldest first, and their positions. */
  windowQueries(seqId: number, layer: number, maxRows = this.observationWindow): { queries: Float32Array; positions: Uint32Array } {
    this.meta.rowOf(seqId, layer, 0);
    return this.attention.window(this.meta.slotOf(seqId), layer, maxRows);
  }

  // ------------------------------------------------------------------ speculation and rollback

  /**
   * Opens a speculation: the sequence's next steps (drafts being verified) attend as usual, but their queries'
   * contributions to the observation window and the attention statistics are held back until {@link truncate}
   * keeps or drops them, so rolling back rejected drafts leaves the cache exactly as if they never ran. Any other
   * operation on the sequence (append, fork, compress, another speculation) first keeps every provisional token.
   * SequenceBusyError while the sequence has queued or in-flight operations.
   *
   * @example
   * ```ts
   * cache.beginSpeculation(seq);
   * for (const [i, token] of drafts.entries()) logits.push(model.forward(token, start + i));
   * await cache.truncate(seq, start + accepted); // rejected drafts leave no trace
   * ```
   */
  beginSpeculation(seqId: number): void {
    if (this.#queue.busy(seqId)) throw new SequenceBusyError(seqId);
    this.attention.assertNoPendingStep('begin a speculation');
    this.meta.slotOf(seqId);
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
    return this.#queue.run([seqId], () => {
      this.attention.assertNoPendingStep('truncate');
      const plan = this.meta.truncate(seqId, length);
      this.attention.settleSpeculation(seqId, length);
      this.attention.truncated(plan);
    });
  }

  // ------------------------------------------------------------------ snapshots

  /**
   * The whole paged state of one sequence as plain data (see `PagedKvCache.exportSequence`; the same words, so it
   * imports into either engine). InvalidArgumentError while a step is half way or a speculation is open.
   */
  exportSequence(seqId: number): Promise<SequenceSnapshot> {
    return this.#queue.run([seqId], async () => exportCpu(this.storage, this.attention, seqId, this.#slots));
  }

  /** Adds sequence `seqId` holding a snapshot's state; all or nothing (see `PagedKvCache.importSequence`). */
  importSequence(seqId: number, snapshot: SequenceSnapshot): Promise<void> {
    return this.#queue.run([seqId], async () => importCpu(this.storage, this.attention, seqId, snapshot, this.#slots));
  }

  // ------------------------------------------------------------------ compression

  /**
   * Compresses one sequence with the same pipeline as the GPU cache, on the TS references. All or nothing: on
   * any error the cache is exactly as before.
   *
   * @example
   * ```ts
   * const report = await cache.compress(seq, { policy: 'snapkv', budget: 64, budgetMode: 'adakv', bits: 4 });
   * ```
   */
  compress(seqId: number, options: CompressOptions = {}): Promise<CompressionReport> {
    return this.#queue.run([seqId, COMPRESSOR], async () => {
      this.attention.assertNoPendingStep('compress');
      this.attention.settleSpeculation(seqId, Number.POSITIVE_INFINITY);
      return compressSequence(this.#stages, seqId, options, this.#fixedBits);
    });
  }

  /** Reaches a target memory ratio by choosing eviction and bits; `chosen` says which and why. */
  async compressAuto(seqId: number, targetRatio: number, options: AutoCompressOptions = {}): Promise<AutoCompressionReport> {
    return this.#queue.run([seqId, COMPRESSOR], async () => {
      this.attention.assertNoPendingStep('compress');
      this.attention.settleSpeculation(seqId, Number.POSITIVE_INFINITY);
      return compressToRatio(this.#stages, seqId, targetRatio, options, this.#fixedBits);
    });
  }

  // ------------------------------------------------------------------ memory and health

  /**
   * Pool bytes and block counts now (as `PagedKvCache.memory()`; merge slots are tokens in blocks, counted there),
   * plus the host bytes of the slots' masses (`slotStateBytes`, 8 per slot).
   */
  memory(): CacheMemoryReport & { readonly slotStateBytes: number } {
    return { ...memoryReport(this.meta), slotStateBytes: this.#slots.bytes() };
  }

  /** Host bytes of one sequence's merge-slot masses (0 without slots): what it holds beside its blocks. */
  slotStateBytes(seqId: number): number {
    const rows = this.#rowsOfSlot(this.meta.slotOf(seqId));
    return rows.reduce((sum, row) => sum + this.#slots.count(row), 0) * SLOT_STATE_BYTES_PER_SLOT;
  }

  /** Bytes of the blocks one sequence holds, its f16 all-token baseline and length. */
  sequenceBytes(seqId: number): { bytes: number; baselineF16: number; tokens: number } {
    return sequenceBytes(this.meta, seqId);
  }

  /** Every violated invariant of the host metadata (empty when sound). */
  checkInvariants(): string[] {
    return checkInvariants(this.meta);
  }
}
