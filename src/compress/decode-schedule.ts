/**
 * The one decode-time compression schedule of kvcompact: what to compress to, when, and with which protected
 * tokens. {@link DecodeCompressor} (src/compress/decode-compression.ts) runs it on a cache; `evaluate` and
 * `Generator` both drive their caches through a DecodeCompressor built from {@link decodeSchedule}, so the three
 * can never disagree.
 *
 * The rule, for a budget of B average tokens per KV head and a block size b:
 * - slack S = max(1, min(b, ⌊B/4⌋)): compress down to the target T = B − S, so compression runs once per S
 *   appended tokens (once per block for B ≥ 4b) and never lets the cache hold more than B.
 * - trigger (`on-exceed`): before a step that would take any head (`uniform`) or the sequence's total (the
 *   adaptive modes) past B. The step's tokens must fit: with n tokens in the step, the target is B − max(S, n).
 * - sinks = min(4, ⌊B/4⌋) and a recent window R = max(0, min(32, ⌊B/4⌋, T − sinks)), both kept whatever the
 *   policy scores: the policy chooses most of what is kept (protected tokens are at most half the budget), and
 *   sinks + R ≤ T always (a protected set larger than the target would make top-k drop the NEWEST tokens). When
 *   a multi-token step shrinks the target below sinks + R, the protected windows are clamped newest-first
 *   (recent before sinks).
 * - SnapKV/TOVA observation window = max(1, R) queries (SnapKV protects its whole window).
 * - bits < 16: every block older than the recent window is quantized (KIVI residual R; R = 32 without a budget),
 *   by every evicting compression and by a quantize-only compression (policy `streaming`, nothing evicted) once b
 *   tokens have been appended since the last compression.
 * - no budget (B = null): never evicts; only the quantize-only compressions above run.
 * - merge 'slots': the M = mergeSlots slot tokens are part of T, so the protected windows fit in T − M (the
 *   default R shrinks by M) and M < T.
 *
 * These are the defaults of `evaluate` (the figures in README.md and docs/eval-results.md); before this module
 * the Generator used R = min(32, ⌊B/2⌋), no observation window of its own and no quantize-only compressions, and
 * DecodeCompressor a slack of one block: both now follow the rule above. Explicit `slack`, `sinks`, `recent` and
 * `window` override the defaults; sinks + recent must then still fit in T.
 */
import { InvalidArgumentError } from '../errors.js';
import { type CompressOptions, DEFAULT_MERGE_SLOTS } from './options.js';
import { DEFAULT_RECENT, DEFAULT_SINKS } from './policy.js';

/**
 * When to compress: `on-exceed` before a step that would go past the budget (down to budget − slack); `every`
 * every `every` steps, down to the budget, if the cache holds more than it.
 *
 * @example
 * ```ts
 * const mode: DecodeMode = 'on-exceed';
 * ```
 */
export type DecodeMode = 'on-exceed' | 'every';

/**
 * What every compression of a schedule carries: policy, budget mode (`budgetMode`), bits and the policies' own
 * settings. Budget, sinks, recent and window are the schedule's to decide.
 *
 * @example
 * ```ts
 * const compress: DecodeCompressOptions = { policy: 'snapkv', budgetMode: 'adakv', bits: 4 };
 * ```
 */
export type DecodeCompressOptions = Omit<CompressOptions, 'budget' | 'ratio' | 'sinks' | 'recent' | 'window'>;

/**
 * Inputs of {@link decodeSchedule}; a resolved {@link DecodeSchedule} is one too, and resolves to itself.
 *
 * @example
 * ```ts
 * const options: DecodeScheduleOptions = { budget: 64, blockSize: 16, compress: { policy: 'h2o', bits: 4 } };
 * ```
 */
export interface DecodeScheduleOptions {
  /** Average tokens per KV head the cache may hold (an integer ≥ 2); null never evicts. */
  readonly budget: number | null;
  /** Tokens per block of the cache. */
  readonly blockSize: number;
  /** Default 'on-exceed'. */
  readonly mode?: DecodeMode;
  /** `every`: steps between compressions (default 16; null too). */
  readonly every?: number | null;
  /** `on-exceed`: compress this far below the budget (default max(1, min(blockSize, ⌊budget/4⌋)); null too). */
  readonly slack?: number | null;
  /** Attention sinks always kept (default min(4, ⌊budget/4⌋); 4 without a budget). */
  readonly sinks?: number;
  /** Recent tokens always kept at full precision (default max(0, min(32, ⌊budget/4⌋, target − sinks)); 32 without a budget). */
  readonly recent?: number;
  /** SnapKV/TOVA observation window (default max(1, recent)). */
  readonly window?: number;
  readonly compress?: DecodeCompressOptions;
}

