import type { Bits } from '../format/layout.js';
import { BUDGET_MODES, type BudgetMode } from './budgets.js';
import { InvalidArgumentError, UnknownPolicyError } from '../errors.js';
import { policyNames } from './registry.js';

/**
 * What happens to the tokens a compression evicts. Every mode keeps the kept tokens' keys and positions unchanged
 * (the keys carry RoPE, so they stay valid); only kept values change, so memory is exactly that of `none`. The
 * weight w of a token is its attention mass per query: the observation window's attention probability (summed
 * over the window queries and the group's query heads, on both engines; TOVA's GPU scoring sees its one query, the
 * CPU engine's the compress window) for window policies (SnapKV, TOVA), else the mean decode attention it received,
 * attnSum / attnCount (the accumulated Σp alone favours old tokens, which have seen more queries, and made merging
 * hurt h2o and kvcompress). Every weight gets a floor of 1e-6 (MERGE_WEIGHT_FLOOR in ./merge.ts), so a head with no
 * attention yet weighs its tokens alike.
 *
 * - `none`: evicted tokens are dropped.
 * - `nearest` (MergingPress): each evicted token's value is folded into the kept token of the same head whose key
 *   is most cosine-similar to its key, found approximately: every key gets a fixed 32-bit SimHash (signs of its
 *   projections on 32 seeded orthogonal ±1 directions, keyHash in ./merge.ts), the 4 kept tokens whose hashes are
 *   nearest in Hamming distance are the candidates (all of them when a head keeps ≤ 4), and the one of largest
 *   exact cosine similarity wins (the earliest on ties). A kept value becomes (w_j v_j + Σ_e w_e v_e) /
 *   (w_j + Σ_e w_e) over the evicted tokens e folded into it. The hash makes a pair an xor and a popcount instead of a
 *   head_dim-long dot product (on stories260K, head_dim 8, it picks the exact-nearest kept token 41 % of the time
 *   and keeps most of exact nearest's perplexity gain; docs/performance.md "Merge cost").
 * - `cam` (CaM, Zhang et al. 2024): each evicted token e is spread over the next {@link CAM_MERGE_SPAN} kept tokens
 *   after it in the head (fewer at the end of the head): each of those m targets j receives
 *   v_j += (p_e / m) · v_e with the merge probability p_e = min(1, w_e / mean of the targets' w), the expectation
 *   of CaM's Bernoulli sampling (deterministic, so runs repeat). An evicted token after the last kept one is dropped.
 * - `slots` (CPU engine; the GPU engine rejects it for now): M = `mergeSlots` extra tokens per head, counted
 *   against the budget (the policy scores and keeps B − M real tokens), each a mass-weighted running mean of the
 *   keys and values of the evicted tokens it absorbed, kept across compressions so later evictions fold into them
 *   recurrently. The rule and its plain TS reference are in ./merge-slots.ts (absorbIntoSlots: post-RoPE keys
 *   averaged, why that is right, the position a slot takes). Slot tokens are ordinary cache tokens at the front
 *   of the head (quantized like the rest, counted by memory reports); their masses live in the cache's slot
 *   state (src/cache/slot-state.ts), carried by fork and snapshots. Compressing a sequence that holds slots with
 *   another mode turns its slots into ordinary tokens.
 */
export type MergeMode = 'none' | 'nearest' | 'cam' | 'slots';

/** Every merge mode, in the order the CLI lists them. */
export const MERGE_MODES: readonly MergeMode[] = ['none', 'nearest', 'cam', 'slots'];

/** Merge modes that run today (on both engines). */
export const IMPLEMENTED_MERGE_MODES: readonly MergeMode[] = ['none', 'nearest', 'cam', 'slots'];

/** Merge modes the GPU engine runs: all of them (`slots` since issue 15: src/compress/gpu-slots.ts). */
export const GPU_MERGE_MODES: readonly MergeMode[] = ['none', 'nearest', 'cam', 'slots'];

/** Slot tokens per head of MergeMode 'slots' when `mergeSlots` is not given. */
export const DEFAULT_MERGE_SLOTS = 4;

/** Kept tokens after an evicted one that CaM spreads its value over. */
export const CAM_MERGE_SPAN = 4;


/**
 * How to compress one sequence. Give `budget` (the AVERAGE number of tokens kept per KV head) or `ratio` (keep
 * 1/ratio of the tokens), not both; neither keeps every token (quantization only).
 *
 * @example
 * ```ts
 * const options: CompressOptions = { policy: 'snapkv', budget: 64, budgetMode: 'adakv', bits: 4 };
 * ```
 */
