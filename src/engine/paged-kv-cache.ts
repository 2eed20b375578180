import { InvalidArgumentError, NonFiniteValueError, OutOfBlocksError } from '../errors.js';
import { createStorageBuffer, readBuffer } from '../gpu/buffers.js';
import type { GpuContext } from '../gpu/context.js';
import { AccumulateAttentionKernel } from '../kernels/cache/accumulate-attention.js';
import { CopyRangesKernel, type WordRange } from '../kernels/cache/copy-ranges.js';
import { KvAppendKernel } from '../kernels/cache/kv-append.js';
import { PagedAttentionKernel, type PagedCacheBindings } from '../kernels/cache/paged-attention.js';
import { type AutoChoice, GpuCompressor } from '../compress/gpu-compressor.js';
import type { CompressOptions, CompressionReport } from '../compress/options.js';
import type { GpuAttentionBackend, KvStep, LayerIo } from '../attention/backend.js';
import { decodeBlock } from '../format/block-codec.js';
import { CacheMetadata, type AppendPlan, type PoolName } from '../cache/cache-metadata.js';
import { type PagedKvCacheOptions, resolveCacheOptions } from '../cache/cache-options.js';
import { type CacheMemoryReport, memoryReport, sequenceBytes } from '../cache/memory-report.js';
import {
  type BlockLayout,
  type CacheShape,
  type FullFormat,
  type QuantFormat,
  bytesPerBlock,
  decodeBlockRef,
} from '../format/layout.js';

/** One token range appended to a sequence, in flight between beginStep and endStep. */
interface StepState {
  readonly seqId: number;
  readonly numTokens: number;
  readonly positions: Uint32Array;
  readonly plan: AppendPlan;
  readonly destSlots: GPUBuffer;
  readonly positionsBuffer: GPUBuffer;
  readonly querySlots: GPUBuffer;
  /** u32 [1][3]: (slot, first query, query count) for the statistics kernel. */
  readonly segments: GPUBuffer;
  /** Acquired on the first attention of the step (appends without attention never need it). */
  probs: GPUBuffer | null;
  readonly probsStride: number;
}

const STEP_STATES = new WeakMap<KvStep, StepState>();

/**
 * A paged KV cache in GPU buffers: a full-precision pool where tokens land and a quantized pool, vLLM-style
 * block tables per (sequence, layer, KV head), attention that reads the pages directly, and attention statistics
 * per token for eviction policies. Implements {@link GpuAttentionBackend} so a model runner can drive it.
 *
 * @example
 * ```ts
 * const cache = PagedKvCache.create(gpu, { shape: { layers: 5, kvHeads: 4, headDim: 8 }, nHeads: 8, fullFormat: 'f32' });
 * cache.addSequence(1);
 * await cache.append(1, keys, values);   // f32 [layers][tokens][kvHeads][headDim]
 * const out = await cache.attend(1, 0, query);
 * cache.destroy();
 * ```
 */
export class PagedKvCache implements GpuAttentionBackend {
  readonly meta: CacheMetadata;
  readonly shape: CacheShape;
  readonly nHeads: number;
  readonly observationWindow: number;
  readonly maxTokensPerHead: number;
  private fullPoolBuffer: GPUBuffer;
  private quantPoolBuffer: GPUBuffer;
  readonly blockTable: GPUBuffer;
  readonly contextLens: GPUBuffer;
  /** f32 [row][maxTokensPerHead] each: Σ p, Σ p², visible-query count, by logical token index. */
  readonly attnSum: GPUBuffer;
  readonly attnSqSum: GPUBuffer;
  readonly attnCount: GPUBuffer;
  /** f32 [layers][seqSlots][window][nHeads][headDim], ring by position mod window. */
  readonly windowQueries: GPUBuffer;
  /** u32 [layers][seqSlots][window]. */
  readonly windowPositions: GPUBuffer;
  private readonly flags: GPUBuffer;
  private readonly appendKernel: KvAppendKernel;
  private readonly copyRanges: CopyRangesKernel;
  private readonly accumulateKernel: AccumulateAttentionKernel;
  /** Whether attention steps add to the per-token statistics. */
  accumulateStats = true;
  /** How many newest queries of each (layer, slot) the observation window holds. */
  private readonly windowValid = new Map<number, number>();
  private readonly attentionKernel: PagedAttentionKernel;
  private destroyed = false;
  private compressor: GpuCompressor | null = null;