/**
 * A resolved schedule: every number {@link nextCompression} uses.
 *
 * @example
 * ```ts
 * const { target, sinks, recent, window } = decodeSchedule({ budget: 64, blockSize: 16 }); // 48, 4, 16, 16
 * ```
 */
export interface DecodeSchedule {
  readonly mode: DecodeMode;
  /** Average tokens per KV head the cache may hold; null: never evicts. */
  readonly budget: number | null;
  readonly blockSize: number;
  /** Tokens per head a one-token step compresses to: budget − slack (`on-exceed`), the budget (`every`). */
  readonly target: number | null;
  /** `on-exceed`: budget − target; null otherwise. */
  readonly slack: number | null;
  /** `every`: steps between compressions; null otherwise. */
  readonly every: number | null;
  readonly sinks: number;
  readonly recent: number;
  readonly window: number;
  /** Tokens appended since the last compression that trigger a quantize-only one (bits < 16); null: never. */
  readonly quantizeEvery: number | null;
  readonly compress: DecodeCompressOptions;
}

/**
 * The state of a sequence a schedule looks at before a step.
 *
 * @example
 * ```ts
 * const state: DecodeState = { heads: 20, total: 960, largest: 48, sinceCompress: 0, step: 1 };
 * ```
 */
export interface DecodeState {
  /** KV heads of the sequence, over all layers. */
  readonly heads: number;
  /** Tokens held, summed over heads. */
  readonly total: number;
  /** Tokens the fullest head holds. */
  readonly largest: number;
  /** Tokens appended since the last compression (or since the sequence began). */
  readonly sinceCompress: number;
  /** Steps so far, this one included (1 on the first). */
  readonly step: number;
}

function integerAtLeast(field: string, value: number, min: number): number {
  if (!Number.isInteger(value) || value < min) throw new InvalidArgumentError(field, `must be an integer ≥ ${min}; got ${value}`);
  return value;
}

/**
 * Resolves a schedule (see the module doc for the rule) and validates it: typed errors before anything runs.
 *
 * @throws InvalidArgumentError for a budget below 2, a slack outside [1, budget), or sinks and recent that do
 *   not fit in the target.
 * @example
 * ```ts
 * decodeSchedule({ budget: 32, blockSize: 16 }); // target 24 (slack 8), sinks 4, recent 8, window 8
 * decodeSchedule({ budget: 8, blockSize: 16 });  // target 6 (slack 2), sinks 2, recent 2, window 2
 * ```
 */
