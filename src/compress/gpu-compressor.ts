import type { PagedKvCache } from '../engine/paged-kv-cache.js';
import { InvalidArgumentError, OutOfBlocksError } from '../errors.js';
import { createStorageBuffer, readBuffer } from '../gpu/buffers.js';
import { CompactBlocksKernel, packCompactJobs } from '../kernels/compress/compact-blocks.js';
import { GatherStatsKernel } from '../kernels/compress/gather-stats.js';
import { MassKeptKernel } from '../kernels/compress/mass-kept.js';
import { TopKSelectKernel } from '../kernels/compress/select.js';
import type { ObservationWindowBindings } from '../kernels/compress/score-target.js';
import { allocateBudgetsGpu } from './budgets-gpu.js';
import { abandonCompaction, commitCompaction, planCompaction, type CompactionPlan } from '../cache/compaction-plan.js';
import { scoreScratchBytes, type ScoreGpuInput } from './gpu-policies.js';
import {
  type CompressBits,
  type CompressOptions,
  type CompressionReport,
  resolveCompressOptions,
  type ResolvedCompressOptions,
} from './options.js';
import { createPolicy } from './registry.js';


/**
 * What {@link GpuCompressor.compressAuto} chose, and why.
 *
 * @example
 * ```ts
 * const { chosen } = await compressor.compressAuto(seq, 4);
 * console.log(chosen.bits, chosen.budget, chosen.why); // e.g. 4 null '4-bit storage alone reaches 4×: no eviction'
 * ```
 */
export interface AutoChoice {
  readonly bits: CompressBits;
  /** Average tokens kept per head (null: all). */
  readonly budget: number | null;
  readonly why: string;
}

/**
 * Compresses sequences of a {@link PagedKvCache} on the GPU: scores every cached token with a policy, allocates
 * per-head budgets, selects each head's top tokens, compacts them into fresh blocks (quantizing whole blocks
 * older than the recent window) and frees the old blocks. Scores never leave the GPU; only per-head counts and
 * two sums per head come back. The block table is committed only after the GPU work has completed, so a failure
 * mid-way (device lost) leaves the old table valid.
 *
 * @example
 * ```ts
 * const compressor = new GpuCompressor(cache);
 * const report = await compressor.compress(seq, { policy: 'snapkv', budget: 64, budgets: 'adakv', bits: 4 });
 * console.log(report.ratio, report.keptPerHead);
 * ```
 */
export class GpuCompressor {
  private readonly topK: TopKSelectKernel;
  private readonly compact: CompactBlocksKernel;
  private readonly gather: GatherStatsKernel;
  private readonly massKernel: MassKeptKernel;
  private readonly rows: number;
  private readonly stride: number;
  private buffers: Record<'scores' | 'mass' | 'keptIndex' | 'keptCount' | 'thresholds' | 'scratch', GPUBuffer>;
  private destroyed = false;

  constructor(readonly cache: PagedKvCache) {
    const { gpu } = cache;
    const { layers, kvHeads } = cache.shape;
    this.rows = layers * cache.meta.seqSlots * kvHeads;
    this.stride = cache.maxTokensPerHead;
    this.topK = new TopKSelectKernel(gpu);
    this.compact = new CompactBlocksKernel(gpu, { full: cache.fullLayout, quant: cache.quantLayout });
    this.gather = new GatherStatsKernel(gpu);
    this.massKernel = new MassKeptKernel(gpu);
    const perToken = this.rows * this.stride * 4;
    this.buffers = {
      scores: createStorageBuffer(gpu, 'compress:scores', perToken),
      mass: createStorageBuffer(gpu, 'compress:mass', perToken),
      keptIndex: createStorageBuffer(gpu, 'compress:kept-index', perToken),
      keptCount: createStorageBuffer(gpu, 'compress:kept-count', this.rows * 4),
      thresholds: createStorageBuffer(gpu, 'compress:thresholds', this.rows * 8),
      scratch: createStorageBuffer(gpu, 'compress:scratch', scoreScratchBytes(layers, cache.observationWindow, cache.nHeads)),
    };
  }

