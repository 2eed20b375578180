import { describe, expect, it } from 'vitest';
import { prepareEvalWindows } from '../src/eval/eval-text.js';
import { AgreementAccumulator, nll, PerplexityAccumulator, perplexityOfWindows, perplexityOfWindowsAsync } from '../src/eval/metrics.js';
import { argmax, klDivergence, logSumExp } from '../src/model/sampling.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { sharedBytes, sharedText } from './model-helpers.js';

describe('evaluation windows', () => {
  const tok = Tokenizer.parse(sharedBytes('models/tok512.bin'), 512);
  const text = sharedText('data/tinystories_dev.txt');

  it('follows ../shared/README.md: 8 windows of BOS + 511 ids from the first 24,576 cleaned characters', () => {
    const windows = prepareEvalWindows(text, tok);
    expect(windows).toHaveLength(8);
    const ids = tok.encode(text.replaceAll('\n\n', '\n').slice(0, 24576));
    windows.forEach((w, i) => {
      expect(w).toHaveLength(512);
      expect(w[0]).toBe(1);
      expect(Array.from(w.subarray(1))).toEqual(ids.slice(511 * i, 511 * (i + 1)));
    });
    const small = prepareEvalWindows(text, tok, { window: 64, windows: 3 });
    expect(small.map((w) => w.length)).toEqual([64, 64, 64]);
    expect(() => prepareEvalWindows('tiny', tok)).toThrow(/fewer than 8 windows/);
  });

  it('perplexity helpers agree with a hand computation, sync and async', async () => {
    const windows = [Int32Array.of(1, 2, 0), Int32Array.of(1, 0)];
    // Fixed logits over a vocabulary of 3 depending only on the input token.
    const table: Record<number, number[]> = { 1: [0, 2, 1], 2: [3, 0, 0], 0: [0, 0, 0] };
    const fn = (token: number): number[] => table[token]!;
    const nll = (l: number[], t: number): number => logSumExp(l) - l[t]!;
    const want = (nll(table[1]!, 2) + nll(table[2]!, 0) + nll(table[1]!, 0)) / 3;
    const r = perplexityOfWindows(windows, fn);
    expect(r.count).toBe(3);
    expect(r.meanNll).toBeCloseTo(want, 12);
    expect(r.perplexity).toBeCloseTo(Math.exp(want), 12);
    expect(r.top1).toBeCloseTo(1 / 3, 12); // only token 2 → 0 is the argmax
    const ra = await perplexityOfWindowsAsync(windows, async (t) => fn(t));
    expect(ra).toEqual(r);
    const acc = new PerplexityAccumulator();
    expect(() => acc.add([1, 2], 5)).toThrow(/target/);
  });
});

describe('metrics', () => {
  it('nll is logsumexp minus the target logit, and rejects a target outside the logits', () => {
    expect(nll([0, 0], 1)).toBeCloseTo(Math.log(2), 15);
    expect(nll([1, 3, 2], 1)).toBeCloseTo(logSumExp([1, 3, 2]) - 3, 15);
    expect(() => nll([1, 2], 2)).toThrow(/target/);
  });

  it('PerplexityAccumulator sums NLL and top-1 hits in the order predictions arrive', () => {
    const acc = new PerplexityAccumulator();
    expect(acc.add([0, 2, 1], 1)).toBeCloseTo(nll([0, 2, 1], 1), 15); // a hit
    acc.add([3, 0, 0], 2); // a miss
    const r = acc.result();
    expect(r.count).toBe(2);
    expect(r.top1).toBe(0.5);
    expect(r.meanNll).toBe((nll([0, 2, 1], 1) + nll([3, 0, 0], 2)) / 2);
    expect(r.perplexity).toBe(Math.exp(r.meanNll));
    expect(Number.isNaN(new PerplexityAccumulator().result().perplexity)).toBe(true);
  });

  it('AgreementAccumulator counts argmax agreement with the reference and averages KL(P_ref ‖ P)', () => {
    const cmp = new AgreementAccumulator();
    const ref1 = [0, 2, 1];
    const got1 = [0, 1.5, 1]; // same argmax
    const ref2 = [3, 0, 0];
    const got2 = [0, 0, 3]; // different argmax
    expect(cmp.add(ref1, got1)).toBe(klDivergence(ref1, got1));
    cmp.add(ref2, got2);
    const r = cmp.result();
    expect(argmax(ref1)).toBe(argmax(got1));
    expect(r).toEqual({ agreement: 0.5, agreed: 1, compared: 2, meanKl: (klDivergence(ref1, got1) + klDivergence(ref2, got2)) / 2 });
    expect(r.meanKl).toBeGreaterThan(0);
    const same = new AgreementAccumulator();
    same.add(ref1, ref1);
    expect(same.result()).toEqual({ agreement: 1, agreed: 1, compared: 1, meanKl: 0 });
  });
});
