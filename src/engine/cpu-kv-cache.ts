/**
 * The paged KV cache on the CPU: the same host metadata as the GPU cache ({@link CacheMetadata}: block pools,
 * block tables, reference counts, byte budget) with the pools held as plain `Uint32Array` word arrays laid out
 * exactly like the GPU buffers (block b at word b × wordsPerBlock, per `blockLayout`), so byte accounting is
 * identical to {@link PagedKvCache}. Everything runs on the TS references: the block codec for every read and
 * write, the reference attention, the scoring policies, budgets, top-k selection and the compaction planner.
 *
 * It is both the working fallback when no WebGPU adapter exists and the fast path of evaluation sweeps
 * (src/eval/), since a tiny model on the CPU beats a GPU round trip per token.
 */
import { BlockAllocator } from '../cache/block-allocator.js';
import { CacheMetadata, type AppendPlan, type CacheMetadataOptions, type PoolName } from '../cache/cache-metadata.js';
import {
  baselineF16Bytes,
  blockLayout,
  decodeBlockRef,
  formatBits,
  formatForBits,
  type BlockLayout,
  type CacheShape,
  type QuantFormat,
} from '../format/layout.js';
import { type CacheMemoryReport, memoryReport, sequenceBytes } from '../cache/memory-report.js';
import { type PagedKvCacheOptions, resolveCacheOptions } from '../cache/cache-options.js';
import { allocateBudgets } from '../compress/budgets.js';
import { commitCompaction, planCompaction, type CompactionPlan } from '../cache/compaction-plan.js';
import {
  resolveCompressOptions,
  type CompressBits,
  type CompressionReport,
  type CompressOptions,
} from '../compress/options.js';
import { windowProbabilities } from '../compress/policies/window.js';
import type { ScoreInput } from '../compress/policy.js';
import { createPolicy } from '../compress/registry.js';
import { selectTopK } from '../compress/select.js';
import { InvalidArgumentError, NonFiniteValueError, OutOfBlocksError } from '../errors.js';
import { IDENTITY_INDEX_BASE } from '../kernels/compress/compact-blocks.js';
import type { AttentionHook } from '../attention/backend.js';
import { decodeAttention } from '../attention/reference-attention.js';
import { decodeBlock, encodeBlock } from '../format/block-codec.js';
import { F16_MAX, f32Bits, pack2x16float, roundToF16 } from '../format/f16.js';

/**
 * Options of {@link CpuKvCache.create}: the GPU cache's options, validated the same way and with the same
 * defaults, so one options object builds either engine.
 *
 * @example
 * ```ts
 * const options: CpuKvCacheOptions = { shape: { layers: 5, kvHeads: 4, headDim: 8 }, nHeads: 8, quantBits: 4 };
 * ```
 */
export type CpuKvCacheOptions = PagedKvCacheOptions;

/**
 * Extra switches of {@link CpuKvCache.compress} that are not part of {@link CompressOptions}.
 *
 * @example
 * ```ts
 * cache.compress(seq, { policy: 'h2o', budget: 48 }, { attentionMass: false }); // skip the diagnostic
 * ```
 */
export interface CpuCompressExtras {
  /**
   * Measure `attentionMassKept` (default true). It re-runs the observation window's attention over every layer,
   * which costs about as much as the scoring itself: evaluation sweeps switch it off and get NaN.
   */
  readonly attentionMass?: boolean;
}

/**
 * Options of {@link CpuKvCache.compressAuto}: everything of {@link CompressOptions} but the split between
 * eviction and bits, which it chooses.
 *
 * @example
 * ```ts
 * cache.compressAuto(seq, 6, { policy: 'h2o' });
 * ```
 */
export type AutoCompressOptions = Omit<CompressOptions, 'bits' | 'budget' | 'ratio'>;

/**
 * What {@link CpuKvCache.compressAuto} did: the usual report, the split it chose and why.
 *
 * @example
 * ```ts
 * const r = cache.compressAuto(seq, 8);
 * console.log(r.chosen.bits, r.chosen.budget, r.why);
 * ```
 */
export interface AutoCompressionReport extends CompressionReport {
  readonly chosen: { readonly bits: CompressBits; readonly budget: number | null };
  readonly why: string;
}

/** Decoded mirror of one pool: K and V of every slot of every block, `[block][blockSize][headDim]`. */
interface PoolStore {
  words: Uint32Array;
  k: Float32Array;
  v: Float32Array;
}

/** A decode step between its layer-0 call (which appends the token to every layer) and its last layer. */
interface PendingStep {
  readonly seqId: number;
  readonly pos: number;
  readonly plan: AppendPlan;
  nextLayer: number;
}

/** Block counts a head will have after a compaction (mirrors planCompaction's arithmetic). */
interface HeadShapeAfter {
  readonly quantBlocks: number;
  readonly fullBlocks: number;
  readonly newQuant: number;
  readonly newFull: number;
}

/**
 * A paged KV cache on the CPU with the GPU cache's semantics: per-(sequence, layer, KV head) block lists in a full
 * pool (f32/f16, where tokens land) and a quantized pool (int8/int4/int2, KIVI), copy-on-write forks, attention
 * statistics per token (attnSum / attnSqSum / attnCount by logical index) and an observation window of roped
 * queries, per-head eviction and quantization with the TS references.
 *
 * Drive it token by token with {@link CpuKvCache.attentionHook}, which plugs straight into
 * {@link ReferenceLlama}: the layer-0 call appends the token to every layer (the metadata appends per sequence),
 * each layer's call writes that layer's K/V and attends.
 *
 * The quantized pool: give `quantBits` at creation to fix its format, as on the GPU (a quantizing compress with
 * other bits is an InvalidArgumentError). Without it, the first quantizing {@link compress} creates the pool with
 * that call's bits (the metadata is rebuilt around the same state); while that pool holds no block it may be
 * re-created with other bits, once it holds blocks every quantizing call must ask for its bits.
 *
 * @example
 * ```ts
 * const cache = CpuKvCache.create({ shape: { layers: 5, kvHeads: 4, headDim: 8 }, nHeads: 8, fullFormat: 'f32' });
 * cache.addSequence(0);
 * const model = new ReferenceLlama(checkpoint, { attention: cache.attentionHook(0) });
 * for (let pos = 0; pos < 200; pos++) model.forward(ids[pos]!, pos);
 * const report = cache.compress(0, { policy: 'snapkv', budget: 64, bits: 4 });
 * ```
 */
