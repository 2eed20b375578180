import type { TokenScorePlan } from '../gpu-policies.js';
import { mulberry32 } from '../../random.js';
import { BasePolicy, type PolicyOptions, type ScoreInput } from '../policy.js';

/**
 * Options of {@link RandomPolicy}.
 *
 * @example
 * ```ts
 * createPolicy('random', { seed: 42 });
 * ```
 */
export interface RandomOptions extends PolicyOptions {
  /** Seed used when the input carries none (default 0). */
  readonly seed?: number;
}

/**
 * Random eviction, the baseline every policy must beat. Each (layer, KV head) draws from its own mulberry32
 * stream seeded with hash(seed, layer, head), so results are reproducible and heads differ.
 * Token t gets draw t of its head's stream. mulberry32's state only adds a constant per draw, so draw t is a
 * pure function of (stream seed, t): on the GPU every token computes its own draw (mulberry32_draw of
 * shaders/score_common.wgsl) and matches these scores bit for bit.
 *
 * @example
 * ```ts
 * const scores = new RandomPolicy().score({ ...input, seed: 7, layer: 3 });
 * ```
 */
export class RandomPolicy extends BasePolicy {
  readonly name = 'random';
  readonly seed: number;

  constructor(options: RandomOptions = {}) {
    super(options);
    this.seed = options.seed ?? 0;
  }

  // The stream seed in u32 arithmetic: Math.imul and ^ are the same bit operations.
  override gpuPlan(): TokenScorePlan {
    return {
      kind: 'token',
      statistics: [],
      seed: this.seed,
      wgsl: `fn token_score(token: ScoredToken) -> f32 {
  let stream = ((token.seed ^ 0x9e3779b9u) * 0x85ebca6bu) ^ ((token.layer + 1u) * 0xc2b2ae35u) ^ (token.kv_head + 1u);
  return unit_interval(mulberry32_draw(stream, token.index));
}`,
    };
  }

  protected rawScore(input: ScoreInput, tokens: readonly number[]): Float32Array[] {
    const seed = input.seed ?? this.seed;
    const layer = input.layer ?? 0;
    return tokens.map((n, kv) => {
      const next = mulberry32(Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(layer + 1, 0xc2b2ae35) ^ (kv + 1));
      return Float32Array.from({ length: n }, () => next());
    });
  }
}