  /**
   * Compresses one sequence. Validates everything first (typed errors, cache untouched). Budget B is the AVERAGE
   * number of tokens kept per KV head; ratios are against an f16 cache of all tokens.
   */
  async compress(seqId: number, options: CompressOptions): Promise<CompressionReport> {
    this.assertUsable();
    const started = performance.now();
    const cache = this.cache;
    const tokens = cache.sequenceLength(seqId);
    const opts = resolveCompressOptions(options, tokens);
    const quantize = opts.bits < 16;
    if (quantize) this.checkBits(opts.bits);
    const { layers, kvHeads } = cache.shape;
    const slot = cache.meta.slotOf(seqId);
    const lengths = Array.from({ length: layers }, (_, l) =>
      Array.from({ length: kvHeads }, (_, h) => cache.tokenCount(seqId, l, h)),
    );
    const rowsOf = lengths.map((heads, l) => heads.map((_, h) => (l * cache.meta.seqSlots + slot) * kvHeads + h));
    const usedBefore = cache.memory().usedBytes;
    const windowValid = cache.windowCount(seqId, 0);
    const window: ObservationWindowBindings = {
      queries: cache.windowQueries,
      positions: cache.windowPositions,
      capacity: cache.observationWindow,
      valid: windowValid,
    };
    const evicting = opts.budget !== null && lengths.some((heads) => heads.some((n) => n > (opts.budget ?? 0)));

    let counts: Uint32Array[] = lengths.map((heads) => Uint32Array.from(heads));
    const encoder = cache.gpu.device.createCommandEncoder({ label: 'compress:score' });
    const input: ScoreGpuInput = {
      gpu: cache.gpu,
      cache: cache.bindings,
      full: cache.fullLayout,
      quant: cache.quantLayout,
      nHeads: cache.nHeads,
      kvHeads,
      layer: 0,
      layerCount: layers,
      slot,
      seqLen: tokens,
      stats: { attnSum: cache.attnSum, attnSqSum: cache.attnSqSum, attnCount: cache.attnCount },
      window,
      scratch: this.buffers.scratch,
      scores: this.buffers.scores,
      seed: opts.seed,
    };
    // The mass a policy scores with: window attention for SnapKV/TOVA (its unpooled means, written by the same
    // pass that scores), the accumulated decode attention (attnSum, already on the GPU) for every other policy.
    const windowPolicy = opts.policy === 'snapkv' || opts.policy === 'tova';
    const measureMass = evicting && (options.measureMass ?? true);
    const massBuffer = windowPolicy && windowValid > 0 ? this.buffers.mass : cache.attnSum;
    if (evicting) {
      const policy = createPolicy(opts.policy, {
        sinks: opts.sinks,
        recent: opts.recent,
        window: Math.min(opts.window, cache.observationWindow),
        kernelSize: opts.kernelSize,
        pooling: opts.pooling,
        seed: opts.seed,
      });
      if (!policy.scoreGpu) throw new InvalidArgumentError('policy', `${opts.policy} has no GPU scoring`);
      policy.scoreGpu(encoder, measureMass && massBuffer === this.buffers.mass ? { ...input, means: this.buffers.mass } : input);
    }
    cache.gpu.submit([encoder.finish()]);

    if (evicting && opts.budget !== null) {
      counts = await allocateBudgetsGpu(cache.gpu, {
        mode: opts.budgets,
        budget: opts.budget,
        safeguard: opts.safeguard,
        scores: this.buffers.scores,
        stride: this.stride,
        rows: rowsOf,
        lengths,
        kernel: this.topK,
      });
    }
    const kept = counts.flatMap((layer) => [...layer]);
    const plan = this.planWithGrowth(seqId, kept, quantize || this.holdsQuantized(seqId), opts.recent);
    let massKept = 1;
    const scratch: GPUBuffer[] = [];
    try {
      const encoder2 = cache.gpu.device.createCommandEncoder({ label: 'compress:select+compact' });
      // Only this sequence's rows: index i = layer × kvHeads + head maps to its table row.
      const rowMap = { base: slot * kvHeads, groupRows: kvHeads, groupStride: cache.meta.seqSlots * kvHeads };
      const seqRows = layers * kvHeads;
      if (evicting) {
        const members = new Uint32Array(seqRows * 2);
        const segments = new Uint32Array(seqRows * 3);
        rowsOf.forEach((heads, l) =>
          heads.forEach((row, h) => {
            const i = l * kvHeads + h;
            members.set([row, lengths[l]?.[h] ?? 0], 2 * i);
            segments.set([i, 1, counts[l]?.[h] ?? 0], 3 * i);
          }),
        );
        const membersBuffer = createStorageBuffer(cache.gpu, 'compress:members', members);
        const segmentsBuffer = createStorageBuffer(cache.gpu, 'compress:segments', segments);
        scratch.push(membersBuffer, segmentsBuffer);
        this.topK.encodeSegmentThresholds(encoder2, {
          scores: this.buffers.scores,
          stride: this.stride,
          numSegments: seqRows,
          segments: segmentsBuffer,
          members: membersBuffer,
          thresholds: this.buffers.thresholds,
          numMembers: seqRows,
        });
        this.topK.encodeCompact(encoder2, {
          scores: this.buffers.scores,
          lengths: cache.contextLens,
          thresholds: this.buffers.thresholds,
          numRows: seqRows,
          stride: this.stride,
          keptIndices: this.buffers.keptIndex,
          keptCounts: this.buffers.keptCount,
          rowMap,
        });
      }
      let sums: GPUBuffer | null = null;
      if (measureMass) {
        sums = createStorageBuffer(cache.gpu, 'compress:mass-sums', layers * kvHeads * 8);
        scratch.push(sums);
        for (let l = 0; l < layers; l++) {
          this.massKernel.encode(encoder2, {
            firstRow: rowsOf[l]?.[0] ?? 0,
            numRows: kvHeads,
            maxTokens: this.stride,
            mass: massBuffer,
            lengths: cache.contextLens,
            keptIndex: this.buffers.keptIndex,
            keptCount: this.buffers.keptCount,
            sums,
            outBase: l * kvHeads,
          });
        }
      }
      if (plan.jobs.length > 0) {
        const jobs = createStorageBuffer(cache.gpu, 'compress:jobs', packCompactJobs(plan.jobs));
        scratch.push(jobs);
        this.compact.encode(encoder2, {
          cache: cache.bindings,
          jobs,
          numJobs: plan.jobs.length,
          indices: this.buffers.keptIndex,
        });
      }
      if (evicting) {
        const rowBytes = this.stride * 4;
        for (const stats of [cache.attnSum, cache.attnSqSum, cache.attnCount]) {
          const out = createStorageBuffer(cache.gpu, 'compress:stats', seqRows * rowBytes);
          scratch.push(out);
          this.gather.encode(encoder2, {
            stats,
            kept: this.buffers.keptIndex,
            keptCounts: this.buffers.keptCount,
            out,
            numRows: seqRows,
            stride: this.stride,
            rowMap,
          });
          for (let l = 0; l < layers; l++) {
            const firstRow = rowsOf[l]?.[0] ?? 0;
            encoder2.copyBufferToBuffer(out, l * kvHeads * rowBytes, stats, firstRow * rowBytes, kvHeads * rowBytes);
          }
        }
      }
      cache.gpu.submit([encoder2.finish()]);
      await cache.gpu.idle();
      if (sums) {
        const values = new Float32Array(await readBuffer(cache.gpu, sums));
        let total = 0;
        let keptMass = 0;
        for (let i = 0; i < values.length; i += 2) {
          total += values[i] ?? 0;
          keptMass += values[i + 1] ?? 0;
        }
        massKept = total > 0 ? keptMass / total : 1;
      }
    } catch (error) {
      abandonCompaction(cache.meta, plan);
      throw error;
    } finally {
      for (const buffer of scratch) buffer.destroy();
    }
    commitCompaction(cache.meta, seqId, plan);
    cache.uploadDirtyRows();
    return this.report(seqId, opts, counts, usedBefore, massKept, started);
  }

