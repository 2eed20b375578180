/**
 * Budget allocation: how many tokens each (layer, KV head) keeps, given its scores and B, the AVERAGE number of
 * tokens kept per KV head. Whatever the mode, the total never exceeds ⌊layers × kvHeads × B⌋, and a head's
 * protected (+Infinity) tokens rank first so they are kept whenever the head's share allows it.
 *
 * Counts are consistent with {@link selectTopK}: every joint selection ranks by score descending, ties by
 * lower layer, then lower head, then lower token index, so each head's kept set is a prefix of its own ranking.
 */
import { InvalidArgumentError } from '../errors.js';
import { rankByScore } from './select.js';

/**
 * Allocation modes.
 */
export type BudgetMode = 'uniform' | 'adakv' | 'pyramid' | 'global';

/**
 * All modes, for CLIs and test tables.
 *
 * @example
 * ```ts
 * for (const mode of BUDGET_MODES) allocateBudgets(scores, { mode, budget: 64 });
 * ```
 */
export const BUDGET_MODES: readonly BudgetMode[] = ['uniform', 'adakv', 'pyramid', 'global'];

/**
 * Options of {@link allocateBudgets}.
 *
 * @example
 * ```ts
 * allocateBudgets(scores, { mode: 'pyramid', budget: 64, pyramidTop: 1.8 });
 * ```
 */
export interface BudgetOptions {
  readonly mode: BudgetMode;
  /** B: average tokens kept per KV head (positive; may be fractional). */
  readonly budget: number;
  /** adakv: share of B each head keeps by its own top scores before the joint pass (default 0.2). */
  readonly safeguard?: number;
  /** pyramid: first layer's budget as a multiple of B (default 1.5; the last gets 2 − this, so mean = B). */
  readonly pyramidTop?: number;
}

function validate(scores: readonly (readonly Float32Array[])[], options: BudgetOptions): void {
  const { budget, mode } = options;
  if (!Number.isFinite(budget) || budget <= 0) {
    throw new InvalidArgumentError('budget', `must be a positive number of tokens per KV head; got ${budget}`);
  }
  if (!BUDGET_MODES.includes(mode)) {
    throw new InvalidArgumentError('mode', `must be one of ${BUDGET_MODES.join(', ')}; got ${String(mode)}`);
  }
  const safeguard = options.safeguard ?? 0.2;
  if (!(safeguard >= 0 && safeguard <= 1)) {
    throw new InvalidArgumentError('safeguard', `must be in [0, 1]; got ${safeguard}`);
  }
  const top = options.pyramidTop ?? 1.5;
  if (!(top >= 1 && top <= 2)) throw new InvalidArgumentError('pyramidTop', `must be in [1, 2]; got ${top}`);
  scores.forEach((layer, l) =>
    layer.forEach((head, h) => {
      for (let t = 0; t < head.length; t++) {
        if (Number.isNaN(head[t])) {
          throw new InvalidArgumentError(`scores[${l}][${h}]`, `token ${t} has a NaN score; check the policy's inputs`);
        }
      }
    }),
  );
}

/** One candidate token in a joint selection. */
interface Candidate {
  score: number;
  layer: number;
  head: number;
  rank: number;
}

/** Picks the `k` best candidates (score desc, then layer, head, rank asc) and counts them per (layer, head). */
function jointCounts(candidates: Candidate[], k: number, counts: Uint32Array[]): void {
  candidates.sort(
    (a, b) =>
      (a.score > b.score ? -1 : a.score < b.score ? 1 : 0) || a.layer - b.layer || a.head - b.head || a.rank - b.rank,
  );
  for (let i = 0; i < Math.min(k, candidates.length); i++) {
    const c = candidates[i];
    if (!c) break;
    const row = counts[c.layer];
    if (row) row[c.head] = (row[c.head] ?? 0) + 1;
  }
}

/** Candidates of one head from its `skip`-th best token on, in rank order. */
function pushCandidates(out: Candidate[], scores: Float32Array, layer: number, head: number, skip: number): void {
  const ranked = rankByScore(scores);
  for (let r = skip; r < ranked.length; r++) {
    out.push({ score: scores[ranked[r] ?? 0] ?? 0, layer, head, rank: r });
  }
}

/**
 * Per-layer integer budgets per head for pyramid mode: linear from top·B (layer 0) to (2 − top)·B (last),
 * rounded by largest remainder (ties to the lower layer) so they sum to exactly ⌊layers·B⌋.
 */
/**
 * The fewest tokens any one head can be handed in a mode, when every head holds more than the budget: ⌊B⌋, or
 * the deepest layer's share under pyramid. Protected windows are clamped to it, so protection never asks a head
 * for more than it may keep.
 *
 * @example
 * ```ts
 * smallestHeadBudget('pyramid', 64, 4); // 32: the deepest of 4 layers gets 0.5 × B
 * ```
 */
export function smallestHeadBudget(mode: BudgetMode, budget: number, layers: number): number {
  if (mode !== 'pyramid') return Math.floor(budget);
  return Math.min(...pyramidLayerBudgets(layers, budget, 1.5));
}

