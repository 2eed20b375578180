import type { CpuKvCache } from '../../src/engine/cpu-kv-cache.js';
import type { CacheShape } from '../../src/format/layout.js';
import { seededRandom } from './gpu.js';

/**
 * Decode steps on a CPU cache with random q, k, v in [−1, 1) at positions `from` … `to` − 1 of `seq`, every
 * layer, so the attention statistics (h2o's scores, the merge weights) and the observation window build up.
 */
export function randomDecodeSteps(cache: CpuKvCache, shape: CacheShape, nHeads: number, seq: number, from: number, to: number, seed: number): void {
  const random = seededRandom(seed);
  const { layers, kvHeads, headDim } = shape;
  for (let pos = from; pos < to; pos++) {
    for (let layer = 0; layer < layers; layer++) {
      const q = Float32Array.from({ length: nHeads * headDim }, () => 2 * random() - 1);
      const k = Float32Array.from({ length: kvHeads * headDim }, () => 2 * random() - 1);
      const v = Float32Array.from({ length: kvHeads * headDim }, () => 2 * random() - 1);
      cache.step(seq, layer, pos, q, k, v);
    }
  }
}