  /**
   * Reaches a target memory ratio (against an f16 cache of all tokens) by choosing the split between eviction
   * and bits: quantization alone when it gets there (it costs the least quality), otherwise the cache's bits plus
   * the smallest eviction that reaches the target.
   */
  async compressAuto(
    seqId: number,
    targetRatio: number,
    options: Omit<CompressOptions, 'budget' | 'ratio' | 'bits'> = {},
  ): Promise<CompressionReport & { chosen: AutoChoice }> {
    const chosen = this.chooseAuto(seqId, targetRatio, options.recent ?? 32);
    const report = await this.compress(seqId, {
      ...options,
      bits: chosen.bits,
      ...(chosen.budget !== null ? { budget: chosen.budget } : {}),
    });
    return { ...report, chosen };
  }

  /**
   * The split {@link compressAuto} would choose, without compressing: for each storage format the cache has, the
   * most tokens per head that still reach the ratio (whole quantized blocks, the recent window and the partly
   * filled last block in full precision, exactly as compress() lays them out); the format keeping the most wins.
   */
  chooseAuto(seqId: number, targetRatio: number, recent = 32): AutoChoice {
    if (!Number.isFinite(targetRatio) || targetRatio < 1) {
      throw new InvalidArgumentError('targetRatio', `must be a number ≥ 1; got ${targetRatio}`);
    }
    const cache = this.cache;
    const tokens = cache.sequenceLength(seqId);
    if (tokens === 0) throw new InvalidArgumentError('seqId', 'the sequence holds no tokens');
    const { blockSize, headDim } = cache.shape;
    const baseline = tokens * 4 * headDim; // f16 K and V of every token, per head
    const fullBlock = cache.meta.bytesPerBlock('full');
    const quantBlock = cache.meta.bytesPerBlock('quant');
    const bytesFor = (keep: number, quantize: boolean) => {
      const quantTokens = quantize ? Math.floor(Math.max(0, keep - recent) / blockSize) * blockSize : 0;
      return (quantTokens / blockSize) * quantBlock + Math.ceil((keep - quantTokens) / blockSize) * fullBlock;
    };
    const candidates: { bits: CompressBits; quantize: boolean }[] = [{ bits: 16, quantize: false }];
    const quant = cache.quantLayout;
    if (quant) candidates.push({ bits: quant.bits as CompressBits, quantize: true });
    let best: { bits: CompressBits; keep: number } | null = null;
    for (const { bits, quantize } of candidates) {
      let keep = tokens;
      while (keep > 1 && baseline / bytesFor(keep, quantize) < targetRatio) keep--;
      if (baseline / bytesFor(keep, quantize) < targetRatio) continue;
      if (!best || keep > best.keep) best = { bits, keep };
    }
    if (!best) {
      throw new InvalidArgumentError('targetRatio', `${targetRatio}× is out of reach even keeping one token per head`);
    }
    if (best.keep >= tokens) {
      return { bits: best.bits, budget: null, why: `${best.bits}-bit storage alone reaches ${targetRatio}×: no eviction` };
    }
    return {
      bits: best.bits,
      budget: best.keep,
      why: `${best.bits}-bit storage keeps the most tokens at ${targetRatio}×: ${best.keep} of ${tokens} per head`,
    };
  }