  private constructor(
    readonly gpu: GpuContext,
    meta: CacheMetadata,
    nHeads: number,
    observationWindow: number,
  ) {
    this.meta = meta;
    this.shape = meta.shape;
    this.nHeads = nHeads;
    this.observationWindow = observationWindow;
    this.maxTokensPerHead = meta.maxBlocksPerHead * meta.shape.blockSize;
    const { layers, kvHeads, headDim } = meta.shape;
    const rows = layers * meta.seqSlots * kvHeads;
    this.fullPoolBuffer = createStorageBuffer(gpu, 'kv:full-pool', meta.fullPool.numBlocks * bytesPerBlock(meta.fullLayout));
    this.quantPoolBuffer = createStorageBuffer(
      gpu,
      'kv:quant-pool',
      meta.quantLayout ? meta.quantPool.numBlocks * bytesPerBlock(meta.quantLayout) : 4,
    );
    this.blockTable = createStorageBuffer(gpu, 'kv:block-table', rows * meta.maxBlocksPerHead * 4);
    this.contextLens = createStorageBuffer(gpu, 'kv:context-lens', rows * 4);
    const statsBytes = rows * this.maxTokensPerHead * 4;
    this.attnSum = createStorageBuffer(gpu, 'kv:attn-sum', statsBytes);
    this.attnSqSum = createStorageBuffer(gpu, 'kv:attn-sq-sum', statsBytes);
    this.attnCount = createStorageBuffer(gpu, 'kv:attn-count', statsBytes);
    this.windowQueries = createStorageBuffer(
      gpu,
      'kv:window-queries',
      layers * meta.seqSlots * observationWindow * nHeads * headDim * 4,
    );
    this.windowPositions = createStorageBuffer(gpu, 'kv:window-positions', layers * meta.seqSlots * observationWindow * 4);
    this.flags = createStorageBuffer(gpu, 'kv:flags', 4);
    this.appendKernel = new KvAppendKernel(gpu, { kvHeads, full: meta.fullLayout });
    this.copyRanges = new CopyRangesKernel(gpu);
    this.accumulateKernel = new AccumulateAttentionKernel(gpu, {
      nHeads,
      kvHeads,
      full: meta.fullLayout,
      quant: meta.quantLayout,
    });
    this.attentionKernel = new PagedAttentionKernel(gpu, {
      nHeads,
      kvHeads,
      full: meta.fullLayout,
      quant: meta.quantLayout,
    });
  }

  /** Creates a cache, validating every option before any GPU object exists. */
  static create(gpu: GpuContext, options: PagedKvCacheOptions): PagedKvCache {
    const resolved = resolveCacheOptions(options);
    const cache = new PagedKvCache(gpu, new CacheMetadata(resolved.metadata), resolved.nHeads, resolved.observationWindow);
    cache.accumulateStats = options.accumulateStats ?? true;
    return cache;
  }

  /** The full-format block layout (where tokens land). */
  get fullLayout(): BlockLayout {
    return this.meta.fullLayout;
  }

  /** The quantized block layout, or null. */
  get quantLayout(): BlockLayout | null {
    return this.meta.quantLayout;
  }

  /** The buffers kernels read; changes when a pool grows, so fetch it per encode. */
  get bindings(): PagedCacheBindings {
    return {
      blockTable: this.blockTable,
      contextLens: this.contextLens,
      fullPool: this.fullPoolBuffer,
      quantPool: this.quantPoolBuffer,
      seqSlots: this.meta.seqSlots,
      maxBlocksPerHead: this.meta.maxBlocksPerHead,
    };
  }

  /** The GPU buffer of a pool. */
  poolBuffer(pool: PoolName): GPUBuffer {
    return pool === 'full' ? this.fullPoolBuffer : this.quantPoolBuffer;
  }

  // ------------------------------------------------------------------ sequences

  /** Registers a sequence (its statistics and window start empty). */
  addSequence(id: number): void {
    this.assertUsable();
    const slot = this.meta.addSequence(id);
    this.clearSlotState(slot);
  }

