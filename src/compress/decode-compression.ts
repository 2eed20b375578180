import { InvalidArgumentError } from '../errors.js';
import { decodeSchedule, nextCompression, type DecodeSchedule, type DecodeScheduleOptions, type DecodeState } from './decode-schedule.js';
import type { CompressOptions, CompressionReport } from './options.js';

/**
 * The cache operations decode-time compression needs (PagedKvCache and CpuKvCache both have them).
 *
 * @example
 * ```ts
 * const target: CompressibleCache = cache; // a PagedKvCache or a CpuKvCache
 * const decode = new DecodeCompressor(target, { budget: 64 });
 * ```
 */
export interface CompressibleCache {
  readonly shape: { readonly layers: number; readonly kvHeads: number; readonly blockSize: number };
  tokenCount(seqId: number, layer: number, kvHead: number): number;
  compress(seqId: number, options: CompressOptions): Promise<CompressionReport> | CompressionReport;
}

/**
 * Options of a {@link DecodeCompressor}: a {@link DecodeScheduleOptions} whose block size defaults to the cache's.
 *
 * @example
 * ```ts
 * const options: DecodeCompressorOptions = { budget: 64, compress: { policy: 'snapkv', budgetMode: 'adakv', bits: 4 } };
 * ```
 */
export type DecodeCompressorOptions = Omit<DecodeScheduleOptions, 'blockSize'> & {
  readonly blockSize?: number;
  /** Counters of an earlier driver of the same sequence ({@link DecodeCompressor.counters}): resume its schedule. */
  readonly resume?: DecodeCounters;
};

/**
 * Where a {@link DecodeCompressor} is in its schedule: steps taken and tokens appended since the last compression.
 * Saved beside a sequence snapshot, they let a restored sequence compress exactly where the original would have.
 *
 * @example
 * ```ts
 * const saved = decode.counters();                                        // { steps: 40, sinceCompress: 7 }
 * const resumed = new DecodeCompressor(other, { budget: 64, resume: saved });
 * ```
 */
export interface DecodeCounters {
  readonly steps: number;
  readonly sinceCompress: number;
}

/**
 * Runs the decode-time schedule (src/compress/decode-schedule.ts, where the rule is written) on one append-only
 * cache: kvpress only compresses after prefill; users ask for this. Call {@link beforeStep} before appending
 * each step's tokens; use one DecodeCompressor per sequence, from its first token.
 *
 * @example
 * ```ts
 * const decode = new DecodeCompressor(cache, { budget: 64, compress: { policy: 'h2o', bits: 4 } });
 * for (const token of tokens) {
 *   await decode.beforeStep(seq, 1);
 *   logits = await model.forward(seq, [token]);
 * }
 * ```
 */
export class DecodeCompressor {
  /** The resolved schedule: what this driver compresses to, when, and what it protects. */
  readonly schedule: DecodeSchedule;
  /** Every compression this driver ran, in order. */
  readonly reports: CompressionReport[] = [];
  private steps = 0;
  private sinceCompress = 0;

  /** @throws InvalidArgumentError for a schedule {@link decodeSchedule} rejects. */
  constructor(
    readonly cache: CompressibleCache,
    options: DecodeCompressorOptions,
  ) {
    const { resume, ...schedule } = options;
    this.schedule = decodeSchedule({ ...schedule, blockSize: options.blockSize ?? cache.shape.blockSize });
    if (resume !== undefined) this.resume(resume);
  }

  /** The schedule's counters now (copy). */
  counters(): DecodeCounters {
    return { steps: this.steps, sinceCompress: this.sinceCompress };
  }

  /**
   * Continues from saved counters (of a driver whose sequence was snapshotted): the next {@link beforeStep} decides as
   * the saved driver's next one would have. InvalidArgumentError for counts that are not non-negative integers.
   */
  resume(counters: DecodeCounters): void {
    for (const key of ['steps', 'sinceCompress'] as const) {
      const value = counters[key];
      if (!Number.isSafeInteger(value) || value < 0) throw new InvalidArgumentError(`resume.${key}`, `must be a non-negative integer; got ${value}`);
    }
    this.steps = counters.steps;
    this.sinceCompress = counters.sinceCompress;
  }

