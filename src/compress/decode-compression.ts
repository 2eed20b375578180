import { InvalidArgumentError } from '../errors.js';
import type { CompressOptions, CompressionReport } from './options.js';

/**
 * The cache operations decode-time compression needs (PagedKvCache and CpuKvCache both have them).
 *
 * @example
 * ```ts
 * const target: CompressibleCache = cache; // a PagedKvCache or a CpuKvCache
 * const decode = new DecodeCompressor(target, { mode: 'on-exceed', budget: 64 });
 * ```
 */
export interface CompressibleCache {
  readonly shape: { readonly layers: number; readonly kvHeads: number; readonly blockSize: number };
  tokenCount(seqId: number, layer: number, kvHead: number): number;
  compress(seqId: number, options: CompressOptions): Promise<CompressionReport> | CompressionReport;
}

/**
 * When to compress while decoding. `on-exceed`: before a step that would take any head (uniform) or the sequence's
 * total (adakv, pyramid, global) past the budget, compress down to `budget − slack`, so the cache never holds more
 * than the budget and compression runs once per `slack` tokens. `every`: every `every` steps, down to the budget.
 *
 * @example
 * ```ts
 * const schedule: DecodeSchedule = { mode: 'on-exceed', budget: 64, slack: 16, compress: { policy: 'snapkv', budgets: 'adakv', bits: 4 } };
 * ```
 */
export interface DecodeSchedule {
  readonly mode: 'on-exceed' | 'every';
  /** Average tokens per KV head the cache may hold. */
  readonly budget: number;
  /** on-exceed: how far below the budget to compress (default the block size, so whole blocks come free). */
  readonly slack?: number;
  /** every: steps between compressions (default 16). */
  readonly every?: number;
  /** Policy, budget mode, bits and the rest; `budget`/`ratio` here are ignored. */
  readonly compress?: Omit<CompressOptions, 'budget' | 'ratio'>;
}

/**
 * Drives compression at decode time on an append-only paged cache (kvpress only compresses after prefill; users
 * ask for this). Call {@link beforeStep} before appending each step's tokens.
 *
 * @example
 * ```ts
 * const decode = new DecodeCompressor(cache, { mode: 'on-exceed', budget: 64 });
 * for (const token of tokens) {
 *   await decode.beforeStep(seq, 1);
 *   logits = await model.forward(seq, [token]);
 * }
 * ```
 */
export class DecodeCompressor {
  private steps = 0;
  /** Every compression this driver ran, in order. */
  readonly reports: CompressionReport[] = [];

  constructor(
    readonly cache: CompressibleCache,
    readonly schedule: DecodeSchedule,
  ) {
    if (!Number.isFinite(schedule.budget) || schedule.budget < 1) {
      throw new InvalidArgumentError('budget', `must be at least 1 token per head; got ${schedule.budget}`);
    }
    if (schedule.every !== undefined && (!Number.isInteger(schedule.every) || schedule.every < 1)) {
      throw new InvalidArgumentError('every', `must be a positive integer; got ${schedule.every}`);
    }
    if (schedule.slack !== undefined && (!Number.isInteger(schedule.slack) || schedule.slack < 0)) {
      throw new InvalidArgumentError('slack', `must be a non-negative integer; got ${schedule.slack}`);
    }
  }

  /** Compresses if the schedule says so before `numTokens` more tokens are appended; returns the report or null. */
  async beforeStep(seqId: number, numTokens: number): Promise<CompressionReport | null> {
    this.steps++;
    const { budget } = this.schedule;
    const options = this.schedule.compress ?? {};
    if (this.schedule.mode === 'every') {
      if (this.steps % (this.schedule.every ?? 16) !== 0 || !this.exceeds(seqId, 0, budget)) return null;
      return this.run(seqId, { ...options, budget });
    }
    if (!this.exceeds(seqId, numTokens, budget)) return null;
    const slack = this.schedule.slack ?? this.cache.shape.blockSize;
    // Leave room for this step's tokens, and for `slack` more steps before the next compression.
    const target = Math.max(1, budget - Math.max(slack, numTokens));
    if (numTokens > budget) {
      throw new InvalidArgumentError('numTokens', `${numTokens} new tokens do not fit a budget of ${budget} per head`);
    }
    return this.run(seqId, { ...options, budget: target });
  }

  private async run(seqId: number, options: CompressOptions): Promise<CompressionReport> {
    const report = await this.cache.compress(seqId, options);
    this.reports.push(report);
    return report;
  }

  /** Whether appending `extra` tokens would take the cache past `budget` by the schedule's rule. */
  private exceeds(seqId: number, extra: number, budget: number): boolean {
    const { layers, kvHeads } = this.cache.shape;
    const uniform = (this.schedule.compress?.budgets ?? 'uniform') === 'uniform';
    let total = 0;
    let largest = 0;
    for (let layer = 0; layer < layers; layer++) {
      for (let head = 0; head < kvHeads; head++) {
        const count = this.cache.tokenCount(seqId, layer, head) + extra;
        total += count;
        largest = Math.max(largest, count);
      }
    }
    return uniform ? largest > budget : total > layers * kvHeads * budget;
  }
}
