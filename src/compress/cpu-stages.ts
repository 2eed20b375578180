import type { CpuAttentionBackend } from '../attention/cpu-backend.js';
import type { CacheMetadata } from '../cache/cache-metadata.js';
import type { GrowPool } from '../cache/pool-growth.js';
import type { CpuKvStorage } from '../cache/cpu-storage.js';
import { decodeBlockRef, type QuantFormat } from '../format/layout.js';
import { IDENTITY_INDEX_BASE } from '../kernels/compress/compact-blocks.js';
import { allocateBudgets } from './budgets.js';
import { mergeHeadValues } from './merge.js';
import { absorbIntoSlots, type MergeSlots } from './merge-slots.js';
import type { SlotStateStore } from '../cache/slot-state.js';
import type { CompressionStages, ExecutionJob, SelectionJob } from './pipeline.js';
import { windowProbabilities } from './policies/window.js';
import type { ScoreInput } from './policy.js';
import { selectTopK } from './select.js';

/**
 * The CPU stages of the compression pipeline, on the TS references: the policy scores decoded keys, statistics
 * and window queries per layer, `allocateBudgets` and `selectTopK` choose, the plan's jobs decode the kept tokens
 * and encode them into their new blocks with the reference codec, and statistics move with their tokens.
 *
 * @example
 * ```ts
 * const stages = new CpuCompressionStages(storage, backend);
 * const report = await compressSequence(stages, seq, { policy: 'h2o', budget: 64 }, null);
 * ```
 */
export class CpuCompressionStages implements CompressionStages {
  readonly indexStride: number;
  readonly growPool: GrowPool;
  /**
   * Per head (layer × kvHeads + head): its kept indices among the tokens after its merge slots (all tokens
   * without slots), or null when it keeps every token.
   */
  #selection: (Uint32Array | null)[] = [];
  /** Per head: merge slots at its front when selected (the selection's indices start after them). */
  #slotsBefore: number[] = [];
  /** Per row of the current round: its merge slots after absorbing, committed to the slot state by afterCommit. */
  #slotsAfter = new Map<number, MergeSlots>();
  /** The score inputs of the last selection (the mass report reuses their window probabilities). */
  #inputs: ScoreInput[] = [];

  constructor(
    private readonly storage: CpuKvStorage,
    private readonly backend: CpuAttentionBackend,
    readonly slots: SlotStateStore | null = null,
  ) {
    this.indexStride = storage.maxTokensPerHead;
    this.growPool = (pool, layer, blocks) => storage.growPool(pool, layer, blocks);
  }

  get meta(): CacheMetadata {
    return this.storage.meta;
  }

  get observationWindow(): number {
    return this.backend.observationWindow;
  }

  windowCount(seqId: number): number {
    return this.backend.windowCount(seqId, 0);
  }

  setQuantFormat(format: QuantFormat): void {
    this.storage.setQuantFormat(format);
  }

  afterCommit(): void {
    for (const [row, after] of this.#slotsAfter) this.slots?.set(row, after.mass.subarray(0, after.count));
    this.#slotsAfter.clear();
    this.storage.syncPools();
  }

  assertUsable(): void {
    // Nothing of the CPU engine can be lost or destroyed under a running compression.
  }

  async select(job: SelectionJob): Promise<Uint32Array[]> {
    const { layers, kvHeads } = this.meta.shape;
    const { options } = job;
    const slotsOf = (layer: number, head: number): number => job.slotCounts[layer]?.[head] ?? 0;
    this.#inputs = Array.from({ length: layers }, (_, layer) =>
      this.#scoreInput(job.slot, layer, job.window, this.meta.sequenceLength(job.seqId), options.seed, (head) => slotsOf(layer, head)),
    );
    const scores = this.#inputs.map((input) => job.policy.score(input));
    const budget = (options.budget ?? 0) - options.mergeSlots;
    const counts = allocateBudgets(scores, { mode: options.budgetMode, budget, safeguard: options.safeguard });
    this.#selection = [];
    this.#slotsBefore = [];
    for (let layer = 0; layer < layers; layer++) {
      for (let head = 0; head < kvHeads; head++) {
        const k = counts[layer]?.[head] ?? 0;
        const slots = slotsOf(layer, head);
        const before = (job.lengths[layer]?.[head] ?? 0) - slots;
        const kept = k < before ? selectTopK(scores[layer]?.[head] ?? new Float32Array(0), k) : null;
        this.#selection.push(kept);
        this.#slotsBefore.push(slots);
        // What the head holds after: its slots (grown by what they absorb, up to mergeSlots) and the kept tokens.
        const row = counts[layer];
        if (row) row[head] = kept ? Math.min(options.mergeSlots, slots + before - k) + k : slots + before;
      }
    }
    return counts;
  }