export class CpuKvCache {
  readonly shape: CacheShape;
  readonly nHeads: number;
  readonly observationWindow: number;
  readonly maxTokensPerHead: number;
  #meta: CacheMetadata;
  readonly #metaOptions: CacheMetadataOptions;
  readonly #pools: Record<PoolName, PoolStore>;
  /** f32 [row][maxTokensPerHead]: Σ p over the group's query heads, Σ p², visible-query count. */
  readonly #attnSum: Float32Array;
  readonly #attnSqSum: Float32Array;
  readonly #attnCount: Float32Array;
  /** f32 [layers][seqSlots][window][nHeads][headDim], ring by position mod window. */
  readonly #windowQueries: Float32Array;
  /** u32 [layers][seqSlots][window]. */
  readonly #windowPositions: Uint32Array;
  /** Valid window entries per [layers][seqSlots] (the host side of "the host knows how many are valid"). */
  readonly #windowValid: Uint32Array;
  #pending: PendingStep | null = null;
  /** True when quantBits was given at creation: the quantized pool's format is then fixed. */
  readonly #quantFixed: boolean;
  /** Kept indices `[row][maxTokensPerHead]` for compaction jobs, allocated on first use. */
  #keptScratch: Uint32Array | null = null;

  private constructor(metaOptions: CacheMetadataOptions, nHeads: number, observationWindow: number) {
    this.#metaOptions = metaOptions;
    this.#meta = new CacheMetadata(metaOptions);
    this.#quantFixed = metaOptions.quantFormat !== undefined;
    this.shape = this.#meta.shape;
    this.nHeads = nHeads;
    this.observationWindow = observationWindow;
    this.maxTokensPerHead = metaOptions.maxBlocksPerHead * this.shape.blockSize;
    const { layers, kvHeads, headDim } = this.shape;
    const rows = layers * metaOptions.seqSlots * kvHeads;
    this.#pools = { full: emptyStore(), quant: emptyStore() };
    this.#syncPools();
    this.#attnSum = new Float32Array(rows * this.maxTokensPerHead);
    this.#attnSqSum = new Float32Array(rows * this.maxTokensPerHead);
    this.#attnCount = new Float32Array(rows * this.maxTokensPerHead);
    this.#windowQueries = new Float32Array(layers * metaOptions.seqSlots * observationWindow * nHeads * headDim);
    this.#windowPositions = new Uint32Array(layers * metaOptions.seqSlots * observationWindow);
    this.#windowValid = new Uint32Array(layers * metaOptions.seqSlots);
  }

  /**
   * Creates a cache, validating every option as {@link PagedKvCache.create} does (same defaults: f16 full pool,
   * block size 16, 8 sequence slots, 4096 tokens per head, 256 MiB, observation window 32).
   *
   * @example
   * ```ts
   * const cache = CpuKvCache.create({ shape: { layers: 2, kvHeads: 2, headDim: 8 }, nHeads: 4, quantBits: 4 });
   * ```
   */
  static create(options: CpuKvCacheOptions): CpuKvCache {
    const resolved = resolveCacheOptions(options);
    return new CpuKvCache(resolved.metadata, resolved.nHeads, resolved.observationWindow);
  }

  /** The host metadata (a new object after the quantized pool is created lazily: read it per use). */
  get meta(): CacheMetadata {
    return this.#meta;
  }

  /** The full-format block layout (where tokens land). */
  get fullLayout(): BlockLayout {
    return this.#meta.fullLayout;
  }

  /** The quantized block layout, or null while the cache has no quantized pool. */
  get quantLayout(): BlockLayout | null {
    return this.#meta.quantLayout;
  }

  /**
   * The words of a pool, laid out as the GPU buffer (`numBlocks × wordsPerBlock`). A live view: do not write.
   *
   * @example
   * ```ts
   * const words = cache.poolWords('full'); // block b at b × cache.fullLayout.wordsPerBlock
   * ```
   */
  poolWords(pool: PoolName): Uint32Array {
    return this.#pools[pool].words;
  }

  // ------------------------------------------------------------------ sequences

  /**
   * Registers a sequence; its statistics and observation window start empty.
   *
   * @example
   * ```ts
   * cache.addSequence(7);
   * ```
   */
  addSequence(id: number): void {
    const slot = this.#meta.addSequence(id);
    this.#clearSlotState(slot);
  }

