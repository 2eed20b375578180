import { InvalidArgumentError } from '../../errors.js';
import type { GpuScorePlan } from '../gpu-policies.js';
import { BasePolicy, type PolicyOptions, type ScoreInput } from '../policy.js';

/**
 * H2O (heavy hitters): score = attnSum / attnCount, the mean attention a token received from the queries that
 * could see it. Dividing by the count keeps old tokens from winning merely by having been visible longer.
 * A token no query has seen yet scores 0 (it is in the protected recent window in practice).
 *
 * @example
 * ```ts
 * const scores = new H2OPolicy().score({ ...input, attnSum, attnCount });
 * ```
 */
export class H2OPolicy extends BasePolicy {
  readonly name = 'h2o';
  readonly requires = { window: false, statistics: true };

  constructor(options: PolicyOptions = {}) {
    super(options);
  }

  protected override gpuPlan(): GpuScorePlan {
    return { kind: 'stats', policy: 'h2o' };
  }

  protected rawScore(input: ScoreInput, tokens: readonly number[]): Float32Array[] {
    const { attnSum, attnCount } = input;
    if (!attnSum || !attnCount) {
      throw new InvalidArgumentError('attnSum', 'h2o needs accumulated attention (attnSum and attnCount)');
    }
    return tokens.map((n, kv) => {
      const sum = attnSum[kv] ?? new Float32Array(n);
      const count = attnCount[kv] ?? new Float32Array(n);
      return Float32Array.from({ length: n }, (_, t) => {
        const c = count[t] ?? 0;
        return c > 0 ? (sum[t] ?? 0) / c : 0;
      });
    });
  }
}
