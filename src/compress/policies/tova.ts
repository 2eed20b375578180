import type { WindowScorePlan } from '../gpu-policies.js';
import { BasePolicy, type PolicyOptions, type ScoreInput } from '../policy.js';
import { windowProbabilities } from './window.js';

/**
 * TOVA (token omission via attention): score = the LAST query's attention probability, averaged over the
 * query heads of the group. Needs `windowQueries` (only its last row is used).
 *
 * @example
 * ```ts
 * const scores = new TovaPolicy({ recent: 8 }).score(input);
 * ```
 */
export class TovaPolicy extends BasePolicy {
  readonly name = 'tova';

  constructor(options: PolicyOptions = {}) {
    super(options);
  }

  // The last query only, unpooled: the SnapKV kernels with a one-row window and kernel size 1.
  override gpuPlan(): WindowScorePlan {
    return { kind: 'window', window: 1, kernelSize: 1, pooling: 'avg' };
  }

  protected rawScore(input: ScoreInput, tokens: readonly number[]): Float32Array[] {
    const { probs } = windowProbabilities(input, 1, this.name);
    const group = input.nHeads / input.kvHeads;
    return tokens.map((n, kv) => {
      const p = probs[kv] ?? new Float32Array(n);
      return Float32Array.from({ length: n }, (_, t) => (p[t] ?? 0) / group);
    });
  }
}
