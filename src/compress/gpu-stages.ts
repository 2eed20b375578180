import { CacheDestroyedError, InvalidArgumentError } from '../errors.js';
import type { GpuKvStorage } from '../cache/gpu-storage.js';
import type { GrowPool } from '../cache/pool-growth.js';
import type { PagedAttentionBackend } from '../attention/paged-backend.js';
import { type BlockLayout, QUANT_POOL_BIT, type QuantFormat } from '../format/layout.js';
import { createStorageBuffer } from '../gpu/buffers.js';
import { ScratchBuffers } from '../gpu/scratch-buffers.js';
import { CompactBlocksKernel, IDENTITY_INDEX_BASE, packCompactJobs } from '../kernels/compress/compact-blocks.js';
import { GatherStatsKernel } from '../kernels/compress/gather-stats.js';
import { MassKeptKernel } from '../kernels/compress/mass-kept.js';
import { type MergeHeadJob, MergeValuesKernel, mergedMaskWords, mergedWords, packMergeHeads } from '../kernels/compress/merge-values.js';
import { MERGE_WEIGHT_FLOOR } from './merge.js';
import { CAM_MERGE_SPAN } from './options.js';
import { TopKSelectKernel } from '../kernels/compress/select.js';
import { allocateBudgetsGpu } from './budgets-gpu.js';
import { logitScratchBytes, scoreScratchBytes, STORED_LOGITS_MAX_BYTES, type ScoreGpuInput } from './gpu-policies.js';
import type { CompressionStages, ExecutionJob, SelectionJob } from './pipeline.js';
import type { GpuSlotState } from '../cache/gpu-slot-state.js';
import { GpuSlotsStage, type SlotsRun } from './gpu-slots.js';

type ScratchName = 'scores' | 'mass' | 'keptIndex' | 'keptCount' | 'thresholds' | 'scratch';

/**
 * The GPU stages of the compression pipeline: scoring kernels write f32 scores per token, the budget pass and
 * the top-k select keep them on the GPU (only per-head counts come back), then one submit selects, compacts into
 * the plan's fresh blocks (KIVI-quantizing whole blocks older than the recent window), gathers each kept token's
 * statistics and, when asked, sums the attention mass kept. A compression makes at most one CPU wait: the budget
 * readback for adakv/global budgets, else the mass readback when measured, else none (execute resolves once its
 * work is submitted; the queue orders every later use of the cache after it). Scratch buffers live as long as the
 * stages: reused by every call, grown when one needs more, destroyed by destroy().
 *
 * @example
 * ```ts
 * const stages = new GpuCompressionStages(storage, backend);
 * const report = await compressSequence(stages, seq, { policy: 'h2o', budget: 64 }, null);
 * stages.destroy();
 * ```
 */
export class GpuCompressionStages implements CompressionStages {
  readonly indexStride: number;
  private readonly rows: number;
  private readonly topK: TopKSelectKernel;
  private readonly gather: GatherStatsKernel;
  private readonly massKernel: MassKeptKernel;
  private compact: { quant: BlockLayout | null; kernel: CompactBlocksKernel } | null = null;
  private merge: { quant: BlockLayout | null; kernel: MergeValuesKernel } | null = null;
  /** The nearest merge's per-slot token lists, u32 [2][rows][stride]: made on the first nearest merge. */
  private mergeLinks: GPUBuffer | null = null;
  private readonly buffers: Record<ScratchName, GPUBuffer>;
  /** Per-call inputs and outputs (members, jobs, gathered statistics, sums, the readback staging). */
  private readonly scratchBuffers: ScratchBuffers;
  readonly growPool: GrowPool;
  /** Merge 'slots' (src/compress/gpu-slots.ts): its state, or null on stages built without one (then refused). */
  readonly slots: GpuSlotState | null;
  private readonly slotsStage: GpuSlotsStage | null;
  private destroyed = false;

