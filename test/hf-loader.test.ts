import { describe, expect, it } from 'vitest';
import { HfModelError, MissingTensorError, ModelFormatError, UnknownArchitectureError, UnsupportedDtypeError } from '../src/errors.js';
import { parseHfConfig } from '../src/model/hf/config.js';
import { blobFolder, loadHfModel, memoryFolder, permuteRope, unpermuteRope } from '../src/model/hf/loader.js';
import { bytesSource, decodeToF32, openSafetensors, writeSafetensors } from '../src/model/hf/safetensors.js';
import { ReferenceLlama, ropeFrequencies } from '../src/model/reference-forward.js';
import {
  hfConfigJson,
  hfFolderFiles,
  hfReferenceLogits,
  hfTensors,
  safetensorsOf,
  shardedFolderFiles,
  syntheticModel,
  type SyntheticOptions,
} from './hf-fixtures.js';

const enc = (s: string) => new TextEncoder().encode(s);

/** Loads the synthetic model through config.json + safetensors and compares the engine's CPU forward with the
 * naive transformers-style forward on the HF tensors, over every position of the context. */
async function checkAgainstHf(options: SyntheticOptions, architecture: string, extra: Record<string, unknown> = {}) {
  const { config, weights } = syntheticModel(options, 7);
  const files = hfFolderFiles(config, weights, 'F32', architecture, extra);
  const loaded = await loadHfModel(memoryFolder('synthetic', files));
  const tokens = Array.from({ length: config.seqLen }, (_, i) => (i * 17 + 3) % config.vocabSize);
  const want = hfReferenceLogits(hfConfigJson(config, architecture, extra), hfTensors(config, weights), tokens);
  const model = new ReferenceLlama(loaded.checkpoint);
  let worst = 0;
  tokens.forEach((token, pos) => {
    const got = model.forward(token, pos);
    const w = want[pos] as Float64Array;
    for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs((got[i] as number) - (w[i] as number)));
  });
  return { loaded, worst };
}

describe('RoPE layout', () => {
  it('unpermuteRope inverts the HF export permutation, for matrices and bias vectors', () => {
    const w = Float32Array.from({ length: 3 * 8 * 5 }, (_, i) => i);
    const hf = permuteRope(w, 3, 8, 5);
    expect(hf).not.toEqual(w);
    // Head 0 in rotate-half order: rows 0,2,4,6 (first components of the pairs) then 1,3,5,7.
    expect(Array.from(hf.subarray(0, 8 * 5).filter((_, i) => i % 5 === 0)).map((v) => v / 5)).toEqual([0, 2, 4, 6, 1, 3, 5, 7]);
    const back = new Float32Array(w.length + 4);
    unpermuteRope(hf, back, 4, 3, 8, 5);
    expect(back.subarray(4)).toEqual(w);
    const b = Float32Array.from({ length: 16 }, (_, i) => i);
    const restored = new Float32Array(16);
    unpermuteRope(permuteRope(b, 2, 8, 1), restored, 0, 2, 8, 1);
    expect(restored).toEqual(b);
  });

  it('llama3 rope_scaling frequencies follow transformers: high frequencies kept, low divided by factor, band blended', () => {
    const scaling = { factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 };
    const plain = ropeFrequencies(64, 500000);
    const scaled = ropeFrequencies(64, 500000, scaling);
    let kept = 0;
    let divided = 0;
    let blended = 0;
    for (let i = 0; i < 32; i++) {
      const f = plain[i] as number;
      const wavelen = (2 * Math.PI) / f;
      if (wavelen < 8192 / 4) {
        expect(scaled[i]).toBe(f);
        kept++;
      } else if (wavelen > 8192) {
        expect(scaled[i]).toBeCloseTo(f / 32, 12);
        divided++;
      } else {
        const smooth = (8192 / wavelen - 1) / 3;
        expect(scaled[i]).toBeCloseTo((1 - smooth) * (f / 32) + smooth * f, 10);
        blended++;
      }
    }
    expect([kept > 0, divided > 0, blended > 0]).toEqual([true, true, true]);
  });
});

