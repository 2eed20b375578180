import { InvalidArgumentError } from '../../errors.js';
import type { TokenScorePlan } from '../gpu-policies.js';
import { BasePolicy, type PolicyOptions, type ScoreInput } from '../policy.js';

/**
 * Cloudflare KV-Compress metric: the running sum of SQUARED attention weights (`attnSqSum`). Squaring favours
 * tokens that some query attended to sharply over tokens that received diffuse, uniform attention.
 *
 * @example
 * ```ts
 * const scores = new KvCompressPolicy().score({ ...input, attnSqSum });
 * ```
 */
export class KvCompressPolicy extends BasePolicy {
  readonly name = 'kvcompress';

  constructor(options: PolicyOptions = {}) {
    super(options);
  }

  override gpuPlan(): TokenScorePlan {
    return {
      kind: 'token',
      statistics: ['attnSqSum'],
      wgsl: 'fn token_score(token: ScoredToken) -> f32 { return token.attn_sq_sum; }',
    };
  }

  protected rawScore(input: ScoreInput, tokens: readonly number[]): Float32Array[] {
    const { attnSqSum } = input;
    if (!attnSqSum) throw new InvalidArgumentError('attnSqSum', 'kvcompress needs accumulated squared attention');
    return tokens.map((n, kv) => Float32Array.from((attnSqSum[kv] ?? new Float32Array(n)).subarray(0, n)));
  }
}
