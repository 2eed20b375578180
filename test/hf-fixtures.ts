// Builders of Hugging Face model folders for tests: stories260K converted the way transformers' conversion
// script does it, and small synthetic checkpoints for each architecture feature.
import { f32ToF16Bits } from '../src/format/f16.js';
import { layerWeights, queryDim, type Llama3RopeScaling, type LlamaConfig, type LlamaWeights } from '../src/model/checkpoint.js';
import { mulberry32 } from '../src/random.js';
import type { Tokenizer } from '../src/model/tokenizer.js';
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
    ...(config.ropeScaling
      ? {
          rope_scaling: {
            rope_type: 'llama3',
            factor: config.ropeScaling.factor,
            low_freq_factor: config.ropeScaling.lowFreqFactor,
            high_freq_factor: config.ropeScaling.highFreqFactor,
            original_max_position_embeddings: config.ropeScaling.originalMaxPositionEmbeddings,
          },
        }
      : {}),
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

export interface SyntheticOptions {
  dim?: number;
  hiddenDim?: number;
  nLayers?: number;
  nHeads?: number;
  nKvHeads?: number;
  headSize?: number;
  vocabSize?: number;
  seqLen?: number;
  sharedClassifier?: boolean;
  bias?: boolean;
  ropeTheta?: number;
  rmsNormEps?: number;
  ropeScaling?: Llama3RopeScaling;
}

/** A random engine checkpoint with any head_dim, biases and RoPE settings (the weights hfTensors converts). */
export function syntheticModel(o: SyntheticOptions, seed = 1): { config: LlamaConfig; weights: LlamaWeights } {
  const dim = o.dim ?? 24;
  const nHeads = o.nHeads ?? 4;
  const headSize = o.headSize ?? dim / nHeads;
  const nKvHeads = o.nKvHeads ?? 2;
  const config: LlamaConfig = {
    dim,
    hiddenDim: o.hiddenDim ?? 40,
    nLayers: o.nLayers ?? 2,
    nHeads,
    nKvHeads,
    vocabSize: o.vocabSize ?? 50,
    seqLen: o.seqLen ?? 32,
    headSize,
    kvDim: nKvHeads * headSize,
    sharedClassifier: o.sharedClassifier ?? true,
    ropeTheta: o.ropeTheta ?? 10000,
    rmsNormEps: o.rmsNormEps ?? 1e-6,
    ...(o.ropeScaling ? { ropeScaling: o.ropeScaling } : {}),
  };
  const rng = mulberry32(seed);
  const rand = (n: number, scale = 0.3): Float32Array => Float32Array.from({ length: n }, () => (rng() * 2 - 1) * scale);
  const { hiddenDim: h, nLayers: L, vocabSize: V, kvDim } = config;
  const qDim = nHeads * headSize;
  const tokenEmbedding = rand(V * dim, 1);
  const weights: LlamaWeights = {
    tokenEmbedding,
    rmsAttWeight: rand(L * dim, 1),
    wq: rand(L * qDim * dim),
    wk: rand(L * kvDim * dim),
    wv: rand(L * kvDim * dim),
    wo: rand(L * dim * qDim),
    rmsFfnWeight: rand(L * dim, 1),
    w1: rand(L * h * dim),
    w2: rand(L * dim * h),
    w3: rand(L * h * dim),
    rmsFinalWeight: rand(dim, 1),
    wcls: config.sharedClassifier ? tokenEmbedding : rand(V * dim),
    ...(o.bias ? { bq: rand(L * qDim, 1), bk: rand(L * kvDim, 1), bv: rand(L * kvDim, 1) } : {}),
  };
  return { config, weights };
}

/**
 * transformers' LlamaForCausalLM/Qwen2ForCausalLM forward written out naively in float64 straight from the HF
 * tensors and config.json (rotate-half RoPE on un-permuted rows, repeat_kv GQA, the llama3 inv_freq formula as
 * in `_compute_llama3_parameters`): an independent check of the loader's conversions. Returns [n][vocab].
 */