  /** Compresses if the schedule says so before `numTokens` more tokens are appended; returns the report or null. */
  async beforeStep(seqId: number, numTokens: number): Promise<CompressionReport | null> {
    if (!Number.isInteger(numTokens) || numTokens < 1) {
      throw new InvalidArgumentError('numTokens', `must be a positive integer; got ${numTokens}`);
    }
    this.steps++;
    const options = nextCompression(this.schedule, this.state(seqId), numTokens);
    let report: CompressionReport | null = null;
    if (options !== null) {
      report = await this.cache.compress(seqId, options);
      this.reports.push(report);
      this.sinceCompress = 0;
    }
    this.sinceCompress += numTokens;
    return report;
  }

  /**
   * Compresses to the schedule's target now, whatever the counts (an explicit `compress` segment of a context
   * stream: cache-augmented generation compresses the knowledge before any question). The next compression then
   * comes where it would after any other: the cadence restarts here. Null when the schedule has no budget (there
   * is nothing to compress to).
   */
  async compressNow(seqId: number): Promise<CompressionReport | null> {
    const { budget, target, sinks, recent, window, compress } = this.schedule;
    if (budget === null) return null;
    const report = await this.cache.compress(seqId, { ...compress, budget: target ?? budget, sinks, recent, window });
    this.reports.push(report);
    this.sinceCompress = 0;
    return report;
  }

  /**
   * How many one-token steps after the current one (the step {@link beforeStep} was last called for, whose token
   * is not appended yet) would compress nothing, up to `max`: a speculative decoder verifies at most that many
   * drafts in one pass, so compression never runs in the middle of a verification and runs exactly where
   * one-token decoding runs it. Pure: count the steps taken with {@link advance}.
   */
  quietSteps(seqId: number, max: number): number {
    if (!Number.isInteger(max) || max < 0) throw new InvalidArgumentError('max', `must be a non-negative integer; got ${max}`);
    const now = this.state(seqId);
    for (let j = 1; j <= max; j++) {
      const state: DecodeState = {
        heads: now.heads,
        total: now.total + now.heads * j,
        largest: now.largest + j,
        sinceCompress: this.sinceCompress + j - 1,
        step: this.steps + j,
      };
      if (nextCompression(this.schedule, state, 1) !== null) return j - 1;
    }
    return max;
  }

  /** Counts `numTokens` one-token steps taken without {@link beforeStep} because {@link quietSteps} said they compress nothing. */
  advance(numTokens: number): void {
    if (!Number.isInteger(numTokens) || numTokens < 0) {
      throw new InvalidArgumentError('numTokens', `must be a non-negative integer; got ${numTokens}`);
    }
    this.steps += numTokens;
    this.sinceCompress += numTokens;
  }

  /**
   * Counts tokens appended without {@link beforeStep}: a prompt prefilled in one chunk, which may go past the
   * budget (the next beforeStep then compresses it). They count toward the quantize-only cadence.
   */
  prefilled(numTokens: number): void {
    if (!Number.isInteger(numTokens) || numTokens < 0) {
      throw new InvalidArgumentError('numTokens', `must be a non-negative integer; got ${numTokens}`);
    }
    this.sinceCompress += numTokens;
  }

  private state(seqId: number): DecodeState {
    const { layers, kvHeads } = this.cache.shape;
    let total = 0;
    let largest = 0;
    for (let layer = 0; layer < layers; layer++) {
      for (let head = 0; head < kvHeads; head++) {
        const count = this.cache.tokenCount(seqId, layer, head);
        total += count;
        largest = Math.max(largest, count);
      }
    }
    return { heads: layers * kvHeads, total, largest, sinceCompress: this.sinceCompress, step: this.steps };
  }
}
