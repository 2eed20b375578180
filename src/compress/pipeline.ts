/**
 * The one compression pipeline of both engines: resolve → score → budget → plan → compact (+ quantize) →
 * commit → report. The engine-specific parts are {@link CompressionStages}: the GPU stages run WGSL kernels on
 * the paged buffers, the CPU stages the TS references on word arrays; everything else (options and defaults, the
 * quantized pool's lifecycle, growth, the plan, the transaction, the report) is decided here, once.
 */
import { InvalidArgumentError, MissingObservationWindowError, OutOfBlocksError } from '../errors.js';
import type { CacheMetadata } from '../cache/cache-metadata.js';
import { abandonCompaction, commitCompaction, planCompactionWithGrowth, type CompactionPlan } from '../cache/compaction-plan.js';
import { memoryReport, sequenceBytes } from '../cache/memory-report.js';
import { holdsQuantizedBlocks, type GrowPool } from '../cache/pool-growth.js';
import { formatForBits, type QuantFormat } from '../format/layout.js';
import { type CompressOptions, type CompressionReport, type ResolvedCompressOptions, resolveCompressOptions } from './options.js';
import type { ScoringPolicy } from './policy.js';
import { type AutoCompressOptions, type AutoCompressionReport, autoCompressOptions, chooseAuto } from './auto.js';
import { smallestHeadBudget } from './budgets.js';
import { createPolicy } from './registry.js';

/** What the pipeline reads of an engine's merge-slot state (SlotStateStore on the CPU, GpuSlotState on the GPU). */
export interface SlotCounts {
  /** Slot tokens at the front of a block-table row. */
  count(row: number): number;
  clearRow(row: number): void;
  /** Bytes the engine keeps per slot beside the blocks (the report's compressedBytes adds them). */
  readonly bytesPerSlot: number;
}

/** What the stages need to score and budget one sequence. */
export interface SelectionJob {
  readonly seqId: number;
  readonly slot: number;
  readonly options: ResolvedCompressOptions;
  readonly policy: ScoringPolicy;
  /** Token count of every head, [layer][head]. */
  readonly lengths: readonly (readonly number[])[];
  /**
   * Merge slots at the front of every head, [layer][head] (all 0 unless merge 'slots'): the selection scores and
   * keeps only the tokens after them, sharing budget − mergeSlots, and returns counts that include the slots after
   * absorbing (min(mergeSlots, slots + evicted) per evicting head).
   */
  readonly slotCounts: readonly (readonly number[])[];
  /** Observation-window queries the policy may use (≤ the cache's window). */
  readonly window: number;
  /** The attention mass will be measured (window policies record it while scoring). */
  readonly measureMass: boolean;
}

/** What the stages need to move the kept tokens: the selection (if any) and the host's plan of new blocks. */
export interface ExecutionJob {
  readonly seqId: number;
  readonly slot: number;
  readonly options: ResolvedCompressOptions;
  /** The policy that scored, or null when no head exceeded the budget (nothing is evicted). */
  readonly policy: ScoringPolicy | null;
  readonly lengths: readonly (readonly number[])[];
  /** Kept tokens of every head, [layer][head]. */
  readonly counts: readonly Uint32Array[];
  /** The host's plan: every head at once, or one head per round when the pools are full (see compressSequence). */
  readonly plan: CompactionPlan;
  /** First (or only) round: turn the selection into kept indices, and measure the mass if asked. */
  readonly select: boolean;
  /** Measure the share of attention mass on kept tokens (report.attentionMassKept). */
  readonly measureMass: boolean;
  readonly window: number;
}

/**
 * The engine-specific half of compression. `select` leaves its per-head selection (kept logical indices, ascending)
 * where `execute` finds it; `execute` writes the plan's new blocks and moves the kept tokens' statistics. The host
 * commits afterwards, so a failure of either leaves the old table valid. The GPU's `execute` resolves once its
 * work is submitted (or, measuring the mass, read back): every later use of the cache is queued after it.
 */