export function hfReferenceLogits(configJson: string, tensors: readonly HfTensor[], tokens: readonly number[]): Float64Array[] {
  const c = JSON.parse(configJson) as Record<string, unknown>;
  const D = c.hidden_size as number;
  const H = c.num_attention_heads as number;
  const KV = (c.num_key_value_heads as number | undefined) ?? H;
  const hd = (c.head_dim as number | undefined) ?? D / H;
  const L = c.num_hidden_layers as number;
  const eps = c.rms_norm_eps as number;
  const theta = c.rope_theta as number;
  const t = new Map(tensors.map((x) => [x.name, x.values]));
  const get = (name: string): Float32Array => {
    const v = t.get(name);
    if (!v) throw new Error(`fixture lacks ${name}`);
    return v;
  };
  const linear = (x: Float64Array, w: Float32Array, out: number, bias?: Float32Array): Float64Array => {
    const inDim = x.length;
    const y = new Float64Array(out);
    for (let o = 0; o < out; o++) {
      let s = bias ? (bias[o] as number) : 0;
      for (let i = 0; i < inDim; i++) s += (w[o * inDim + i] as number) * (x[i] as number);
      y[o] = s;
    }
    return y;
  };
  const norm = (x: Float64Array, w: Float32Array): Float64Array => {
    let ss = 0;
    for (const v of x) ss += v * v;
    const r = 1 / Math.sqrt(ss / x.length + eps);
    return x.map((v, i) => v * r * (w[i] as number));
  };
  let invFreq = Array.from({ length: hd / 2 }, (_, i) => 1 / Math.pow(theta, (2 * i) / hd));
  const scaling = c.rope_scaling as Record<string, number> | undefined;
  if (scaling) {
    const { factor, low_freq_factor: lo, high_freq_factor: hi, original_max_position_embeddings: old } = scaling as Record<string, number>;
    invFreq = invFreq.map((f) => {
      const wavelen = (2 * Math.PI) / f;
      const scaled = wavelen > old! / lo! ? f / factor! : f;
      const smooth = (old! / wavelen - lo!) / (hi! - lo!);
      const medium = !(wavelen < old! / hi!) && !(wavelen > old! / lo!);
      return medium ? (1 - smooth) * (scaled / factor!) + smooth * scaled : scaled;
    });
  }
  const ropeRotateHalf = (x: Float64Array, heads: number, pos: number): void => {
    const half = hd / 2;
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < half; i++) {
        const a = x[h * hd + i] as number;
        const b = x[h * hd + half + i] as number;
        const cos = Math.cos(pos * (invFreq[i] as number));
        const sin = Math.sin(pos * (invFreq[i] as number));
        x[h * hd + i] = a * cos - b * sin;
        x[h * hd + half + i] = b * cos + a * sin;
      }
    }
  };
  const bias = (name: string): Float32Array | undefined => t.get(name);
  const xs = tokens.map((tok) => Float64Array.from(get('model.embed_tokens.weight').subarray(tok * D, (tok + 1) * D)));
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}.`;
    const ks: Float64Array[] = [];
    const vs: Float64Array[] = [];
    const qs: Float64Array[] = [];
    xs.forEach((x, pos) => {
      const h = norm(x, get(`${p}input_layernorm.weight`));
      const q = linear(h, get(`${p}self_attn.q_proj.weight`), H * hd, bias(`${p}self_attn.q_proj.bias`));
      const k = linear(h, get(`${p}self_attn.k_proj.weight`), KV * hd, bias(`${p}self_attn.k_proj.bias`));
      const v = linear(h, get(`${p}self_attn.v_proj.weight`), KV * hd, bias(`${p}self_attn.v_proj.bias`));
      ropeRotateHalf(q, H, pos);
      ropeRotateHalf(k, KV, pos);
      qs.push(q);
      ks.push(k);
      vs.push(v);
    });
    xs.forEach((x, pos) => {
      const att = new Float64Array(H * hd);
      for (let h = 0; h < H; h++) {
        const kvh = Math.floor(h / (H / KV));
        const scores = Array.from({ length: pos + 1 }, (_, s) => {
          let dot = 0;
          for (let i = 0; i < hd; i++) dot += (qs[pos]![h * hd + i] as number) * (ks[s]![kvh * hd + i] as number);
          return dot / Math.sqrt(hd);
        });
        const m = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - m));
        const z = e.reduce((a, b) => a + b, 0);
        for (let s = 0; s <= pos; s++) {
          for (let i = 0; i < hd; i++) att[h * hd + i] = (att[h * hd + i] as number) + ((e[s] as number) / z) * (vs[s]![kvh * hd + i] as number);
        }
      }
      const o = linear(att, get(`${p}self_attn.o_proj.weight`), D);
      for (let i = 0; i < D; i++) x[i] = (x[i] as number) + (o[i] as number);
      const h2 = norm(x, get(`${p}post_attention_layernorm.weight`));
      const inter = c.intermediate_size as number;
      const gate = linear(h2, get(`${p}mlp.gate_proj.weight`), inter);
      const up = linear(h2, get(`${p}mlp.up_proj.weight`), inter);
      const act = gate.map((g, i) => (g / (1 + Math.exp(-g))) * (up[i] as number));
      const down = linear(act, get(`${p}mlp.down_proj.weight`), D);
      for (let i = 0; i < D; i++) x[i] = (x[i] as number) + (down[i] as number);
    });
  }
  const head = c.tie_word_embeddings ? get('model.embed_tokens.weight') : get('lm_head.weight');
  return xs.map((x) => linear(norm(x, get('model.norm.weight')), head, c.vocab_size as number));
}

/**
 * tokenizer.json equivalent to a llama2.c (sentencepiece BPE) tokenizer, built the way transformers'
 * LlamaConverter does: pieces with "▁" for spaces, BPE merges of every split of every piece into two pieces,
 * ranked by the merged piece's score (then ids), byte fallback, Metaspace-style normalizer and decoder.
 */
export function tokenizerJsonFromLlama2c(tok: Tokenizer): Record<string, unknown> {
  const decoder = new TextDecoder('utf-8', { fatal: true });
  const specials = ['<unk>', '<s>', '</s>'];
  const pieces = tok.pieces.map((bytes, id) => (id < specials.length ? (specials[id] as string) : decoder.decode(bytes).replaceAll(' ', '▁')));
  const vocab: Record<string, number> = {};
  pieces.forEach((p, id) => {
    if (!(p in vocab)) vocab[p] = id;
  });
  const merges: Array<{ left: string; right: string; score: number; id: number; l: number; r: number }> = [];
  pieces.forEach((piece, id) => {
    if (id < specials.length || /^<0x[0-9A-F]{2}>$/.test(piece)) return;
    const chars = Array.from(piece);
    for (let k = 1; k < chars.length; k++) {
      const left = chars.slice(0, k).join('');
      const right = chars.slice(k).join('');
      const l = vocab[left];
      const r = vocab[right];
      if (l !== undefined && r !== undefined) merges.push({ left, right, score: tok.scores[id] as number, id, l, r });
    }
  });
  merges.sort((a, b) => b.score - a.score || a.id - b.id || a.l - b.l || a.r - b.r);
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: specials.map((content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: {
      type: 'Sequence',
      normalizers: [
        { type: 'Prepend', prepend: '▁' },
        { type: 'Replace', pattern: { String: ' ' }, content: '▁' },
      ],
    },
    pre_tokenizer: null,
    post_processor: null,
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: '<unk>',
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab,
      merges: merges.map((m) => [m.left, m.right]),
    },
  };
}