export function decodeSchedule(options: DecodeScheduleOptions): DecodeSchedule {
  const blockSize = integerAtLeast('blockSize', options.blockSize, 1);
  const mode = options.mode ?? 'on-exceed';
  if (mode !== 'on-exceed' && mode !== 'every') {
    throw new InvalidArgumentError('mode', `must be 'on-exceed' or 'every'; got ${String(mode)}`);
  }
  const compress = options.compress ?? {};
  const bits = compress.bits ?? 16;
  const quantizeEvery = bits < 16 ? blockSize : null;
  const every = mode === 'every' ? integerAtLeast('every', options.every ?? 16, 1) : null;
  const budget = options.budget;
  if (budget === null) {
    const sinks = integerAtLeast('sinks', options.sinks ?? DEFAULT_SINKS, 0);
    const recent = integerAtLeast('recent', options.recent ?? DEFAULT_RECENT, 0);
    const window = integerAtLeast('window', options.window ?? Math.max(1, recent), 1);
    return { mode, budget, blockSize, target: null, slack: null, every, sinks, recent, window, quantizeEvery, compress };
  }
  integerAtLeast('budget', budget, 2);
  const quarter = Math.floor(budget / 4);
  let slack: number | null = null;
  let target = budget;
  if (mode === 'on-exceed') {
    slack = options.slack ?? Math.max(1, Math.min(blockSize, quarter));
    if (!Number.isInteger(slack) || slack < 1 || slack >= budget) {
      throw new InvalidArgumentError('slack', `must be an integer in [1, budget ${budget}); got ${slack}`);
    }
    target = budget - slack;
  }
  // Merge slots are tokens of the target: what the policy and the protected windows share is what they leave.
  const slots = compress.merge === 'slots' ? (compress.mergeSlots ?? DEFAULT_MERGE_SLOTS) : 0;
  if (slots >= target) {
    throw new InvalidArgumentError('mergeSlots', `${slots} merge slots leave no room in the ${target} tokens per head a budget of ${budget} compresses to; use fewer slots or a larger budget`);
  }
  const room = target - slots;
  const sinks = integerAtLeast('sinks', options.sinks ?? Math.min(DEFAULT_SINKS, quarter), 0);
  if (sinks >= room) {
    throw new InvalidArgumentError(
      'sinks',
      `${sinks} sinks leave no room for the policy in the ${room} tokens per head a budget of ${budget} compresses to${slots > 0 ? ` (after ${slots} merge slots)` : ''}; use fewer sinks or a larger budget`,
    );
  }
  const recent = integerAtLeast('recent', options.recent ?? Math.max(0, Math.min(DEFAULT_RECENT, quarter, room - sinks)), 0);
  if (sinks + recent > room) {
    throw new InvalidArgumentError(
      'recent',
      `${sinks} sinks + ${recent} recent tokens do not fit in the ${room} tokens per head a budget of ${budget} compresses to${slots > 0 ? ` (after ${slots} merge slots)` : ''}; lower them or raise the budget`,
    );
  }
  const window = integerAtLeast('window', options.window ?? Math.max(1, recent), 1);
  return { mode, budget, blockSize, target, slack, every, sinks, recent, window, quantizeEvery, compress };
}

/**
 * Whether appending `numTokens` more tokens would take the sequence past `budget`: per head for `uniform`, the
 * total otherwise (adaptive modes move tokens between heads; only the total is bounded).
 */
function exceeds(schedule: DecodeSchedule, state: DecodeState, numTokens: number, budget: number): boolean {
  if ((schedule.compress.budgetMode ?? 'uniform') === 'uniform') return state.largest + numTokens > budget;
  return state.total + state.heads * numTokens > state.heads * budget;
}

/**
 * The compression to run before a step of `numTokens` tokens, or null: the whole decision of the schedule (see
 * the module doc). Pure; {@link DecodeCompressor} feeds it the cache's counts and runs what it returns.
 *
 * @throws InvalidArgumentError when the step's tokens cannot fit the budget even after compressing.
 * @example
 * ```ts
 * const schedule = decodeSchedule({ budget: 64, blockSize: 16, compress: { policy: 'h2o' } });
 * nextCompression(schedule, { heads: 20, total: 1280, largest: 64, sinceCompress: 16, step: 65 }, 1);
 * // { policy: 'h2o', budget: 48, sinks: 4, recent: 16, window: 16 }
 * ```
 */
export function nextCompression(schedule: DecodeSchedule, state: DecodeState, numTokens: number): CompressOptions | null {
  const { budget, sinks, recent, window, compress } = schedule;
  if (budget !== null && schedule.mode === 'on-exceed' && exceeds(schedule, state, numTokens, budget)) {
    const target = budget - Math.max(schedule.slack ?? 1, numTokens);
    if (target < 1) {
      throw new InvalidArgumentError('numTokens', `${numTokens} new tokens do not fit a budget of ${budget} per head`);
    }
    if (sinks + recent <= target) return { ...compress, budget: target, sinks, recent, window };
    // A step longer than the slack: keep the newest tokens first, then what is left of the sinks.
    const clampedRecent = Math.min(recent, target);
    return {
      ...compress,
      budget: target,
      sinks: Math.min(sinks, target - clampedRecent),
      recent: clampedRecent,
      window: Math.min(window, Math.max(1, clampedRecent)),
    };
  }
  if (budget !== null && schedule.every !== null && state.step % schedule.every === 0 && exceeds(schedule, state, 0, budget)) {
    return { ...compress, budget, sinks, recent, window };
  }
  if (schedule.quantizeEvery !== null && state.sinceCompress >= schedule.quantizeEvery) {
    // Nothing is evicted (no budget), so the cheapest policy: streaming scores nothing.
    return { ...compress, policy: 'streaming', sinks, recent };
  }
  return null;
}