export interface CompressionStages {
  readonly meta: CacheMetadata;
  /** The cache's observation window (queries kept per layer and sequence). */
  readonly observationWindow: number;
  /** Width of a kept-index row (maxTokensPerHead). */
  readonly indexStride: number;
  /** Valid observation-window queries of a sequence. */
  windowCount(seqId: number): number;
  /** Grows a pool's storage (the metadata grows with it). */
  readonly growPool: GrowPool;
  /** Gives the quantized pool a format while it holds no block. */
  setQuantFormat(format: QuantFormat): void;
  /** Scores every head and allocates the budgets; returns the kept counts [layer][head]. */
  select(job: SelectionJob): Promise<Uint32Array[]>;
  /** Runs the plan; returns the attention mass kept (NaN when not measured, 1 when nothing was evicted). */
  execute(job: ExecutionJob): Promise<number>;
  /** After the host committed the plan (the GPU uploads its table rows). */
  afterCommit(): void;
  /** Throws CacheDestroyedError or DeviceLostError when the cache can no longer be used (checked after each wait). */
  assertUsable(): void;
  /** The merge-slot state (MergeMode 'slots'), or null on an engine that does not run 'slots'. */
  readonly slots: SlotCounts | null;
}

/** The policy `compress` uses when none is given: SnapKV where the sequence has window queries, else K-norm. */
export function defaultPolicy(windowQueries: number): string {
  return windowQueries > 0 ? 'snapkv' : 'knorm';
}

/**
 * Protected windows clamped to what a head may keep, newest first: the recent window takes up to the whole
 * budget, the attention sinks what is left. With B < sinks + recent the kept set is the newest tokens plus as many
 * sinks as fit, never an older slice of the recent window.
 *
 * @example
 * ```ts
 * clampProtection(4, 32, 20); // { sinks: 0, recent: 20 }
 * clampProtection(4, 32, 34); // { sinks: 2, recent: 32 }
 * ```
 */
export function clampProtection(sinks: number, recent: number, headBudget: number): { sinks: number; recent: number } {
  const keptRecent = Math.max(0, Math.min(recent, headBudget));
  return { sinks: Math.max(0, Math.min(sinks, headBudget - keptRecent)), recent: keptRecent };
}

/**
 * The quantized pool's one lifecycle rule: a cache created with `quantBits` quantizes to those bits only; one
 * created without takes the bits of its first quantizing compression, and may change them while its quantized
 * pool holds no block.
 */
export function prepareQuantizedPool(stages: CompressionStages, bits: number, fixedBits: number | null): void {
  const format = formatForBits(bits) as QuantFormat;
  const meta = stages.meta;
  if (meta.quantFormat === format) return;
  if (fixedBits !== null) {
    throw new InvalidArgumentError('bits', `this cache quantizes to ${fixedBits} bits (quantBits at creation); compress with bits ${fixedBits} or 16, or create a cache with quantBits: ${bits}`);
  }
  if (meta.poolUsage('quant').used > 0) {
    throw new InvalidArgumentError(
      'bits',
      `this cache's quantized pool holds ${meta.poolUsage('quant').used} ${meta.quantFormat ?? ''} blocks; compress with bits ${meta.quantLayout?.bits ?? ''} (or 16)`,
    );
  }
  stages.setQuantFormat(format);
}

/**
 * Compresses one sequence. Validates everything first (typed errors, cache untouched). Budget B is the AVERAGE
 * number of tokens kept per KV head; ratios are against an f16 cache of all tokens. The host commits the new
 * block lists only after the stages finished writing them, so a failure leaves the sequence as it was. With the
 * pools full it compacts one head per round instead (see the loop below); a later round can then only fail when
 * a head's old blocks are shared with a fork (nothing is freed), and the heads already done stay compressed.
 *
 * @throws InvalidArgumentError, UnknownPolicyError, UnknownSequenceError, MissingObservationWindowError,
 *   OutOfBlocksError / LimitExceededError when the byte budget cannot hold the result.
 */
