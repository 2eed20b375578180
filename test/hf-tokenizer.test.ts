import { describe, expect, it } from 'vitest';
import { HfModelError } from '../src/errors.js';
import { memoryFolder } from '../src/model/hf/loader.js';
import { HfTokenizer, loadHfTokenizer } from '../src/model/hf/tokenizer.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { tokenizerJsonFromLlama2c } from './hf-fixtures.js';
import { sharedBytes, sharedText } from './model-helpers.js';

const tok512 = Tokenizer.parse(sharedBytes('models/tok512.bin'), 512);
const tokenizerJson = tokenizerJsonFromLlama2c(tok512);
const enc = (s: string) => new TextEncoder().encode(s);
const tokenizerConfig = {
  bos_token: '<s>',
  eos_token: '</s>',
  chat_template:
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}",
};

describe('tokenizer.json through @huggingface/tokenizers', () => {
  const hf = HfTokenizer.fromJson(tokenizerJson, tokenizerConfig);

  it('encodes the whole dev text to the same ids as the llama2.c tokenizer', () => {
    const text = sharedText('data/tinystories_dev.txt');
    const want = tok512.encode(text);
    const got = hf.encode(text);
    expect(got.length).toBe(want.length);
    expect(got).toEqual(want);
    // And the evaluation prefix ("\n\n" → "\n", 24,576 characters) that the perplexity figure is computed on.
    const evalText = text.replaceAll('\n\n', '\n').slice(0, 24576);
    expect(hf.encode(evalText, { bos: true })).toEqual(tok512.encode(evalText, { bos: true }));
  });

  it('decodes the greedy reference ids to the llama2.c text, whole and token by token', () => {
    const reference = JSON.parse(sharedText('data/stories260K_greedy_reference.json')) as { tokens: number[] };
    const ids = reference.tokens;
    expect(hf.decodeAll(ids)).toBe(tok512.decodeAll(ids));
    let streamed = '';
    let want = '';
    for (let i = 1; i < ids.length; i++) {
      streamed += hf.decode(ids[i - 1] as number, ids[i] as number);
      want += tok512.decode(ids[i - 1] as number, ids[i] as number);
    }
    expect(streamed).toBe(want);
    expect(hf.encode('Ünïcödé ☃ text', { bos: true })).toEqual(tok512.encode('Ünïcödé ☃ text', { bos: true }));
    expect(hf.decodeAll(hf.encode('Ünïcödé ☃ text', { bos: true }))).toBe('Ünïcödé ☃ text');
  });

  it('BOS/EOS come from tokenizer_config.json (or config.json), empty text is no tokens', () => {
    expect(hf.bosId).toBe(1);
    expect(hf.eosIds).toEqual([2]);
    expect(hf.vocabSize).toBe(512);
    expect(hf.encode('', { bos: true, eos: true })).toEqual([1, 2]);
    // Special tokens written in the text (as chat templates do) are single ids, not spelled out.
    expect(hf.encode('<s>Hi</s>')).toEqual([1, ...hf.encode('Hi'), 2]);
    const fromModel = HfTokenizer.fromJson(tokenizerJson, {}, { bosTokenId: 1, eosTokenIds: [2, 0] });
    expect(fromModel.eosIds).toEqual([2, 0]);
    // An embedding padded past the tokenizer's ids (Qwen2.5): the padding ids are valid and print nothing.
    const padded = HfTokenizer.fromJson(tokenizerJson, {}, { bosTokenId: 1, eosTokenIds: [2], vocabSize: 520 });
    expect(padded.vocabSize).toBe(520);
    expect(padded.decode(300, 515)).toBe('');
    expect(padded.decodeAll([1, 300, 519])).toBe(padded.decodeAll([1, 300]));
    expect(() => padded.decode(1, 520)).toThrow(/outside the vocabulary/);
    // No BOS anywhere: a sequence starts with the text itself; an EOS it lacks cannot be added.
    const bare = HfTokenizer.fromJson(tokenizerJson, { bos_token: null, eos_token: null });
    expect(bare.bosId).toBeUndefined();
    expect(bare.encode('x', { bos: true })).toEqual(bare.encode('x'));
    expect(bare.encode('x').length).toBeGreaterThan(0);
    expect(() => bare.encode('x', { eos: true })).toThrow(/no eos token/);
  });

  it('renders the chat template with @huggingface/jinja', () => {
    const prompt = hf.applyChatTemplate([{ role: 'user', content: 'Tell me a story.' }]);
    expect(prompt).toBe('<s><|user|>Tell me a story.</s><|assistant|>');
    expect(hf.applyChatTemplate([{ role: 'user', content: 'x' }], { addGenerationPrompt: false })).toBe('<s><|user|>x</s>');
    expect(() => HfTokenizer.fromJson(tokenizerJson, {}).applyChatTemplate([])).toThrow(HfModelError);
  });

  it('a folder without tokenizer.json, or with a broken one, is an HfModelError naming the file', async () => {
    await expect(loadHfTokenizer(memoryFolder('empty', {}))).rejects.toThrow(/empty: tokenizer.json: missing/);
    await expect(loadHfTokenizer(memoryFolder('bad', { 'tokenizer.json': enc('{') }))).rejects.toThrow(/tokenizer.json: json/);
    const unknownModel = { ...tokenizerJson, model: { type: 'NoSuchModel' } };
    await expect(loadHfTokenizer(memoryFolder('bad', { 'tokenizer.json': enc(JSON.stringify(unknownModel)) }))).rejects.toBeInstanceOf(HfModelError);
    const loaded = await loadHfTokenizer(
      memoryFolder('ok', { 'tokenizer.json': enc(JSON.stringify(tokenizerJson)), 'tokenizer_config.json': enc(JSON.stringify(tokenizerConfig)) }),
    );
    expect(loaded.hasChatTemplate).toBe(true);
  });
});
