import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '../src/errors.js';
import { argmax, createSampler, klDivergence, logSumExp, sampleTopP, softmaxWithTemperature } from '../src/model/sampling.js';
import { mulberry32 } from '../src/random.js';

describe('sampling', () => {
  it('argmax takes the first maximum', () => {
    expect(argmax([0.1, 2, 2, -1])).toBe(1);
    expect(argmax(Float32Array.of(-5, -3))).toBe(1);
  });

  it('softmax with temperature', () => {
    const p = softmaxWithTemperature([1, 2, 3], 0.5);
    expect(p.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 12);
    expect(p[2]! / p[1]!).toBeCloseTo(Math.exp(2), 10);
    expect(() => softmaxWithTemperature([1], 0)).toThrow(InvalidArgumentError);
    expect(logSumExp([1000, 1000])).toBeCloseTo(1000 + Math.log(2), 10);
  });

  it('mulberry32 is deterministic and uniform-ish', () => {
    expect(mulberry32(42)()).toBe(0.6011037519201636);
    const a = mulberry32(7);
    const b = mulberry32(7);
    let sum = 0;
    for (let i = 0; i < 10000; i++) {
      const x = a();
      expect(x).toBe(b());
      expect(x).toBeGreaterThanOrEqual(0);
      expect(x).toBeLessThan(1);
      sum += x;
    }
    expect(sum / 10000).toBeCloseTo(0.5, 1);
  });

  it('top-p sampling stays inside the nucleus and follows the probabilities', () => {
    const probs = [0.5, 0.3, 0.15, 0.05];
    const rng = mulberry32(3);
    const counts = [0, 0, 0, 0];
    for (let i = 0; i < 20000; i++) counts[sampleTopP(probs, 0.7, rng)]!++;
    // Nucleus for 0.7 is {0, 1} (0.5 + 0.3 > 0.7).
    expect(counts[2]).toBe(0);
    expect(counts[3]).toBe(0);
    expect(counts[0]! / 20000).toBeCloseTo(0.5 / 0.8, 1);
    const all = [0, 0, 0, 0];
    for (let i = 0; i < 20000; i++) all[sampleTopP(probs, 1, rng)]!++;
    all.forEach((c, i) => expect(c / 20000).toBeCloseTo(probs[i]!, 1));
  });

  it('createSampler is greedy at temperature 0 and reproducible with a seed', () => {
    const logits = Float32Array.from({ length: 50 }, (_, i) => Math.sin(i));
    expect(createSampler({ temperature: 0 })(logits)).toBe(argmax(logits));
    const s1 = createSampler({ temperature: 1, topP: 0.9, seed: 9 });
    const s2 = createSampler({ temperature: 1, topP: 0.9, seed: 9 });
    const a = Array.from({ length: 30 }, () => s1(logits));
    expect(a).toEqual(Array.from({ length: 30 }, () => s2(logits)));
    expect(new Set(a).size).toBeGreaterThan(1);
    expect(() => createSampler({ topP: 1.5 })).toThrow(/topP/);
  });

  it('KL divergence', () => {
    const p = [1, 2, 3, 0.5];
    expect(klDivergence(p, p)).toBe(0);
    expect(klDivergence(p, p.map((x) => x + 7))).toBeCloseTo(0, 12);
    const q = [3, 2, 1, 0.5];
    const pp = softmaxWithTemperature(p);
    const qq = softmaxWithTemperature(q);
    let want = 0;
    for (let i = 0; i < 4; i++) want += pp[i]! * Math.log(pp[i]! / qq[i]!);
    expect(klDivergence(p, q)).toBeCloseTo(want, 12);
    expect(klDivergence(p, q)).toBeGreaterThan(0);
    expect(() => klDivergence([1], [1, 2])).toThrow(InvalidArgumentError);
  });
});
