/**
 * Scoring policies, kvpress style: a policy's only job is to score every cached token of every KV head of one
 * layer (higher = keep). Budget allocation (`budgets.ts`) and selection (`select.ts`) are shared by all.
 *
 * The base class adds protection on top of a policy's raw score: attention sinks (the first `sinks` positions
 * of the sequence) and the recent window (the last `recent` positions) score +Infinity, so every budget mode
 * keeps them whenever it can.
 *
 * A policy is one file plus one `registerPolicy` line: its CPU score (`rawScore`, the reference) and its GPU
 * scoring plan (`gpuPlan()`, data: a WGSL per-token score with the statistics it reads, or observation-window
 * parameters). What it needs from the cache (`requires`) follows from the plan, never from its name.
 */
import { InvalidArgumentError } from '../errors.js';
import { encodeGpuScores, type GpuScorePlan, type ScoreGpuInput } from './gpu-policies.js';

/**
 * What a policy needs beyond the cached keys and positions: the observation-window queries (`windowQueries` on
 * the CPU, `window` on the GPU) and/or the accumulated attention statistics (`attnSum`, `attnSqSum`,
 * `attnCount`). A compressor uses it to choose its inputs (and the attention mass it measures).
 *
 * @example
 * ```ts
 * if (createPolicy('snapkv').requires.window && windowValid === 0) throw new InvalidArgumentError('window', '...');
 * ```
 */
export interface PolicyRequirements {
  readonly window: boolean;
  readonly statistics: boolean;
}

/**
 * The requirements a GPU plan implies: window plans read the observation window, token plans the statistics
 * they declare (if any).
 *
 * @example
 * ```ts
 * planRequirements({ kind: 'window', window: 32, kernelSize: 5, pooling: 'avg' }); // { window: true, statistics: false }
 * ```
 */
export function planRequirements(plan: GpuScorePlan): PolicyRequirements {
  return plan.kind === 'window'
    ? { window: true, statistics: false }
    : { window: false, statistics: plan.statistics.length > 0 };
}

/**
 * What a policy may look at, for ONE layer. Per-KV-head arrays may differ in length (per-head eviction).
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
   * needed by policies whose `requires.window` is set.
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
 * const policy: ScoringPolicy = createPolicy('h2o', { recent: 16 });
 * const scores = policy.score(input); // scores[kv][t]; +Infinity = protected
 * ```
 */
export interface ScoringPolicy {
  readonly name: string;
  /** What the policy reads besides keys and positions, on the CPU and on the GPU alike. */
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
  /**
   * The most trailing positions protected in all (default: no limit). Window policies protect their observation
   * window too; the compressor caps the protection at what a head may keep, so with a small budget the newest
   * tokens are kept rather than an older slice of the window.
   */
  readonly recentLimit?: number;
}

/**
 * Default number of attention-sink tokens.
 *
 * @example
 * ```ts
 * new H2OPolicy().sinks === DEFAULT_SINKS; // true
 * ```
 */
export const DEFAULT_SINKS = 4;
/**
 * Default protected recent window.
 *
 * @example
 * ```ts
 * new H2OPolicy().recent === DEFAULT_RECENT; // true
 * ```
 */
export const DEFAULT_RECENT = 32;

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
 * Base of all built-in policies: subclasses implement {@link BasePolicy.rawScore} (the CPU reference) and
 * {@link BasePolicy.gpuPlan} (the same score on the GPU, as data); `score()` and `scoreGpu()` validate the input
 * and set protected tokens to +Infinity.
 *
 * @example
 * ```ts
 * // Key-peak press: keep tokens with one large key channel. One file, plus registerPolicy('kpeak', (o) => new KeyPeak(o)).
 * class KeyPeak extends BasePolicy {
 *   readonly name = 'kpeak';
 *   override gpuPlan(): TokenScorePlan {
 *     const wgsl = `fn token_score(token: ScoredToken) -> f32 {
 *       var peak = 0.0;
 *       for (var d = 0u; d < HEAD_DIM; d++) { peak = max(peak, abs(token_key(token, d))); }
 *       return peak;
 *     }`;
 *     return { kind: 'token', statistics: [], wgsl };
 *   }
 *   protected rawScore(input: ScoreInput, tokens: readonly number[]): Float32Array[] {
 *     const d = input.headDim;
 *     return tokens.map((n, kv) =>
 *       Float32Array.from({ length: n }, (_, t) => Math.max(...(input.keys[kv] ?? []).slice(t * d, (t + 1) * d).map(Math.abs))),
 *     );
 *   }
 * }
 * ```
 */
export abstract class BasePolicy implements ScoringPolicy {
  abstract readonly name: string;
  readonly sinks: number;
  readonly recent: number;
  readonly recentLimit: number;

  constructor(options: PolicyOptions = {}) {
    this.sinks = nonNegativeInteger('sinks', options.sinks ?? DEFAULT_SINKS);
    this.recent = nonNegativeInteger('recent', options.recent ?? DEFAULT_RECENT);
    this.recentLimit = options.recentLimit ?? Number.POSITIVE_INFINITY;
    if (!(this.recentLimit >= 0)) throw new InvalidArgumentError('recentLimit', `must be ≥ 0; got ${this.recentLimit}`);
  }

  /**
   * Derived from {@link BasePolicy.gpuPlan}. A CPU-only policy (no plan) that reads the window or the statistics
   * overrides this.
   */
  get requires(): PolicyRequirements {
    const plan = this.gpuPlan();
    return plan ? planRequirements(plan) : { window: false, statistics: false };
  }

  /**
   * Trailing positions this policy protects, given how many observation-window queries are available
   * (snapkv widens it to its observation window). CPU and GPU scoring both ask here, so they agree.
   */
  protected protectedRecent(_windowRows: number): number {
    return this.recent;
  }

  /** The trailing positions protected: the policy's own rule, capped by `recentLimit`. */
  private recentProtected(windowRows: number): number {
    return Math.min(this.protectedRecent(windowRows), this.recentLimit);
  }

  /** How the policy scores on the GPU, as data; null when it cannot (scoreGpu then throws). */
  gpuPlan(): GpuScorePlan | null {
    return null;
  }

  /** Policy-specific scores, one array per KV head, before protection. Must not return NaN. */
  protected abstract rawScore(input: ScoreInput, tokens: readonly number[]): Float32Array[];

  score(input: ScoreInput): Float32Array[] {
    const tokens = checkScoreInput(input);
    const scores = this.rawScore(input, tokens);
    const windowRows = input.windowQueries ? Math.floor(input.windowQueries.length / (input.nHeads * input.headDim)) : 0;
    const recentStart = sequenceLengthOf(input) - this.recentProtected(windowRows);
    for (let kv = 0; kv < input.kvHeads; kv++) {
      const s = scores[kv];
      const pos = input.positions[kv];
      if (!s || !pos || s.length !== tokens[kv]) {
        throw new InvalidArgumentError('scores', `${this.name} returned no or a wrongly sized array for KV head ${kv}`);
      }
      for (let t = 0; t < s.length; t++) {
        const p = pos[t] ?? 0;
        if (p < this.sinks || p >= recentStart) s[t] = Infinity;
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
    encodeGpuScores(encoder, input, plan, { sinks: this.sinks, recent: this.recentProtected(windowRows) }, this.name);
  }
}
