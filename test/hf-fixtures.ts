// Builders of Hugging Face model folders for tests: stories260K converted the way transformers' conversion
// script does it, and small synthetic checkpoints for each architecture feature.
import { f32ToF16Bits } from '../src/format/f16.js';
import { layerWeights, queryDim, type LlamaConfig, type LlamaWeights } from '../src/model/checkpoint.js';
import { permuteRope } from '../src/model/hf/loader.js';
import { writeSafetensors } from '../src/model/hf/safetensors.js';

export type FixtureDtype = 'F32' | 'F16' | 'BF16';

/** f32 values encoded as little-endian F32, F16 (round to nearest even) or BF16 (round to nearest even). */
export function encodeTensor(values: Float32Array, dtype: FixtureDtype): Uint8Array {
  if (dtype === 'F32') return new Uint8Array(Float32Array.from(values).buffer);
  const out = new Uint16Array(values.length);
  if (dtype === 'F16') {
    for (let i = 0; i < values.length; i++) out[i] = f32ToF16Bits(values[i] as number);
  } else {
    const bits = new Uint32Array(Float32Array.from(values).buffer);
    for (let i = 0; i < values.length; i++) {
      const b = bits[i] as number;
      out[i] = ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
    }
  }
  return new Uint8Array(out.buffer);
}

export interface HfTensor {
  name: string;
  shape: number[];
  values: Float32Array;
}

/**
 * The HF tensors of an engine checkpoint: names of transformers' Llama, q/k rows permuted into rotate-half
 * order (as convert_llama_weights_to_hf.py does to llama2.c/Meta weights), biases when present.
 */
export function hfTensors(config: LlamaConfig, weights: LlamaWeights): HfTensor[] {
  const { dim, hiddenDim: h, kvDim, nHeads, nKvHeads, headSize, vocabSize } = config;
  const qDim = queryDim(config);
  const out: HfTensor[] = [{ name: 'model.embed_tokens.weight', shape: [vocabSize, dim], values: weights.tokenEmbedding }];
  for (let l = 0; l < config.nLayers; l++) {
    const lw = layerWeights(config, weights, l);
    const p = `model.layers.${l}.`;
    out.push(
      { name: `${p}input_layernorm.weight`, shape: [dim], values: lw.rmsAttWeight },
      { name: `${p}self_attn.q_proj.weight`, shape: [qDim, dim], values: permuteRope(lw.wq, nHeads, headSize, dim) },
      { name: `${p}self_attn.k_proj.weight`, shape: [kvDim, dim], values: permuteRope(lw.wk, nKvHeads, headSize, dim) },
      { name: `${p}self_attn.v_proj.weight`, shape: [kvDim, dim], values: lw.wv },
      { name: `${p}self_attn.o_proj.weight`, shape: [dim, qDim], values: lw.wo },
      { name: `${p}post_attention_layernorm.weight`, shape: [dim], values: lw.rmsFfnWeight },
      { name: `${p}mlp.gate_proj.weight`, shape: [h, dim], values: lw.w1 },
      { name: `${p}mlp.up_proj.weight`, shape: [h, dim], values: lw.w3 },
      { name: `${p}mlp.down_proj.weight`, shape: [dim, h], values: lw.w2 },
    );
    if (lw.bq && lw.bk && lw.bv) {
      out.push(
        { name: `${p}self_attn.q_proj.bias`, shape: [qDim], values: permuteRope(lw.bq, nHeads, headSize, 1) },
        { name: `${p}self_attn.k_proj.bias`, shape: [kvDim], values: permuteRope(lw.bk, nKvHeads, headSize, 1) },
        { name: `${p}self_attn.v_proj.bias`, shape: [kvDim], values: lw.bv },
      );
    }
  }
  out.push({ name: 'model.norm.weight', shape: [dim], values: weights.rmsFinalWeight });
  if (!config.sharedClassifier) out.push({ name: 'lm_head.weight', shape: [vocabSize, dim], values: weights.wcls });
  return out;
}

export function safetensorsOf(tensors: readonly HfTensor[], dtype: FixtureDtype): Uint8Array {
  return writeSafetensors(
    tensors.map((t) => ({ name: t.name, dtype, shape: t.shape, data: encodeTensor(t.values, dtype) })),
    { format: 'pt' },
  );
}

/** config.json of an engine config as transformers writes it for `architecture`. */
export function hfConfigJson(config: LlamaConfig, architecture = 'LlamaForCausalLM', extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    architectures: [architecture],
    hidden_size: config.dim,
    intermediate_size: config.hiddenDim,
    num_hidden_layers: config.nLayers,
    num_attention_heads: config.nHeads,
    num_key_value_heads: config.nKvHeads,
    vocab_size: config.vocabSize,
    max_position_embeddings: config.seqLen,
    rms_norm_eps: config.rmsNormEps ?? 1e-5,
    rope_theta: config.ropeTheta ?? 10000,
    tie_word_embeddings: config.sharedClassifier,
    hidden_act: 'silu',
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: 'float32',
    ...(config.headSize !== config.dim / config.nHeads ? { head_dim: config.headSize } : {}),
    ...extra,
  });
}

/** A one-file HF folder (config.json + model.safetensors) of an engine checkpoint. */
export function hfFolderFiles(
  config: LlamaConfig,
  weights: LlamaWeights,
  dtype: FixtureDtype = 'F32',
  architecture = 'LlamaForCausalLM',
  extra: Record<string, unknown> = {},
): Record<string, Uint8Array> {
  return {
    'config.json': new TextEncoder().encode(hfConfigJson(config, architecture, extra)),
    'model.safetensors': safetensorsOf(hfTensors(config, weights), dtype),
  };
}

/** The same folder split into `shards` safetensors files with a model.safetensors.index.json. */
export function shardedFolderFiles(config: LlamaConfig, weights: LlamaWeights, shards: number): Record<string, Uint8Array> {
  const tensors = hfTensors(config, weights);
  const files: Record<string, Uint8Array> = { 'config.json': new TextEncoder().encode(hfConfigJson(config)) };
  const weightMap: Record<string, string> = {};
  const per = Math.ceil(tensors.length / shards);
  for (let s = 0; s < shards; s++) {
    const name = `model-${String(s + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
    const part = tensors.slice(s * per, (s + 1) * per);
    for (const t of part) weightMap[t.name] = name;
    files[name] = safetensorsOf(part, 'F32');
  }
  files['model.safetensors.index.json'] = new TextEncoder().encode(JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap }));
  return files;
}