  async execute(job: ExecutionJob): Promise<number> {
    this.#slotsAfter.clear();
    if (job.options.merge === 'slots' && job.policy !== null) this.#absorb(job);
    this.#runJobs(job);
    if (job.policy === null) return 1;
    const mass = job.measureMass && job.select ? this.#massKept(job) : Number.NaN;
    this.#gatherStats(job);
    return mass;
  }

  /**
   * Per evicting head of the plan (by row): its kept tokens' merged values `[kept][headDim]`, or nothing when the
   * options merge nothing. Computed before any job writes, from the tokens and statistics as they are.
   */
  #mergedValues(job: ExecutionJob): Map<number, Float32Array> {
    const merged = new Map<number, Float32Array>();
    if (job.options.merge === 'none' || job.options.merge === 'slots' || job.policy === null) return merged;
    const { kvHeads, headDim } = this.meta.shape;
    const window = job.policy.requires.window && this.windowCount(job.seqId) > 0;
    const massOfLayer = new Map<number, Float32Array[]>();
    for (const head of job.plan.heads) {
      const kept = this.#selection[head.layer * kvHeads + head.head];
      if (!kept || head.kept === head.before) continue;
      const input = this.#inputs[head.layer];
      if (!input) continue;
      let mass = massOfLayer.get(head.layer);
      if (!mass) {
        mass = window ? windowMass(input, job.window) : meanAttention(input);
        massOfLayer.set(head.layer, mass);
      }
      const { keys, values } = this.storage.readRow(head.row);
      merged.set(head.row, mergeHeadValues(job.options.merge, { headDim, keys, values, mass: mass[head.head] ?? new Float32Array(0), kept }));
    }
    return merged;
  }

  /**
   * Per evicting head of the plan under merge 'slots': its slots (the leading tokens and their masses) absorb the
   * evicted tokens by the reference rule, in logical order, weighted by the same attention mass as the other modes.
   */
  #absorb(job: ExecutionJob): void {
    const { kvHeads, headDim } = this.meta.shape;
    const capacity = job.options.mergeSlots;
    const window = job.policy?.requires.window === true && this.windowCount(job.seqId) > 0;
    const massOfLayer = new Map<number, Float32Array[]>();
    for (const head of job.plan.heads) {
      const index = head.layer * kvHeads + head.head;
      const kept = this.#selection[index];
      const input = this.#inputs[head.layer];
      if (!kept || head.kept === head.before || !input) continue;
      let mass = massOfLayer.get(head.layer);
      if (!mass) {
        mass = window ? windowMass(input, job.window) : meanAttention(input);
        massOfLayer.set(head.layer, mass);
      }
      const headMass = mass[head.head] ?? new Float32Array(0);
      const count = this.#slotsBefore[index] ?? 0;
      const row = this.storage.readRow(head.row);
      const masses = this.slots?.masses(head.row) ?? new Float64Array(0);
      const slots: MergeSlots = {
        headDim,
        capacity,
        count,
        keys: padded(row.keys.subarray(0, count * headDim), capacity * headDim),
        values: padded(row.values.subarray(0, count * headDim), capacity * headDim),
        positions: Uint32Array.from({ length: capacity }, (_, s) => (s < count ? (row.positions[s] ?? 0) : 0)),
        mass: Float64Array.from({ length: capacity }, (_, s) => masses[s] ?? 0),
      };
      const real = row.positions.length - count;
      const evicted: number[] = [];
      for (let t = 0, next = 0; t < real; t++) {
        if (next < kept.length && kept[next] === t) next++;
        else evicted.push(t);
      }
      const pick = (data: Float32Array) => {
        const out = new Float32Array(evicted.length * headDim);
        evicted.forEach((t, i) => out.set(data.subarray((count + t) * headDim, (count + t + 1) * headDim), i * headDim));
        return out;
      };
      this.#slotsAfter.set(
        head.row,
        absorbIntoSlots(slots, {
          keys: pick(row.keys),
          values: pick(row.values),
          positions: evicted.map((t) => row.positions[count + t] ?? 0),
          mass: evicted.map((t) => headMass[t] ?? 0),
        }),
      );
    }
  }

  /**
   * Where the token at new logical index `j` of a rewritten head comes from: a slot after absorbing (`slot`), or
   * the old logical index (`index`) of a kept token (after the head's old slots).
   */
  #source(row: number, headIndex: number, j: number): { slot: number } | { index: number } {
    const after = this.#slotsAfter.get(row);
    const slots = after?.count ?? 0;
    if (j < slots) return { slot: j };
    const before = this.#slotsBefore[headIndex] ?? 0;
    const kept = this.#selection[headIndex];
    return { index: before + (kept ? (kept[j - slots] ?? 0) : j - slots) };
  }

  /** Runs the plan's jobs: source tokens read from the decoded mirror, destination blocks encoded by the codec. */
  #runJobs(job: ExecutionJob): void {
    const { headDim, kvHeads } = this.meta.shape;
    const merged = this.#mergedValues(job);
    const headOfRow = new Map(job.plan.heads.map((head) => [head.row, head.layer * kvHeads + head.head]));
    for (const compact of job.plan.jobs) {
      const identity = compact.indexBase === IDENTITY_INDEX_BASE;
      const mergedRow = identity ? undefined : merged.get(compact.row);
      const firstSlot = identity ? compact.identityStart : compact.indexBase - compact.row * this.indexStride;
      const headIndex = headOfRow.get(compact.row) ?? 0;
      const after = this.#slotsAfter.get(compact.row);
      const entries = this.meta.tables.entryView(compact.row);
      const layer = this.meta.layerOfRow(compact.row);
      const k = new Float32Array(compact.count * headDim);
      const v = new Float32Array(compact.count * headDim);
      const positions = new Uint32Array(compact.count);
      for (let i = 0; i < compact.count; i++) {
        const source = identity ? { index: firstSlot + i } : this.#source(compact.row, headIndex, firstSlot + i);
        if ('slot' in source && after) {
          const at = source.slot * headDim;
          k.set(after.keys.subarray(at, at + headDim), i * headDim);
          v.set(after.values.subarray(at, at + headDim), i * headDim);
          positions[i] = after.positions[source.slot] ?? 0;
          continue;
        }
        const token = this.storage.token(entries, 'index' in source ? source.index : 0, layer);
        k.set(token.k, i * headDim);
        v.set(mergedRow ? mergedRow.subarray((firstSlot + i) * headDim, (firstSlot + i + 1) * headDim) : token.v, i * headDim);
        positions[i] = token.position;
      }
      const { pool, block } = decodeBlockRef(compact.destEntry);
      this.storage.storeBlock(pool, layer, block, k, v, positions, compact.count);
    }
  }

  /**
   * Statistics of every evicting head moved to the new logical indices (new j ← the token it came from; a new
   * slot starts at 0, an old one keeps its own; 0 past the count).
   */
  #gatherStats(job: ExecutionJob): void {
    const stride = this.indexStride;
    const { attnSum, attnSqSum, attnCount } = this.backend;
    const { kvHeads } = this.meta.shape;
    job.plan.heads.forEach((head) => {
      const headIndex = head.layer * kvHeads + head.head;
      if (!this.#selection[headIndex] || head.kept === head.before) return;
      const base = head.row * stride;
      const slotsBefore = this.#slotsBefore[headIndex] ?? 0;
      for (const stats of [attnSum, attnSqSum, attnCount]) {
        const moved = new Float32Array(stride);
        for (let j = 0; j < head.kept; j++) {
          const source = this.#source(head.row, headIndex, j);
          const from = 'index' in source ? source.index : source.slot < slotsBefore ? source.slot : -1;
          moved[j] = from < 0 ? 0 : (stats[base + from] ?? 0);
        }
        stats.set(moved, base);
      }
    });
  }

  /**
   * Share of the scoring attention mass on kept tokens: the observation window's attention for window policies,
   * the accumulated attention Σp for the others (what the GPU's mass kernel sums).
   */
  #massKept(job: ExecutionJob): number {
    const { kvHeads } = this.meta.shape;
    let kept = 0;
    let total = 0;
    const window = job.policy?.requires.window === true && this.windowCount(job.seqId) > 0;
    for (let layer = 0; layer < this.#inputs.length; layer++) {
      const input = this.#inputs[layer];
      if (!input) continue;
      const perToken = window ? windowMass(input, job.window) : (input.attnSum ?? []);
      for (let head = 0; head < kvHeads; head++) {
        const mass = perToken[head] ?? new Float32Array(0);
        const keep = this.#selection[layer * kvHeads + head];
        let all = 0;
        for (let t = 0; t < mass.length; t++) all += mass[t] ?? 0;
        total += all;
        if (!keep) kept += all;
        else for (const t of keep) kept += mass[t] ?? 0;
      }
    }
    return total > 0 ? kept / total : 1;
  }

  /**
   * What a policy sees for one layer: decoded keys, positions, statistics and the observation window. A head's
   * `slotsOf(head)` leading merge slots are left out: they are summaries, never scored nor evicted.
   */
  #scoreInput(slot: number, layer: number, window: number, length: number, seed: number, slotsOf: (head: number) => number = () => 0): ScoreInput {
    const { kvHeads, headDim } = this.meta.shape;
    const keys: Float32Array[] = [];
    const positions: Uint32Array[] = [];
    const attnSum: Float32Array[] = [];
    const attnSqSum: Float32Array[] = [];
    const attnCount: Float32Array[] = [];
    for (let head = 0; head < kvHeads; head++) {
      const row = this.meta.tables.row(slot, layer, head);
      const decoded = this.storage.readRow(row);
      const skip = slotsOf(head);
      keys.push(decoded.keys.subarray(skip * headDim));
      positions.push(decoded.positions.subarray(skip));
      const stats = this.backend.statsView(row, decoded.positions.length);
      attnSum.push(stats.attnSum.subarray(skip));
      attnSqSum.push(stats.attnSqSum.subarray(skip));
      attnCount.push(stats.attnCount.subarray(skip));
    }
    const { queries, positions: windowPositions } = this.backend.window(slot, layer, window);
    return {
      nHeads: this.backend.nHeads,
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
}

/** `data` followed by zeros up to `length`. */
function padded(data: Float32Array, length: number): Float32Array {
  const out = new Float32Array(length);
  out.set(data.subarray(0, length));
  return out;
}

/** Per KV head, per token: the mean attention it received per query, attnSum / attnCount (0 before any query). */
function meanAttention(input: ScoreInput): Float32Array[] {
  return (input.attnSum ?? []).map((sums, head) => {
    const counts = input.attnCount?.[head];
    return sums.map((sum, t) => {
      const count = counts?.[t] ?? 0;
      return count > 0 ? sum / count : 0;
    });
  });
}

/** Per KV head, per token: the window's attention probability summed over its queries and the group's heads. */
function windowMass(input: ScoreInput, window: number): Float32Array[] {
  const { probs, w } = windowProbabilities(input, window, 'attentionMassKept');
  return input.positions.map((pos, head) => {
    const n = pos.length;
    const p = probs[head] ?? new Float32Array(0);
    const out = new Float32Array(n);
    for (let j = 0; j < w; j++) for (let t = 0; t < n; t++) out[t] = (out[t] ?? 0) + (p[j * n + t] ?? 0);
    return out;
  });
}