  /**
   * Frees a sequence: every block it held alone returns to its pool.
   *
   * @example
   * ```ts
   * cache.freeSequence(7);
   * ```
   */
  freeSequence(id: number): void {
    if (this.#pending?.seqId === id) this.#pending = null;
    const slot = this.#meta.slotOf(id);
    this.#meta.freeSequence(id);
    this.#clearSlotState(slot);
  }

  /**
   * Forks `srcId` into `dstId`: blocks are shared by reference count and copied on the next write (the copies of
   * the append plan); statistics and the observation window are copied.
   *
   * @example
   * ```ts
   * cache.fork(0, 1); // beam search: both continue from the same prefix
   * ```
   */
  fork(srcId: number, dstId: number): void {
    const srcSlot = this.#meta.slotOf(srcId);
    const dstSlot = this.#meta.fork(srcId, dstId);
    const { layers, kvHeads } = this.shape;
    const slots = this.#meta.seqSlots;
    const statsRow = kvHeads * this.maxTokensPerHead;
    const windowWords = this.observationWindow * this.nHeads * this.shape.headDim;
    for (let layer = 0; layer < layers; layer++) {
      const from = layer * slots + srcSlot;
      const to = layer * slots + dstSlot;
      for (const stats of [this.#attnSum, this.#attnSqSum, this.#attnCount]) {
        stats.copyWithin(to * statsRow, from * statsRow, (from + 1) * statsRow);
      }
      this.#windowQueries.copyWithin(to * windowWords, from * windowWords, (from + 1) * windowWords);
      const w = this.observationWindow;
      this.#windowPositions.copyWithin(to * w, from * w, (from + 1) * w);
      this.#windowValid[to] = this.#windowValid[from] ?? 0;
    }
  }

  /**
   * True when the sequence is live.
   *
   * @example
   * ```ts
   * if (!cache.hasSequence(3)) cache.addSequence(3);
   * ```
   */
  hasSequence(id: number): boolean {
    return this.#meta.hasSequence(id);
  }

  /**
   * Tokens ever appended to a sequence (the position of its next token).
   *
   * @example
   * ```ts
   * model.forward(token, cache.sequenceLength(seq));
   * ```
   */
  sequenceLength(id: number): number {
    return this.#meta.sequenceLength(id);
  }

  /**
   * Tokens one head holds now (after eviction, fewer than the sequence length).
   *
   * @example
   * ```ts
   * cache.tokenCount(seq, 0, 1);
   * ```
   */
  tokenCount(id: number, layer: number, kvHead: number): number {
    return this.#meta.tokenCount(id, layer, kvHead);
  }

  // ------------------------------------------------------------------ appending

  /**
   * Appends tokens without attention (no statistics, no window queries): K and V f32
   * `[layers][tokens][kvHeads][headDim]` (RoPE applied), positions continuing the sequence. Validates shape and
   * finiteness first (NonFiniteValueError / InvalidArgumentError, cache unchanged).
   *
   * @example
   * ```ts
   * cache.append(seq, keys, values);
   * ```
   */
  append(seqId: number, keys: Float32Array, values: Float32Array): void {
    this.#assertNoPending('append');
    const { layers, kvHeads, headDim } = this.shape;
    const perToken = layers * kvHeads * headDim;
    if (keys.length !== values.length || keys.length === 0 || keys.length % perToken !== 0) {
      throw new InvalidArgumentError(
        'keys',
        `K and V must both be f32 [layers=${layers}][tokens][kvHeads=${kvHeads}][headDim=${headDim}]; got ${keys.length} and ${values.length} values`,
      );
    }
    this.#checkValues('keys', keys);
    this.#checkValues('values', values);
    const n = keys.length / perToken;
    const plan = this.#planAppend(seqId, n);
    for (let layer = 0; layer < layers; layer++) {
      for (let t = 0; t < n; t++) {
        const offset = ((layer * n + t) * kvHeads) * headDim;
        this.#writeLayerToken(plan, layer, t, keys, values, offset);
      }
    }
  }

  /**
   * One decode step of one layer, the {@link AttentionHook} contract: `q` `[nHeads][headDim]`, `k` and `v`
   * `[kvHeads][headDim]` of the token at `pos` (RoPE applied). The layer-0 call appends the token to every layer
   * (pos must equal the sequence length); layers must then follow in order with the same pos. Writes the layer's
   * K/V, records the query in the observation window, attends over the paged cache (blocks decoded with the
   * reference codec) and accumulates attnSum / attnSqSum / attnCount. Returns the attention output
   * `[nHeads][headDim]`.
   *
   * @example
   * ```ts
   * const out = cache.step(seq, layer, pos, q, k, v);
   * ```
   */
  step(seqId: number, layer: number, pos: number, q: Float32Array, k: Float32Array, v: Float32Array): Float32Array {
    const { layers, kvHeads, headDim } = this.shape;
    if (!Number.isInteger(layer) || layer < 0 || layer >= layers) {
      throw new InvalidArgumentError('layer', `must be in [0, ${layers}); got ${layer}`);
    }
    if (q.length < this.nHeads * headDim) {
      throw new InvalidArgumentError('q', `expected nHeads × headDim = ${this.nHeads * headDim} values; got ${q.length}`);
    }
    if (k.length < kvHeads * headDim || v.length < kvHeads * headDim) {
      throw new InvalidArgumentError('k', `K and V need kvHeads × headDim = ${kvHeads * headDim} values each`);
    }
    const kvValues = kvHeads * headDim;
    this.#checkValues('k', k.subarray(0, kvValues));
    this.#checkValues('v', v.subarray(0, kvValues));
    if (layer === 0) {
      // A step abandoned half way (the model threw) leaves its later layers' slots zero; starting over is the
      // caller's call, so only a step that is still expected to continue is an error.
      if (this.#pending !== null && this.#pending.nextLayer < layers && this.#pending.seqId === seqId) {
        throw new InvalidArgumentError(
          'layer',
          `the step at position ${this.#pending.pos} stopped at layer ${this.#pending.nextLayer}; run every layer in order`,
        );
      }
      const length = this.#meta.sequenceLength(seqId);
      if (pos !== length) {
        throw new InvalidArgumentError('pos', `the next position of sequence ${seqId} is ${length}; got ${pos}`);
      }
      this.#pending = { seqId, pos, plan: this.#planAppend(seqId, 1), nextLayer: 0 };
    }
    const pending = this.#pending;
    if (pending === null || pending.seqId !== seqId || pending.pos !== pos || pending.nextLayer !== layer) {
      throw new InvalidArgumentError(
        'layer',
        `layer ${layer} at position ${pos} of sequence ${seqId} is out of order; start each step at layer 0 and run layers in order`,
      );
    }
    this.#writeLayerToken(pending.plan, layer, 0, k, v, 0);
    const slot = pending.plan.slot;
    this.#recordQuery(slot, layer, pos, q);
    const out = this.#attend(slot, layer, q.subarray(0, this.nHeads * headDim), true).out;
    pending.nextLayer++;
    if (pending.nextLayer === layers) this.#pending = null;
    return out;
  }

  /**
   * The {@link AttentionHook} of one sequence, for `new ReferenceLlama(checkpoint, { attention })`.
   *
   * @example
   * ```ts
   * const model = new ReferenceLlama(checkpoint, { attention: cache.attentionHook(seq) });
   * ```
   */
  attentionHook(seqId: number): AttentionHook {
    return (layer, pos, q, k, v) => this.step(seqId, layer, pos, q, k, v);
  }

  /**
   * Attention of one query `[nHeads][headDim]` over a sequence's cached tokens of `layer`, without touching the
   * statistics: the output and the probabilities per KV head (summed over the group). For tests and tools.
   *
   * @example
   * ```ts
   * const { out, probsPerKvHead } = cache.attend(seq, 0, query);
   * ```
   */
  attend(seqId: number, layer: number, query: Float32Array): { out: Float32Array; probsPerKvHead: Float32Array[] } {
    if (query.length !== this.nHeads * this.shape.headDim) {
      throw new InvalidArgumentError('query', `expected ${this.nHeads * this.shape.headDim} values; got ${query.length}`);
    }
    this.#meta.rowOf(seqId, layer, 0);
    const r = this.#attend(this.#meta.slotOf(seqId), layer, query, false);
    return { out: r.out, probsPerKvHead: r.probsPerKvHead };
  }

  /**
   * One head decoded with the reference codec: K, V `[tokens][headDim]` and original positions, in logical order.
   *
   * @example
   * ```ts
   * const { keys, positions } = cache.readHead(seq, 0, 1);
   * ```
   */
  readHead(seqId: number, layer: number, kvHead: number): { keys: Float32Array; values: Float32Array; positions: Uint32Array } {
    return this.#readRow(this.#meta.rowOf(seqId, layer, kvHead));
  }

  /**
   * Copies of one head's attention statistics, by logical token index.
   *
   * @example
   * ```ts
   * const { attnSum, attnCount } = cache.stats(seq, 0, 1);
   * ```
   */
  stats(seqId: number, layer: number, kvHead: number): { attnSum: Float32Array; attnSqSum: Float32Array; attnCount: Float32Array } {
    const row = this.#meta.rowOf(seqId, layer, kvHead);
    const n = this.#meta.tables.tokenCount(row);
    const base = row * this.maxTokensPerHead;
    return {
      attnSum: this.#attnSum.slice(base, base + n),
      attnSqSum: this.#attnSqSum.slice(base, base + n),
      attnCount: this.#attnCount.slice(base, base + n),
    };
  }

  /**
   * The recorded observation-window queries of one (sequence, layer), oldest first: `[w][nHeads][headDim]` and
   * their positions.
   *
   * @example
   * ```ts
   * const { queries, positions } = cache.windowQueries(seq, 0);
   * ```
   */
  windowQueries(seqId: number, layer: number, maxRows = this.observationWindow): { queries: Float32Array; positions: Uint32Array } {
    this.#meta.rowOf(seqId, layer, 0);
    return this.#window(this.#meta.slotOf(seqId), layer, maxRows);
  }

  // ------------------------------------------------------------------ memory

  /** Pool bytes and block counts now (as PagedKvCache.memory()). */
  memory(): CacheMemoryReport {
    return memoryReport(this.#meta);
  }

  /** Bytes of the blocks one sequence holds, its f16 all-token baseline and length (as PagedKvCache). */
  sequenceBytes(seqId: number): { bytes: number; baselineF16: number; tokens: number } {
    return sequenceBytes(this.#meta, seqId);
  }

  // ------------------------------------------------------------------ compression

  /**
   * Compresses one sequence with the TS references: options resolved by `resolveCompressOptions` (typed errors,
   * nothing touched), scores per layer from the policy, `allocateBudgets`, `selectTopK` per head, then
   * `planCompaction` and its jobs run here (source tokens decoded, destination blocks encoded with `encodeBlock`),
   * statistics gathered by kept index, `commitCompaction`. `bits` < 16 quantizes every whole block older than
   * `recent` into the quantized pool (see the class doc for how that pool comes to be). All or nothing: on any
   * error the cache is exactly as before.
   *
   * @throws InvalidArgumentError (bad budget, bits, mismatched quantized pool), UnknownPolicyError,
   *   UnknownSequenceError, OutOfBlocksError / LimitExceededError when the pools cannot hold the result.
   * @example
   * ```ts
   * const report = cache.compress(seq, { policy: 'snapkv', budget: 64, budgets: 'adakv', bits: 4 });
   * report.ratio; // f16 baseline of all tokens / bytes the sequence holds now
   * ```
   */
  compress(seqId: number, options: CompressOptions = {}, extras: CpuCompressExtras = {}): CompressionReport {
    const started = performance.now();
    const length = this.#meta.sequenceLength(seqId);
    this.#assertNoPending('compress');
    const r = resolveCompressOptions(options, length);
    const quantize = r.bits < 16;
    const quantFormat = quantize ? (formatForBits(r.bits) as QuantFormat) : null;
    if (quantFormat !== null) this.#checkQuantFormat(quantFormat);
    const { layers, kvHeads } = this.shape;
    const slot = this.#meta.slotOf(seqId);

    // 1. Decide what every head keeps (reads only).
    const counts: number[] = [];
    for (let layer = 0; layer < layers; layer++) {
      for (let head = 0; head < kvHeads; head++) counts.push(this.#meta.tokenCount(seqId, layer, head));
    }
    const keptIndices: (Uint32Array | null)[] = counts.map(() => null);
    let attentionMassKept = 1;
    // Score only when some head holds more than the budget (as the GPU compressor): otherwise every mode keeps all.
    const budget = r.budget;
    if (budget !== null && counts.some((n) => n > budget)) {
      const window = Math.min(r.window, this.observationWindow);
      const policy = createPolicy(r.policy, {
        sinks: r.sinks,
        recent: r.recent,
        window,
        kernelSize: r.kernelSize,
        pooling: r.pooling,
        seed: r.seed,
      });
      const inputs: ScoreInput[] = [];
      const scores: Float32Array[][] = [];
      for (let layer = 0; layer < layers; layer++) {
        const input = this.#scoreInput(slot, layer, window, length, r.seed);
        inputs.push(input);
        scores.push(policy.score(input));
      }
      const budgets = allocateBudgets(scores, { mode: r.budgets, budget, safeguard: r.safeguard });
      let evicted = false;
      for (let layer = 0; layer < layers; layer++) {
        for (let head = 0; head < kvHeads; head++) {
          const i = layer * kvHeads + head;
          const k = budgets[layer]?.[head] ?? 0;
          if (k < (counts[i] ?? 0)) {
            keptIndices[i] = selectTopK(scores[layer]?.[head] ?? new Float32Array(0), k);
            counts[i] = k;
            evicted = true;
          }
        }
      }
      if (evicted) {
        attentionMassKept = extras.attentionMass === false ? NaN : this.#attentionMass(inputs, keptIndices, window);
      }
    }

    // 2. Apply it, transactionally. A sequence that already holds quantized blocks keeps its old blocks
    // quantized even at bits 16 (as the GPU compressor does): there is no way back to full precision.
    const compact = quantize || this.#holdsQuantized(seqId);
    const usedBefore = this.memory().usedBytes;
    const oldMeta = this.#meta;
    if (quantFormat !== null && (oldMeta.quantFormat !== quantFormat || oldMeta.quantLayout === null)) {
      this.#meta = this.#rebuildWithQuant(quantFormat);
    }
    const meta = this.#meta;
    const snapshot = meta.snapshot();
    try {
      this.#ensureCapacity(seqId, counts, compact, r.recent);
      const scratch = this.#scratch();
      const stride = this.maxTokensPerHead;
      for (let i = 0; i < counts.length; i++) {
        const kept = keptIndices[i];
        if (kept) scratch.set(kept, meta.rowOf(seqId, Math.floor(i / kvHeads), i % kvHeads) * stride);
      }
      const plan = planCompaction(meta, { seqId, kept: counts, quantize: compact, residual: r.recent, indexStride: stride });
      this.#runJobs(plan);
      const gathered = this.#gatherStats(plan, keptIndices);
      commitCompaction(meta, seqId, plan);
      for (const { base, sum, sq, count } of gathered) {
        this.#attnSum.set(sum, base);
        this.#attnSqSum.set(sq, base);
        this.#attnCount.set(count, base);
      }
    } catch (error) {
      meta.restore(snapshot);
      this.#meta = oldMeta;
      this.#syncPools();
      throw error;
    }
    this.#syncPools();

    const keptPerHead = Array.from({ length: layers }, (_, layer) =>
      Array.from({ length: kvHeads }, (_, head) => this.#meta.tokenCount(seqId, layer, head)),
    );
    const { bytes, baselineF16 } = this.sequenceBytes(seqId);
    return {
      policy: r.policy,
      budgets: r.budgets,
      bits: r.bits,
      budget: r.budget,
      tokens: length,
      originalBytes: baselineF16,
      compressedBytes: bytes,
      ratio: bytes === 0 ? Infinity : baselineF16 / bytes,
      bytesFreed: usedBefore - this.memory().usedBytes,
      keptPerLayer: keptPerHead.map((row) => row.reduce((a, b) => a + b, 0)),
      keptPerHead,
      attentionMassKept,
      milliseconds: performance.now() - started,
    };
  }

  /**
   * Compresses one sequence to at least `targetRatio` (f16 baseline of all tokens / bytes held), choosing the split
   * between eviction and bits. Preference, from least to most lossy: keep every token in int8; else int4 without
   * eviction; else int4 with the largest uniform budget that reaches the target, as long as it keeps at least a
   * quarter of the tokens; else int2 with the largest budget that reaches it (evicting only what is needed). Bytes
   * are predicted exactly from the block arithmetic of the compaction plan. A sequence already at the target is
   * left as it is (bits 16, budget null). When the quantized pool already holds blocks, only its bits are
   * candidates. With a small budget the recent window shrinks to budget − sinks so protected tokens always fit.
   *
   * @throws InvalidArgumentError when targetRatio < 1 or no split reaches it (the message gives the best reachable).
   * @example
   * ```ts
   * const r = cache.compressAuto(seq, 8);
   * r.chosen; // e.g. { bits: 4, budget: 150 }
   * ```
   */
  compressAuto(seqId: number, targetRatio: number, options: AutoCompressOptions = {}, extras: CpuCompressExtras = {}): AutoCompressionReport {
    if (!Number.isFinite(targetRatio) || targetRatio < 1) {
      throw new InvalidArgumentError('targetRatio', `must be a finite number ≥ 1; got ${targetRatio}`);
    }
    this.#assertNoPending('compress');
    const length = this.#meta.sequenceLength(seqId);
    const baseline = baselineF16Bytes(this.shape, length);
    const sinks = options.sinks ?? 4;
    const recent = options.recent ?? 32;
    const { bytes: now } = this.sequenceBytes(seqId);
    const slot = this.#meta.slotOf(seqId);
    const policy = options.policy ?? ((this.#windowValid[slot] ?? 0) > 0 ? 'snapkv' : 'knorm');
    const run = (bits: CompressBits, budget: number | null, why: string): AutoCompressionReport => {
      const recentFor = budget === null ? recent : Math.min(recent, Math.max(0, budget - sinks));
      const report = this.compress(
        seqId,
        {
          ...options,
          policy,
          bits,
          recent: recentFor,
          ...(budget === null ? {} : { budget, window: Math.max(1, Math.min(options.window ?? 32, recentFor)) }),
        },
        extras,
      );
      const note = report.ratio + 1e-9 < targetRatio ? ` (reached ${report.ratio.toFixed(2)}×, below the target)` : '';
      return { ...report, chosen: { bits, budget }, why: why + note };
    };
    if (now > 0 && baseline / now >= targetRatio) {
      return run(16, null, `already at ${(baseline / now).toFixed(2)}× ≥ ${targetRatio}×: nothing to do`);
    }
    const held =
      this.#meta.quantLayout !== null && (this.#quantFixed || this.#meta.quantPool.numUsed > 0) ? this.#meta.quantLayout.bits : null;
    const candidates = ([8, 4, 2] as const).filter((b) => held === null || b === held);
    const maxCount = Math.max(0, ...this.#headCounts(seqId));
    const ratioOf = (bits: CompressBits, budget: number | null): number => {
      const residual = budget === null ? recent : Math.min(recent, Math.max(0, budget - sinks));
      const bytes = this.#predictBytes(seqId, bits, budget, residual);
      return bytes === 0 ? Infinity : baseline / bytes;
    };
    for (const bits of candidates) {
      const reached = ratioOf(bits, null);
      if (reached >= targetRatio) {
        return run(bits, null, `int${bits} without eviction reaches ${reached.toFixed(2)}× ≥ ${targetRatio}×`);
      }
    }
    const evicting = candidates.filter((b) => b !== 8 || candidates.length === 1);
    let best = 0;
    for (const bits of evicting) {
      // Largest budget whose predicted ratio reaches the target: bytes grow with the budget, so bisect.
      let lo = 1;
      let hi = maxCount;
      let found = 0;
      while (lo <= hi) {
        const mid = Math.floor((lo + hi) / 2);
        if (ratioOf(bits, mid) >= targetRatio) {
          found = mid;
          lo = mid + 1;
        } else {
          hi = mid - 1;
        }
      }
      best = Math.max(best, ratioOf(bits, 1));
      const last = bits === evicting[evicting.length - 1];
      if (found > 0 && (found * 4 >= length || last)) {
        return run(
          bits,
          found,
          `int${bits} alone reaches ${ratioOf(bits, null).toFixed(2)}×; keeping ${found} tokens per head (of up to ${maxCount}) reaches ${ratioOf(bits, found).toFixed(2)}× ≥ ${targetRatio}×`,
        );
      }
    }
    throw new InvalidArgumentError(
      'targetRatio',
      `${targetRatio}× is out of reach for ${length} tokens: at most about ${best.toFixed(2)}× (one token per head at int${evicting[evicting.length - 1] ?? 2})`,
    );
  }

  // ------------------------------------------------------------------ private: compression

  #holdsQuantized(seqId: number): boolean {
    for (let layer = 0; layer < this.shape.layers; layer++) {
      for (let head = 0; head < this.shape.kvHeads; head++) {
        const entries = this.#meta.tables.entryView(this.#meta.rowOf(seqId, layer, head));
        for (let i = 0; i < entries.length; i++) if (decodeBlockRef(entries[i] ?? 0).pool === 'quant') return true;
      }
    }
    return false;
  }

  #headCounts(seqId: number): number[] {
    const out: number[] = [];
    for (let layer = 0; layer < this.shape.layers; layer++) {
      for (let head = 0; head < this.shape.kvHeads; head++) out.push(this.#meta.tokenCount(seqId, layer, head));
    }
    return out;
  }

  /** Bytes the sequence would hold after a uniform compression to `budget` (null: keep all) at `bits`. */
  #predictBytes(seqId: number, bits: CompressBits, budget: number | null, residual: number): number {
    const counts = this.#headCounts(seqId).map((n) => (budget === null ? n : Math.min(n, Math.floor(budget))));
    const quantize = bits < 16;
    const fullBytes = this.#meta.bytesPerBlock('full');
    const quantLayout = quantize ? this.#quantBlockBytes(formatForBits(bits) as QuantFormat) : 0;
    let bytes = 0;
    this.#headShapes(seqId, counts, quantize, residual).forEach((h) => {
      bytes += h.quantBlocks * quantLayout + h.fullBlocks * fullBytes;
    });
    return bytes;
  }

  /** Per head: blocks after the compaction and blocks it must allocate, with planCompaction's arithmetic. */
  #headShapes(seqId: number, kept: readonly number[], quantize: boolean, residual: number): HeadShapeAfter[] {
    const { layers, kvHeads, blockSize } = this.shape;
    const out: HeadShapeAfter[] = [];
    for (let layer = 0; layer < layers; layer++) {
      for (let head = 0; head < kvHeads; head++) {
        const before = this.#meta.tokenCount(seqId, layer, head);
        const k = kept[layer * kvHeads + head] ?? before;
        const entries = this.#meta.tables.entryView(this.#meta.rowOf(seqId, layer, head));
        let existingQuant = 0;
        for (let i = 0; i < entries.length; i++) if (decodeBlockRef(entries[i] ?? 0).pool === 'quant') existingQuant++;
        const identity = k === before;
        let quantTokens = quantize ? Math.floor(Math.max(0, k - residual) / blockSize) * blockSize : 0;
        if (identity) quantTokens = Math.max(quantTokens, existingQuant * blockSize);
        const quantBlocks = quantTokens / blockSize;
        const fullBlocks = Math.ceil((k - quantTokens) / blockSize);
        out.push(
          identity
            ? { quantBlocks, fullBlocks, newQuant: quantBlocks - existingQuant, newFull: 0 }
            : { quantBlocks, fullBlocks, newQuant: quantBlocks, newFull: fullBlocks },
        );
      }
    }
    return out;
  }

  /** Grows the pools (within maxBytes) so planCompaction finds every block it allocates. */
  #ensureCapacity(seqId: number, kept: readonly number[], quantize: boolean, residual: number): void {
    let quantNeeded = 0;
    let fullNeeded = 0;
    for (const h of this.#headShapes(seqId, kept, quantize, residual)) {
      quantNeeded += h.newQuant;
      fullNeeded += h.newFull;
    }
    this.#growFor('full', fullNeeded);
    if (quantize) this.#growFor('quant', quantNeeded);
  }

  /** Grows a pool so `needed` blocks are free: by at least half its size (amortised), capped by maxBytes. */
  #growFor(pool: PoolName, needed: number): void {
    const allocator = this.#meta.pool(pool);
    const short = needed - allocator.numFree;
    if (short <= 0) return;
    const growable = this.#meta.growableBlocks(pool);
    if (growable < short) return; // planCompaction / planAppend reports the shortage as OutOfBlocksError
    const blocks = Math.min(growable, Math.max(short, Math.ceil(allocator.numBlocks / 2)));
    if (pool === 'full') this.#meta.growFull(blocks);
    else this.#meta.growQuant(blocks);
    this.#syncPools();
  }

  #checkQuantFormat(format: QuantFormat): void {
    const current = this.#meta.quantFormat;
    if (current !== undefined && current !== format && (this.#quantFixed || this.#meta.quantPool.numUsed > 0)) {
      const why = this.#quantFixed ? 'was created with quantBits' : `holds ${this.#meta.quantPool.numUsed} blocks`;
      throw new InvalidArgumentError(
        'bits',
        `this cache's quantized pool is ${current} and ${why}; compress with bits ${formatBits(current)} (or 16), or use a cache created with quantBits ${formatBits(format)}`,
      );
    }
    // The layout must exist for these shapes (group size, whole words) before anything is touched.
    this.#quantBlockBytes(format);
  }

  /** Bytes of one block of a quantized format with this cache's shape and group size (validates the layout). */
  #quantBlockBytes(format: QuantFormat): number {
    return blockLayout(format, this.shape, this.#metaOptions.groupSize).wordsPerBlock * 4;
  }

  /**
   * A metadata object with a quantized pool of `format` around the current state: the same tables, sequences and
   * full pool, an empty quantized pool (only its null block) that grows on demand. Valid only while the current
   * quantized pool holds no block.
   */
  #rebuildWithQuant(format: QuantFormat): CacheMetadata {
    const { quantFormat: _unused, ...rest } = this.#metaOptions;
    const meta = new CacheMetadata({ ...rest, quantFormat: format, initialFullBlocks: 0, initialQuantBlocks: 0 });
    meta.restore({ ...this.#meta.snapshot(), quant: new BlockAllocator(1, 'quant').snapshot() });
    return meta;
  }

  #scratch(): Uint32Array {
    this.#keptScratch ??= new Uint32Array(this.#meta.tables.numRows * this.maxTokensPerHead);
    return this.#keptScratch;
  }

  /** Runs a compaction plan's jobs: source tokens decoded, destination blocks encoded with the reference codec. */
  #runJobs(plan: CompactionPlan): void {
    const { headDim, blockSize } = this.shape;
    const scratch = this.#scratch();
    const tables = this.#meta.tables;
    for (const job of plan.jobs) {
      const entries = tables.entryView(job.row);
      const k = new Float32Array(job.count * headDim);
      const v = new Float32Array(job.count * headDim);
      const positions = new Uint32Array(job.count);
      for (let i = 0; i < job.count; i++) {
        const index = job.indexBase === IDENTITY_INDEX_BASE ? job.identityStart + i : (scratch[job.indexBase + i] ?? 0);
        const { pool, block } = decodeBlockRef(entries[Math.floor(index / blockSize)] ?? 0);
        const store = this.#pools[pool];
        const at = (block * blockSize + (index % blockSize)) * headDim;
        k.set(store.k.subarray(at, at + headDim), i * headDim);
        v.set(store.v.subarray(at, at + headDim), i * headDim);
        positions[i] = store.words[block * this.#layout(pool).wordsPerBlock + this.#layout(pool).positionsOffset + (index % blockSize)] ?? 0;
      }
      const dest = decodeBlockRef(job.destEntry);
      const layout = this.#layout(dest.pool);
      this.#storeBlock(dest.pool, dest.block, encodeBlock(layout, k, v, positions, job.count), job.count);
    }
  }

  /** Statistics of every evicting head moved to the new logical indices (new j ← old kept[j], 0 past the count). */
  #gatherStats(
    plan: CompactionPlan,
    keptIndices: readonly (Uint32Array | null)[],
  ): { base: number; sum: Float32Array; sq: Float32Array; count: Float32Array }[] {
    const out: { base: number; sum: Float32Array; sq: Float32Array; count: Float32Array }[] = [];
    const stride = this.maxTokensPerHead;
    plan.heads.forEach((head, i) => {
      const kept = keptIndices[i];
      if (!kept || head.kept === head.before) return;
      const base = head.row * stride;
      const sum = new Float32Array(stride);
      const sq = new Float32Array(stride);
      const count = new Float32Array(stride);
      for (let j = 0; j < kept.length; j++) {
        const from = base + (kept[j] ?? 0);
        sum[j] = this.#attnSum[from] ?? 0;
        sq[j] = this.#attnSqSum[from] ?? 0;
        count[j] = this.#attnCount[from] ?? 0;
      }
      out.push({ base, sum, sq, count });
    });
    return out;
  }

  /** What a policy sees for one layer: decoded keys, positions, statistics and the observation window. */
  #scoreInput(slot: number, layer: number, window: number, length: number, seed: number): ScoreInput {
    const { kvHeads, headDim } = this.shape;
    const keys: Float32Array[] = [];
    const positions: Uint32Array[] = [];
    const attnSum: Float32Array[] = [];
    const attnSqSum: Float32Array[] = [];
    const attnCount: Float32Array[] = [];
    for (let head = 0; head < kvHeads; head++) {
      const row = this.#meta.tables.row(slot, layer, head);
      const decoded = this.#readRow(row);
      keys.push(decoded.keys);
      positions.push(decoded.positions);
      const n = decoded.positions.length;
      const base = row * this.maxTokensPerHead;
      attnSum.push(this.#attnSum.subarray(base, base + n));
      attnSqSum.push(this.#attnSqSum.subarray(base, base + n));
      attnCount.push(this.#attnCount.subarray(base, base + n));
    }
    const { queries, positions: windowPositions } = this.#window(slot, layer, window);
    return {
      nHeads: this.nHeads,
      kvHeads,
      headDim,
      keys,
      positions,
      ...(windowPositions.length > 0 ? { windowQueries: queries, windowPositions } : {}),
      attnSum,
      attnSqSum,
      attnCount,
      sequenceLength: length,
      layer,
      seed,
    };
  }

  /** Share of the window's attention mass (over its queries and query heads, all layers) on the kept tokens. */
  #attentionMass(inputs: readonly ScoreInput[], keptIndices: readonly (Uint32Array | null)[], window: number): number {
    const { kvHeads } = this.shape;
    let kept = 0;
    let total = 0;
    for (let layer = 0; layer < inputs.length; layer++) {
      const input = inputs[layer];
      if (!input?.windowQueries) return NaN;
      const { probs, w } = windowProbabilities(input, window, 'attentionMassKept');
      for (let head = 0; head < kvHeads; head++) {
        const p = probs[head] ?? new Float32Array(0);
        const n = input.positions[head]?.length ?? 0;
        const keep = keptIndices[layer * kvHeads + head];
        let all = 0;
        for (let j = 0; j < w * n; j++) all += p[j] ?? 0;
        total += all;
        if (!keep) {
          kept += all;
          continue;
        }
        for (let j = 0; j < w; j++) for (const t of keep) kept += p[j * n + t] ?? 0;
      }
    }
    return total > 0 ? kept / total : 1;
  }

  // ------------------------------------------------------------------ private: storage

  #layout(pool: PoolName): BlockLayout {
    const layout = pool === 'full' ? this.#meta.fullLayout : this.#meta.quantLayout;
    if (!layout) throw new InvalidArgumentError('pool', 'this cache has no quantized pool');
    return layout;
  }

  /** Resizes the pool arrays to the metadata's block counts (after a grow, a restore or a rebuild). */
  #syncPools(): void {
    const { blockSize, headDim } = this.shape;
    for (const pool of ['full', 'quant'] as const) {
      const layout = pool === 'full' ? this.#meta.fullLayout : this.#meta.quantLayout;
      const store = this.#pools[pool];
      const blocks = layout ? this.#meta.pool(pool).numBlocks : 0;
      const words = layout ? blocks * layout.wordsPerBlock : 0;
      if (store.words.length !== words) {
        // Contents of free blocks never matter (a block is written before it is read), so copying the overlap is
        // right even when a rebuilt quantized pool changed layout.
        const next = new Uint32Array(words);
        next.set(store.words.subarray(0, Math.min(words, store.words.length)));
        store.words = next;
        const values = blocks * blockSize * headDim;
        const k = new Float32Array(values);
        const v = new Float32Array(values);
        k.set(store.k.subarray(0, Math.min(values, store.k.length)));
        v.set(store.v.subarray(0, Math.min(values, store.v.length)));
        store.k = k;
        store.v = v;
      }
    }
  }

