import { InvalidArgumentError } from '../errors.js';
import {
  layerWeights,
  queryDim,
  type Llama3RopeScaling,
  type LlamaCheckpoint,
  type LlamaConfig,
  type LlamaLayerWeights,
  type LlamaWeights,
} from './checkpoint.js';
import type { AttentionHook } from '../attention/backend.js';

/**
 * RMSNorm epsilon of llama2.c.
 *
 * @example
 * ```ts
 * const scale = 1 / Math.sqrt(meanSquare + RMS_NORM_EPS);
 * ```
 */
export const RMS_NORM_EPS = 1e-5;
/**
 * RoPE base frequency of llama2.c.
 *
 * @example
 * ```ts
 * const freq = Math.pow(ROPE_THETA, -(2 * i) / headSize);
 * ```
 */
export const ROPE_THETA = 10000;

/**
 * out = weight ⊙ x / sqrt(mean(x²) + eps), as llama2.c `rmsnorm` (out may alias x; eps defaults to 1e-5).
 *
 * @example
 * ```ts
 * rmsnorm(xb, x, weights.rmsFinalWeight);
 * ```
 */
export function rmsnorm(out: Float32Array, x: Float32Array, weight: Float32Array, size = x.length, eps = RMS_NORM_EPS): void {
  let ss = 0;
  for (let j = 0; j < size; j++) {
    const v = x[j] ?? 0;
    ss += v * v;
  }
  const scale = 1 / Math.sqrt(ss / size + eps);
  for (let j = 0; j < size; j++) out[j] = (weight[j] ?? 0) * (scale * (x[j] ?? 0));
}

/**
 * out[d] = W[d, :] · x for a row-major W of shape [d, n] (llama2.c `matmul(xout, x, w, n, d)`).
 *
 * @example
 * ```ts
 * matmul(q, xb, lw.wq, dim, dim);
 * ```
 */
export function matmul(out: Float32Array, x: Float32Array, w: Float32Array, n: number, d: number): void {
  for (let i = 0; i < d; i++) {
    const row = i * n;
    let acc = 0;
    for (let j = 0; j < n; j++) acc += (w[row + j] as number) * (x[j] as number);
    out[i] = acc;
  }
}

/**
 * The RoPE frequency of each pair i of a head, θ^(−2i/headSize) rounded as llama2.c's `powf` (so the default
 * reproduces run.c bit for bit), then with Llama 3 scaling when given: wavelengths longer than
 * original/lowFreqFactor divided by `factor`, shorter than original/highFreqFactor kept, the band between
 * interpolated (transformers' `_compute_llama3_parameters`).
 *
 * @example
 * ```ts
 * const freqs = ropeFrequencies(64, 500000, { factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 });
 * ```
 */