export interface CompressOptions {
  /** Scoring policy from the registry (default: 'snapkv' when the sequence has observation-window queries, else 'knorm'). */
  readonly policy?: string;
  /** Average tokens kept per KV head. */
  readonly budget?: number;
  /** Alternative to budget: keep ⌊tokens / ratio⌋ per head on average (ratio ≥ 1). */
  readonly ratio?: number;
  /** Who keeps how much (default 'uniform'). */
  readonly budgetMode?: BudgetMode;
  /** 16 or 32 keep the full format; 8, 4 or 2 quantize all but the recent window (default 16). */
  readonly bits?: Bits;
  /** Attention sinks always kept (default 4). */
  readonly sinks?: number;
  /** Recent tokens always kept, and kept in full precision when quantizing (default 32). */
  readonly recent?: number;
  /** SnapKV observation window (default 32, at most the cache's). */
  readonly window?: number;
  /** SnapKV pooling kernel (5 or 7; default 5) and type (default 'avg'). */
  readonly kernelSize?: number;
  readonly pooling?: 'avg' | 'max';
  /** AdaKV safeguard share (default 0.2). */
  readonly safeguard?: number;
  /** Seed of the random policy. */
  readonly seed?: number;
  /**
   * Measure attentionMassKept (default false: the report then says NaN). On the GPU it costs a reduction pass and
   * one CPU wait for its two floats per head (SnapKV/TOVA write the per-token means in their scoring pass), which a
   * compression without it does not make: opt in where the figure is shown.
   */
  readonly measureMass?: boolean;
  /** What evicted tokens become (default 'none'; see {@link MergeMode}). */
  readonly merge?: MergeMode;
  /** Slot tokens per head of merge 'slots' (default {@link DEFAULT_MERGE_SLOTS}; below the budget). */
  readonly mergeSlots?: number;
}

/**
 * Options after validation, with every default filled in.
 *
 * @example
 * ```ts
 * const resolved: ResolvedCompressOptions = resolveCompressOptions({ policy: 'h2o', ratio: 4 }, 1024);
 * resolved.budget; // 256 (bits 16, budgetMode 'uniform', sinks 4, recent 32)
 * ```
 */
export interface ResolvedCompressOptions {
  readonly policy: string;
  /** Average tokens kept per head, or null to keep all. */
  readonly budget: number | null;
  readonly budgetMode: BudgetMode;
  readonly bits: Bits;
  readonly sinks: number;
  readonly recent: number;
  readonly window: number;
  readonly kernelSize: number;
  readonly pooling: 'avg' | 'max';
  readonly safeguard: number;
  readonly seed: number;
  readonly merge: MergeMode;
  /** Slot tokens per head: `mergeSlots` under merge 'slots', else 0. */
  readonly mergeSlots: number;
}

function nonNegativeInteger(field: string, value: number): number {
  if (!Number.isInteger(value) || value < 0) throw new InvalidArgumentError(field, `must be a non-negative integer; got ${value}`);
  return value;
}

/**
 * Validates compression options before any GPU work (typed errors, nothing touched) and fills in defaults.
 * `tokens` is the sequence length, used to turn a ratio into a budget and to reject budgets past the context.
 *
 * @example
 * ```ts
 * resolveCompressOptions({ policy: 'h2o', budget: 64 }, 512); // { policy: 'h2o', budget: 64, budgetMode: 'uniform', bits: 16, ... }
 * ```
 */
