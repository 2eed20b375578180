import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '../src/errors.js';
import { parseCheckpoint } from '../src/model/checkpoint.js';
import { prepareEvalWindows } from '../src/eval/eval-text.js';
import { perplexityOfWindows } from '../src/eval/metrics.js';
import {
  denseAttention,
  matmul,
  ReferenceLlama,
  rmsnorm,
  rope,
  silu,
  softmax,
} from '../src/model/reference-forward.js';
import type { AttentionHook } from '../src/attention/backend.js';
import { argmax } from '../src/model/sampling.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { randomModel, sharedBytes, sharedText } from './model-helpers.js';

const checkpoint = parseCheckpoint(sharedBytes('models/stories260K.bin'));
const tokenizer = Tokenizer.parse(sharedBytes('models/tok512.bin'), checkpoint.config.vocabSize);

describe('building blocks', () => {
  it('rmsnorm, matmul, silu, softmax', () => {
    const out = new Float32Array(2);
    rmsnorm(out, Float32Array.of(3, 4), Float32Array.of(1, 2));
    const s = 1 / Math.sqrt(12.5 + 1e-5);
    expect(out[0]).toBeCloseTo(3 * s, 6);
    expect(out[1]).toBeCloseTo(8 * s, 6);
    const y = new Float32Array(2);
    matmul(y, Float32Array.of(1, 2, 3), Float32Array.of(1, 0, 0, 0.5, 1, 2), 3, 2);
    expect(Array.from(y)).toEqual([1, 8.5]);
    expect(silu(0)).toBe(0);
    expect(silu(2)).toBeCloseTo(2 / (1 + Math.exp(-2)), 12);
    const p = Float32Array.of(1, 2, 3, 99);
    softmax(p, 3);
    expect(p[0]! + p[1]! + p[2]!).toBeCloseTo(1, 6);
    expect(p[2]! / p[1]!).toBeCloseTo(Math.E, 5);
    expect(p[3]).toBe(99);
  });

  it('rope rotates each pair of each head by pos·10000^(−2i/headSize)', () => {
    const v = Float32Array.of(1, 0, 1, 0, 0, 1, 0, 1); // two heads of size 4
    rope(v, 0, 4);
    expect(Array.from(v)).toEqual([1, 0, 1, 0, 0, 1, 0, 1]);
    rope(v, 3, 4);
    const a0 = 3;
    const a1 = 3 * Math.pow(10000, -2 / 4);
    const want = [Math.cos(a0), Math.sin(a0), Math.cos(a1), Math.sin(a1), -Math.sin(a0), Math.cos(a0), -Math.sin(a1), Math.cos(a1)];
    want.forEach((w, i) => expect(v[i]).toBeCloseTo(w, 6));
  });
});

describe('ReferenceLlama on stories260K', () => {
  it('greedy decoding from BOS reproduces the published 256-step sample exactly', () => {
    const ref = JSON.parse(sharedText('data/stories260K_greedy_reference.json')) as { tokens: number[]; text: string; steps: number };
    const model = new ReferenceLlama(checkpoint);
    const ids = [1];
    for (let pos = 0; pos < ref.steps; pos++) ids.push(argmax(model.forward(ids[pos]!, pos)));
    expect(ids).toHaveLength(257);
    expect(ids).toEqual(ref.tokens);
    expect(tokenizer.decodeAll(ids)).toBe(ref.text);
    let streamed = '';
    for (let i = 1; i < ids.length; i++) streamed += tokenizer.decode(ids[i - 1]!, ids[i]!);
    expect(streamed).toBe(ref.text);
  });

  it('full-cache perplexity over the 8 evaluation windows is 3.653 and top-1 65.68%', () => {
    const windows = prepareEvalWindows(sharedText('data/tinystories_dev.txt'), tokenizer);
    const model = new ReferenceLlama(checkpoint);
    const r = perplexityOfWindows(windows, (token, pos) => {
      if (pos === 0) model.reset();
      return model.forward(token, pos);
    });
    console.log(`stories260K full cache: ppl ${r.perplexity.toFixed(5)}, mean NLL ${r.meanNll.toFixed(6)}, top-1 ${(100 * r.top1).toFixed(3)}% over ${r.count}`);
    expect(r.count).toBe(4088);
    expect(Math.abs(r.perplexity / 3.6531 - 1)).toBeLessThan(0.002);
    expect(Math.abs(r.top1 - 0.6568)).toBeLessThan(0.0015);
  });

  it('rejects positions past seq_len and unknown tokens', () => {
    const model = new ReferenceLlama(checkpoint);
    expect(() => model.forward(512, 0)).toThrow(InvalidArgumentError);
    expect(() => model.forward(1, 512)).toThrow(/pos/);
    expect(() => model.forward(1, -1)).toThrow(InvalidArgumentError);
  });
});

