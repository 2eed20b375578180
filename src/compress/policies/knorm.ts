import type { TokenScorePlan } from '../gpu-policies.js';
import { BasePolicy, type PolicyOptions, type ScoreInput } from '../policy.js';

/**
 * Key-norm press: score = −‖k‖₂. Keys with a small norm tend to draw MORE attention (Devoto et al., 2024), and
 * it needs no attention statistics at all.
 *
 * @example
 * ```ts
 * const scores = new KnormPolicy().score(input);
 * ```
 */
export class KnormPolicy extends BasePolicy {
  readonly name = 'knorm';

  constructor(options: PolicyOptions = {}) {
    super(options);
  }

  override gpuPlan(): TokenScorePlan {
    return {
      kind: 'token',
      statistics: [],
      wgsl: `fn token_score(token: ScoredToken) -> f32 {
  var norm2 = 0.0;
  for (var d = 0u; d < HEAD_DIM; d++) {
    let k = token_key(token, d);
    norm2 += k * k;
  }
  return -sqrt(norm2);
}`,
    };
  }

  protected rawScore(input: ScoreInput, tokens: readonly number[]): Float32Array[] {
    const d = input.headDim;
    return tokens.map((n, kv) => {
      const keys = input.keys[kv] ?? new Float32Array(n * d);
      return Float32Array.from({ length: n }, (_, t) => {
        let s = 0;
        for (let c = 0; c < d; c++) s += (keys[t * d + c] ?? 0) ** 2;
        return -Math.sqrt(s);
      });
    });
  }
}