  /** Frees a sequence: every block it held alone returns to the pool. */
  freeSequence(id: number): void {
    this.assertUsable();
    this.meta.freeSequence(id);
    this.uploadDirtyRows();
  }

  /** Forks `srcId` into `dstId`: blocks are shared by reference count and copied on the next write. */
  fork(srcId: number, dstId: number): void {
    this.assertUsable();
    const srcSlot = this.meta.slotOf(srcId);
    const dstSlot = this.meta.fork(srcId, dstId);
    const encoder = this.gpu.device.createCommandEncoder({ label: 'kv:fork' });
    const { layers, kvHeads, headDim } = this.shape;
    const statsRowWords = kvHeads * this.maxTokensPerHead;
    const windowWords = this.observationWindow * this.nHeads * headDim;
    const statsRanges: WordRange[] = [];
    const windowRanges: WordRange[] = [];
    const positionRanges: WordRange[] = [];
    for (let layer = 0; layer < layers; layer++) {
      const from = layer * this.meta.seqSlots + srcSlot;
      const to = layer * this.meta.seqSlots + dstSlot;
      statsRanges.push({ src: from * statsRowWords, dst: to * statsRowWords });
      windowRanges.push({ src: from * windowWords, dst: to * windowWords });
      positionRanges.push({ src: from * this.observationWindow, dst: to * this.observationWindow });
    }
    const scratch: (GPUBuffer | null)[] = [
      ...[this.attnSum, this.attnSqSum, this.attnCount].map((stats) =>
        this.copyRanges.encode(encoder, stats, statsRanges, statsRowWords),
      ),
      this.copyRanges.encode(encoder, this.windowQueries, windowRanges, windowWords),
      this.copyRanges.encode(encoder, this.windowPositions, positionRanges, this.observationWindow),
    ];
    this.gpu.submit([encoder.finish()]);
    this.destroyAfterSubmit(scratch);
    for (let layer = 0; layer < layers; layer++) {
      const valid = this.windowValid.get(layer * this.meta.seqSlots + srcSlot);
      if (valid !== undefined) this.windowValid.set(layer * this.meta.seqSlots + dstSlot, valid);
    }
    this.uploadDirtyRows();
  }

  private destroyAfterSubmit(buffers: readonly (GPUBuffer | null)[]): void {
    const live = buffers.filter((b): b is GPUBuffer => b !== null);
    if (live.length === 0) return;
    void this.gpu.device.queue.onSubmittedWorkDone().then(() => {
      for (const buffer of live) buffer.destroy();
    });
  }

  /** Tokens ever appended to a sequence (the position of its next token). */
  sequenceLength(id: number): number {
    return this.meta.sequenceLength(id);
  }

  /** Tokens a head holds now (after eviction, fewer than sequenceLength). */
  tokenCount(id: number, layer: number, kvHead: number): number {
    return this.meta.tokenCount(id, layer, kvHead);
  }

  // ------------------------------------------------------------------ appending

  /**
   * Reserves slots for `numTokens` new tokens of a sequence in every layer and head, growing the full pool within
   * the byte budget if needed, runs copy-on-write copies and uploads the changed table rows. Throws
   * OutOfBlocksError (state unchanged) when even the budget cannot hold them.
   */
  beginStep(seqId: number, numTokens: number): KvStep {
    this.assertUsable();
    const before = this.meta.snapshot();
    let plan = this.meta.planAppend(seqId, numTokens);
    if (plan === null) {
      const needed = this.blocksNeeded(seqId, numTokens);
      const growable = this.meta.growableBlocks('full');
      if (growable >= needed) {
        this.growPool('full', Math.min(growable, Math.max(needed, Math.ceil(this.meta.fullPool.numBlocks / 2))));
        plan = this.meta.planAppend(seqId, numTokens);
      }
      if (plan === null) {
        this.meta.restore(before);
        throw new OutOfBlocksError(needed, this.meta.fullPool.numFree, 'compress or free a sequence, or raise maxBytes');
      }
    }
    try {
      return this.stepFromPlan(plan);
    } catch (error) {
      this.meta.restore(before);
      this.uploadDirtyRows();
      throw error;
    }
  }