describe('synthetic HF checkpoints vs a transformers-style forward on the HF tensors', () => {
  // Engine: f32 activations, interleaved RoPE on un-permuted rows. Reference: float64, rotate-half. Logits are O(1).
  const tolerance = 2e-5;

  it('Llama: GQA, head_dim ≠ hidden/heads, untied lm_head, rope_theta 500000 and llama3 rope_scaling', async () => {
    const { loaded, worst } = await checkAgainstHf(
      {
        dim: 24,
        nHeads: 4,
        nKvHeads: 2,
        headSize: 8,
        sharedClassifier: false,
        ropeTheta: 500000,
        ropeScaling: { factor: 8, lowFreqFactor: 1, highFreqFactor: 16, originalMaxPositionEmbeddings: 2048 },
      },
      'LlamaForCausalLM',
    );
    expect(loaded.checkpoint.config).toMatchObject({ headSize: 8, kvDim: 16, sharedClassifier: false, ropeTheta: 500000 });
    expect(loaded.checkpoint.config.ropeScaling?.factor).toBe(8);
    expect(loaded.checkpoint.weights.wcls).not.toBe(loaded.checkpoint.weights.tokenEmbedding);
    expect(worst).toBeLessThan(tolerance);
  });

  it('Qwen2: q/k/v biases, tied embeddings, GQA 6:1', async () => {
    const { loaded, worst } = await checkAgainstHf({ dim: 24, nHeads: 6, nKvHeads: 1, bias: true, ropeTheta: 1e6 }, 'Qwen2ForCausalLM', {
      use_sliding_window: false,
      sliding_window: 32,
    });
    expect(loaded.config.attentionBias).toBe(true);
    expect(loaded.config.slidingWindow).toBeUndefined();
    expect(loaded.checkpoint.weights.bq).toHaveLength(2 * 24);
    expect(loaded.checkpoint.weights.wcls).toBe(loaded.checkpoint.weights.tokenEmbedding);
    expect(worst).toBeLessThan(tolerance);
  });

  it('Mistral: untied, sliding_window reported', async () => {
    const { loaded, worst } = await checkAgainstHf({ sharedClassifier: false }, 'MistralForCausalLM', { sliding_window: 4096 });
    expect(loaded.config.architecture).toBe('MistralForCausalLM');
    expect(loaded.config.slidingWindow).toBe(4096);
    expect(worst).toBeLessThan(tolerance);
  });

  it('a model split over 3 shards by model.safetensors.index.json loads the same weights as one file', async () => {
    const { config, weights } = syntheticModel({ sharedClassifier: false }, 3);
    const one = await loadHfModel(memoryFolder('one', hfFolderFiles(config, weights)));
    const files = shardedFolderFiles(config, weights, 3);
    const progress: number[] = [];
    const sharded = await loadHfModel(memoryFolder('sharded', files), { onTensor: (_, i) => progress.push(i) });
    expect(sharded.files).toHaveLength(3);
    expect(sharded.checkpoint.weights).toEqual(one.checkpoint.weights);
    expect(progress.at(-1)).toBe(2 + 9 * config.nLayers + 1);
  });

  it('files dropped on a page (File/Blob) load like bytes in memory', async () => {
    const { config, weights } = syntheticModel({ bias: true }, 4);
    const files = hfFolderFiles(config, weights, 'F16', 'Qwen2ForCausalLM');
    const fromMemory = await loadHfModel(memoryFolder('m', files));
    const dropped = Object.entries(files).map(([name, bytes]) => new File([bytes.slice()], name));
    const fromBlobs = await loadHfModel(blobFolder('dropped', dropped));
    expect(fromBlobs.checkpoint.weights).toEqual(fromMemory.checkpoint.weights);
    await expect(loadHfModel(blobFolder('nothing', []))).rejects.toThrow(/nothing: config.json: missing/);
  });

  it('BF16 widens exactly and F16 decodes subnormals, infinities and signs', () => {
    expect(Array.from(decodeToF32('BF16', Uint8Array.of(0x80, 0x3f, 0xc0, 0xbf)))).toEqual([1, -1.5]);
    expect(Array.from(decodeToF32('F16', Uint8Array.of(0x00, 0x3c, 0x01, 0x00, 0x00, 0x7c, 0x00, 0xc0)))).toEqual([1, 2 ** -24, Infinity, -2]);
  });
});

