import { InvalidArgumentError } from '../../errors.js';
import type { GpuScorePlan } from '../gpu-policies.js';
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
  readonly requires = { window: false, statistics: true };

  constructor(options: PolicyOptions = {}) {
    super(options);
  }

  protected override gpuPlan(): GpuScorePlan {
    return { kind: 'stats', policy: 'kvcompress' };
  }

  protected rawScore(input: ScoreInput, tokens: readonly number[]): Float32Array[] {
    const { attnSqSum } = input;
    if (!attnSqSum) throw new InvalidArgumentError('attnSqSum', 'kvcompress needs accumulated squared attention');
    return tokens.map((n, kv) => Float32Array.from((attnSqSum[kv] ?? new Float32Array(n)).subarray(0, n)));
  }
}