  /** Writes a whole block and refreshes its decoded mirror through the codec. */
  #storeBlock(pool: PoolName, block: number, words: Uint32Array, n: number): void {
    const layout = this.#layout(pool);
    const store = this.#pools[pool];
    store.words.set(words.subarray(0, layout.wordsPerBlock), block * layout.wordsPerBlock);
    this.#refreshMirror(pool, block, n);
  }

  #refreshMirror(pool: PoolName, block: number, n: number): void {
    const layout = this.#layout(pool);
    const { blockSize, headDim } = this.shape;
    const store = this.#pools[pool];
    const decoded = decodeBlock(layout, store.words.subarray(block * layout.wordsPerBlock), n);
    const at = block * blockSize * headDim;
    store.k.fill(0, at, at + blockSize * headDim);
    store.v.fill(0, at, at + blockSize * headDim);
    store.k.set(decoded.k, at);
    store.v.set(decoded.v, at);
  }

  /** planAppend with the GPU cache's growth rule, then the copy-on-write copies. */
  #planAppend(seqId: number, n: number): AppendPlan {
    const meta = this.#meta;
    let plan = meta.planAppend(seqId, n);
    if (plan === null) {
      const { layers, kvHeads, blockSize } = this.shape;
      let needed = 0;
      for (let layer = 0; layer < layers; layer++) {
        for (let head = 0; head < kvHeads; head++) {
          const count = meta.tokenCount(seqId, layer, head);
          const blocks = meta.tables.numEntries(meta.rowOf(seqId, layer, head));
          needed += Math.max(0, Math.ceil((count + n) / blockSize) - blocks) + 1;
        }
      }
      const before = meta.snapshot();
      const growable = meta.growableBlocks('full');
      if (growable >= needed) {
        meta.growFull(Math.min(growable, Math.max(needed, Math.ceil(meta.fullPool.numBlocks / 2))));
        this.#syncPools();
        plan = meta.planAppend(seqId, n);
      }
      if (plan === null) {
        meta.restore(before);
        this.#syncPools();
        throw new OutOfBlocksError(needed, meta.fullPool.numFree, 'compress or free a sequence, or raise maxBytes');
      }
    }
    const wpb = this.fullLayout.wordsPerBlock;
    const { blockSize, headDim } = this.shape;
    const store = this.#pools.full;
    for (const copy of plan.copies) {
      store.words.copyWithin(copy.dst * wpb, copy.src * wpb, (copy.src + 1) * wpb);
      const span = blockSize * headDim;
      store.k.copyWithin(copy.dst * span, copy.src * span, (copy.src + 1) * span);
      store.v.copyWithin(copy.dst * span, copy.src * span, (copy.src + 1) * span);
    }
    return plan;
  }

  /** Writes token `t` of an append plan for one layer: K/V `[kvHeads][headDim]` at `offset`, its position. */
  #writeLayerToken(plan: AppendPlan, layer: number, t: number, k: Float32Array, v: Float32Array, offset: number): void {
    const { kvHeads, headDim, blockSize } = this.shape;
    const layout = this.fullLayout;
    const words = this.#pools.full.words;
    for (let head = 0; head < kvHeads; head++) {
      const dest = plan.destSlots[(layer * plan.nTokens + t) * kvHeads + head] ?? 0;
      const block = Math.floor(dest / blockSize);
      const slot = dest % blockSize;
      const base = block * layout.wordsPerBlock;
      const src = offset + head * headDim;
      if (layout.format === 'f32') {
        for (let c = 0; c < headDim; c++) {
          words[base + layout.kOffset + slot * headDim + c] = f32Bits(k[src + c] ?? 0);
          words[base + layout.vOffset + slot * headDim + c] = f32Bits(v[src + c] ?? 0);
        }
      } else {
        for (let c = 0; c < headDim; c += 2) {
          words[base + layout.kOffset + (slot * headDim + c) / 2] = pack2x16float(k[src + c] ?? 0, k[src + c + 1] ?? 0);
          words[base + layout.vOffset + (slot * headDim + c) / 2] = pack2x16float(v[src + c] ?? 0, v[src + c + 1] ?? 0);
        }
      }
      words[base + layout.positionsOffset + slot] = plan.firstPosition + t;
      this.#refreshMirror('full', block, slot + 1);
    }
  }

  #checkValues(field: string, data: Float32Array): void {
    const limited = this.fullLayout.format !== 'f32';
    for (let i = 0; i < data.length; i++) {
      const x = data[i] ?? 0;
      if (!Number.isFinite(x)) {
        throw new NonFiniteValueError(`${field}[${i}] is ${x}: K/V must be finite; the cache was not changed`);
      }
      if (limited && Math.abs(roundToF16(x)) > F16_MAX) {
        throw new InvalidArgumentError(field, `value ${x} at ${i} is outside the f16 range (±${F16_MAX}); create the cache with fullFormat 'f32'`);
      }
    }
  }

  #assertNoPending(what: string): void {
    if (this.#pending !== null && this.#pending.nextLayer < this.shape.layers) {
      throw new InvalidArgumentError(
        'step',
        `cannot ${what} while the step at position ${this.#pending.pos} is at layer ${this.#pending.nextLayer}; finish it first`,
      );
    }
  }

  // ------------------------------------------------------------------ private: attention

  /** K, V and positions of one row in logical order, from the decoded mirror (the codec's output). */
  #readRow(row: number): { keys: Float32Array; values: Float32Array; positions: Uint32Array } {
    const { headDim, blockSize } = this.shape;
    const tables = this.#meta.tables;
    const entries = tables.entryView(row);
    const n = tables.tokenCount(row);
    const keys = new Float32Array(n * headDim);
    const values = new Float32Array(n * headDim);
    const positions = new Uint32Array(n);
    for (let b = 0; b < entries.length; b++) {
      const { pool, block } = decodeBlockRef(entries[b] ?? 0);
      const store = this.#pools[pool];
      const layout = this.#layout(pool);
      const count = Math.min(blockSize, n - b * blockSize);
      const at = block * blockSize * headDim;
      keys.set(store.k.subarray(at, at + count * headDim), b * blockSize * headDim);
      values.set(store.v.subarray(at, at + count * headDim), b * blockSize * headDim);
      const p = block * layout.wordsPerBlock + layout.positionsOffset;
      positions.set(store.words.subarray(p, p + count), b * blockSize);
    }
    return { keys, values, positions };
  }

  #attend(slot: number, layer: number, q: Float32Array, accumulate: boolean): { out: Float32Array; probsPerKvHead: Float32Array[] } {
    const { kvHeads, headDim } = this.shape;
    const keys: Float32Array[] = [];
    const values: Float32Array[] = [];
    const rows: number[] = [];
    for (let head = 0; head < kvHeads; head++) {
      const row = this.#meta.tables.row(slot, layer, head);
      const decoded = this.#readRow(row);
      keys.push(decoded.keys);
      values.push(decoded.values);
      rows.push(row);
    }
    const result = decodeAttention({ q, keys, values, nHeads: this.nHeads, kvHeads, headDim });
    if (accumulate) {
      for (let head = 0; head < kvHeads; head++) {
        const base = (rows[head] ?? 0) * this.maxTokensPerHead;
        const p = result.probsPerKvHead[head] ?? new Float32Array(0);
        const sq = result.sqProbsPerKvHead[head] ?? new Float32Array(0);
        for (let t = 0; t < p.length; t++) {
          this.#attnSum[base + t] = (this.#attnSum[base + t] ?? 0) + (p[t] ?? 0);
          this.#attnSqSum[base + t] = (this.#attnSqSum[base + t] ?? 0) + (sq[t] ?? 0);
          this.#attnCount[base + t] = (this.#attnCount[base + t] ?? 0) + 1;
        }
      }
    }
    return { out: result.out, probsPerKvHead: result.probsPerKvHead };
  }

  #recordQuery(slot: number, layer: number, pos: number, q: Float32Array): void {
    const w = this.observationWindow;
    const rowValues = this.nHeads * this.shape.headDim;
    const base = layer * this.#meta.seqSlots + slot;
    const ring = pos % w;
    this.#windowQueries.set(q.subarray(0, rowValues), (base * w + ring) * rowValues);
    this.#windowPositions[base * w + ring] = pos;
    this.#windowValid[base] = Math.min(w, (this.#windowValid[base] ?? 0) + 1);
  }

  /** The last `maxRows` valid window queries of (slot, layer), oldest first. */
  #window(slot: number, layer: number, maxRows: number): { queries: Float32Array; positions: Uint32Array } {
    const w = this.observationWindow;
    const rowValues = this.nHeads * this.shape.headDim;
    const base = layer * this.#meta.seqSlots + slot;
    const valid = this.#windowValid[base] ?? 0;
    // Recording starts at ring slot pos mod w (tokens may have been appended without queries first), so the
    // filled slots are the ones not holding the empty marker; every filled slot holds one of the newest queries.
    const ringSlots = valid === 0 ? [] : Array.from({ length: w }, (_, j) => j).filter((j) => this.#windowPositions[base * w + j] !== EMPTY_POSITION);
    ringSlots.sort((a, b) => (this.#windowPositions[base * w + a] ?? 0) - (this.#windowPositions[base * w + b] ?? 0));
    const take = ringSlots.slice(Math.max(0, ringSlots.length - Math.max(0, maxRows)));
    const queries = new Float32Array(take.length * rowValues);
    const positions = new Uint32Array(take.length);
    take.forEach((ring, j) => {
      queries.set(this.#windowQueries.subarray((base * w + ring) * rowValues, (base * w + ring + 1) * rowValues), j * rowValues);
      positions[j] = this.#windowPositions[base * w + ring] ?? 0;
    });
    return { queries, positions };
  }

  #clearSlotState(slot: number): void {
    const { layers, kvHeads } = this.shape;
    const slots = this.#meta.seqSlots;
    const statsRow = kvHeads * this.maxTokensPerHead;
    for (let layer = 0; layer < layers; layer++) {
      const base = layer * slots + slot;
      for (const stats of [this.#attnSum, this.#attnSqSum, this.#attnCount]) stats.fill(0, base * statsRow, (base + 1) * statsRow);
      this.#windowValid[base] = 0;
      this.#windowPositions.fill(EMPTY_POSITION, base * this.observationWindow, (base + 1) * this.observationWindow);
    }
  }
}

/** Window position marking a ring slot that holds no query since the sequence was added. */
const EMPTY_POSITION = 0xffff_ffff;

function emptyStore(): PoolStore {
  return { words: new Uint32Array(0), k: new Float32Array(0), v: new Float32Array(0) };
}