export function resolveCompressOptions(options: CompressOptions, tokens: number): ResolvedCompressOptions {
  const policy = options.policy ?? 'snapkv';
  if (!policyNames().includes(policy)) throw new UnknownPolicyError(policy, policyNames());
  const budgetMode = options.budgetMode ?? 'uniform';
  if (!(BUDGET_MODES as readonly string[]).includes(budgetMode)) {
    throw new InvalidArgumentError('budgetMode', `must be one of ${BUDGET_MODES.join(', ')}; got ${String(budgetMode)}`);
  }
  const bits = options.bits ?? 16;
  if (![32, 16, 8, 4, 2].includes(bits)) {
    throw new InvalidArgumentError('bits', `must be 2, 4, 8, 16 or 32; got ${String(bits)}`);
  }
  if (options.budget !== undefined && options.ratio !== undefined) {
    throw new InvalidArgumentError('budget', 'give budget or ratio, not both');
  }
  let budget: number | null = null;
  if (options.budget !== undefined) {
    if (!Number.isFinite(options.budget) || options.budget <= 0) {
      throw new InvalidArgumentError('budget', `must be a positive number of tokens per head; got ${options.budget}`);
    }
    if (options.budget > tokens) {
      throw new InvalidArgumentError('budget', `${options.budget} tokens per head is larger than the context (${tokens})`);
    }
    budget = options.budget;
  } else if (options.ratio !== undefined) {
    if (!Number.isFinite(options.ratio) || options.ratio < 1) {
      throw new InvalidArgumentError('ratio', `must be a number ≥ 1; got ${options.ratio}`);
    }
    budget = Math.max(1, Math.floor(tokens / options.ratio));
  }
  const kernelSize = options.kernelSize ?? 5;
  if (kernelSize !== 5 && kernelSize !== 7 && kernelSize !== 1) {
    throw new InvalidArgumentError('kernelSize', `SnapKV pooling kernel must be 1, 5 or 7; got ${kernelSize}`);
  }
  const pooling = options.pooling ?? 'avg';
  if (pooling !== 'avg' && pooling !== 'max') throw new InvalidArgumentError('pooling', `must be avg or max; got ${String(pooling)}`);
  const safeguard = options.safeguard ?? 0.2;
  if (!(safeguard >= 0 && safeguard <= 1)) throw new InvalidArgumentError('safeguard', `must be in [0, 1]; got ${safeguard}`);
  const window = nonNegativeInteger('window', options.window ?? 32);
  if (window === 0) throw new InvalidArgumentError('window', 'must be at least 1');
  const merge = options.merge ?? 'none';
  if (!(IMPLEMENTED_MERGE_MODES as readonly string[]).includes(merge)) {
    throw new InvalidArgumentError('merge', `must be one of ${IMPLEMENTED_MERGE_MODES.join(', ')}; got ${String(merge)}`);
  }
  let mergeSlots = 0;
  if (merge === 'slots') {
    mergeSlots = options.mergeSlots ?? DEFAULT_MERGE_SLOTS;
    if (!Number.isInteger(mergeSlots) || mergeSlots < 1) throw new InvalidArgumentError('mergeSlots', `must be an integer ≥ 1; got ${mergeSlots}`);
    if (budget !== null && mergeSlots >= budget) {
      throw new InvalidArgumentError('mergeSlots', `${mergeSlots} slots leave no room for real tokens in a budget of ${budget}; use fewer slots or a larger budget`);
    }
  }
  return {
    policy,
    budget,
    budgetMode,
    bits,
    sinks: nonNegativeInteger('sinks', options.sinks ?? 4),
    recent: nonNegativeInteger('recent', options.recent ?? 32),
    window,
    kernelSize,
    pooling,
    safeguard,
    seed: nonNegativeInteger('seed', options.seed ?? 0),
    merge,
    mergeSlots,
  };
}

/**
 * What a compression did, measured.
 *
 * @example
 * ```ts
 * const report = await compressor.compress(seq, { policy: 'snapkv', budget: 64, bits: 4 });
 * console.log(`${report.ratio.toFixed(1)}× smaller, ${report.bytesFreed} bytes back in the pool`);
 * ```
 */
export interface CompressionReport {
  readonly policy: string;
  readonly budgetMode: BudgetMode;
  readonly bits: Bits;
  /** What evicted tokens became. */
  readonly merge: MergeMode;
  /** Average tokens kept per head asked for (null: all). */
  readonly budget: number | null;
  /** Tokens of the sequence. */
  readonly tokens: number;
  /** An f16 cache of all tokens: what every ratio is measured against. */
  readonly originalBytes: number;
  /** Bytes of the blocks the sequence holds after compressing. */
  readonly compressedBytes: number;
  /** originalBytes / compressedBytes. */
  readonly ratio: number;
  /** Bytes returned to the pools by this call. */
  readonly bytesFreed: number;
  /** Kept tokens per layer (summed over its heads). */
  readonly keptPerLayer: number[];
  /** Kept tokens per [layer][kvHead]. */
  readonly keptPerHead: number[][];
  /**
   * Share of the scoring attention mass on kept tokens: the observation window's attention for SnapKV/TOVA, the
   * accumulated decode attention for the other policies. NaN unless {@link CompressOptions.measureMass} asked for
   * it (it costs a reduction and a readback); 1 when nothing was evicted.
   */
  readonly attentionMassKept: number;
  /**
   * Host milliseconds from the call until the compaction was submitted: the GPU may still be running it (work on
   * the cache queued after it waits for it); a benchmark that wants the GPU time waits for the queue (`gpu.idle()`).
   */
  readonly milliseconds: number;
}