  constructor(
    private readonly storage: GpuKvStorage,
    private readonly backend: PagedAttentionBackend,
    slots: GpuSlotState | null = null,
  ) {
    const { gpu, meta } = storage;
    this.slots = slots;
    this.rows = meta.tables.numRows;
    this.indexStride = storage.maxTokensPerHead;
    this.topK = new TopKSelectKernel(gpu);
    this.gather = new GatherStatsKernel(gpu);
    this.massKernel = new MassKeptKernel(gpu);
    this.growPool = (pool, layer, blocks) => storage.growPool(pool, layer, blocks);
    const perToken = this.rows * this.indexStride * 4;
    this.scratchBuffers = new ScratchBuffers(gpu, 'compress');
    this.buffers = {
      scores: createStorageBuffer(gpu, 'compress:scores', perToken),
      mass: createStorageBuffer(gpu, 'compress:mass', perToken),
      keptIndex: createStorageBuffer(gpu, 'compress:kept-index', perToken),
      keptCount: createStorageBuffer(gpu, 'compress:kept-count', this.rows * 4),
      thresholds: createStorageBuffer(gpu, 'compress:thresholds', this.rows * 8),
      scratch: createStorageBuffer(gpu, 'compress:scratch', scoreScratchBytes(meta.shape.layers, backend.observationWindow, backend.nHeads, this.indexStride)),
    };
    this.slotsStage = slots ? new GpuSlotsStage(storage, slots, this.indexStride) : null;
  }

  get meta(): GpuKvStorage['meta'] {
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
    this.slotsStage?.afterCommit();
    this.storage.uploadDirtyRows();
  }

  assertUsable(): void {
    if (this.destroyed || this.storage.isDestroyed) throw new CacheDestroyedError('this PagedKvCache');
    this.storage.gpu.assertUsable();
  }

  /** The buffer the attention mass is measured in: the window's means (window policies) or Σp. */
  private massBuffer(job: { readonly policy: SelectionJob['policy'] | null; readonly seqId: number }): GPUBuffer {
    return job.policy?.requires.window && this.windowCount(job.seqId) > 0 ? this.buffers.mass : this.backend.statistics.attnSum;
  }

  /** Whether a table row holds no quantized block (then the kernels compiled without quantized reads may run). */
  private rowIsFull(row: number): boolean {
    return this.meta.tables.entryView(row).every((entry) => (entry & QUANT_POOL_BIT) === 0);
  }

  private rowsOf(slot: number): number[][] {
    const { layers, kvHeads } = this.meta.shape;
    return Array.from({ length: layers }, (_, l) => Array.from({ length: kvHeads }, (_, h) => (l * this.meta.seqSlots + slot) * kvHeads + h));
  }

  async select(job: SelectionJob): Promise<Uint32Array[]> {
    const { gpu } = this.storage;
    const { layers, kvHeads } = this.meta.shape;
    const { options } = job;
    const encoder = gpu.device.createCommandEncoder({ label: 'compress:score' });
    const input: ScoreGpuInput = {
      gpu,
      cache: this.storage.bindings(0),
      full: this.meta.fullLayout,
      quant: this.meta.quantLayout,
      nHeads: this.backend.nHeads,
      kvHeads,
      layer: 0,
      layerCount: layers,
      slot: job.slot,
      seqLen: this.meta.sequenceLength(job.seqId),
      stats: this.backend.statistics,
      window: { ...this.backend.window, valid: this.windowCount(job.seqId) },
      scratch: this.buffers.scratch,
      scores: this.buffers.scores,
      seed: options.seed,
    };
    if (!job.policy.scoreGpu) throw new InvalidArgumentError('policy', `${job.policy.name} has no GPU scoring; use the CPU engine`);
    const slots = options.merge === 'slots' ? this.slotsStage : null;
    slots?.check(job);
    // Window policies write their unpooled window probabilities in the same pass, for the mass report and merging.
    const writeMeans = (job.measureMass || options.merge !== 'none') && this.massBuffer(job) === this.buffers.mass;
    // Window policies compute each logit once when the logits fit the compressor's cap (a persistent scratch).
    const logitBytes = logitScratchBytes(1, this.backend.observationWindow, this.backend.nHeads, this.indexStride);
    const logits = job.policy.requires.window && logitBytes <= STORED_LOGITS_MAX_BYTES ? this.scratchBuffers.get('snapkv:logits', logitBytes) : null;
    // Merge slots: window policies leave each row's slots out of their softmax, as the CPU engine does.
    const rows = this.rowsOf(job.slot);
    const firstTokens = slots && job.policy.requires.window ? slots.firstTokens(job, rows, this.rows, this.scratchBuffers) : null;
    // Each layer's pools are buffers of their own: one scoring pass per layer.
    for (let layer = 0; layer < layers; layer++) {
      const ofLayer: ScoreGpuInput = { ...input, cache: this.storage.bindings(layer), layer, layerCount: 1, ...(logits ? { logits } : {}), ...(firstTokens ? { firstTokens } : {}) };
      job.policy.scoreGpu(encoder, writeMeans ? { ...ofLayer, means: this.buffers.mass } : ofLayer);
    }
    slots?.shiftOut(encoder, job, rows, this.buffers.scores, this.scratchBuffers);
    // Scoring, the joint selections and their one readback share a submit (allocateBudgetsGpu submits it).
    const counts = await allocateBudgetsGpu(gpu, {
      encoder,
      scratch: this.scratchBuffers,
      mode: options.budgetMode,
      // Merge slots: B − M shared among the real tokens (see GpuSlotsStage).
      budget: (options.budget ?? 0) - (slots ? options.mergeSlots : 0),
      safeguard: options.safeguard,
      scores: this.buffers.scores,
      stride: this.indexStride,
      rows,
      lengths: slots ? slots.realLengths(job) : job.lengths,
      kernel: this.topK,
    });
    return slots ? slots.counts(job, rows, counts) : counts;
  }