  private blocksNeeded(seqId: number, numTokens: number): number {
    const { layers, kvHeads, blockSize } = this.shape;
    let needed = 0;
    for (let layer = 0; layer < layers; layer++) {
      for (let head = 0; head < kvHeads; head++) {
        const count = this.meta.tokenCount(seqId, layer, head);
        const blocks = this.meta.headBlocks(seqId, layer, head).length;
        needed += Math.max(0, Math.ceil((count + numTokens) / blockSize) - blocks) + 1;
      }
    }
    return needed;
  }

  private stepFromPlan(plan: AppendPlan): StepState {
    if (plan.copies.length > 0) {
      const encoder = this.gpu.device.createCommandEncoder({ label: 'kv:copy-on-write' });
      const scratch: (GPUBuffer | null)[] = [];
      for (const pool of ['full', 'quant'] as const) {
        const layout = pool === 'full' ? this.meta.fullLayout : this.meta.quantLayout;
        const copies = plan.copies.filter((copy) => copy.pool === pool);
        if (!layout || copies.length === 0) continue;
        const words = layout.wordsPerBlock;
        const ranges = copies.map((copy) => ({ src: copy.src * words, dst: copy.dst * words }));
        scratch.push(this.copyRanges.encode(encoder, this.poolBuffer(pool), ranges, words));
      }
      this.gpu.submit([encoder.finish()]);
      this.destroyAfterSubmit(scratch);
    }
    const positions = Uint32Array.from({ length: plan.nTokens }, (_, t) => plan.firstPosition + t);
    const longest = this.longestHead(plan.sequenceId);
    const probsStride = Math.max(1, longest);
    const step: StepState = {
      seqId: plan.sequenceId,
      numTokens: plan.nTokens,
      positions,
      plan,
      destSlots: this.scratch('kv:dest-slots', plan.destSlots),
      positionsBuffer: this.scratch('kv:positions', positions),
      querySlots: this.scratch('kv:query-slots', new Uint32Array(plan.nTokens).fill(plan.slot)),
      segments: this.scratch('kv:segments', new Uint32Array([plan.slot, 0, plan.nTokens])),
      probs: null,
      probsStride,
    };
    this.uploadDirtyRows();
    STEP_STATES.set(step, step);
    return step;
  }

  private longestHead(seqId: number): number {
    let longest = 0;
    for (let layer = 0; layer < this.shape.layers; layer++) {
      for (let head = 0; head < this.shape.kvHeads; head++) {
        longest = Math.max(longest, this.meta.tokenCount(seqId, layer, head));
      }
    }
    return longest;
  }

  private scratch(label: string, data: Uint32Array): GPUBuffer {
    const buffer = this.gpu.buffers.acquire(
      Math.max(4, data.byteLength),
      GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC,
      label,
    );
    this.gpu.device.queue.writeBuffer(buffer, 0, data as Uint32Array<ArrayBuffer>);
    return buffer;
  }

  private state(step: KvStep): StepState {
    const state = STEP_STATES.get(step);
    if (!state) throw new InvalidArgumentError('step', 'not a step of this cache (use beginStep)');
    return state;
  }

  /**
   * Encodes one layer of a step: the new tokens' K/V (f32 [n][kvHeads][headDim], RoPE applied) into their slots,
   * the newest queries into the observation window, then paged attention of the n queries (causal by position).
   * Values are not checked here (a model's own activations, on the hot path); untrusted K/V go through append()
   * or appendBuffers(), which reject NaN, ±Inf and values the pool format cannot hold.
   */
  encodeLayer(
    encoder: GPUCommandEncoder,
    step: KvStep,
    layer: number,
    io: LayerIo,
  ): void {
    const state = this.state(step);
    this.checkLayer(layer);
    this.encodeAppend(encoder, state, layer, io.keys, io.values);
    this.encodeWindowRecord(encoder, state, layer, io.queries);
    state.probs ??= this.gpu.buffers.acquire(
      state.numTokens * this.nHeads * state.probsStride * 4,
      GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
      'kv:probs',
    );
    const probs = state.probs;
    this.attentionKernel.encode(encoder, {
      cache: this.bindings,
      layer,
      numQueries: state.numTokens,
      queries: io.queries,
      querySlots: state.querySlots,
      queryPositions: state.positionsBuffer,
      out: io.out,
      probs,
      probsStride: state.probsStride,
    });
    if (this.accumulateStats) {
      this.accumulateKernel.encode(encoder, {
        cache: this.bindings,
        layer,
        probs,
        probsStride: state.probsStride,
        queryPositions: state.positionsBuffer,
        segments: state.segments,
        numSegments: 1,
        stats: { attnSum: this.attnSum, attnSqSum: this.attnSqSum, attnCount: this.attnCount },
      });
    }
  }

