import { InvalidArgumentError } from '../../errors.js';
import type { TokenScorePlan } from '../gpu-policies.js';
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

  constructor(options: PolicyOptions = {}) {
    super(options);
  }

  override gpuPlan(): TokenScorePlan {
    return {
      kind: 'token',
      statistics: ['attnSum', 'attnCount'],
      wgsl: `fn token_score(token: ScoredToken) -> f32 {
  return select(0.0, token.attn_sum / token.attn_count, token.attn_count > 0.0);
}`,
    };
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