  private checkBits(bits: CompressBits): void {
    const quant = this.cache.quantLayout;
    if (!quant) {
      throw new InvalidArgumentError('bits', `this cache has no quantized pool; create it with quantBits: ${bits}`);
    }
    if (quant.bits !== bits) {
      throw new InvalidArgumentError('bits', `this cache quantizes to ${quant.bits} bits; create one with quantBits: ${bits}`);
    }
  }

  private holdsQuantized(seqId: number): boolean {
    const { layers, kvHeads } = this.cache.shape;
    for (let l = 0; l < layers; l++) {
      for (let h = 0; h < kvHeads; h++) {
        if (this.cache.meta.headBlocks(seqId, l, h).some((entry) => entry >= 0x8000_0000)) return true;
      }
    }
    return false;
  }

  private planWithGrowth(seqId: number, kept: number[], quantize: boolean, residual: number): CompactionPlan {
    const input = { seqId, kept, quantize, residual, indexStride: this.stride };
    for (let attempt = 0; ; attempt++) {
      try {
        return planCompaction(this.cache.meta, input);
      } catch (error) {
        if (!(error instanceof OutOfBlocksError) || attempt >= 2) throw error;
        const pool = /quantized pool/.test(error.message) ? 'quant' : 'full';
        const growable = this.cache.meta.growableBlocks(pool);
        const want = error.needed - error.free;
        if (growable < want) throw error;
        this.cache.growPool(pool, Math.min(growable, Math.max(want, Math.ceil(this.cache.meta.pool(pool).numBlocks / 4))));
      }
    }
  }

  private report(
    seqId: number,
    opts: ResolvedCompressOptions,
    counts: Uint32Array[],
    usedBefore: number,
    attentionMassKept: number,
    started: number,
  ): CompressionReport {
    const { bytes, baselineF16, tokens } = this.cache.sequenceBytes(seqId);
    return {
      policy: opts.policy,
      budgets: opts.budgets,
      bits: opts.bits,
      budget: opts.budget,
      tokens,
      originalBytes: baselineF16,
      compressedBytes: bytes,
      ratio: bytes > 0 ? baselineF16 / bytes : Number.POSITIVE_INFINITY,
      bytesFreed: usedBefore - this.cache.memory().usedBytes,
      keptPerLayer: counts.map((layer) => layer.reduce((a, b) => a + b, 0)),
      keptPerHead: counts.map((layer) => [...layer]),
      attentionMassKept,
      milliseconds: performance.now() - started,
    };
  }

  private assertUsable(): void {
    if (this.destroyed) throw new InvalidArgumentError('compressor', 'this GpuCompressor was destroyed');
  }

  /** Destroys the compressor's scratch buffers (the cache is not touched). */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const buffer of Object.values(this.buffers)) buffer.destroy();
    this.topK.destroy();
  }
}
