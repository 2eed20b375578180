/**
 * Shared by snapkv and tova: the observation-window queries attend causally to one layer's cached keys.
 */
import { InvalidArgumentError } from '../../errors.js';
import { prefillAttention } from '../../attention/reference-attention.js';
import { type ScoreInput, sequenceLengthOf } from '../policy.js';

/**
 * Per KV head `[w][tokens]` probabilities summed over the group's query heads, for the last `maxWindow` rows
 * of `input.windowQueries` (all rows when it has fewer). Returns the rows used (`w`) as well.
 *
 * @example
 * ```ts
 * const { probs, w } = windowProbabilities(input, 32, 'snapkv');
 * ```
 */
export function windowProbabilities(
  input: ScoreInput,
  maxWindow: number,
  policy: string,
): { probs: Float32Array[]; w: number } {
  const { nHeads, headDim } = input;
  const q = input.windowQueries;
  if (!q || q.length === 0) {
    throw new InvalidArgumentError('windowQueries', `${policy} needs the observation-window queries [w][nHeads][headDim]`);
  }
  const row = nHeads * headDim;
  if (q.length % row !== 0) {
    throw new InvalidArgumentError('windowQueries', `length must be w × nHeads × headDim (${row}); got ${q.length}`);
  }
  const rows = q.length / row;
  const w = Math.min(maxWindow, rows);
  let positions = input.windowPositions;
  if (positions !== undefined && positions.length !== rows) {
    throw new InvalidArgumentError('windowPositions', `expected ${rows} positions (one per window query)`);
  }
  if (positions === undefined) {
    // Window queries are the newest tokens: the last `rows` positions of the sequence.
    const end = sequenceLengthOf(input);
    positions = Uint32Array.from({ length: rows }, (_, j) => Math.max(0, end - rows + j));
  }
  const result = prefillAttention({
    q: q.subarray((rows - w) * row),
    queryPositions: positions.subarray(rows - w),
    keys: input.keys,
    values: input.keys, // outputs are not needed; keys have the right shape
    keyPositions: input.positions,
    nHeads,
    kvHeads: input.kvHeads,
    headDim,
    returnProbs: true,
  });
  return { probs: result.probsPerQuery ?? [], w };
}
