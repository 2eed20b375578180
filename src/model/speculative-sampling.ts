import { InvalidArgumentError } from '../errors.js';
import { argmax, softmaxWithTemperature } from './sampling.js';

/**
 * What one verification pass decided.
 *
 * @example
 * ```ts
 * const { accepted, tokens } = verifyDrafts(rows, drafts, { temperature: 0 }, rng);
 * tokens.length === accepted + 1; // the accepted drafts, then the model's own next token
 * ```
 */
export interface Verification {
  /** Drafts kept (a prefix of the drafts). */
  readonly accepted: number;
  /** The tokens the pass emits: the accepted drafts, then one token of the model's own. */
  readonly tokens: number[];
}

/**
 * The distribution a sampler with these settings draws from: softmax(logits / T), restricted to llama2.c's
 * top-p nucleus (the candidates `sampleTopP` keeps) and renormalised over it, so that drawing from it is
 * drawing what `createSampler` draws.
 *
 * @example
 * ```ts
 * const q = samplingDistribution(logits, 0.8, 0.9); // sums to 1, 0 outside the nucleus
 * ```
 */
export function samplingDistribution(logits: ArrayLike<number>, temperature: number, topP: number): Float64Array {
  const p = softmaxWithTemperature(logits, temperature);
  const n = p.length;
  if (topP >= 1 || n === 1) return p;
  const cutoff = (1 - topP) / (n - 1);
  const candidates: number[] = [];
  for (let i = 0; i < n; i++) if ((p[i] as number) >= cutoff) candidates.push(i);
  candidates.sort((a, b) => (p[b] as number) - (p[a] as number) || a - b);
  let mass = 0;
  let last = candidates.length - 1;
  for (let i = 0; i < candidates.length; i++) {
    mass += p[candidates[i] as number] as number;
    if (mass > topP) {
      last = i;
      break;
    }
  }
  const q = new Float64Array(n);
  for (let i = 0; i <= last; i++) {
    const id = candidates[i] as number;
    q[id] = (p[id] as number) / mass;
  }
  return q;
}

/** Draws an index from a distribution (entries summing to `total`). */
function draw(q: ArrayLike<number>, total: number, rng: () => number): number {
  const r = rng() * total;
  let cdf = 0;
  let lastPositive = 0;
  for (let i = 0; i < q.length; i++) {
    const v = q[i] as number;
    if (v <= 0) continue;
    cdf += v;
    lastPositive = i;
    if (r < cdf) return i;
  }
  return lastPositive;
}

/**
 * Verifies point-mass drafts against the model's logits of one pass: `rows[i]` are the logits after the pass's
 * token i, so `rows[i]` judges `drafts[i]` and `rows.length === drafts.length + 1`.
 *
 * - temperature 0 (greedy): accepts the longest prefix of drafts equal to the argmax, then emits the argmax of the
 *   first row that disagreed (or of the last row): token for token what one-token greedy decoding emits.
 * - temperature > 0: speculative sampling with a point-mass draft: accepts draft x with probability q(x), q the
 *   sampler's distribution ({@link samplingDistribution}); on rejection draws from q with x removed,
 *   renormalised; after all drafts draws from the last row. Each emitted token is then distributed exactly as
 *   plain sampling's (P(x) = q(x); P(y ≠ x) = (1 − q(x)) · q(y) / (1 − q(x))), though from other random numbers.
 *
 * @example
 * ```ts
 * const { accepted, tokens } = verifyDrafts(rows, [7, 8, 2], { temperature: 0 }, rng);
 * ```
 */
export function verifyDrafts(
  rows: readonly ArrayLike<number>[],
  drafts: readonly number[],
  sampling: { readonly temperature: number; readonly topP?: number },
  rng: () => number,
): Verification {
  if (rows.length !== drafts.length + 1) {
    throw new InvalidArgumentError('rows', `need one row of logits per draft plus one (${drafts.length + 1}); got ${rows.length}`);
  }
  const tokens: number[] = [];
  const { temperature } = sampling;
  const topP = sampling.topP ?? 0.9;
  for (let i = 0; i < drafts.length; i++) {
    const row = rows[i] as ArrayLike<number>;
    const draft = drafts[i] as number;
    if (temperature === 0) {
      const best = argmax(row);
      if (best !== draft) return { accepted: i, tokens: [...tokens, best] };
    } else {
      const q = samplingDistribution(row, temperature, topP);
      const qx = q[draft] ?? 0;
      if (!(rng() < qx)) {
        q[draft] = 0;
        return { accepted: i, tokens: [...tokens, draw(q, 1 - qx, rng)] };
      }
    }
    tokens.push(draft);
  }
  const lastRow = rows[drafts.length] as ArrayLike<number>;
  const last = temperature === 0 ? argmax(lastRow) : draw(samplingDistribution(lastRow, temperature, topP), 1, rng);
  return { accepted: drafts.length, tokens: [...tokens, last] };
}