  /** The scatter of one layer's new K/V into the step's slots (every write path goes through here). */
  private encodeAppend(encoder: GPUCommandEncoder, state: StepState, layer: number, keys: GPUBuffer, values: GPUBuffer): void {
    this.appendKernel.encode(encoder, {
      layer,
      numTokens: state.numTokens,
      keys,
      values,
      destSlots: state.destSlots,
      positions: state.positionsBuffer,
      fullPool: this.fullPoolBuffer,
      flags: this.flags,
    });
  }

  private encodeWindowRecord(encoder: GPUCommandEncoder, state: StepState, layer: number, queries: GPUBuffer): void {
    const { headDim } = this.shape;
    const window = this.observationWindow;
    const queryBytes = this.nHeads * headDim * 4;
    const base = layer * this.meta.seqSlots + state.plan.slot;
    const first = Math.max(0, state.numTokens - window);
    const positions: number[] = [];
    for (let t = first; t < state.numTokens; t++) {
      const position = state.positions[t] ?? 0;
      const ring = position % window;
      encoder.copyBufferToBuffer(queries, t * queryBytes, this.windowQueries, (base * window + ring) * queryBytes, queryBytes);
      positions.push(ring, position);
    }
    const key = layer * this.meta.seqSlots + state.plan.slot;
    this.windowValid.set(key, Math.min(window, (this.windowValid.get(key) ?? 0) + state.numTokens));
    for (let i = 0; i < positions.length; i += 2) {
      this.gpu.device.queue.writeBuffer(
        this.windowPositions,
        (base * window + (positions[i] ?? 0)) * 4,
        new Uint32Array([positions[i + 1] ?? 0]),
      );
    }
  }

  /** How many of the newest queries of (sequence, layer) the observation window holds. */
  windowCount(seqId: number, layer: number): number {
    return this.windowValid.get(layer * this.meta.seqSlots + this.meta.slotOf(seqId)) ?? 0;
  }

  /** The probabilities buffer of a step's last encoded layer: f32 [n][nHeads][probsStride]. */
  stepProbs(step: KvStep): { buffer: GPUBuffer; stride: number } | null {
    const state = this.state(step);
    return state.probs ? { buffer: state.probs, stride: state.probsStride } : null;
  }

  /** Releases a step's scratch buffers (after its command buffer was submitted). */
  endStep(step: KvStep): void {
    const state = this.state(step);
    for (const buffer of [state.destSlots, state.positionsBuffer, state.querySlots, state.segments, state.probs]) {
      if (buffer) this.gpu.buffers.release(buffer);
    }
    STEP_STATES.delete(step);
  }

  /**
   * Appends tokens from typed arrays: K and V f32 `[layers][tokens][kvHeads][headDim]`. Validates shape and
   * finiteness first (NonFiniteValueError, cache unchanged), then writes every layer in one submit.
   *
   * @example
   * ```ts
   * await cache.append(seq, keys, values);
   * ```
   */
  async append(seqId: number, keys: Float32Array, values: Float32Array): Promise<void> {
    this.assertUsable();
    const { layers, kvHeads, headDim } = this.shape;
    const perToken = layers * kvHeads * headDim;
    if (keys.length !== values.length || keys.length === 0 || keys.length % perToken !== 0) {
      throw new InvalidArgumentError(
        'keys',
        `K and V must both be f32 [layers=${layers}][tokens][kvHeads=${kvHeads}][headDim=${headDim}]; got ${keys.length} and ${values.length} values`,
      );
    }
    const storable = this.meta.fullFormat === 'f16' ? F16_MAX : Number.MAX_VALUE;
    checkStorable('keys', keys, storable);
    checkStorable('values', values, storable);
    const numTokens = keys.length / perToken;
    const step = this.beginStep(seqId, numTokens);
    const state = this.state(step);
    const layerFloats = numTokens * kvHeads * headDim;
    const encoder = this.gpu.device.createCommandEncoder({ label: 'kv:append' });
    const buffers: GPUBuffer[] = [];
    for (let layer = 0; layer < layers; layer++) {
      const k = createStorageBuffer(this.gpu, 'kv:append-k', keys.subarray(layer * layerFloats, (layer + 1) * layerFloats));
      const v = createStorageBuffer(this.gpu, 'kv:append-v', values.subarray(layer * layerFloats, (layer + 1) * layerFloats));
      buffers.push(k, v);
      this.encodeAppend(encoder, state, layer, k, v);
    }
    this.gpu.submit([encoder.finish()]);
    this.endStep(step);
    await this.gpu.idle();
    for (const buffer of buffers) buffer.destroy();
  }

