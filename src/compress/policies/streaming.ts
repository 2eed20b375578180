import { BasePolicy, type PolicyOptions, type ScoreInput } from '../policy.js';
import type { TokenScorePlan } from '../gpu-policies.js';

/**
 * StreamingLLM: keep the attention sinks and the most recent tokens. Score = position, so under any budget the
 * newest tokens win; the base class already protects the sinks.
 *
 * @example
 * ```ts
 * const scores = new StreamingPolicy({ sinks: 4, recent: 0 }).score(input);
 * ```
 */
export class StreamingPolicy extends BasePolicy {
  readonly name = 'streaming';

  constructor(options: PolicyOptions = {}) {
    super(options);
  }

  override gpuPlan(): TokenScorePlan {
    return { kind: 'token', statistics: [], wgsl: 'fn token_score(token: ScoredToken) -> f32 { return f32(token.position); }' };
  }

  protected rawScore(input: ScoreInput, tokens: readonly number[]): Float32Array[] {
    // f32 holds positions exactly up to 2^24 tokens, far past any context we cache.
    return tokens.map((n, kv) => Float32Array.from((input.positions[kv] ?? new Uint32Array(n)).subarray(0, n)));
  }
}
