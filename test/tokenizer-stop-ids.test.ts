// The Generator takes any TextTokenizer: a HF tokenizer's BOS starts the prompt and its EOS ids (not llama2.c's
// BOS) end a stopAtBos generation, token by token and speculatively.
import { describe, expect, it } from 'vitest';
import { Generator } from '../src/app/generator.js';
import { parseCheckpoint } from '../src/model/checkpoint.js';
import { HfTokenizer } from '../src/model/hf/tokenizer.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { testGpu } from './helpers/gpu.js';
import { tokenizerJsonFromLlama2c } from './hf-fixtures.js';
import { sharedBytes, sharedText } from './model-helpers.js';

const reference = JSON.parse(sharedText('data/stories260K_greedy_reference.json')) as { tokens: number[] };
const checkpoint = parseCheckpoint(sharedBytes('models/stories260K.bin'));
const tok512 = Tokenizer.parse(sharedBytes('models/tok512.bin'), 512);

/** The 20th generated reference id, at its first occurrence: an "EOS" the greedy run reaches mid-text. */
const generated = reference.tokens.slice(1);
const stopIndex = generated.findIndex((id, i) => i >= 19 && generated.indexOf(id) === i && id !== 1);
const stopId = generated[stopIndex] as number;

describe('Generator with a HF tokenizer', () => {
  it('stops after the EOS id of config.json with stopAtBos, plain and speculative; the llama2.c tokenizer does not', async () => {
    expect(stopIndex).toBeGreaterThan(0);
    const hf = HfTokenizer.fromJson(tokenizerJsonFromLlama2c(tok512), { bos_token: '<s>', eos_token: '</s>' }, { bosTokenId: 1, eosTokenIds: [stopId], vocabSize: 512 });
    expect(hf.stopIds).toEqual([stopId]);
    const gpu = await testGpu();
    const gen = Generator.create(gpu, checkpoint, hf);
    const plain = await gen.generate({ prompt: '', steps: 63, policy: 'full', stopAtBos: true });
    expect(plain.promptTokens).toEqual([1]);
    expect(plain.tokens).toEqual(generated.slice(0, stopIndex + 1));
    const spec = await gen.generate({ prompt: '', steps: 63, policy: 'full', stopAtBos: true, speculate: { method: 'ngram', adaptive: false } });
    expect(spec.tokens).toEqual(plain.tokens);
    gen.destroy();
    const llama2c = Generator.create(gpu, checkpoint, tok512);
    const run = await llama2c.generate({ prompt: '', steps: stopIndex + 4, policy: 'full', stopAtBos: true });
    expect(run.tokens).toEqual(generated.slice(0, stopIndex + 4));
    llama2c.destroy();
  }, 180_000);

  it('a model without a BOS token starts from the prompt itself, and asks for one when it is empty', async () => {
    const bare = HfTokenizer.fromJson(tokenizerJsonFromLlama2c(tok512), { bos_token: null, eos_token: '</s>' }, { bosTokenId: undefined, eosTokenIds: [2], vocabSize: 512 });
    const gen = Generator.create(await testGpu(), checkpoint, bare);
    const run = await gen.generate({ prompt: 'Once upon a time', steps: 4, policy: 'full' });
    expect(run.promptTokens).toEqual(tok512.encode('Once upon a time', { bos: false }));
    expect(run.tokens).toHaveLength(4);
    await expect(gen.generate({ prompt: '', steps: 4, policy: 'full' })).rejects.toThrow(/must not be empty for a model without a BOS token/);
    gen.destroy();
  }, 120_000);
});