  /**
   * Appends tokens whose K and V already live in GPU buffers: one buffer per layer, f32
   * `[numTokens][kvHeads][headDim]`. The append kernel checks every value; if any is NaN or ±Inf the append is
   * rolled back (the slots it wrote become unreferenced again) and NonFiniteValueError is thrown, so the cache is
   * exactly as before. The check costs one small readback per call.
   *
   * @example
   * ```ts
   * await cache.appendBuffers(seq, keysPerLayer, valuesPerLayer, 16);
   * ```
   */
  async appendBuffers(
    seqId: number,
    keys: readonly GPUBuffer[],
    values: readonly GPUBuffer[],
    numTokens: number,
  ): Promise<void> {
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
    const before = this.meta.snapshot();
    this.gpu.device.queue.writeBuffer(this.flags, 0, new Uint32Array(1));
    const step = this.beginStep(seqId, numTokens);
    const state = this.state(step);
    const encoder = this.gpu.device.createCommandEncoder({ label: 'kv:append-buffers' });
    for (let layer = 0; layer < layers; layer++) {
      this.encodeAppend(encoder, state, layer, keys[layer] as GPUBuffer, values[layer] as GPUBuffer);
    }
    this.gpu.submit([encoder.finish()]);
    this.endStep(step);
    if (await this.takeNonFiniteFlag()) {
      this.meta.restore(before);
      this.uploadDirtyRows();
      throw new NonFiniteValueError(
        'a K or V value in the GPU buffers is NaN, ±Inf or past the pool format’s range; the append was rolled back',
      );
    }
  }

  /**
   * Attention of one query (f32 [nHeads][headDim], RoPE applied) against a sequence's cached tokens in `layer`;
   * returns the output and the probabilities per KV head (summed over the group). For tests and tools; the model
   * runner encodes attention itself.
   */
  async attend(
    seqId: number,
    layer: number,
    query: Float32Array,
  ): Promise<{ out: Float32Array; probsPerKvHead: Float32Array[] }> {
    this.assertUsable();
    this.checkLayer(layer);
    const { headDim, kvHeads } = this.shape;
    if (query.length !== this.nHeads * headDim) {
      throw new InvalidArgumentError('query', `expected ${this.nHeads * headDim} values; got ${query.length}`);
    }
    const slot = this.meta.slotOf(seqId);
    const stride = Math.max(1, this.longestHead(seqId));
    const q = createStorageBuffer(this.gpu, 'kv:attend-q', query);
    const slots = createStorageBuffer(this.gpu, 'kv:attend-slot', new Uint32Array([slot]));
    const pos = createStorageBuffer(this.gpu, 'kv:attend-pos', new Uint32Array([0xffff_ffff]));
    const out = createStorageBuffer(this.gpu, 'kv:attend-out', query.byteLength);
    const probs = createStorageBuffer(this.gpu, 'kv:attend-probs', this.nHeads * stride * 4);
    try {
      const encoder = this.gpu.device.createCommandEncoder({ label: 'kv:attend' });
      this.attentionKernel.encode(encoder, {
        cache: this.bindings,
        layer,
        numQueries: 1,
        queries: q,
        querySlots: slots,
        queryPositions: pos,
        out,
        probs,
        probsStride: stride,
      });
      this.gpu.submit([encoder.finish()]);
      const result = new Float32Array(await readBuffer(this.gpu, out));
      const p = new Float32Array(await readBuffer(this.gpu, probs));
      const group = this.nHeads / kvHeads;
      const probsPerKvHead = Array.from({ length: kvHeads }, (_, kv) => {
        const n = this.meta.tokenCount(seqId, layer, kv);
        const summed = new Float32Array(n);
        for (let g = 0; g < group; g++) {
          const base = (kv * group + g) * stride;
          for (let t = 0; t < n; t++) summed[t] = (summed[t] ?? 0) + (p[base + t] ?? 0);
        }
        return summed;
      });
      return { out: result, probsPerKvHead };
    } finally {
      for (const buffer of [q, slots, pos, out, probs]) buffer.destroy();
    }
  }

