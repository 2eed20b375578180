import { describe, expect, it } from 'vitest';
import { BUDGET_MODES, allocateBudgets, budgetCap, type BudgetMode } from '../src/compress/budgets.js';
import { selectTopK } from '../src/compress/select.js';
import { mulberry32 } from '../src/random.js';
import { InvalidArgumentError } from '../src/errors.js';

function scoresFor(layers: number, heads: number, seed: number, protect = 3): Float32Array[][] {
  const next = mulberry32(seed);
  return Array.from({ length: layers }, () =>
    Array.from({ length: heads }, () => {
      const len = 1 + Math.floor(next() * 70);
      const s = Float32Array.from({ length: len }, () => Math.floor(next() * 8) / 8);
      for (let t = 0; t < Math.min(protect, len); t++) s[t] = Infinity;
      return s;
    }),
  );
}

const sum = (c: Uint32Array[]): number => c.reduce((a, r) => a + r.reduce((x, y) => x + y, 0), 0);

describe.each(BUDGET_MODES)('budget mode %s', (mode: BudgetMode) => {
  it('never exceeds the cap or a head length, at awkward sizes', () => {
    for (const [layers, heads] of [[1, 1], [3, 2], [5, 3], [7, 1]] as const) {
      for (const budget of [1, 2.5, 7, 13.3, 31, 64, 200]) {
        const scores = scoresFor(layers, heads, layers * 31 + heads + budget);
        const counts = allocateBudgets(scores, { mode, budget });
        expect(sum(counts)).toBeLessThanOrEqual(budgetCap(scores, budget));
        counts.forEach((row, l) => row.forEach((c, h) => expect(c).toBeLessThanOrEqual(scores[l]![h]!.length)));
      }
    }
  });

  it('keeps everything when B ≥ every head length', () => {
    const scores = scoresFor(3, 2, 5);
    const counts = allocateBudgets(scores, { mode, budget: 70 });
    counts.forEach((row, l) => row.forEach((c, h) => expect(c).toBe(scores[l]![h]!.length)));
  });

  it('keeps protected tokens when the budget allows', () => {
    const scores = scoresFor(4, 3, 9, 3);
    const counts = allocateBudgets(scores, { mode, budget: 20 });
    counts.forEach((row, l) =>
      row.forEach((c, h) => {
        const s = scores[l]![h]!;
        const kept = selectTopK(s, c);
        const prot = Math.min(3, s.length);
        if (c >= prot) for (let t = 0; t < prot; t++) expect(kept.includes(t)).toBe(true);
      }),
    );
  });

  it('rejects bad input', () => {
    const scores = scoresFor(2, 2, 1);
    expect(() => allocateBudgets(scores, { mode, budget: 0 })).toThrow(InvalidArgumentError);
    expect(() => allocateBudgets(scores, { mode, budget: -3 })).toThrow(InvalidArgumentError);
    expect(() => allocateBudgets(scores, { mode, budget: NaN })).toThrow(InvalidArgumentError);
    const nan = [[new Float32Array([1, NaN, 2])]];
    expect(() => allocateBudgets(nan, { mode, budget: 1 })).toThrow(InvalidArgumentError);
  });
});

describe('budget specifics', () => {
  it('unknown mode throws', () => {
    expect(() => allocateBudgets([[new Float32Array(4)]], { mode: 'x' as BudgetMode, budget: 1 })).toThrow(
      InvalidArgumentError,
    );
  });

  it('uniform gives each head ⌊B⌋', () => {
    const scores = [[new Float32Array(50), new Float32Array(5)]];
    expect(Array.from(allocateBudgets(scores, { mode: 'uniform', budget: 10.7 })[0]!)).toEqual([10, 5]);
  });

  it('adakv gives more to a broad head than to a sparse head', () => {
    const n = 100;
    // Sparse head: attention concentrated on 5 tokens. Broad head: spread over many tokens.
    const sparse = Float32Array.from({ length: n }, (_, t) => (t % 20 === 0 ? 0.19 : 0.0005));
    const broad = Float32Array.from({ length: n }, (_, t) => 0.01 + (t % 7) * 1e-4);
    const counts = allocateBudgets([[sparse, broad]], { mode: 'adakv', budget: 20 })[0]!;
    expect((counts[1] ?? 0) > (counts[0] ?? 0)).toBe(true);
    expect(counts[0]).toBeGreaterThanOrEqual(4); // safeguard 20% of 20
    expect((counts[0] ?? 0) + (counts[1] ?? 0)).toBe(40);
  });

  it('pyramid falls with depth, mean B', () => {
    const layers = 5;
    const scores = Array.from({ length: layers }, () => [new Float32Array(100), new Float32Array(100)]);
    const counts = allocateBudgets(scores, { mode: 'pyramid', budget: 20 });
    const per = counts.map((r) => r[0] ?? 0);
    expect(per).toEqual([30, 25, 20, 15, 10]);
    expect(sum(counts)).toBe(layers * 2 * 20);
  });

  it('global selects across layers jointly', () => {
    const hot = new Float32Array(10).fill(1);
    const cold = new Float32Array(10).fill(0);
    const counts = allocateBudgets([[cold], [hot]], { mode: 'global', budget: 5 });
    expect(counts.map((r) => r[0])).toEqual([0, 10]);
  });
});
