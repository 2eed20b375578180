import { InvalidArgumentError } from '../errors.js';
import { checkStorable } from '../format/storable.js';
import type { AppendPlan, TruncatePlan } from '../cache/cache-metadata.js';
import type { CpuKvStorage } from '../cache/cpu-storage.js';
import { planAppendWithGrowth } from '../cache/pool-growth.js';
import type { AttentionHook } from './backend.js';
import { decodeAttention } from './reference-attention.js';

/** A decode step between its layer-0 call (which appends the token to every layer) and its last layer. */
interface PendingStep {
  readonly seqId: number;
  readonly pos: number;
  readonly plan: AppendPlan;
  nextLayer: number;
}

/** What one layer of a provisional step would have added to the statistics and the window. */
interface ProvisionalLayer {
  readonly query: Float32Array;
  readonly rows: readonly number[];
  readonly probs: readonly Float32Array[];
  readonly sqProbs: readonly Float32Array[];
}

/** A speculation of one sequence: the provisional steps since {@link CpuAttentionBackend.beginSpeculation}. */
interface Speculation {
  readonly slot: number;
  readonly steps: Array<{ readonly pos: number; readonly layers: ProvisionalLayer[] }>;
}

/** Window position marking a ring slot that holds no query since the sequence was added. */
const EMPTY_POSITION = 0xffff_ffff;

/** One head's attention statistics by logical token index. */
export interface HeadStatistics {
  readonly attnSum: Float32Array;
  readonly attnSqSum: Float32Array;
  readonly attnCount: Float32Array;
}

/**
 * Attention on the CPU storage with the GPU backend's semantics: token-by-token steps (the
 * {@link AttentionHook} contract of the reference model), the observation window of recent roped queries and the
 * per-token attention statistics, in plain arrays laid out like the GPU buffers.
 *
 * @example
 * ```ts
 * const backend = new CpuAttentionBackend(storage, { nHeads: 8, observationWindow: 32 });
 * const model = new ReferenceLlama(checkpoint, { attention: backend.attentionHook(seq) });
 * ```
 */
export class CpuAttentionBackend {
  readonly nHeads: number;
  readonly observationWindow: number;
  /** f32 [row][maxTokensPerHead]: Σ p over the group's query heads, Σ p², visible-query count. */
  readonly attnSum: Float32Array;
  readonly attnSqSum: Float32Array;
  readonly attnCount: Float32Array;
  /** f32 [layers][seqSlots][window][nHeads][headDim], ring by position mod window. */
  readonly #windowQueries: Float32Array;
  /** u32 [layers][seqSlots][window]. */
  readonly #windowPositions: Uint32Array;
  /** Valid window entries per [layers][seqSlots]. */
  readonly #windowValid: Uint32Array;
  #pending: PendingStep | null = null;
  /** Open speculations by sequence id. */
  readonly #speculations = new Map<number, Speculation>();

  constructor(
    readonly storage: CpuKvStorage,
    options: { readonly nHeads: number; readonly observationWindow: number },
  ) {
    this.nHeads = options.nHeads;
    this.observationWindow = options.observationWindow;
    const { meta } = storage;
    const { layers, headDim } = meta.shape;
    const statsWords = meta.tables.numRows * storage.maxTokensPerHead;
    this.attnSum = new Float32Array(statsWords);
    this.attnSqSum = new Float32Array(statsWords);
    this.attnCount = new Float32Array(statsWords);
    const ring = layers * meta.seqSlots * options.observationWindow;
    this.#windowQueries = new Float32Array(ring * options.nHeads * headDim);
    this.#windowPositions = new Uint32Array(ring).fill(EMPTY_POSITION);
    this.#windowValid = new Uint32Array(layers * meta.seqSlots);
  }

  /** How many of the newest queries of (sequence, layer) the observation window holds. */
  windowCount(seqId: number, layer: number): number {
    return this.#windowValid[layer * this.storage.meta.seqSlots + this.storage.meta.slotOf(seqId)] ?? 0;
  }

  /** True while a decode step has run some but not all of its layers. */
  get stepInProgress(): boolean {
    return this.#pending !== null && this.#pending.nextLayer < this.storage.meta.shape.layers;
  }

  /** Throws when a step is half way (an append, fork or compression now would break it). */
  assertNoPendingStep(what: string): void {
    const pending = this.#pending;
    if (pending !== null && pending.nextLayer < this.storage.meta.shape.layers) {
      throw new InvalidArgumentError('step', `cannot ${what} while the step at position ${pending.pos} is at layer ${pending.nextLayer}; finish it first`);
    }
  }