  /**
   * Reads one head back and decodes it with the reference codec: K, V `[tokens][headDim]` and original positions.
   * For tests, tools and the demo's heat maps.
   */
  async readHead(
    seqId: number,
    layer: number,
    kvHead: number,
  ): Promise<{ keys: Float32Array; values: Float32Array; positions: Uint32Array }> {
    this.assertUsable();
    const entries = this.meta.headBlocks(seqId, layer, kvHead);
    const count = this.meta.tokenCount(seqId, layer, kvHead);
    const { headDim, blockSize } = this.shape;
    const keys = new Float32Array(count * headDim);
    const values = new Float32Array(count * headDim);
    const positions = new Uint32Array(count);
    for (let b = 0; b < entries.length; b++) {
      const { pool, block } = decodeBlockRef(entries[b] ?? 0);
      const layout = pool === 'full' ? this.meta.fullLayout : this.meta.quantLayout;
      if (!layout) throw new InvalidArgumentError('entries', 'quantized entry in a cache without a quantized pool');
      const bytes = layout.wordsPerBlock * 4;
      const words = new Uint32Array(await readBuffer(this.gpu, this.poolBuffer(pool), block * bytes, bytes));
      const n = Math.min(blockSize, count - b * blockSize);
      const decoded = decodeBlock(layout, words, n);
      keys.set(decoded.k.subarray(0, n * headDim), b * blockSize * headDim);
      values.set(decoded.v.subarray(0, n * headDim), b * blockSize * headDim);
      positions.set(decoded.positions.subarray(0, n), b * blockSize);
    }
    return { keys, values, positions };
  }

  /** True if a K/V value appended from a GPU buffer since the last call was NaN or ±Inf (the flag is cleared). */
  async takeNonFiniteFlag(): Promise<boolean> {
    const flag = new Uint32Array(await readBuffer(this.gpu, this.flags))[0] ?? 0;
    if (flag !== 0) this.gpu.device.queue.writeBuffer(this.flags, 0, new Uint32Array(1));
    return flag !== 0;
  }

  // ------------------------------------------------------------------ compression

  /**
   * Compresses a sequence on the GPU: score, per-head budgets, top-k, compaction into fresh blocks (quantized when
   * `bits` < 16), old blocks freed. See {@link GpuCompressor.compress}.
   *
   * @example
   * ```ts
   * const report = await cache.compress(seq, { policy: 'snapkv', budget: 64, budgets: 'adakv', bits: 4 });
   * ```
   */
  compress(seqId: number, options: CompressOptions): Promise<CompressionReport> {
    this.assertUsable();
    this.compressor ??= new GpuCompressor(this);
    return this.compressor.compress(seqId, options);
  }

  /** Reaches a target memory ratio by choosing eviction and bits; says which it chose. */
  compressAuto(
    seqId: number,
    targetRatio: number,
    options: Omit<CompressOptions, 'budget' | 'ratio' | 'bits'> = {},
  ): Promise<CompressionReport & { chosen: AutoChoice }> {
    this.assertUsable();
    this.compressor ??= new GpuCompressor(this);
    return this.compressor.compressAuto(seqId, targetRatio, options);
  }

  // ------------------------------------------------------------------ memory

  /** Pool bytes and block counts now. */
  memory(): CacheMemoryReport {
    return memoryReport(this.meta);
  }

  /** Bytes of the blocks one sequence holds (shared blocks counted in full), and its f16 all-token baseline. */
  sequenceBytes(seqId: number): { bytes: number; baselineF16: number; tokens: number } {
    return sequenceBytes(this.meta, seqId);
  }

