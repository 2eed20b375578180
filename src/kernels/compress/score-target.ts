/**
 * What every scoring kernel shares: which rows of the cache it scores (a layer range of ONE sequence slot), the
 * protection it applies, and where the observation window lives. Scores are f32 `[row][maxTokensPerHead]` by
 * logical token index, row = (layer × seqSlots + slot) × kvHeads + kvHead (CONTRIBUTING.md).
 */
import { InvalidArgumentError } from '../../errors.js';
import type { PagedCacheBindings } from '../cache/paged-attention.js';

/**
 * The rows a scoring kernel writes and how it protects tokens.
 */
export interface ScoreTarget {
  /** First layer scored. */
  readonly layer: number;
  /** Layers scored, from `layer` on. */
  readonly layerCount: number;
  /** The sequence slot scored. */
  readonly slot: number;
  /** Tokens the sequence has seen (its next position). */
  readonly seqLen: number;
  /** Positions below this score +Inf (attention sinks). */
  readonly sinks: number;
  /** The last `recent` positions (≥ seqLen − recent) score +Inf. */
  readonly recent: number;
}

/**
 * The observation window of a cache: roped queries `f32 [layers][seqSlots][capacity][nHeads][headDim]` and their
 * positions `u32 [layers][seqSlots][capacity]`, ring-indexed by position mod capacity. The newest `valid`
 * queries of the slot (positions seqLen − valid .. seqLen − 1) must be present.
 */
export interface ObservationWindowBindings {
  readonly queries: GPUBuffer;
  readonly positions: GPUBuffer;
  /** Ring size of the buffers (the cache's observation window). */
  readonly capacity: number;
  /** How many of the newest queries of the slot are in the ring (≤ capacity, ≤ seqLen). */
  readonly valid: number;
}

function check(field: string, value: number, min: number): void {
  if (!Number.isInteger(value) || value < min) {
    throw new InvalidArgumentError(field, `must be an integer ≥ ${min}; got ${value}`);
  }
}

/**
 * Validates a target against the cache and returns the derived sizes: `recentStart` = max(0, seqLen − recent)
 * (clamped so the shader's u32 compare equals the CPU's signed one) and `maxTokens` per row.
 *
 * @example
 * ```ts
 * const { recentStart, maxTokens } = checkScoreTarget(target, cache, 16, scores, 2);
 * ```
 */
export function checkScoreTarget(
  target: ScoreTarget,
  cache: PagedCacheBindings,
  blockSize: number,
  scores: GPUBuffer,
  kvHeads: number,
): { recentStart: number; maxTokens: number } {
  check('layer', target.layer, 0);
  check('layerCount', target.layerCount, 1);
  check('slot', target.slot, 0);
  check('seqLen', target.seqLen, 0);
  check('sinks', target.sinks, 0);
  check('recent', target.recent, 0);
  if (target.slot >= cache.seqSlots) {
    throw new InvalidArgumentError('slot', `${target.slot} is past the cache's ${cache.seqSlots} sequence slots`);
  }
  const maxTokens = cache.maxBlocksPerHead * blockSize;
  const rowsEnd = ((target.layer + target.layerCount - 1) * cache.seqSlots + target.slot + 1) * kvHeads;
  if (scores.size < rowsEnd * maxTokens * 4) {
    throw new InvalidArgumentError('scores', `holds ${scores.size} B; the target's rows need ${rowsEnd * maxTokens * 4} B`);
  }
  if (cache.contextLens.size < rowsEnd * 4) {
    throw new InvalidArgumentError('layer', `layers ${target.layer}..${target.layer + target.layerCount - 1} are past the cache`);
  }
  return { recentStart: Math.max(0, target.seqLen - target.recent), maxTokens };
}