export function ropeFrequencies(headSize: number, theta = ROPE_THETA, scaling?: Llama3RopeScaling): Float32Array {
  const half = headSize / 2;
  const out = new Float32Array(half);
  for (let i = 0; i < half; i++) {
    out[i] = Math.fround(1 / Math.fround(Math.pow(theta, Math.fround((2 * i) / headSize))));
  }
  if (!scaling) return out;
  const { factor, lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings: original } = scaling;
  const lowFreqWavelen = original / lowFreqFactor;
  const highFreqWavelen = original / highFreqFactor;
  for (let i = 0; i < half; i++) {
    const freq = out[i] as number;
    const wavelen = (2 * Math.PI) / freq;
    if (wavelen < highFreqWavelen) continue;
    if (wavelen > lowFreqWavelen) {
      out[i] = freq / factor;
      continue;
    }
    const smooth = (original / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
    out[i] = (1 - smooth) * (freq / factor) + smooth * freq;
  }
  return out;
}

/**
 * The RoPE frequencies of a model's config (its theta and scaling; llama2.c's when absent).
 *
 * @example
 * ```ts
 * rope(q, pos, config.headSize, q.length, configRopeFrequencies(config));
 * ```
 */
export function configRopeFrequencies(config: LlamaConfig): Float32Array {
  return ropeFrequencies(config.headSize, config.ropeTheta ?? ROPE_THETA, config.ropeScaling);
}

/**
 * Rotates each pair (2i, 2i+1) of every head of `vec` (length a multiple of `headSize`) by
 * pos · 10000^(−(2i mod headSize)/headSize), in place, as llama2.c (angle computed in fp32 like `powf`), or by
 * pos · frequencies[i] when given (see {@link ropeFrequencies}).
 *
 * @example
 * ```ts
 * rope(q, pos, headSize); rope(k, pos, headSize);
 * ```
 */
export function rope(
  vec: Float32Array,
  pos: number,
  headSize: number,
  length = vec.length,
  frequencies: Float32Array = ropeFrequencies(headSize),
): void {
  for (let i = 0; i < length; i += 2) {
    const freq = frequencies[(i % headSize) / 2] as number;
    const val = Math.fround(pos * freq);
    const fcr = Math.fround(Math.cos(val));
    const fci = Math.fround(Math.sin(val));
    const v0 = vec[i] ?? 0;
    const v1 = vec[i + 1] ?? 0;
    vec[i] = v0 * fcr - v1 * fci;
    vec[i + 1] = v0 * fci + v1 * fcr;
  }
}

function addInPlace(x: Float32Array, bias: Float32Array): void {
  for (let i = 0; i < x.length; i++) x[i] = (x[i] as number) + (bias[i] as number);
}

/**
 * x ← x / (1 + e^−x), elementwise (the SiLU of SwiGLU).
 *
 * @example
 * ```ts
 * silu(0); // 0
 * ```
 */
export function silu(x: number): number {
  return x / (1 + Math.exp(-x));
}

/**
 * In-place max-subtracted softmax of the first `size` entries (llama2.c `softmax`).
 *
 * @example
 * ```ts
 * const att = Float32Array.of(1, 2, 3); softmax(att); // sums to 1
 * ```
 */
export function softmax(x: Float32Array, size = x.length): void {
  let max = -Infinity;
  for (let i = 0; i < size; i++) max = Math.max(max, x[i] ?? -Infinity);
  let sum = 0;
  for (let i = 0; i < size; i++) {
    const e = Math.exp((x[i] ?? 0) - max);
    x[i] = e;
    sum += e;
  }
  for (let i = 0; i < size; i++) x[i] = (x[i] ?? 0) / sum;
}


/**
 * Grouped-query attention of `q` over the first `count` cached tokens (keys/values [count][kvDim]), as llama2.c:
 * query head h reads KV head ⌊h / (nHeads/nKvHeads)⌋, scores scaled by 1/√headSize, softmax, weighted V sum.
 *
 * @example
 * ```ts
 * const out = denseAttention(q, keyCache, valueCache, pos + 1, { nHeads, nKvHeads, headSize });
 * ```
 */
export function denseAttention(
  q: Float32Array,
  keys: Float32Array,
  values: Float32Array,
  count: number,
  shape: { readonly nHeads: number; readonly nKvHeads: number; readonly headSize: number },
  out: Float32Array = new Float32Array(shape.nHeads * shape.headSize),
  scratch: Float32Array = new Float32Array(count),
): Float32Array {
  const { nHeads, nKvHeads, headSize } = shape;
  const kvDim = nKvHeads * headSize;
  const kvMul = nHeads / nKvHeads;
  const scale = 1 / Math.sqrt(headSize);
  for (let h = 0; h < nHeads; h++) {
    const qo = h * headSize;
    const ko = Math.floor(h / kvMul) * headSize;
    for (let t = 0; t < count; t++) {
      const base = t * kvDim + ko;
      let s = 0;
      for (let i = 0; i < headSize; i++) s += (q[qo + i] as number) * (keys[base + i] as number);
      scratch[t] = s * scale;
    }
    softmax(scratch, count);
    for (let i = 0; i < headSize; i++) out[qo + i] = 0;
    for (let t = 0; t < count; t++) {
      const a = scratch[t] as number;
      const base = t * kvDim + ko;
      for (let i = 0; i < headSize; i++) out[qo + i] = (out[qo + i] as number) + a * (values[base + i] as number);
    }
  }
  return out;
}

/**
 * Options of {@link ReferenceLlama}.
 *
 * @example
 * ```ts
 * new ReferenceLlama(checkpoint, { attention: hook });
 * ```
 */
export interface ReferenceLlamaOptions {
  /** Replaces the dense-cache attention for every `forward` call that does not pass its own hook. */
  readonly attention?: AttentionHook;
}

/**
 * A plain-TypeScript fp32 forward pass of a llama2.c model, numerically following `run.c` (weights and
 * activations stored as f32; dot products accumulated in double, which only reduces rounding error). Keeps a
 * dense KV cache of `seqLen` tokens per layer; the attention step can be replaced by a hook.
 *
 * @example
 * ```ts
 * const model = new ReferenceLlama(parseCheckpoint(bytes));
 * let token = 1;
 * for (let pos = 0; pos < 16; pos++) token = argmax(model.forward(token, pos));
 * ```
 */
export class ReferenceLlama {
  readonly config: LlamaConfig;
  readonly weights: LlamaWeights;
  /** Dense caches [nLayers][seqLen][kvDim] of roped keys and of values. */
  readonly keyCache: Float32Array;
  readonly valueCache: Float32Array;
  private readonly layers: LlamaLayerWeights[];
  private readonly hook: AttentionHook | undefined;
  private readonly x: Float32Array;
  private readonly xb: Float32Array;
  private readonly xb2: Float32Array;
  private readonly hb: Float32Array;
  private readonly hb2: Float32Array;
  private readonly q: Float32Array;
  private readonly k: Float32Array;
  private readonly v: Float32Array;
  private readonly att: Float32Array;
  /** Attention output [nHeads · headSize] (wider than xb when head_dim · heads > dim). */
  private readonly attOut: Float32Array;
  private readonly ropeFrequencies: Float32Array;
  private readonly eps: number;

  constructor(checkpoint: LlamaCheckpoint, options: ReferenceLlamaOptions = {}) {
    const { config, weights } = checkpoint;
    this.config = config;
    this.weights = weights;
    this.hook = options.attention;
    this.layers = Array.from({ length: config.nLayers }, (_, l) => layerWeights(config, weights, l));
    this.keyCache = new Float32Array(config.nLayers * config.seqLen * config.kvDim);
    this.valueCache = new Float32Array(config.nLayers * config.seqLen * config.kvDim);
    this.x = new Float32Array(config.dim);
    this.xb = new Float32Array(config.dim);
    this.xb2 = new Float32Array(config.dim);
    this.hb = new Float32Array(config.hiddenDim);
    this.hb2 = new Float32Array(config.hiddenDim);
    this.q = new Float32Array(queryDim(config));
    this.k = new Float32Array(config.kvDim);
    this.v = new Float32Array(config.kvDim);
    this.att = new Float32Array(config.seqLen);
    this.attOut = new Float32Array(queryDim(config));
    this.ropeFrequencies = configRopeFrequencies(config);
    this.eps = config.rmsNormEps ?? RMS_NORM_EPS;
  }

  /**
   * Clears the dense KV cache (positions restart at 0).
   *
   * @example
   * ```ts
   * model.reset(); model.forward(1, 0);
   * ```
   */
  reset(): void {
    this.keyCache.fill(0);
    this.valueCache.fill(0);
  }

  /**
   * Runs `token` at position `pos` and returns fresh logits [vocabSize]. With the default attention, positions
   * 0..pos−1 must have been run before (since the last reset) and pos < seqLen. The new token's K/V are always
   * written to the dense cache when pos < seqLen, whatever the attention.
   *
   * @example
   * ```ts
   * const logits = model.forward(1, 0, { attention: (layer, pos, q, k, v) => myCache.attend(layer, pos, q, k, v) });
   * ```
   */
  forward(token: number, pos: number, options: { readonly attention?: AttentionHook } = {}): Float32Array {
    const c = this.config;
    const { dim, hiddenDim, kvDim, seqLen, headSize } = c;
    const attention = options.attention ?? this.hook;
    if (!Number.isInteger(token) || token < 0 || token >= c.vocabSize) {
      throw new InvalidArgumentError('token', `id ${token} is outside the vocabulary (0..${c.vocabSize - 1})`);
    }
    if (!Number.isInteger(pos) || pos < 0 || (attention === undefined && pos >= seqLen)) {
      throw new InvalidArgumentError(
        'pos',
        `${pos} must be an integer in 0..${seqLen - 1} (the model's seq_len) with the dense cache; reset() and start a new window`,
      );
    }
    const { x, xb, xb2, hb, hb2, q, k, v, eps } = this;
    const qDim = q.length;
    x.set(this.weights.tokenEmbedding.subarray(token * dim, (token + 1) * dim));
    for (let l = 0; l < c.nLayers; l++) {
      const lw = this.layers[l] as LlamaLayerWeights;
      rmsnorm(xb, x, lw.rmsAttWeight, dim, eps);
      matmul(q, xb, lw.wq, dim, qDim);
      matmul(k, xb, lw.wk, dim, kvDim);
      matmul(v, xb, lw.wv, dim, kvDim);
      if (lw.bq && lw.bk && lw.bv) {
        addInPlace(q, lw.bq);
        addInPlace(k, lw.bk);
        addInPlace(v, lw.bv);
      }
      rope(q, pos, headSize, qDim, this.ropeFrequencies);
      rope(k, pos, headSize, kvDim, this.ropeFrequencies);
      const layerBase = l * seqLen * kvDim;
      if (pos < seqLen) {
        this.keyCache.set(k, layerBase + pos * kvDim);
        this.valueCache.set(v, layerBase + pos * kvDim);
      }
      let attOut: Float32Array;
      if (attention) {
        attOut = attention(l, pos, q, k, v);
        if (attOut.length < qDim) {
          throw new InvalidArgumentError('attention', `hook returned ${attOut.length} values, expected nHeads*headSize = ${qDim}`);
        }
      } else {
        const n = pos + 1;
        attOut = denseAttention(
          q,
          this.keyCache.subarray(layerBase, layerBase + n * kvDim),
          this.valueCache.subarray(layerBase, layerBase + n * kvDim),
          n,
          c,
          this.attOut,
          this.att,
        );
      }
      matmul(xb2, attOut, lw.wo, qDim, dim);
      for (let i = 0; i < dim; i++) x[i] = (x[i] as number) + (xb2[i] as number);
      rmsnorm(xb, x, lw.rmsFfnWeight, dim, eps);
      matmul(hb, xb, lw.w1, dim, hiddenDim);
      matmul(hb2, xb, lw.w3, dim, hiddenDim);
      for (let i = 0; i < hiddenDim; i++) hb[i] = silu(hb[i] as number) * (hb2[i] as number);
      matmul(xb, hb, lw.w2, hiddenDim, dim);
      for (let i = 0; i < dim; i++) x[i] = (x[i] as number) + (xb[i] as number);
    }
    rmsnorm(x, x, this.weights.rmsFinalWeight, dim, eps);
    const logits = new Float32Array(c.vocabSize);
    matmul(logits, x, this.weights.wcls, dim, c.vocabSize);
    return logits;
  }
}