describe('attention hook', () => {
  /** Multi-head attention written independently: KV heads expanded to query heads, then plain per-head loops. */
  function expandedHook(nHeads: number, nKvHeads: number, headSize: number, layers: number): AttentionHook {
    const keys: Float32Array[][] = Array.from({ length: layers }, () => []);
    const values: Float32Array[][] = Array.from({ length: layers }, () => []);
    return (layer, pos, q, k, v) => {
      expect(keys[layer]).toHaveLength(pos);
      keys[layer]!.push(k.slice());
      values[layer]!.push(v.slice());
      const out = new Float32Array(nHeads * headSize);
      const group = nHeads / nKvHeads;
      for (let h = 0; h < nHeads; h++) {
        const kvh = Math.floor(h / group);
        const scores = keys[layer]!.map((kt) => {
          let s = 0;
          for (let i = 0; i < headSize; i++) s += q[h * headSize + i]! * kt[kvh * headSize + i]!;
          return s / Math.sqrt(headSize);
        });
        const m = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - m));
        const z = e.reduce((a, b) => a + b, 0);
        e.forEach((w, t) => {
          for (let i = 0; i < headSize; i++) out[h * headSize + i]! += (w / z) * values[layer]![t]![kvh * headSize + i]!;
        });
      }
      return out;
    };
  }

  for (const [nHeads, nKvHeads] of [[4, 4], [4, 2], [4, 1]] as const) {
    it(`an independent attention gives the same logits (GQA ${nHeads}/${nKvHeads})`, () => {
      const m = randomModel({ nHeads, nKvHeads, sharedClassifier: nKvHeads !== 2 }, nKvHeads);
      const dense = new ReferenceLlama(m);
      const hooked = new ReferenceLlama(m, { attention: expandedHook(nHeads, nKvHeads, m.config.headSize, m.config.nLayers) });
      let token = 1;
      for (let pos = 0; pos < m.config.seqLen; pos++) {
        const a = dense.forward(token, pos);
        const b = hooked.forward(token, pos);
        for (let i = 0; i < a.length; i++) expect(b[i]).toBeCloseTo(a[i]!, 4);
        token = argmax(a);
      }
    });
  }

  it('receives roped q/k, the new v, and may run past seq_len', () => {
    const m = randomModel({});
    const model = new ReferenceLlama(m);
    const seen: Array<[number, number, number, number, number]> = [];
    const hook: AttentionHook = (layer, pos, q, k, v) => {
      seen.push([layer, pos, q.length, k.length, v.length]);
      // The dense cache holds the same roped key the hook gets.
      if (pos < m.config.seqLen) {
        const base = (layer * m.config.seqLen + pos) * m.config.kvDim;
        expect(Array.from(k)).toEqual(Array.from(model.keyCache.subarray(base, base + m.config.kvDim)));
      }
      return denseAttention(q, k, v, 1, m.config);
    };
    model.forward(5, 0, { attention: hook });
    model.forward(6, m.config.seqLen + 3, { attention: hook });
    expect(seen).toEqual([
      [0, 0, 16, 8, 8], [1, 0, 16, 8, 8],
      [0, 15, 16, 8, 8], [1, 15, 16, 8, 8],
    ]);
  });
});
