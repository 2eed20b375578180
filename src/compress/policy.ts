/**
 * Scoring policies, kvpress style: a policy's only job is to score every cached token of every KV head of one
 * layer (higher = keep). Budget allocation (`budgets.ts`) and selection (`select.ts`) are shared by all.
 *
 * The base class adds protection on top of a policy's raw score: attention sinks (the first `sinkTokens`
 * positions of the sequence) and the recent window (the last `recentWindow` positions) score +Infinity, so
 * every budget mode keeps them whenever it can.
 */
import { InvalidArgumentError } from '../errors.js';
import { encodeGpuScores, type GpuScorePlan, type ScoreGpuInput } from './gpu-policies.js';

/**
 * What a policy reads besides the cached keys: the observation window's queries (SnapKV, TOVA) and/or the
 * accumulated attention statistics (H2O, KV-Compress). The pipeline reads it; nothing tests policy names.
 */
export interface PolicyRequirements {
  readonly window: boolean;
  readonly statistics: boolean;
}

/**
 * What a policy may look at, for ONE layer. Per-KV-head arrays may differ in length (per-head eviction).
 *
 * @example
 * ```ts
 * const input: ScoreInput = { nHeads: 8, kvHeads: 2, headDim: 64, keys, positions, attnSum, attnCount };
 * ```
 */
export interface ScoreInput {
  readonly nHeads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  /** Per KV head: cached keys `[tokens][headDim]` (RoPE applied), tokens in position order. */
  readonly keys: readonly Float32Array[];
  /** Per KV head: original position of each cached token. */
  readonly positions: readonly Uint32Array[];
  /**
   * Observation-window queries `[w][nHeads][headDim]` (the last w queries of the sequence, RoPE applied),
   * needed by snapkv and tova.
   */
  readonly windowQueries?: Float32Array;
  /** Positions of the window queries `[w]`; default: the last w positions before `sequenceLength`. */
  readonly windowPositions?: Uint32Array;
  /** Per KV head, per token: Σ over queries so far of the probability summed over the group's query heads. */
  readonly attnSum?: readonly Float32Array[];
  /** Per KV head, per token: Σ over queries and the group's query heads of the squared probability. */
  readonly attnSqSum?: readonly Float32Array[];
  /** Per KV head, per token: how many queries could see the token (the normaliser of `attnSum`). */
  readonly attnCount?: readonly (Float32Array | Uint32Array)[];
  /** Tokens the sequence has seen (next position); default: max cached position + 1. */
  readonly sequenceLength?: number;
  /** Layer index, mixed into the random policy's stream so layers differ. */
  readonly layer?: number;
  /** Seed for policies that draw random numbers. */
  readonly seed?: number;
}

/**
 * A scoring policy: `score()` returns one Float32Array per KV head, aligned with `input.keys[kv]`.
 *
 * @example
 * ```ts
 * const policy: ScoringPolicy = createPolicy('h2o', { recentWindow: 16 });
 * const scores = policy.score(input); // scores[kv][t]; +Infinity = protected
 * ```
 */
export interface ScoringPolicy {
  readonly name: string;
  /** What the policy reads: observation-window queries (SnapKV, TOVA) and/or accumulated attention statistics. */
  readonly requires: PolicyRequirements;
  score(input: ScoreInput): Float32Array[];
  /**
   * Encodes the same scores, computed on the GPU from the paged cache, into `encoder` (absent when a policy
   * has no GPU kernels). Writes f32 `[row][maxTokensPerHead]` of the input's (layer range, slot).
   */
  scoreGpu?(encoder: GPUCommandEncoder, input: ScoreGpuInput): void;
}

/**
 * Options every policy accepts.
 *
 * @example
 * ```ts
 * createPolicy('tova', { sinks: 4, recent: 64 });
 * ```
 */
export interface PolicyOptions {
  /** Leading positions always kept (attention sinks). Default 4. */
  readonly sinks?: number;
  /** Trailing positions always kept. Default 32. */
  readonly recent?: number;
}

/**
 * Default number of attention-sink tokens.
 *
 * @example
 * ```ts
 * new H2OPolicy().sinkTokens === DEFAULT_SINK_TOKENS; // true
 * ```
 */
export const DEFAULT_SINK_TOKENS = 4;
/**
 * Default protected recent window.
 *
 * @example
 * ```ts
 * new H2OPolicy().recentWindow === DEFAULT_RECENT_WINDOW; // true
 * ```
 */
export const DEFAULT_RECENT_WINDOW = 32;

function nonNegativeInteger(field: string, value: number): number {
  if (!Number.isInteger(value) || value < 0) {
    throw new InvalidArgumentError(field, `must be a non-negative integer; got ${value}`);
  }
  return value;
}

/**
 * Validates the shared shape of a {@link ScoreInput} and returns the per-head token counts.
 *
 * @example
 * ```ts
 * const tokens = checkScoreInput(input); // [tokens of kv 0, tokens of kv 1, ...]
 * ```
 */