  private compactKernel(): CompactBlocksKernel {
    const { meta } = this.storage;
    if (this.compact === null || this.compact.quant !== meta.quantLayout) {
      this.compact = { quant: meta.quantLayout, kernel: new CompactBlocksKernel(this.storage.gpu, { full: meta.fullLayout, quant: meta.quantLayout }) };
    }
    return this.compact.kernel;
  }

  private mergeKernel(): MergeValuesKernel {
    const { meta } = this.storage;
    if (this.merge === null || this.merge.quant !== meta.quantLayout) {
      const shape = { full: meta.fullLayout, quant: meta.quantLayout };
      this.merge = { quant: meta.quantLayout, kernel: new MergeValuesKernel(this.storage.gpu, shape, { weightFloor: MERGE_WEIGHT_FLOOR, camSpan: CAM_MERGE_SPAN }) };
    }
    return this.merge.kernel;
  }

  /**
   * Encodes the merge of this round's evicting heads (nothing for merge 'none'); returns the merged buffer and
   * where each row's kept values start in it, for the compaction jobs.
   */
  private encodeMerge(encoder: GPUCommandEncoder, job: ExecutionJob): { merged: { buffer: GPUBuffer; mask: GPUBuffer }; firstSlot: Map<number, number> } | null {
    const mode = job.options.merge;
    if (mode === 'none' || mode === 'slots' || job.policy === null) return null;
    const heads: MergeHeadJob[] = [];
    const firstSlot = new Map<number, number>();
    let keptTotal = 0;
    for (const head of job.plan.heads) {
      if (head.kept >= head.before) continue;
      heads.push({ row: head.row, tokens: head.before, kept: head.kept, outBase: keptTotal });
      firstSlot.set(head.row, keptTotal);
      keptTotal += head.kept;
    }
    if (heads.length === 0) return null;
    // Reused across calls (not created and zero-filled each time: at 1K × 32 heads that is 16 MB a call); only the
    // mask must start at 0, since the merges write just the rows that something merges into.
    const merged = this.scratchBuffers.get('merge:merged', mergedWords(keptTotal, this.meta.shape.headDim) * 4);
    const maskBytes = mergedMaskWords(keptTotal) * 4;
    const mask = this.scratchBuffers.get('merge:mask', maskBytes);
    encoder.clearBuffer(mask, 0, maskBytes);
    // Each layer's pools are buffers of their own: one merge per layer, into the one merged buffer.
    for (let layer = 0; layer < this.meta.shape.layers; layer++) {
      const ofLayer = heads.filter((h) => this.meta.layerOfRow(h.row) === layer);
      if (ofLayer.length === 0) continue;
      const headsBuffer = this.scratchBuffers.upload(`merge:heads:${layer}`, packMergeHeads(ofLayer));
      this.encodeMergeLayer(encoder, job, layer, headsBuffer, ofLayer, keptTotal, merged, mask);
    }
    return { merged: { buffer: merged, mask }, firstSlot };
  }

  private encodeMergeLayer(encoder: GPUCommandEncoder, job: ExecutionJob, layer: number, headsBuffer: GPUBuffer, heads: MergeHeadJob[], keptTotal: number, merged: GPUBuffer, mergedMask: GPUBuffer): void {
    const mode = job.options.merge;
    if (mode === 'none' || mode === 'slots') return;
    this.mergeKernel().encode(encoder, {
      cache: this.storage.bindings(layer),
      mode,
      heads: headsBuffer,
      numHeads: heads.length,
      headJobs: heads,
      maxKept: Math.max(...heads.map((h) => h.kept)),
      keptTotal,
      stride: this.indexStride,
      keptIndex: this.buffers.keptIndex,
      fullSources: heads.every((h) => this.rowIsFull(h.row)),
      // Window policies weigh by the window's attention; statistics policies by the mean attention per query.
      mass:
        this.massBuffer(job) === this.buffers.mass
          ? this.buffers.mass
          : { sum: this.backend.statistics.attnSum, count: this.backend.statistics.attnCount },
      // The scores are spent once the kept indices are chosen: their buffer holds the merge targets.
      targets: this.buffers.scores,
      links: mode === 'nearest' ? (this.mergeLinks ??= createStorageBuffer(this.storage.gpu, 'compress:merge-links', 2 * this.rows * this.indexStride * 4)) : this.buffers.scores,
      linkRows: this.rows,
      merged,
      mergedMask,
    });
  }

