import type { Bits } from '../format/layout.js';
import { BUDGET_MODES, type BudgetMode } from './budgets.js';
import { InvalidArgumentError, UnknownPolicyError } from '../errors.js';
import { policyNames } from './registry.js';


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
   * Measure attentionMassKept (default true). For SnapKV/TOVA it costs one more window-attention pass; for the
   * other policies it reads the accumulated attention statistics and costs next to nothing.
   */
  readonly measureMass?: boolean;
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
   * accumulated decode attention for the other policies (1 when nothing was evicted or nothing was measured).
   */
  readonly attentionMassKept: number;
  readonly milliseconds: number;
}