/** Rebuilds a safetensors file with its header JSON edited (the data bytes kept). */
function editHeader(file: Uint8Array, edit: (header: Record<string, { dtype: string; shape: number[]; data_offsets: number[] }>) => void): Uint8Array {
  const length = Number(new DataView(file.buffer, file.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(file.subarray(8, 8 + length))) as Record<string, { dtype: string; shape: number[]; data_offsets: number[] }>;
  edit(header);
  const json = enc(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + file.length - 8 - length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(file.subarray(8 + length), 8 + json.length);
  return out;
}

describe('bad input: typed errors naming the file and the field, before any tensor is read', () => {
  const { config, weights } = syntheticModel({}, 5);
  const good = hfFolderFiles(config, weights);
  const weightsFile = good['model.safetensors'] as Uint8Array;

  async function failure(files: Record<string, Uint8Array>): Promise<HfModelError> {
    let tensorsRead = 0;
    const err = await loadHfModel(memoryFolder('bad', files), { onTensor: () => tensorsRead++ }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(HfModelError);
    expect(err).toBeInstanceOf(ModelFormatError);
    expect(tensorsRead).toBe(0);
    return err as HfModelError;
  }

  it('the good folder loads', async () => {
    await expect(loadHfModel(memoryFolder('good', good))).resolves.toBeDefined();
  });

  it('a truncated safetensors file', async () => {
    const err = await failure({ ...good, 'model.safetensors': weightsFile.subarray(0, weightsFile.length - 10) });
    expect(err.file).toBe('model.safetensors');
    expect(err.field).toBe('model.norm.weight.data_offsets');
    expect(err.message).toMatch(/past the end of the file .*truncated/);
    const headerOnly = await failure({ ...good, 'model.safetensors': weightsFile.subarray(0, 20) });
    expect(headerOnly.field).toBe('header length');
    expect((await failure({ ...good, 'model.safetensors': weightsFile.subarray(0, 5) })).field).toBe('header length');
  });

  it('a header that lies about offsets: overlap, gap, wrong span, trailing bytes', async () => {
    const overlap = await failure({
      ...good,
      'model.safetensors': editHeader(weightsFile, (h) => {
        const t = h['model.norm.weight']!;
        t.data_offsets = [t.data_offsets[0]! - 4, t.data_offsets[1]! - 4];
      }),
    });
    expect(overlap.field).toMatch(/data_offsets$/);
    expect(overlap.message).toMatch(/overlaps|gap/);
    const span = await failure({
      ...good,
      'model.safetensors': editHeader(weightsFile, (h) => {
        h['model.norm.weight']!.shape = [config.dim + 1];
      }),
    });
    expect(span.field).toBe('model.norm.weight.data_offsets');
    expect(span.message).toMatch(/does not match shape/);
    const trailing = new Uint8Array(weightsFile.length + 8);
    trailing.set(weightsFile);
    const tail = await failure({ ...good, 'model.safetensors': trailing });
    expect(tail.message).toMatch(/8 undeclared trailing bytes/);
    const notJson = await failure({
      ...good,
      'model.safetensors': (() => {
        const b = weightsFile.slice();
        b[9] = 0xff;
        return b;
      })(),
    });
    expect(notJson.field).toBe('header');
  });

  it('a missing tensor', async () => {
    const tensors = hfTensors(config, weights).filter((t) => t.name !== 'model.layers.1.mlp.up_proj.weight');
    const err = await failure({ ...good, 'model.safetensors': safetensorsOf(tensors, 'F32') });
    expect(err).toBeInstanceOf(MissingTensorError);
    expect(err.file).toBe('model.safetensors');
    expect(err.field).toBe('model.layers.1.mlp.up_proj.weight');
    const untied = await failure({ ...good, 'config.json': enc(hfConfigJson({ ...config, sharedClassifier: false })) });
    expect(untied.field).toBe('lm_head.weight');
    const shards = shardedFolderFiles(config, weights, 2);
    const { 'model-00002-of-00002.safetensors': _dropped, ...withoutShard } = shards;
    expect((await failure(withoutShard)).file).toBe('model.safetensors.index.json');
  });

  it('an unknown architecture, a bad config field, a shape that disagrees with config.json', async () => {
    const arch = await failure({ ...good, 'config.json': enc(hfConfigJson(config, 'GPT2LMHeadModel')) });
    expect(arch).toBeInstanceOf(UnknownArchitectureError);
    expect(arch.file).toBe('config.json');
    expect(arch.field).toBe('architectures');
    expect(arch.message).toMatch(/LlamaForCausalLM/);
    const heads = await failure({ ...good, 'config.json': enc(hfConfigJson(config, 'LlamaForCausalLM', { num_key_value_heads: 3 })) });
    expect(heads.field).toBe('num_key_value_heads');
    const rope = await failure({ ...good, 'config.json': enc(hfConfigJson(config, 'LlamaForCausalLM', { rope_scaling: { rope_type: 'yarn', factor: 4 } })) });
    expect(rope.field).toBe('rope_scaling.rope_type');
    const shape = await failure({ ...good, 'config.json': enc(hfConfigJson({ ...config, hiddenDim: config.hiddenDim + 2 })) });
    expect(shape.field).toBe('model.layers.0.mlp.gate_proj.weight.shape');
    expect(() => parseHfConfig('{"architectures": ["LlamaForCausalLM"]}')).toThrow(/hidden_size: is required/);
  });

  it('a dtype it does not support', async () => {
    const tensors = hfTensors(config, weights);
    const file = writeSafetensors(
      tensors.map((t) =>
        t.name === 'model.norm.weight'
          ? { name: t.name, dtype: 'F64', shape: t.shape, data: new Uint8Array(Float64Array.from(t.values).buffer) }
          : { name: t.name, dtype: 'F32', shape: t.shape, data: new Uint8Array(Float32Array.from(t.values).buffer) },
      ),
    );
    const err = await failure({ ...good, 'model.safetensors': file });
    expect(err).toBeInstanceOf(UnsupportedDtypeError);
    expect(err.field).toBe('model.norm.weight.dtype');
    expect(err.message).toMatch(/F64 is not supported/);
    const unknown = await failure({ ...good, 'model.safetensors': editHeader(weightsFile, (h) => void (h['model.norm.weight']!.dtype = 'Q4')) });
    expect(unknown.message).toMatch(/"Q4" is not a safetensors dtype/);
  });

  it('the reader accepts metadata and empty tensors, and rejects a header that is not an object', async () => {
    const file = writeSafetensors([{ name: 'empty', dtype: 'F32', shape: [0, 3], data: new Uint8Array(0) }], { format: 'pt' });
    const opened = await openSafetensors(bytesSource('x.safetensors', file));
    expect(opened.metadata).toEqual({ format: 'pt' });
    expect(await opened.readF32('empty')).toHaveLength(0);
    const array = enc('[1, 2]   ');
    const bad = new Uint8Array(8 + array.length);
    new DataView(bad.buffer).setBigUint64(0, BigInt(array.length), true);
    bad.set(array, 8);
    await expect(openSafetensors(bytesSource('y.safetensors', bad))).rejects.toThrow(/y.safetensors: header/);
  });
});