export async function compressSequence(
  stages: CompressionStages,
  seqId: number,
  options: CompressOptions,
  fixedBits: number | null,
): Promise<CompressionReport> {
  const started = performance.now();
  const meta = stages.meta;
  const tokens = meta.sequenceLength(seqId);
  const windowQueries = stages.windowCount(seqId);
  const opts = resolveCompressOptions({ ...options, policy: options.policy ?? defaultPolicy(windowQueries) }, tokens);
  const { layers, kvHeads } = meta.shape;
  const slotCounts = mergeSlotCounts(stages, seqId, opts);
  const quantize = opts.bits < 16;
  if (quantize) prepareQuantizedPool(stages, opts.bits, fixedBits);
  const slot = meta.slotOf(seqId);
  const lengths = Array.from({ length: layers }, (_, l) => Array.from({ length: kvHeads }, (_, h) => meta.tokenCount(seqId, l, h)));
  // Merge slots count against the budget: the policy shares what is left of it among the real tokens.
  const budget = opts.budget === null ? null : opts.budget - opts.mergeSlots;
  const evicting = budget !== null && lengths.some((heads, l) => heads.some((n, h) => n - (slotCounts[l]?.[h] ?? 0) > budget));
  const headBudget = budget === null ? Number.POSITIVE_INFINITY : smallestHeadBudget(opts.budgetMode, budget, layers);
  const window = Math.min(opts.window, stages.observationWindow);
  const measureMass = evicting && (options.measureMass ?? false);
  let counts: Uint32Array[] = lengths.map((heads) => Uint32Array.from(heads));
  let policy: ScoringPolicy | null = null;
  if (evicting) {
    const { sinks, recent } = clampProtection(opts.sinks, opts.recent, headBudget);
    policy = createPolicy(opts.policy, {
      sinks,
      recent,
      // Window policies also protect the tokens their window covers: capped with the rest of the protection.
      recentLimit: Math.max(recent, headBudget - sinks),
      window,
      kernelSize: opts.kernelSize,
      pooling: opts.pooling,
      seed: opts.seed,
    });
    if (policy.requires.window && windowQueries === 0) throw new MissingObservationWindowError(opts.policy);
    counts = await guarded(stages, stages.select({ seqId, slot, options: opts, policy, lengths, slotCounts, window, measureMass }));
  }
  // A sequence that already holds quantized blocks keeps them quantized even at bits 16: there is no way back.
  const compact = quantize || holdsQuantizedBlocks(meta, seqId);
  const usedBefore = memoryReport(meta).usedBytes;
  const input = { seqId, kept: counts.flatMap((heads) => [...heads]), quantize: compact, residual: opts.recent, indexStride: stages.indexStride };
  const job = { seqId, slot, options: opts, policy, lengths, counts, measureMass, window };
  let plan: CompactionPlan | null = null;
  try {
    plan = planCompactionWithGrowth(meta, input, stages.growPool);
  } catch (error) {
    if (!(error instanceof OutOfBlocksError)) throw error;
  }
  let attentionMassKept = Number.NaN;
  // With the pools full, release before allocating: one head per round, each committed (its old blocks freed)
  // before the next allocates; the compaction reserve that appends leave guarantees the first round fits.
  const rounds = plan ? [plan] : [];
  const heads = plan ? 0 : layers * kvHeads;
  for (let round = 0; round < Math.max(rounds.length, heads); round++) {
    const roundPlan = rounds[round] ?? planCompactionWithGrowth(meta, { ...input, only: new Set([round]) }, stages.growPool);
    try {
      const mass = await guarded(stages, stages.execute({ ...job, plan: roundPlan, select: round === 0 }));
      if (round === 0) attentionMassKept = mass;
    } catch (error) {
      abandonCompaction(meta, roundPlan);
      throw error;
    }
    commitCompaction(meta, seqId, roundPlan);
    // Evicted under another mode, a head's slots became ordinary tokens (and may be gone): forget their masses.
    if (opts.merge !== 'slots') for (const head of roundPlan.heads) if (head.kept < head.before) stages.slots?.clearRow(head.row);
    stages.afterCommit();
  }
  return compressionReport(meta, seqId, opts, usedBefore, attentionMassKept, started, slotStateBytes(stages, seqId));
}