function pyramidLayerBudgets(layers: number, budget: number, top: number): number[] {
  const targets = Array.from({ length: layers }, (_, l) =>
    layers === 1 ? budget : budget * (top + ((2 - top - top) * l) / (layers - 1)),
  );
  const floors = targets.map((x) => Math.floor(x));
  let left = Math.floor(layers * budget) - floors.reduce((a, b) => a + b, 0);
  const order = targets.map((x, l) => ({ l, frac: x - Math.floor(x) })).sort((a, b) => b.frac - a.frac || a.l - b.l);
  for (const { l } of order) {
    if (left <= 0) break;
    floors[l] = (floors[l] ?? 0) + 1;
    left--;
  }
  // Floating-point targets could floor one above the exact value; take any excess from the deepest layers.
  for (let l = layers - 1; left < 0 && l >= 0; l--) {
    const take = Math.min(floors[l] ?? 0, -left);
    floors[l] = (floors[l] ?? 0) - take;
    left += take;
  }
  return floors;
}

/** Layers with different head counts could push pyramid past the cap; trim from the deepest heads. */
function enforceCap(counts: Uint32Array[], cap: number): Uint32Array[] {
  let excess = counts.reduce((a, row) => a + row.reduce((x, y) => x + y, 0), 0) - cap;
  for (let l = counts.length - 1; excess > 0 && l >= 0; l--) {
    const row = counts[l] ?? new Uint32Array(0);
    for (let h = row.length - 1; excess > 0 && h >= 0; h--) {
      const take = Math.min(row[h] ?? 0, excess);
      row[h] = (row[h] ?? 0) - take;
      excess -= take;
    }
  }
  return counts;
}

/**
 * Keep counts per (layer, KV head). `scores[layer][head]` is one head's token scores (from a policy; +Infinity
 * = protected). Modes:
 * - `uniform`: each head keeps min(⌊B⌋, length).
 * - `adakv`: each head keeps its top ⌊safeguard·B⌋ (capped by its length); the rest of the layer's budget
 *   ⌊kvHeads·B⌋ goes to the best remaining scores across the layer's heads jointly.
 * - `pyramid`: layer budgets fall linearly from pyramidTop·B to (2 − pyramidTop)·B with depth (mean B,
 *   integer, summing to ⌊layers·B⌋); within a layer every head keeps min(layer budget, length).
 * - `global`: ⌊layers·kvHeads·B⌋ best scores across all layers and heads jointly.
 * When B ≥ every head's length, every mode keeps everything.
 *
 * @throws InvalidArgumentError for B ≤ 0 or non-finite, NaN scores, an unknown mode or bad options.
 * @example
 * ```ts
 * const counts = allocateBudgets(scores, { mode: 'adakv', budget: 64 });
 * const kept = selectTopK(scores[0][1], counts[0][1]);
 * ```
 */
export function allocateBudgets(scores: readonly (readonly Float32Array[])[], options: BudgetOptions): Uint32Array[] {
  validate(scores, options);
  const { budget, mode } = options;
  const lengths = scores.map((layer) => Uint32Array.from(layer, (h) => h.length));
  const maxLength = Math.max(0, ...lengths.flatMap((l) => Array.from(l)));
  if (budget >= maxLength) return lengths;

  const counts = scores.map((layer) => new Uint32Array(layer.length));
  switch (mode) {
    case 'uniform': {
      const per = Math.floor(budget);
      scores.forEach((layer, l) => layer.forEach((h, i) => ((counts[l] ?? [])[i] = Math.min(per, h.length))));
      return counts;
    }
    case 'pyramid': {
      const perLayer = pyramidLayerBudgets(scores.length, budget, options.pyramidTop ?? 1.5);
      scores.forEach((layer, l) =>
        layer.forEach((h, i) => ((counts[l] ?? [])[i] = Math.min(perLayer[l] ?? 0, h.length))),
      );
      return enforceCap(counts, budgetCap(scores, budget));
    }
    case 'adakv': {
      const safe = Math.floor((options.safeguard ?? 0.2) * budget);
      scores.forEach((layer, l) => {
        const row = counts[l] ?? new Uint32Array(0);
        const layerBudget = Math.floor(layer.length * budget);
        const candidates: Candidate[] = [];
        let used = 0;
        layer.forEach((h, i) => {
          const s = Math.min(safe, h.length);
          row[i] = s;
          used += s;
          pushCandidates(candidates, h, l, i, s);
        });
        jointCounts(candidates, Math.max(0, layerBudget - used), counts);
      });
      return counts;
    }
    case 'global': {
      const heads = scores.reduce((a, layer) => a + layer.length, 0);
      const candidates: Candidate[] = [];
      scores.forEach((layer, l) => layer.forEach((h, i) => pushCandidates(candidates, h, l, i, 0)));
      jointCounts(candidates, Math.floor(heads * budget), counts);
      return counts;
    }
  }
}

/**
 * The cap {@link allocateBudgets} never exceeds: ⌊Σ_layers kvHeads × B⌋.
 *
 * @example
 * ```ts
 * budgetCap([[a, b], [c, d]], 10.5); // 42
 * ```
 */
export function budgetCap(scores: readonly (readonly Float32Array[])[], budget: number): number {
  return Math.floor(scores.reduce((a, layer) => a + layer.length, 0) * budget);
}
