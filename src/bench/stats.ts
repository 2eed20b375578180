import { InvalidArgumentError } from '../errors.js';

/**
 * How much the samples of one benchmark varied, in the samples' unit (milliseconds in a row).
 *
 * @example
 * ```ts
 * const { iqr, relativeIqr }: Spread = spread([1, 2, 3, 4, 100]); // iqr 2, relativeIqr 2 / 3
 * ```
 */
export interface Spread {
  readonly min: number;
  readonly max: number;
  /** First quartile (25th percentile, linear interpolation between order statistics). */
  readonly q1: number;
  /** Third quartile (75th percentile). */
  readonly q3: number;
  /** q3 − q1: robust to the one slow outlier a shared CI machine always produces. */
  readonly iqr: number;
  /** iqr / median (0 when the median is 0): comparable across rows of very different durations. */
  readonly relativeIqr: number;
}

function sortedCopy(values: readonly number[], what: string): number[] {
  if (values.length === 0) throw new InvalidArgumentError(what, 'needs at least one sample');
  for (const value of values) {
    if (!Number.isFinite(value)) throw new InvalidArgumentError(what, `samples must be finite; got ${value}`);
  }
  return [...values].sort((a, b) => a - b);
}

function quantileOfSorted(sorted: readonly number[], q: number): number {
  // Linear interpolation between closest ranks (R type 7, numpy's default), so 2 samples give their mean.
  const position = (sorted.length - 1) * q;
  const below = Math.floor(position);
  const above = Math.ceil(position);
  const low = sorted[below] ?? 0;
  const high = sorted[above] ?? low;
  return low + (high - low) * (position - below);
}

/**
 * The q-quantile (0 ≤ q ≤ 1) of the samples, interpolating linearly between order statistics.
 *
 * @example
 * ```ts
 * quantile([1, 2, 3, 4], 0.25); // 1.75
 * ```
 */
export function quantile(values: readonly number[], q: number): number {
  if (!(q >= 0 && q <= 1)) throw new InvalidArgumentError('q', `must be within [0, 1]; got ${q}`);
  return quantileOfSorted(sortedCopy(values, 'quantile'), q);
}

/**
 * The median: the middle sample, or the mean of the two middle ones.
 *
 * @example
 * ```ts
 * median([5, 1, 3]);    // 3
 * median([4, 1, 3, 2]); // 2.5
 * ```
 */
export function median(values: readonly number[]): number {
  return quantileOfSorted(sortedCopy(values, 'median'), 0.5);
}

/**
 * Min, max, quartiles and interquartile range of the samples.
 *
 * @example
 * ```ts
 * spread([1, 2, 3, 4, 100]); // { min: 1, max: 100, q1: 2, q3: 4, iqr: 2, relativeIqr: 2 / 3 }
 * ```
 */
export function spread(values: readonly number[]): Spread {
  const sorted = sortedCopy(values, 'spread');
  const q1 = quantileOfSorted(sorted, 0.25);
  const q3 = quantileOfSorted(sorted, 0.75);
  const mid = quantileOfSorted(sorted, 0.5);
  return {
    min: sorted[0] ?? 0,
    max: sorted[sorted.length - 1] ?? 0,
    q1,
    q3,
    iqr: q3 - q1,
    relativeIqr: mid === 0 ? 0 : (q3 - q1) / mid,
  };
}
