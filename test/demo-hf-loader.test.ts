// The demo page's Hugging Face loading (demo/src/model-loader.ts) with real File objects, as the page gets them from
// a folder pick or a drop: stories260K converted to the HF layout must load to the llama2.c weights and tokenizer.
import { describe, expect, it } from 'vitest';
import { loadDropped, loadHfFiles } from '../demo/src/model-loader.js';
import { HfModelError } from '../src/errors.js';
import { parseCheckpoint } from '../src/model/checkpoint.js';
import { HfTokenizer } from '../src/model/hf/tokenizer.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { hfFolderFiles, shardedFolderFiles, tokenizerJsonFromLlama2c } from './hf-fixtures.js';
import { sharedBytes } from './model-helpers.js';

const llama2c = parseCheckpoint(sharedBytes('models/stories260K.bin'));
const hfConfig = { ...llama2c.config, rmsNormEps: 1e-5, ropeTheta: 10000 };
const tok512 = Tokenizer.parse(sharedBytes('models/tok512.bin'), 512);
const tokenizerFiles: Record<string, Uint8Array> = {
  'tokenizer.json': new TextEncoder().encode(JSON.stringify(tokenizerJsonFromLlama2c(tok512))),
  'tokenizer_config.json': new TextEncoder().encode(JSON.stringify({ bos_token: '<s>', eos_token: '</s>' })),
};

/** Files as a folder pick gives them: `name` the file's own, `webkitRelativePath` under the folder. */
function pickedFolder(folder: string, files: Record<string, Uint8Array>): File[] {
  return Object.entries(files).map(([name, bytes]) => {
    const file = new File([new Uint8Array(bytes)], name);
    Object.defineProperty(file, 'webkitRelativePath', { value: `${folder}/${name}` });
    return file;
  });
}

describe('demo page: a Hugging Face folder from File objects', () => {
  it('a picked folder loads to the llama2.c weights and a tokenizer with the same ids, BOS and EOS', async () => {
    const files = pickedFolder('stories260K-hf', { ...hfFolderFiles(hfConfig, llama2c.weights, 'F32'), ...tokenizerFiles });
    const model = await loadHfFiles(files);
    expect(model.format).toBe('hf');
    expect(model.name).toBe('stories260K-hf (LlamaForCausalLM)');
    expect(model.fingerprint).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(model.checkpoint.config).toMatchObject({ dim: 64, nLayers: 5, nHeads: 8, nKvHeads: 4, vocabSize: 512 });
    expect(model.checkpoint.weights.wq).toEqual(llama2c.weights.wq);
    expect(model.checkpoint.weights.wk).toEqual(llama2c.weights.wk);
    expect(model.checkpoint.weights.w2).toEqual(llama2c.weights.w2);
    expect(model.tokenizer).toBeInstanceOf(HfTokenizer);
    const text = 'Once upon a time, Lily found a red ball.';
    expect(model.tokenizer.encode(text, { bos: true })).toEqual(tok512.encode(text, { bos: true }));
    expect([model.tokenizer.bosId, model.tokenizer.eosIds, model.tokenizer.stopIds]).toEqual([1, [2], [2]]);
    expect([tok512.bosId, tok512.eosIds, tok512.stopIds]).toEqual([1, [2], [1]]);
  });

  it('dropped files (no folder path) go to the HF loader when config.json is among them; shards load too', async () => {
    const files = Object.entries({ ...shardedFolderFiles(hfConfig, llama2c.weights, 3), ...tokenizerFiles }).map(([n, b]) => new File([new Uint8Array(b)], n));
    expect(files.filter((f) => f.name.endsWith('.safetensors'))).toHaveLength(3);
    const model = await loadDropped(files, null);
    expect(model.format).toBe('hf');
    expect(model.name).toBe('dropped model (LlamaForCausalLM)');
    expect(model.checkpoint.weights.w1).toEqual(llama2c.weights.w1);
    expect(model.checkpoint.weights.tokenEmbedding).toEqual(llama2c.weights.tokenEmbedding);
  });

  it('the fingerprint tells different weights apart and is stable for the same files', async () => {
    const a = await loadHfFiles(pickedFolder('m', { ...hfFolderFiles(hfConfig, llama2c.weights, 'F32'), ...tokenizerFiles }));
    const again = await loadHfFiles(pickedFolder('m', { ...hfFolderFiles(hfConfig, llama2c.weights, 'F32'), ...tokenizerFiles }));
    const f16 = await loadHfFiles(pickedFolder('m', { ...hfFolderFiles(hfConfig, llama2c.weights, 'F16'), ...tokenizerFiles }));
    expect(again.fingerprint).toBe(a.fingerprint);
    expect(f16.fingerprint).not.toBe(a.fingerprint);
  });

  it('a folder without its weights or its tokenizer is an HfModelError naming the file', async () => {
    const { 'model.safetensors': _weights, ...noWeights } = hfFolderFiles(hfConfig, llama2c.weights, 'F32');
    await expect(loadHfFiles(pickedFolder('m', { ...noWeights, ...tokenizerFiles }))).rejects.toThrow(HfModelError);
    await expect(loadHfFiles(pickedFolder('m', { ...noWeights, ...tokenizerFiles }))).rejects.toThrow(/model\.safetensors/);
    const noTokenizer = pickedFolder('m', hfFolderFiles(hfConfig, llama2c.weights, 'F32'));
    await expect(loadHfFiles(noTokenizer)).rejects.toThrow(/tokenizer\.json/);
  });
});