/** Bytes of a sequence's merge-slot state beside its blocks (0 without slots). */
function slotStateBytes(stages: CompressionStages, seqId: number): number {
  const store = stages.slots;
  if (store === null) return 0;
  const { layers, kvHeads } = stages.meta.shape;
  let slots = 0;
  for (let l = 0; l < layers; l++) for (let h = 0; h < kvHeads; h++) slots += store.count(stages.meta.rowOf(seqId, l, h));
  return slots * store.bytesPerSlot;
}

/**
 * Compresses one sequence to at least `targetRatio` with the split between eviction and bits that
 * {@link chooseAuto} picks (the same default policy as {@link compressSequence}); the report says what it chose.
 */
export async function compressToRatio(
  stages: CompressionStages,
  seqId: number,
  targetRatio: number,
  options: AutoCompressOptions,
  fixedBits: number | null,
): Promise<AutoCompressionReport> {
  const chosen = chooseAuto(stages.meta, seqId, targetRatio, options, fixedBits);
  const policy = options.policy ?? defaultPolicy(stages.windowCount(seqId));
  const report = await compressSequence(stages, seqId, autoCompressOptions(chosen, { ...options, policy }), fixedBits);
  return { ...report, chosen };
}

/**
 * The merge slots every head of a sequence holds, [layer][head]: the slot state's counts under merge 'slots',
 * all 0 otherwise. InvalidArgumentError (nothing touched) on an engine without slots, or when a head already
 * holds more slots than `mergeSlots` allows.
 */
function mergeSlotCounts(stages: CompressionStages, seqId: number, opts: ResolvedCompressOptions): number[][] {
  const meta = stages.meta;
  const { layers, kvHeads } = meta.shape;
  const store = stages.slots;
  if (opts.merge === 'slots' && store === null) {
    throw new InvalidArgumentError('merge', "this engine does not run merge 'slots' yet; use the CPU engine (CpuKvCache) or merge 'none', 'nearest' or 'cam'");
  }
  return Array.from({ length: layers }, (_, l) =>
    Array.from({ length: kvHeads }, (_, h) => {
      if (opts.merge !== 'slots' || store === null) return 0;
      const count = store.count(meta.rowOf(seqId, l, h));
      if (count > opts.mergeSlots) {
        throw new InvalidArgumentError('mergeSlots', `sequence ${seqId} holds ${count} slots per head (layer ${l}, kv ${h}); compress with mergeSlots ≥ ${count}`);
      }
      return count;
    }),
  );
}

/**
 * Awaits a stage and checks the cache is still usable after it: a cache destroyed or a device lost meanwhile
 * surfaces as CacheDestroyedError / DeviceLostError, not as whatever the half-done GPU work failed with.
 */
async function guarded<T>(stages: CompressionStages, work: Promise<T>): Promise<T> {
  let result: T;
  try {
    result = await work;
  } catch (error) {
    stages.assertUsable();
    throw error;
  }
  stages.assertUsable();
  return result;
}

/** The report of a compression, from the metadata after the commit (one shape for both engines). */
function compressionReport(
  meta: CacheMetadata,
  seqId: number,
  opts: ResolvedCompressOptions,
  usedBefore: number,
  attentionMassKept: number,
  started: number,
  slotBytes: number,
): CompressionReport {
  // The slots' masses are part of what the compressed sequence holds (both engines count them the same way).
  const { bytes: blockBytes, baselineF16, tokens } = sequenceBytes(meta, seqId);
  const bytes = blockBytes + slotBytes;
  const { layers, kvHeads } = meta.shape;
  const keptPerHead = Array.from({ length: layers }, (_, l) => Array.from({ length: kvHeads }, (_, h) => meta.tokenCount(seqId, l, h)));
  return {
    policy: opts.policy,
    budgetMode: opts.budgetMode,
    bits: opts.bits,
    merge: opts.merge,
    budget: opts.budget,
    tokens,
    originalBytes: baselineF16,
    compressedBytes: bytes,
    ratio: bytes > 0 ? baselineF16 / bytes : Number.POSITIVE_INFINITY,
    bytesFreed: usedBefore - memoryReport(meta).usedBytes,
    keptPerLayer: keptPerHead.map((heads) => heads.reduce((a, b) => a + b, 0)),
    keptPerHead,
    attentionMassKept,
    milliseconds: performance.now() - started,
  };
}