  async execute(job: ExecutionJob): Promise<number> {
    const { gpu } = this.storage;
    const { layers, kvHeads } = this.meta.shape;
    const evicting = job.policy !== null;
    const rowsOf = this.rowsOf(job.slot);
    // Buffers of this call only (the merge's); destroying them after the submit is safe (WebGPU defers it).
    const scratch: GPUBuffer[] = [];
    const arena = this.scratchBuffers;
    const stride = this.indexStride;
    try {
      const encoder = gpu.device.createCommandEncoder({ label: 'compress:select+compact' });
      // Only this sequence's rows: index i = layer × kvHeads + head maps to its table row.
      const rowMap = { base: job.slot * kvHeads, groupRows: kvHeads, groupStride: this.meta.seqSlots * kvHeads };
      const seqRows = layers * kvHeads;
      const slots = job.options.merge === 'slots' && evicting ? this.slotsStage : null;
      const selectCounts = slots ? slots.selectionCounts(job, rowsOf) : job.counts;
      if (evicting && job.select) {
        slots?.shiftIn(encoder, this.buffers.scores, this.scratchBuffers);
        const members = new Uint32Array(seqRows * 2);
        const segments = new Uint32Array(seqRows * 3);
        rowsOf.forEach((heads, l) =>
          heads.forEach((row, h) => {
            const i = l * kvHeads + h;
            members.set([row, job.lengths[l]?.[h] ?? 0], 2 * i);
            segments.set([i, 1, selectCounts[l]?.[h] ?? 0], 3 * i);
          }),
        );
        const membersBuffer = arena.upload('members', members);
        const segmentsBuffer = arena.upload('segments', segments);
        this.topK.encodeSegmentThresholds(encoder, {
          scores: this.buffers.scores,
          stride,
          numSegments: seqRows,
          segments: segmentsBuffer,
          members: membersBuffer,
          thresholds: this.buffers.thresholds,
          numMembers: seqRows,
        });
        this.topK.encodeCompact(encoder, {
          scores: this.buffers.scores,
          lengths: this.storage.contextLens,
          thresholds: this.buffers.thresholds,
          numRows: seqRows,
          stride,
          keptIndices: this.buffers.keptIndex,
          keptCounts: this.buffers.keptCount,
          rowMap,
        });
      }
      let sums: GPUBuffer | null = null;
      if (job.measureMass && job.select) {
        sums = arena.get('mass-sums', layers * kvHeads * 8);
        // Merge slots: the report measures the real tokens alone, as on the CPU engine.
        const mass = slots ? slots.massWithoutSlots(encoder, this.massBuffer(job), this.buffers.mass, rowsOf) : this.massBuffer(job);
        for (let l = 0; l < layers; l++) {
          this.massKernel.encode(encoder, {
            firstRow: rowsOf[l]?.[0] ?? 0,
            numRows: kvHeads,
            maxTokens: stride,
            mass,
            lengths: this.storage.contextLens,
            keptIndex: this.buffers.keptIndex,
            keptCount: this.buffers.keptCount,
            sums,
            outBase: l * kvHeads,
          });
        }
      }
      const merge = this.encodeMerge(encoder, job);
      const slotsRun = slots ? this.encodeSlots(encoder, slots, job, scratch) : null;
      if (job.plan.jobs.length > 0) {
        const planned = merge
          ? job.plan.jobs.map((compact) => {
              const first = compact.indexBase === IDENTITY_INDEX_BASE ? undefined : merge.firstSlot.get(compact.row);
              return first === undefined ? compact : { ...compact, valueBase: first + compact.indexBase - compact.row * stride };
            })
          : job.plan.jobs;
        // Each layer's pools are buffers of their own: one compaction per layer, each with its own jobs buffer.
        for (let layer = 0; layer < layers; layer++) {
          const ofLayer = planned.filter((compact) => this.meta.layerOfRow(compact.row) === layer);
          if (ofLayer.length === 0) continue;
          const jobs = arena.upload(`jobs:${layer}`, packCompactJobs(ofLayer));
          // With no quantized source block the kernel variant without the quantized read runs (about 2× faster).
          const fullSources = ofLayer.every((compact) => this.rowIsFull(compact.row));
          // Only quantized destinations: the variant that reads whole full-pool rows as vec4s.
          const quantDestinations = ofLayer.every((compact) => (compact.destEntry & QUANT_POOL_BIT) !== 0);
          this.compactKernel().encode(encoder, {
            cache: this.storage.bindings(layer),
            jobs,
            numJobs: ofLayer.length,
            indices: slotsRun?.compactIndex ?? this.buffers.keptIndex,
            sources: fullSources ? 'full' : 'any',
            destinations: quantDestinations ? 'quant' : 'any',
            ...(merge ? { merged: merge.merged } : {}),
            ...(slotsRun ? { slotSources: slotsRun.slotSources } : {}),
          });
        }
      }
      if (evicting) {
        const rowBytes = stride * 4;
        const wholeSequence = job.plan.heads.length === seqRows;
        // A round of one head (pools full, see compressSequence) gathers that head's row alone.
        const groups = wholeSequence
          ? [{ rows: seqRows, rowMap, copies: rowsOf.map((heads, l) => ({ from: l * kvHeads, to: heads[0] ?? 0, count: kvHeads })) }]
          : job.plan.heads.map((head) => ({ rows: 1, rowMap: { base: head.row, groupRows: 1, groupStride: 0 }, copies: [{ from: 0, to: head.row, count: 1 }] }));
        // One gather buffer for every statistic and group: each copy out of it is ordered before the next gather.
        const out = arena.get('stats', Math.max(...groups.map((g) => g.rows)) * rowBytes);
        for (const stats of Object.values(this.backend.statistics)) {
          for (const group of groups) {
            this.gather.encode(encoder, { stats, kept: slotsRun?.gatherIndex ?? this.buffers.keptIndex, keptCounts: this.buffers.keptCount, out, numRows: group.rows, stride, rowMap: group.rowMap });
            for (const copy of group.copies) encoder.copyBufferToBuffer(out, copy.from * rowBytes, stats, copy.to * rowBytes, copy.count * rowBytes);
          }
        }
        if (slots && slotsRun) slots.clearNewSlotStats(encoder, slotsRun, Object.values(this.backend.statistics));
      }
      if (!sums) {
        gpu.submit([encoder.finish()]);
        return evicting ? Number.NaN : 1;
      }
      const [sumBytes] = await arena.readBack(encoder, [{ buffer: sums, bytes: layers * kvHeads * 8 }]);
      this.assertUsable();
      const values = new Float32Array(sumBytes ?? new ArrayBuffer(0));
      let total = 0;
      let kept = 0;
      for (let i = 0; i < values.length; i += 2) {
        total += values[i] ?? 0;
        kept += values[i + 1] ?? 0;
      }
      return total > 0 ? kept / total : 1;
    } catch (error) {
      this.slotsStage?.abandon();
      throw error;
    } finally {
      for (const buffer of scratch) buffer.destroy();
    }
  }

  /** Merge 'slots': the absorption and the rewritten lists of this round (src/compress/gpu-slots.ts). */
  private encodeSlots(encoder: GPUCommandEncoder, slots: GpuSlotsStage, job: ExecutionJob, scratch: GPUBuffer[]): SlotsRun | null {
    const { attnSum, attnCount } = this.backend.statistics;
    const window = this.massBuffer(job) === this.buffers.mass;
    return slots.encode(encoder, job, {
      rows: this.rowsOf(job.slot),
      keptIndex: this.buffers.keptIndex,
      keptCount: this.buffers.keptCount,
      // Weighted like the other modes: the window's attention (written while scoring), else the mean per query.
      mass: window ? { buffer: this.buffers.mass } : { sum: attnSum, count: attnCount, out: this.buffers.mass },
      arena: this.scratchBuffers,
      scratch,
    });
  }

  /** Destroys the scratch buffers (the cache is not touched). */
  destroy(): void {
    this.destroyed = true;
    for (const buffer of Object.values(this.buffers)) buffer.destroy();
    this.mergeLinks?.destroy();
    this.scratchBuffers.destroy();
    this.topK.destroy();
    this.slotsStage?.destroy();
  }
}
