import type { CpuAttentionBackend } from '../attention/cpu-backend.js';
import type { CacheMetadata } from '../cache/cache-metadata.js';
import type { GrowPool } from '../cache/pool-growth.js';
import type { CpuKvStorage } from '../cache/cpu-storage.js';
import { decodeBlockRef, type QuantFormat } from '../format/layout.js';
import { IDENTITY_INDEX_BASE } from '../kernels/compress/compact-blocks.js';
import { allocateBudgets } from './budgets.js';
import { mergeHeadValues } from './merge.js';
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
  /** Kept indices `[row][maxTokensPerHead]` of the last selection, allocated on first use. */
  #kept: Uint32Array | null = null;
  /** Per head (layer × kvHeads + head): its kept indices, or null when it keeps every token. */
  #selection: (Uint32Array | null)[] = [];
  /** The score inputs of the last selection (the mass report reuses their window probabilities). */
  #inputs: ScoreInput[] = [];

  constructor(
    private readonly storage: CpuKvStorage,
    private readonly backend: CpuAttentionBackend,
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
    this.storage.syncPools();
  }

  assertUsable(): void {
    // Nothing of the CPU engine can be lost or destroyed under a running compression.
  }

  async select(job: SelectionJob): Promise<Uint32Array[]> {
    const { layers, kvHeads } = this.meta.shape;
    const { options } = job;
    this.#inputs = Array.from({ length: layers }, (_, layer) => this.#scoreInput(job.slot, layer, job.window, this.meta.sequenceLength(job.seqId), options.seed));
    const scores = this.#inputs.map((input) => job.policy.score(input));
    const counts = allocateBudgets(scores, { mode: options.budgetMode, budget: options.budget ?? 0, safeguard: options.safeguard });
    this.#kept ??= new Uint32Array(this.meta.tables.numRows * this.indexStride);
    this.#selection = [];
    for (let layer = 0; layer < layers; layer++) {
      for (let head = 0; head < kvHeads; head++) {
        const k = counts[layer]?.[head] ?? 0;
        const before = job.lengths[layer]?.[head] ?? 0;
        const kept = k < before ? selectTopK(scores[layer]?.[head] ?? new Float32Array(0), k) : null;
        if (kept) this.#kept.set(kept, this.meta.rowOf(job.seqId, layer, head) * this.indexStride);
        this.#selection.push(kept);
      }
    }
    return counts;
  }

  async execute(job: ExecutionJob): Promise<number> {
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
    if (job.options.merge === 'none' || job.policy === null) return merged;
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

  /** Runs the plan's jobs: source tokens read from the decoded mirror, destination blocks encoded by the codec. */
  #runJobs(job: ExecutionJob): void {
    const { headDim } = this.meta.shape;
    const kept = this.#kept;
    const merged = this.#mergedValues(job);
    for (const compact of job.plan.jobs) {
      const mergedRow = compact.indexBase === IDENTITY_INDEX_BASE ? undefined : merged.get(compact.row);
      const firstSlot = compact.indexBase - compact.row * this.indexStride;
      const entries = this.meta.tables.entryView(compact.row);
      const layer = this.meta.layerOfRow(compact.row);
      const k = new Float32Array(compact.count * headDim);
      const v = new Float32Array(compact.count * headDim);
      const positions = new Uint32Array(compact.count);
      for (let i = 0; i < compact.count; i++) {
        const index = compact.indexBase === IDENTITY_INDEX_BASE ? compact.identityStart + i : (kept?.[compact.indexBase + i] ?? 0);
        const token = this.storage.token(entries, index, layer);
        k.set(token.k, i * headDim);
        v.set(mergedRow ? mergedRow.subarray((firstSlot + i) * headDim, (firstSlot + i + 1) * headDim) : token.v, i * headDim);
        positions[i] = token.position;
      }
      const { pool, block } = decodeBlockRef(compact.destEntry);
      this.storage.storeBlock(pool, layer, block, k, v, positions, compact.count);
    }
  }

  /** Statistics of every evicting head moved to the new logical indices (new j ← old kept[j], 0 past the count). */
  #gatherStats(job: ExecutionJob): void {
    const stride = this.indexStride;
    const { attnSum, attnSqSum, attnCount } = this.backend;
    const { kvHeads } = this.meta.shape;
    job.plan.heads.forEach((head) => {
      const kept = this.#selection[head.layer * kvHeads + head.head];
      if (!kept || head.kept === head.before) return;
      const base = head.row * stride;
      for (const stats of [attnSum, attnSqSum, attnCount]) {
        const moved = new Float32Array(stride);
        for (let j = 0; j < kept.length; j++) moved[j] = stats[base + (kept[j] ?? 0)] ?? 0;
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

  /** What a policy sees for one layer: decoded keys, positions, statistics and the observation window. */
  #scoreInput(slot: number, layer: number, window: number, length: number, seed: number): ScoreInput {
    const { kvHeads, headDim } = this.meta.shape;
    const keys: Float32Array[] = [];
    const positions: Uint32Array[] = [];
    const attnSum: Float32Array[] = [];
    const attnSqSum: Float32Array[] = [];
    const attnCount: Float32Array[] = [];
    for (let head = 0; head < kvHeads; head++) {
      const row = this.meta.tables.row(slot, layer, head);
      const decoded = this.storage.readRow(row);
      keys.push(decoded.keys);
      positions.push(decoded.positions);
      const stats = this.backend.statsView(row, decoded.positions.length);
      attnSum.push(stats.attnSum);
      attnSqSum.push(stats.attnSqSum);
      attnCount.push(stats.attnCount);
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
