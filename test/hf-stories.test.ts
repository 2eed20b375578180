import { describe, expect, it } from 'vitest';
import { parseCheckpoint } from '../src/model/checkpoint.js';
import { prepareEvalWindows } from '../src/eval/eval-text.js';
import { perplexityOfWindows } from '../src/eval/metrics.js';
import { loadHfModel, memoryFolder } from '../src/model/hf/loader.js';
import { HfTokenizer } from '../src/model/hf/tokenizer.js';
import { ReferenceLlama } from '../src/model/reference-forward.js';
import { argmax } from '../src/model/sampling.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { hfFolderFiles, tokenizerJsonFromLlama2c, type FixtureDtype } from './hf-fixtures.js';
import { sharedBytes, sharedText } from './model-helpers.js';

const llama2c = parseCheckpoint(sharedBytes('models/stories260K.bin'));
const reference = JSON.parse(sharedText('data/stories260K_greedy_reference.json')) as { tokens: number[]; steps: number };
const hfConfig = { ...llama2c.config, rmsNormEps: 1e-5, ropeTheta: 10000 };

async function loadConverted(dtype: FixtureDtype) {
  return loadHfModel(memoryFolder(`stories260K-${dtype}`, hfFolderFiles(hfConfig, llama2c.weights, dtype)));
}

/** Largest |a − b| over the logits of the greedy reference sequence, positions 0..steps−1. */
function maxLogitDifference(a: ReferenceLlama, b: ReferenceLlama, steps: number): { maxDiff: number; argmaxAgree: number } {
  let maxDiff = 0;
  let agree = 0;
  for (let pos = 0; pos < steps; pos++) {
    const token = reference.tokens[pos] as number;
    const la = a.forward(token, pos);
    const lb = b.forward(token, pos);
    for (let i = 0; i < la.length; i++) maxDiff = Math.max(maxDiff, Math.abs((la[i] as number) - (lb[i] as number)));
    if (argmax(la) === argmax(lb)) agree++;
  }
  return { maxDiff, argmaxAgree: agree / steps };
}

describe('stories260K converted to the Hugging Face layout (CPU forward)', () => {
  it('f32: the loader un-permutes wq/wk back to the llama2.c weights exactly and the logits match within 1e-5', async () => {
    const hf = await loadConverted('F32');
    expect(hf.config.architecture).toBe('LlamaForCausalLM');
    expect(hf.checkpoint.config).toMatchObject({ dim: 64, nHeads: 8, nKvHeads: 4, headSize: 8, sharedClassifier: true });
    expect(hf.checkpoint.weights.wq).toEqual(llama2c.weights.wq);
    expect(hf.checkpoint.weights.wk).toEqual(llama2c.weights.wk);
    const { maxDiff, argmaxAgree } = maxLogitDifference(new ReferenceLlama(llama2c), new ReferenceLlama(hf.checkpoint), 64);
    expect(maxDiff).toBeLessThanOrEqual(1e-5);
    expect(argmaxAgree).toBe(1);
  });

  it('f32: greedy decoding reproduces the 257 reference ids', async () => {
    const model = new ReferenceLlama((await loadConverted('F32')).checkpoint);
    const ids = [1];
    for (let pos = 0; pos < reference.steps; pos++) ids.push(argmax(model.forward(ids[pos] as number, pos)));
    expect(ids).toEqual(reference.tokens);
  });

  it('f32 + tokenizer.json: the same eval windows and perplexity on the dev text (3.653, top-1 65.68%)', async () => {
    const model = new ReferenceLlama((await loadConverted('F32')).checkpoint);
    const tok512 = Tokenizer.parse(sharedBytes('models/tok512.bin'), 512);
    const tokenizer = HfTokenizer.fromJson(tokenizerJsonFromLlama2c(tok512), { bos_token: '<s>', eos_token: '</s>' });
    const text = sharedText('data/tinystories_dev.txt');
    const windows = prepareEvalWindows(text, tokenizer);
    expect(windows).toEqual(prepareEvalWindows(text, tok512));
    const r = perplexityOfWindows(windows, (token, pos) => {
      if (pos === 0) model.reset();
      return model.forward(token, pos);
    });
    expect(r.count).toBe(4088);
    expect(r.perplexity).toBeCloseTo(3.6531, 3);
    expect(r.top1).toBeCloseTo(0.6568, 4);
  });

  // Rounding the weights to 16 bits moves the logits (|logit| up to ~15 here) by a bounded amount; measured
  // maxima over 64 positions: f16 1.66e-2, bf16 1.18e-1 (argmax agreeing everywhere). Tolerances: f16 0.03, bf16 0.2.
  it.each([
    ['F16', 0.03, 1],
    ['BF16', 0.2, 0.95],
  ] as const)('%s weights: logits within %f of the f32 model, argmax agreeing on ≥ %f of positions', async (dtype, tolerance, agreement) => {
    const hf = await loadConverted(dtype);
    const { maxDiff, argmaxAgree } = maxLogitDifference(new ReferenceLlama(llama2c), new ReferenceLlama(hf.checkpoint), 64);
    console.log(`${dtype}: max |Δlogit| ${maxDiff.toExponential(3)}, argmax agreement ${argmaxAgree}`);
    expect(maxDiff).toBeGreaterThan(0); // the weights really were rounded
    expect(maxDiff).toBeLessThanOrEqual(tolerance);
    expect(argmaxAgree).toBeGreaterThanOrEqual(agreement);
  });
});