  /**
   * Grows a pool by `blocks` blocks within the byte budget: a bigger GPU buffer, the old contents copied over.
   * Explicit and bounded, as the budget says (LimitExceededError past it).
   */
  growPool(pool: PoolName, blocks: number): void {
    this.assertUsable();
    const layout = pool === 'full' ? this.meta.fullLayout : this.meta.quantLayout;
    if (!layout) throw new InvalidArgumentError('pool', 'this cache has no quantized pool');
    const oldBuffer = this.poolBuffer(pool);
    const numBlocks = pool === 'full' ? this.meta.growFull(blocks) : this.meta.growQuant(blocks);
    const buffer = createStorageBuffer(this.gpu, `kv:${pool}-pool`, numBlocks * bytesPerBlock(layout));
    const encoder = this.gpu.device.createCommandEncoder({ label: `kv:grow-${pool}` });
    encoder.copyBufferToBuffer(oldBuffer, 0, buffer, 0, Math.min(oldBuffer.size, buffer.size));
    this.gpu.submit([encoder.finish()]);
    if (pool === 'full') this.fullPoolBuffer = buffer;
    else this.quantPoolBuffer = buffer;
    // destroy() waits for the copy: WebGPU keeps a destroyed buffer's pending reads valid until they finish
    oldBuffer.destroy();
  }

  /** Writes the dirty block-table rows and their context lengths to the GPU. */
  uploadDirtyRows(): void {
    const tables = this.meta.tables;
    const words = tables.tableWords();
    const lens = tables.contextLens();
    for (const range of tables.takeDirtyRanges()) {
      const width = tables.maxBlocksPerHead;
      this.gpu.device.queue.writeBuffer(
        this.blockTable,
        range.firstRow * width * 4,
        words as Uint32Array<ArrayBuffer>,
        range.firstRow * width,
        range.rowCount * width,
      );
      this.gpu.device.queue.writeBuffer(
        this.contextLens,
        range.firstRow * 4,
        lens as Uint32Array<ArrayBuffer>,
        range.firstRow,
        range.rowCount,
      );
    }
  }

  private clearSlotState(slot: number): void {
    for (let layer = 0; layer < this.shape.layers; layer++) this.windowValid.delete(layer * this.meta.seqSlots + slot);
    const encoder = this.gpu.device.createCommandEncoder({ label: 'kv:clear-slot' });
    const statsRowBytes = this.shape.kvHeads * this.maxTokensPerHead * 4;
    for (let layer = 0; layer < this.shape.layers; layer++) {
      const offset = (layer * this.meta.seqSlots + slot) * statsRowBytes;
      for (const stats of [this.attnSum, this.attnSqSum, this.attnCount]) encoder.clearBuffer(stats, offset, statsRowBytes);
    }
    this.gpu.submit([encoder.finish()]);
    this.uploadDirtyRows();
  }

  private checkLayer(layer: number): void {
    if (!Number.isInteger(layer) || layer < 0 || layer >= this.shape.layers) {
      throw new InvalidArgumentError('layer', `must be in [0, ${this.shape.layers}); got ${layer}`);
    }
  }

  private assertUsable(): void {
    if (this.destroyed) throw new InvalidArgumentError('cache', 'this PagedKvCache was destroyed');
    this.gpu.assertUsable();
  }

  /** Destroys every GPU buffer of the cache. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.compressor?.destroy();
    for (const buffer of [
      this.fullPoolBuffer,
      this.quantPoolBuffer,
      this.blockTable,
      this.contextLens,
      this.attnSum,
      this.attnSqSum,
      this.attnCount,
      this.windowQueries,
      this.windowPositions,
      this.flags,
    ]) {
      buffer.destroy();
    }
  }
}

/** The largest f16 value: an f16 pool would store anything beyond it as ±Inf. */
const F16_MAX = 65504;

function checkStorable(field: string, data: Float32Array, maximum: number): void {
  for (let i = 0; i < data.length; i++) {
    const value = data[i] ?? 0;
    if (!(Math.abs(value) <= maximum)) {
      throw new NonFiniteValueError(
        `${field}[${i}] is ${value}: K/V must be finite${maximum === F16_MAX ? ' and within ±65504 for an f16 cache' : ''}; the cache was not changed`,
      );
    }
  }
}

/** Re-exported so callers of the cache need one import for formats and reports. */
export type { CacheMemoryReport, FullFormat, PagedKvCacheOptions, QuantFormat };