export function checkScoreInput(input: ScoreInput): number[] {
  const { nHeads, kvHeads, headDim } = input;
  for (const [field, value] of [
    ['nHeads', nHeads],
    ['kvHeads', kvHeads],
    ['headDim', headDim],
  ] as const) {
    if (!Number.isInteger(value) || value <= 0) {
      throw new InvalidArgumentError(field, `must be a positive integer; got ${value}`);
    }
  }
  if (nHeads % kvHeads !== 0) throw new InvalidArgumentError('kvHeads', `must divide nHeads ${nHeads}`);
  if (input.keys.length !== kvHeads || input.positions.length !== kvHeads) {
    throw new InvalidArgumentError('keys', `expected keys and positions for each of ${kvHeads} KV heads`);
  }
  const tokens: number[] = [];
  for (let kv = 0; kv < kvHeads; kv++) {
    const len = input.keys[kv]?.length ?? 0;
    if (len % headDim !== 0) throw new InvalidArgumentError(`keys[${kv}]`, `length must be tokens × ${headDim}`);
    const n = len / headDim;
    if ((input.positions[kv]?.length ?? 0) !== n) {
      throw new InvalidArgumentError(`positions[${kv}]`, `expected ${n} positions (one per key)`);
    }
    for (const [field, stats] of [
      ['attnSum', input.attnSum],
      ['attnSqSum', input.attnSqSum],
      ['attnCount', input.attnCount],
    ] as const) {
      if (stats !== undefined && (stats[kv]?.length ?? -1) !== n) {
        throw new InvalidArgumentError(`${field}[${kv}]`, `expected ${n} entries (one per key)`);
      }
    }
    tokens.push(n);
  }
  return tokens;
}

/**
 * The sequence length a score input implies: `sequenceLength`, or max cached position + 1.
 *
 * @example
 * ```ts
 * sequenceLengthOf({ ...input, sequenceLength: undefined }); // max position + 1
 * ```
 */
export function sequenceLengthOf(input: ScoreInput): number {
  if (input.sequenceLength !== undefined) return input.sequenceLength;
  let max = -1;
  for (const pos of input.positions) for (const p of pos) if (p > max) max = p;
  return max + 1;
}

/**
 * Base of all built-in policies: subclasses implement {@link BasePolicy.rawScore}; `score()` validates the
 * input and sets protected tokens to +Infinity.
 *
 * @example
 * ```ts
 * class NormPress extends BasePolicy {
 *   readonly name = 'norm';
 *   protected rawScore(input: ScoreInput): Float32Array[] { return input.keys.map((k) => new Float32Array(k.length / input.headDim)); }
 * }
 * ```
 */
export abstract class BasePolicy implements ScoringPolicy {
  abstract readonly name: string;
  abstract readonly requires: PolicyRequirements;
  readonly sinkTokens: number;
  readonly recentWindow: number;

  constructor(options: PolicyOptions = {}) {
    this.sinkTokens = nonNegativeInteger('sinks', options.sinks ?? DEFAULT_SINK_TOKENS);
    this.recentWindow = nonNegativeInteger('recent', options.recent ?? DEFAULT_RECENT_WINDOW);
  }

  /**
   * Trailing positions this policy protects, given how many observation-window queries are available
   * (snapkv widens it to its observation window). CPU and GPU scoring both ask here, so they agree.
   */
  protected protectedRecent(_windowRows: number): number {
    return this.recentWindow;
  }

  /** How the policy scores on the GPU; null when it cannot (scoreGpu then throws). */
  protected gpuPlan(): GpuScorePlan | null {
    return null;
  }

  /** Policy-specific scores, one array per KV head, before protection. Must not return NaN. */
  protected abstract rawScore(input: ScoreInput, tokens: readonly number[]): Float32Array[];

  score(input: ScoreInput): Float32Array[] {
    const tokens = checkScoreInput(input);
    const scores = this.rawScore(input, tokens);
    const windowRows = input.windowQueries ? Math.floor(input.windowQueries.length / (input.nHeads * input.headDim)) : 0;
    const recentStart = sequenceLengthOf(input) - this.protectedRecent(windowRows);
    for (let kv = 0; kv < input.kvHeads; kv++) {
      const s = scores[kv];
      const pos = input.positions[kv];
      if (!s || !pos || s.length !== tokens[kv]) {
        throw new InvalidArgumentError('scores', `${this.name} returned no or a wrongly sized array for KV head ${kv}`);
      }
      for (let t = 0; t < s.length; t++) {
        const p = pos[t] ?? 0;
        if (p < this.sinkTokens || p >= recentStart) s[t] = Infinity;
      }
    }
    return scores;
  }

  /**
   * Encodes this policy's GPU kernels for one (layer range, slot): raw scores, then the same protection as
   * {@link BasePolicy.score}.
   *
   * @throws InvalidArgumentError when the policy has no GPU plan or the input lacks what the plan reads.
   */
  scoreGpu(encoder: GPUCommandEncoder, input: ScoreGpuInput): void {
    const plan = this.gpuPlan();
    if (!plan) {
      throw new InvalidArgumentError('policy', `${this.name} has no GPU scorer; score it on the CPU with score()`);
    }
    const windowRows = input.window?.valid ?? 0;
    encodeGpuScores(encoder, input, plan, { sinks: this.sinkTokens, recent: this.protectedRecent(windowRows) });
  }
}
