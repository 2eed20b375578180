import { InvalidArgumentError } from '../../errors.js';
import type { WindowScorePlan } from '../gpu-policies.js';
import { BasePolicy, type PolicyOptions, type ScoreInput } from '../policy.js';
import { windowProbabilities } from './window.js';

/**
 * Options of {@link SnapKVPolicy}.
 *
 * @example
 * ```ts
 * createPolicy('snapkv', { window: 32, kernelSize: 7, pooling: 'max' });
 * ```
 */
export interface SnapKVOptions extends PolicyOptions {
  /** Observation window: how many of the last queries vote (default 32). Always protected. */
  readonly window?: number;
  /** 1-D pooling kernel over token order, odd (default 5; SnapKV uses 5 or 7). */
  readonly kernelSize?: number;
  /** Pooling: 'avg' (zero 'same' padding counted, as torch avg_pool1d; default) or 'max'. */
  readonly pooling?: 'avg' | 'max';
}

/**
 * Pools along the token axis with 'same' padding: out[t] = max or Σ/kernel over t−r..t+r (r = ⌊kernel/2⌋)
 * within range. Average divides by the full kernel (padding counts as zero) as kvpress's avg_pool1d does.
 *
 * @example
 * ```ts
 * pool1d(new Float32Array([0, 3, 0]), 3, 'max'); // [3, 3, 3]
 * ```
 */
export function pool1d(x: Float32Array, kernelSize: number, mode: 'avg' | 'max'): Float32Array {
  const r = Math.floor(kernelSize / 2);
  const out = new Float32Array(x.length);
  for (let t = 0; t < x.length; t++) {
    let acc = mode === 'max' ? -Infinity : 0;
    for (let u = Math.max(0, t - r); u <= Math.min(x.length - 1, t + r); u++) {
      const v = x[u] ?? 0;
      acc = mode === 'max' ? Math.max(acc, v) : acc + v;
    }
    out[t] = mode === 'max' ? acc : acc / kernelSize;
  }
  return out;
}

/**
 * SnapKV: the last `window` queries attend causally to all cached keys (softmax per query and query head);
 * score = mean probability over the window and the group's query heads, smoothed by 1-D pooling so that
 * neighbours of important tokens survive too. The observation window itself is always kept.
 *
 * @example
 * ```ts
 * const scores = new SnapKVPolicy({ window: 16, kernelSize: 7, pooling: 'max' }).score(input);
 * ```
 */
export class SnapKVPolicy extends BasePolicy {
  readonly name = 'snapkv';
  readonly window: number;
  readonly kernelSize: number;
  readonly pooling: 'avg' | 'max';

  constructor(options: SnapKVOptions = {}) {
    super(options);
    this.window = options.window ?? 32;
    this.kernelSize = options.kernelSize ?? 5;
    this.pooling = options.pooling ?? 'avg';
    if (!Number.isInteger(this.window) || this.window <= 0) {
      throw new InvalidArgumentError('window', `must be a positive integer; got ${this.window}`);
    }
    if (!Number.isInteger(this.kernelSize) || this.kernelSize <= 0 || this.kernelSize % 2 === 0) {
      throw new InvalidArgumentError('kernelSize', `must be a positive odd integer (5 or 7); got ${this.kernelSize}`);
    }
    if (this.pooling !== 'avg' && this.pooling !== 'max') {
      throw new InvalidArgumentError('pooling', `must be 'avg' or 'max'; got ${String(this.pooling)}`);
    }
  }

  protected override protectedRecent(windowRows: number): number {
    return Math.max(this.recent, Math.min(this.window, windowRows));
  }

  override gpuPlan(): WindowScorePlan {
    return { kind: 'window', window: this.window, kernelSize: this.kernelSize, pooling: this.pooling };
  }

  protected rawScore(input: ScoreInput, tokens: readonly number[]): Float32Array[] {
    const { probs, w } = windowProbabilities(input, this.window, this.name);
    const group = input.nHeads / input.kvHeads;
    return tokens.map((n, kv) => {
      const p = probs[kv] ?? new Float32Array(0);
      const mean = new Float32Array(n);
      for (let t = 0; t < n; t++) {
        let s = 0;
        for (let j = 0; j < w; j++) s += p[j * n + t] ?? 0;
        mean[t] = s / (w * group);
      }
      return pool1d(mean, this.kernelSize, this.pooling);
    });
  }
}