  /** Forgets a sequence's pending step (the sequence was freed). */
  dropPendingStep(seqId: number): void {
    if (this.#pending?.seqId === seqId) this.#pending = null;
  }

  /** planAppend with the shared growth rule, then the copy-on-write copies. */
  planAppend(seqId: number, n: number): AppendPlan {
    const plan = planAppendWithGrowth(this.storage.meta, seqId, n, (pool, layer, blocks) => this.storage.growPool(pool, layer, blocks));
    this.storage.copyBlocks(plan.copies);
    return plan;
  }

  /**
   * One decode step of one layer, the {@link AttentionHook} contract: `q` `[nHeads][headDim]`, `k` and `v`
   * `[kvHeads][headDim]` of the token at `pos` (RoPE applied). The layer-0 call appends the token to every layer
   * (pos must equal the sequence length); layers must then follow in order with the same pos. Writes the layer's
   * K/V, records the query in the observation window, attends and accumulates the statistics. Returns the
   * attention output `[nHeads][headDim]`.
   */
  step(seqId: number, layer: number, pos: number, q: Float32Array, k: Float32Array, v: Float32Array): Float32Array {
    const { meta } = this.storage;
    const { layers, kvHeads, headDim } = meta.shape;
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
    checkStorable('k', k.subarray(0, kvValues), meta.fullFormat);
    checkStorable('v', v.subarray(0, kvValues), meta.fullFormat);
    if (layer === 0) {
      // A step abandoned half way (the model threw) leaves its later layers' slots zero; starting over is the
      // caller's call, so only a step that is still expected to continue is an error.
      if (this.#pending !== null && this.#pending.nextLayer < layers && this.#pending.seqId === seqId) {
        throw new InvalidArgumentError('layer', `the step at position ${this.#pending.pos} stopped at layer ${this.#pending.nextLayer}; run every layer in order`);
      }
      const length = meta.sequenceLength(seqId);
      if (pos !== length) throw new InvalidArgumentError('pos', `the next position of sequence ${seqId} is ${length}; got ${pos}`);
      this.#pending = { seqId, pos, plan: this.planAppend(seqId, 1), nextLayer: 0 };
    }
    const pending = this.#pending;
    if (pending === null || pending.seqId !== seqId || pending.pos !== pos || pending.nextLayer !== layer) {
      throw new InvalidArgumentError(
        'layer',
        `layer ${layer} at position ${pos} of sequence ${seqId} is out of order; start each step at layer 0 and run layers in order`,
      );
    }
    this.storage.writeToken(pending.plan, layer, 0, k, v, 0);
    const slot = pending.plan.slot;
    const query = q.subarray(0, this.nHeads * headDim);
    const speculation = this.#speculations.get(seqId);
    let out: Float32Array;
    if (speculation) {
      // Provisional: what the step would add to the window and the statistics waits for settleSpeculation.
      const result = this.#attend(slot, layer, query);
      if (layer === 0) speculation.steps.push({ pos, layers: [] });
      speculation.steps[speculation.steps.length - 1]?.layers.push({ query: query.slice(), rows: result.rows, probs: result.probsPerKvHead, sqProbs: result.sqProbsPerKvHead });
      out = result.out;
    } else {
      this.#recordQuery(slot, layer, pos, q);
      out = this.attendSlot(slot, layer, query, true).out;
    }
    pending.nextLayer++;
    if (pending.nextLayer === layers) this.#pending = null;
    return out;
  }

  /** The {@link AttentionHook} of one sequence, for `new ReferenceLlama(checkpoint, { attention })`. */
  attentionHook(seqId: number): AttentionHook {
    return (layer, pos, q, k, v) => this.step(seqId, layer, pos, q, k, v);
  }

  /** Attention of one query over a slot's tokens of `layer`; `accumulate` adds to the statistics. */
  attendSlot(slot: number, layer: number, q: Float32Array, accumulate: boolean): { out: Float32Array; probsPerKvHead: Float32Array[] } {
    const result = this.#attend(slot, layer, q);
    if (accumulate) this.#accumulate(result.rows, result.probsPerKvHead, result.sqProbsPerKvHead);
    return { out: result.out, probsPerKvHead: result.probsPerKvHead };
  }

  #attend(slot: number, layer: number, q: Float32Array): ReturnType<typeof decodeAttention> & { rows: number[] } {
    const { meta } = this.storage;
    const { kvHeads, headDim } = meta.shape;
    const keys: Float32Array[] = [];
    const values: Float32Array[] = [];
    const rows: number[] = [];
    for (let head = 0; head < kvHeads; head++) {
      const row = meta.tables.row(slot, layer, head);
      const decoded = this.storage.readRow(row);
      keys.push(decoded.keys);
      values.push(decoded.values);
      rows.push(row);
    }
    return { ...decodeAttention({ q, keys, values, nHeads: this.nHeads, kvHeads, headDim }), rows };
  }

  #accumulate(rows: readonly number[], probs: readonly Float32Array[], sqProbs: readonly Float32Array[]): void {
    for (let head = 0; head < rows.length; head++) {
      const base = (rows[head] ?? 0) * this.storage.maxTokensPerHead;
      const p = probs[head] ?? new Float32Array(0);
      const sq = sqProbs[head] ?? new Float32Array(0);
      for (let t = 0; t < p.length; t++) {
        this.attnSum[base + t] = (this.attnSum[base + t] ?? 0) + (p[t] ?? 0);
        this.attnSqSum[base + t] = (this.attnSqSum[base + t] ?? 0) + (sq[t] ?? 0);
        this.attnCount[base + t] = (this.attnCount[base + t] ?? 0) + 1;
      }
    }
  }

  // ------------------------------------------------------------------ speculation and truncation

  /** True while a speculation of the sequence is open. */
  inSpeculation(seqId: number): boolean {
    return this.#speculations.has(seqId);
  }

  /**
   * Makes the sequence's next steps provisional until {@link settleSpeculation}: they attend as usual, but what
   * they add to the observation window and the statistics is held back, so that a rollback can drop it exactly.
   * A speculation already open is settled first, keeping every token.
   */
  beginSpeculation(seqId: number): void {
    this.settleSpeculation(seqId, Number.POSITIVE_INFINITY);
    this.#speculations.set(seqId, { slot: this.storage.meta.slotOf(seqId), steps: [] });
  }

  /**
   * Ends a speculation: the window queries and statistics of its steps at positions < `length` are added, in
   * step order, exactly as plain steps would have added them; those of later positions are dropped. No-op without
   * an open speculation.
   */
  settleSpeculation(seqId: number, length: number): void {
    const speculation = this.#speculations.get(seqId);
    if (!speculation) return;
    this.#speculations.delete(seqId);
    for (const step of speculation.steps) {
      if (step.pos >= length) continue;
      step.layers.forEach((layer, index) => {
        this.#recordQuery(speculation.slot, index, step.pos, layer.query);
        this.#accumulate(layer.rows, layer.probs, layer.sqProbs);
      });
    }
  }

  /** Forgets a sequence's open speculation (the sequence was freed). */
  dropSpeculation(seqId: number): void {
    this.#speculations.delete(seqId);
  }

  /**
   * After `CacheMetadata.truncate`: zeroes the statistics of the removed logical indices and empties the window
   * slots of removed positions. Settle the speculation first (the statistics kept tokens' queries added before
   * a truncate stay; only a speculation's are held back).
   */
  truncated(plan: TruncatePlan): void {
    const stride = this.storage.maxTokensPerHead;
    for (const head of plan.heads) {
      const base = head.row * stride;
      for (const stats of [this.attnSum, this.attnSqSum, this.attnCount]) stats.fill(0, base + head.tokensAfter, base + head.tokensBefore);
    }
    const w = this.observationWindow;
    const { meta } = this.storage;
    for (let layer = 0; layer < meta.shape.layers; layer++) {
      const base = layer * meta.seqSlots + plan.slot;
      let removed = 0;
      for (let j = 0; j < w; j++) {
        const position = this.#windowPositions[base * w + j] ?? EMPTY_POSITION;
        if (position !== EMPTY_POSITION && position >= plan.lengthAfter) {
          this.#windowPositions[base * w + j] = EMPTY_POSITION;
          removed++;
        }
      }
      this.#windowValid[base] = Math.max(0, (this.#windowValid[base] ?? 0) - removed);
    }
  }

  /** Views of one row's statistics, `n` tokens (live: copy before the next step). */
  statsView(row: number, n: number): HeadStatistics {
    const base = row * this.storage.maxTokensPerHead;
    return {
      attnSum: this.attnSum.subarray(base, base + n),
      attnSqSum: this.attnSqSum.subarray(base, base + n),
      attnCount: this.attnCount.subarray(base, base + n),
    };
  }

  #recordQuery(slot: number, layer: number, pos: number, q: Float32Array): void {
    const w = this.observationWindow;
    const rowValues = this.nHeads * this.storage.meta.shape.headDim;
    const base = layer * this.storage.meta.seqSlots + slot;
    const ring = pos % w;
    this.#windowQueries.set(q.subarray(0, rowValues), (base * w + ring) * rowValues);
    this.#windowPositions[base * w + ring] = pos;
    this.#windowValid[base] = Math.min(w, (this.#windowValid[base] ?? 0) + 1);
  }

  /** The last `maxRows` valid window queries of (slot, layer), oldest first, and their positions. */
  window(slot: number, layer: number, maxRows: number): { queries: Float32Array; positions: Uint32Array } {
    const w = this.observationWindow;
    const rowValues = this.nHeads * this.storage.meta.shape.headDim;
    const base = layer * this.storage.meta.seqSlots + slot;
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

  /** The whole ring of (slot, layer) in the canonical snapshot form (see `SnapshotWindow`): copies. */
  exportWindow(slot: number, layer: number): { valid: number; end: number; positions: Uint32Array; queries: Float32Array } {
    const w = this.observationWindow;
    const rowValues = this.nHeads * this.storage.meta.shape.headDim;
    const base = layer * this.storage.meta.seqSlots + slot;
    const positions = this.#windowPositions.slice(base * w, (base + 1) * w);
    const queries = this.#windowQueries.slice(base * w * rowValues, (base + 1) * w * rowValues);
    let newest = -1;
    positions.forEach((p, j) => {
      if (p === EMPTY_POSITION) queries.fill(0, j * rowValues, (j + 1) * rowValues);
      else newest = Math.max(newest, p);
    });
    return { valid: this.#windowValid[base] ?? 0, end: newest + 1, positions, queries };
  }

  /** Puts a canonical ring (validated by the caller) into (slot, layer). */
  importWindow(slot: number, layer: number, window: { readonly valid: number; readonly positions: Uint32Array; readonly queries: Float32Array }): void {
    const w = this.observationWindow;
    const rowValues = this.nHeads * this.storage.meta.shape.headDim;
    const base = layer * this.storage.meta.seqSlots + slot;
    this.#windowPositions.set(window.positions.subarray(0, w), base * w);
    this.#windowQueries.set(window.queries.subarray(0, w * rowValues), base * w * rowValues);
    this.#windowValid[base] = window.valid;
  }

  /** Empties a slot's statistics and window (a new or freed sequence has none). */
  clearSlot(slot: number): void {
    const { meta } = this.storage;
    const statsRow = meta.shape.kvHeads * this.storage.maxTokensPerHead;
    for (let layer = 0; layer < meta.shape.layers; layer++) {
      const base = layer * meta.seqSlots + slot;
      for (const stats of [this.attnSum, this.attnSqSum, this.attnCount]) stats.fill(0, base * statsRow, (base + 1) * statsRow);
      this.#windowValid[base] = 0;
      this.#windowPositions.fill(EMPTY_POSITION, base * this.observationWindow, (base + 1) * this.observationWindow);
    }
  }

  /** Copies a slot's statistics and window to another slot (a fork inherits what its source observed). */
  copySlot(srcSlot: number, dstSlot: number): void {
    const { meta } = this.storage;
    const statsRow = meta.shape.kvHeads * this.storage.maxTokensPerHead;
    const windowWords = this.observationWindow * this.nHeads * meta.shape.headDim;
    const w = this.observationWindow;
    for (let layer = 0; layer < meta.shape.layers; layer++) {
      const from = layer * meta.seqSlots + srcSlot;
      const to = layer * meta.seqSlots + dstSlot;
      for (const stats of [this.attnSum, this.attnSqSum, this.attnCount]) stats.copyWithin(to * statsRow, from * statsRow, (from + 1) * statsRow);
      this.#windowQueries.copyWithin(to * windowWords, from * windowWords, (from + 1) * windowWords);
      this.#windowPositions.copyWithin(to * w, from * w, (from + 1) * w);
      this.#windowValid[to] = this.#windowValid[from] ?? 0;
    }
  }
}
