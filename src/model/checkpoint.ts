import { ModelFormatError, NonFiniteWeightsError } from '../errors.js';

/**
 * Hyper-parameters of a llama2.c model, as read from the 28-byte header of a legacy checkpoint plus the
 * quantities derived from them.
 *
 * @example
 * ```ts
 * const { dim, nHeads, kvDim } = parseCheckpoint(bytes).config;
 * ```
 */
export interface LlamaConfig {
  /** Transformer width (channels of the residual stream). */
  readonly dim: number;
  /** Width of the SwiGLU feed-forward layer. */
  readonly hiddenDim: number;
  readonly nLayers: number;
  /** Query heads. */
  readonly nHeads: number;
  /** KV heads (grouped-query attention when fewer than `nHeads`). */
  readonly nKvHeads: number;
  readonly vocabSize: number;
  /** Maximum context length the model was trained with (and the length of the RoPE tables in the file). */
  readonly seqLen: number;
  /** Width of one attention head: `dim / nHeads` in llama2.c files; a Hugging Face `head_dim` may differ. */
  readonly headSize: number;
  /** `nKvHeads * headSize`: width of one token's K (or V) vector in one layer. */
  readonly kvDim: number;
  /** True when the classifier reuses the token embedding (a positive vocab_size in the header). */
  readonly sharedClassifier: boolean;
  /** RoPE base frequency; absent means llama2.c's 10000. */
  readonly ropeTheta?: number;
  /** RMSNorm epsilon; absent means llama2.c's 1e-5. */
  readonly rmsNormEps?: number;
  /** Llama 3 RoPE frequency scaling (Llama 3.1/3.2 configs); absent for plain RoPE. */
  readonly ropeScaling?: Llama3RopeScaling;
}

/**
 * `rope_scaling` of `rope_type: "llama3"`: long wavelengths are slowed by `factor`, short ones kept, the band
 * between blended (transformers' `_compute_llama3_parameters`).
 */
export interface Llama3RopeScaling {
  readonly factor: number;
  readonly lowFreqFactor: number;
  readonly highFreqFactor: number;
  readonly originalMaxPositionEmbeddings: number;
}

/**
 * Width of all query heads together, `nHeads · headSize` (equal to `dim` in llama2.c files).
 *
 * @example
 * ```ts
 * const q = new Float32Array(queryDim(config));
 * ```
 */
export function queryDim(config: LlamaConfig): number {
  return config.nHeads * config.headSize;
}

/**
 * The weights of a llama2.c model, flat and row-major exactly as in the file (layer-major for per-layer
 * tensors). Shapes are given as [rows, cols]; a matrix [out, in] maps an `in`-vector to an `out`-vector.
 *
 * @example
 * ```ts
 * const row = weights.tokenEmbedding.subarray(token * dim, (token + 1) * dim);
 * ```
 */
export interface LlamaWeights {
  /** [vocabSize, dim] */
  readonly tokenEmbedding: Float32Array;
  /** [nLayers, dim] */
  readonly rmsAttWeight: Float32Array;
  /** [nLayers, nHeads · headSize, dim], rows of each head in llama2.c's interleaved RoPE order */
  readonly wq: Float32Array;
  /** [nLayers, kvDim, dim], rows in the same RoPE order as wq */
  readonly wk: Float32Array;
  /** [nLayers, kvDim, dim] */
  readonly wv: Float32Array;
  /** [nLayers, dim, nHeads · headSize] */
  readonly wo: Float32Array;
  /** [nLayers, dim] */
  readonly rmsFfnWeight: Float32Array;
  /** [nLayers, hiddenDim, dim] */
  readonly w1: Float32Array;
  /** [nLayers, dim, hiddenDim] */
  readonly w2: Float32Array;
  /** [nLayers, hiddenDim, dim] */
  readonly w3: Float32Array;
  /** [dim] */
  readonly rmsFinalWeight: Float32Array;
  /** [vocabSize, dim]; the same array as `tokenEmbedding` when the classifier is shared. */
  readonly wcls: Float32Array;
  /** q/k/v projection biases [nLayers, width] (Qwen2); absent in llama2.c and Llama files. */
  readonly bq?: Float32Array;
  readonly bk?: Float32Array;
  readonly bv?: Float32Array;
}

/**
 * One layer's weights as views into {@link LlamaWeights}.
 *
 * @example
 * ```ts
 * matmul(q, xb, layerWeights(config, weights, l).wq, dim, dim);
 * ```
 */
export interface LlamaLayerWeights {
  readonly rmsAttWeight: Float32Array;
  readonly wq: Float32Array;
  readonly wk: Float32Array;
  readonly wv: Float32Array;
  readonly wo: Float32Array;
  readonly rmsFfnWeight: Float32Array;
  readonly w1: Float32Array;
  readonly w2: Float32Array;
  readonly w3: Float32Array;
  readonly bq?: Float32Array;
  readonly bk?: Float32Array;
  readonly bv?: Float32Array;
}

/**
 * A parsed checkpoint.
 */
export interface LlamaCheckpoint {
  readonly config: LlamaConfig;
  readonly weights: LlamaWeights;
}

/**
 * Bytes of the legacy header: seven little-endian int32.
 *
 * @example
 * ```ts
 * const firstWeightOffset = CHECKPOINT_HEADER_BYTES; // 28
 * ```
 */
export const CHECKPOINT_HEADER_BYTES = 28;

const HEADER_FIELDS = ['dim', 'hidden_dim', 'n_layers', 'n_heads', 'n_kv_heads', 'vocab_size', 'seq_len'] as const;

type TensorName = Exclude<keyof LlamaWeights, 'wcls' | 'bq' | 'bk' | 'bv'> | 'freqCisReal' | 'freqCisImag' | 'wcls';

/** The tensors of the file in file order with their float counts. */
function tensorPlan(c: LlamaConfig): Array<[TensorName, number]> {
  const { dim, hiddenDim: h, nLayers: L, vocabSize: V, kvDim, seqLen, headSize } = c;
  const plan: Array<[TensorName, number]> = [
    ['tokenEmbedding', V * dim],
    ['rmsAttWeight', L * dim],
    ['wq', L * dim * dim],
    ['wk', L * kvDim * dim],
    ['wv', L * kvDim * dim],
    ['wo', L * dim * dim],
    ['rmsFfnWeight', L * dim],
    ['w1', L * h * dim],
    ['w2', L * dim * h],
    ['w3', L * h * dim],
    ['rmsFinalWeight', dim],
    // llama2.c still writes the (unused) RoPE tables; readers skip them.
    ['freqCisReal', (seqLen * headSize) / 2],
    ['freqCisImag', (seqLen * headSize) / 2],
  ];
  if (!c.sharedClassifier) plan.push(['wcls', V * dim]);
  return plan;
}

/**
 * Exact byte length of a legacy checkpoint with this config (header, weights, both freq_cis tables and, when
 * not shared, the classifier).
 *
 * @example
 * ```ts
 * checkpointByteLength(checkpoint.config); // 1_056_540 for stories260K
 * ```
 */
export function checkpointByteLength(config: LlamaConfig): number {
  let floats = 0;
  for (const [, n] of tensorPlan(config)) floats += n;
  return CHECKPOINT_HEADER_BYTES + 4 * floats;
}

/**
 * Validates the seven raw header ints and derives the config. Throws {@link ModelFormatError} naming the field.
 *
 * @example
 * ```ts
 * const config = configFromHeader([64, 172, 5, 8, 4, 512, 512]); // config.kvDim === 32
 * ```
 */
export function configFromHeader(header: readonly number[]): LlamaConfig {
  if (header.length !== HEADER_FIELDS.length) {
    throw new ModelFormatError(`checkpoint header: expected ${HEADER_FIELDS.length} int32 fields, got ${header.length}`);
  }
  const [dim, hiddenDim, nLayers, nHeads, nKvHeads, rawVocab, seqLen] = header as [
    number, number, number, number, number, number, number,
  ];
  const values = [dim, hiddenDim, nLayers, nHeads, nKvHeads, Math.abs(rawVocab), seqLen];
  for (let i = 0; i < HEADER_FIELDS.length; i++) {
    const v = values[i] ?? 0;
    if (!Number.isInteger(v) || v <= 0) {
      throw new ModelFormatError(
        `checkpoint header field ${HEADER_FIELDS[i]} = ${header[i]} must be a positive integer; ` +
          'the file is not a llama2.c legacy checkpoint (or is a newer versioned export)',
      );
    }
  }
  if (dim % nHeads !== 0) {
    throw new ModelFormatError(`checkpoint header: dim = ${dim} is not divisible by n_heads = ${nHeads}`);
  }
  if (nHeads % nKvHeads !== 0) {
    throw new ModelFormatError(`checkpoint header: n_heads = ${nHeads} is not a multiple of n_kv_heads = ${nKvHeads}`);
  }
  const headSize = dim / nHeads;
  if (headSize % 2 !== 0) {
    throw new ModelFormatError(`checkpoint header: head_size = dim / n_heads = ${headSize} must be even for RoPE`);
  }
  return {
    dim,
    hiddenDim,
    nLayers,
    nHeads,
    nKvHeads,
    vocabSize: Math.abs(rawVocab),
    seqLen,
    headSize,
    kvDim: nKvHeads * headSize,
    sharedClassifier: rawVocab > 0,
  };
}

const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function floatsAt(bytes: Uint8Array, byteOffset: number, count: number): Float32Array {
  const abs = bytes.byteOffset + byteOffset;
  if (littleEndian && abs % 4 === 0) return new Float32Array(bytes.buffer, abs, count);
  // Misaligned input (or a big-endian host): decode a copy.
  const out = new Float32Array(count);
  const view = new DataView(bytes.buffer, abs, count * 4);
  for (let i = 0; i < count; i++) out[i] = view.getFloat32(i * 4, true);
  return out;
}

function assertFinite(name: TensorName, tensor: Float32Array): void {
  for (let i = 0; i < tensor.length; i++) {
    const v = tensor[i] as number;
    // v - v is NaN for NaN and ±Inf, 0 otherwise: one comparison per weight.
    if (v - v !== 0) throw new NonFiniteWeightsError(name, i, v);
  }
}

/**
 * Parses a llama2.c legacy checkpoint (`run.c`'s format: 7 int32 then f32 weights). The weights are views into
 * the given buffer when it is 4-byte aligned (so keep the buffer alive and unmodified), copies otherwise.
 * Truncated, oversized or inconsistent files throw {@link ModelFormatError} naming the field and the expected
 * vs actual size in bytes; a NaN or ±Inf weight throws {@link NonFiniteWeightsError} naming the tensor and index.
 *
 * @example
 * ```ts
 * const { config, weights } = parseCheckpoint(readFileSync('../shared/models/stories260K.bin'));
 * config.dim; // 64
 * weights.wq.length; // nLayers * dim * dim
 * ```
 */
export function parseCheckpoint(data: ArrayBuffer | Uint8Array): LlamaCheckpoint {
  const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
  if (bytes.byteLength < CHECKPOINT_HEADER_BYTES) {
    throw new ModelFormatError(
      `checkpoint header truncated: expected ${CHECKPOINT_HEADER_BYTES} bytes, file has ${bytes.byteLength} bytes`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, CHECKPOINT_HEADER_BYTES);
  const header = HEADER_FIELDS.map((_, i) => view.getInt32(i * 4, true));
  const config = configFromHeader(header);
  const plan = tensorPlan(config);
  const expected = checkpointByteLength(config);
  if (!Number.isSafeInteger(expected)) {
    throw new ModelFormatError(`checkpoint header describes an impossibly large model (${expected} bytes)`);
  }
  const headerText = `dim=${config.dim}, hidden_dim=${config.hiddenDim}, n_layers=${config.nLayers}, n_heads=${config.nHeads}, n_kv_heads=${config.nKvHeads}, vocab_size=${header[5]}, seq_len=${config.seqLen}`;
  let offset = CHECKPOINT_HEADER_BYTES;
  const tensors = new Map<TensorName, Float32Array>();
  for (const [name, count] of plan) {
    const end = offset + 4 * count;
    if (end > bytes.byteLength) {
      throw new ModelFormatError(
        `checkpoint truncated at ${name} (${count} floats at byte ${offset}): expected ${expected} bytes for ` +
          `${headerText}, file has ${bytes.byteLength} bytes. Re-download the file.`,
      );
    }
    const tensor = floatsAt(bytes, offset, count);
    // The RoPE tables are skipped by every reader, so only the weights must be finite.
    if (name !== 'freqCisReal' && name !== 'freqCisImag') assertFinite(name, tensor);
    tensors.set(name, tensor);
    offset = end;
  }
  if (bytes.byteLength !== expected) {
    throw new ModelFormatError(
      `checkpoint oversized: ${bytes.byteLength - expected} bytes after ${config.sharedClassifier ? 'freq_cis' : 'wcls'}; ` +
        `expected ${expected} bytes for ${headerText}, file has ${bytes.byteLength} bytes. ` +
        'Is it a newer versioned llama2.c export or a different model?',
    );
  }
  const get = (name: TensorName): Float32Array => {
    const t = tensors.get(name);
    if (!t) throw new ModelFormatError(`checkpoint: tensor ${name} missing`);
    return t;
  };
  const tokenEmbedding = get('tokenEmbedding');
  return {
    config,
    weights: {
      tokenEmbedding,
      rmsAttWeight: get('rmsAttWeight'),
      wq: get('wq'),
      wk: get('wk'),
      wv: get('wv'),
      wo: get('wo'),
      rmsFfnWeight: get('rmsFfnWeight'),
      w1: get('w1'),
      w2: get('w2'),
      w3: get('w3'),
      rmsFinalWeight: get('rmsFinalWeight'),
      wcls: config.sharedClassifier ? tokenEmbedding : get('wcls'),
    },
  };
}

/**
 * Views of one layer's weights.
 *
 * @example
 * ```ts
 * const lw = layerWeights(config, weights, 0);
 * lw.wq.length; // dim * dim
 * ```
 */
export function layerWeights(config: LlamaConfig, weights: LlamaWeights, layer: number): LlamaLayerWeights {
  const { dim, hiddenDim: h, kvDim } = config;
  const qDim = queryDim(config);
  const slice = (a: Float32Array, n: number): Float32Array => a.subarray(layer * n, (layer + 1) * n);
  const views: LlamaLayerWeights = {
    rmsAttWeight: slice(weights.rmsAttWeight, dim),
    wq: slice(weights.wq, qDim * dim),
    wk: slice(weights.wk, kvDim * dim),
    wv: slice(weights.wv, kvDim * dim),
    wo: slice(weights.wo, dim * qDim),
    rmsFfnWeight: slice(weights.rmsFfnWeight, dim),
    w1: slice(weights.w1, h * dim),
    w2: slice(weights.w2, dim * h),
    w3: slice(weights.w3, h * dim),
  };
  if (!weights.bq || !weights.bk || !weights.bv) return views;
  return { ...views, bq: slice(weights.bq, qDim), bk: slice(weights.bk, kvDim), bv: slice(weights.bv, kvDim) };
}

/**
 * Serializes a config and weights as a llama2.c legacy checkpoint (the inverse of {@link parseCheckpoint}),
 * writing real RoPE tables. Useful to build small synthetic models for tests.
 *
 * @example
 * ```ts
 * const bytes = serializeCheckpoint(config, weights);
 * parseCheckpoint(bytes).config.dim === config.dim; // true
 * ```
 */
export function serializeCheckpoint(config: LlamaConfig, weights: LlamaWeights): Uint8Array {
  const out = new Uint8Array(checkpointByteLength(config));
  const view = new DataView(out.buffer);
  const header = [
    config.dim,
    config.hiddenDim,
    config.nLayers,
    config.nHeads,
    config.nKvHeads,
    config.sharedClassifier ? config.vocabSize : -config.vocabSize,
    config.seqLen,
  ];
  header.forEach((v, i) => view.setInt32(i * 4, v, true));
  let offset = CHECKPOINT_HEADER_BYTES;
  const half = config.headSize / 2;
  const cosTable = new Float32Array(config.seqLen * half);
  const sinTable = new Float32Array(config.seqLen * half);
  for (let p = 0; p < config.seqLen; p++) {
    for (let i = 0; i < half; i++) {
      const angle = p * Math.pow(10000, -(2 * i) / config.headSize);
      cosTable[p * half + i] = Math.cos(angle);
      sinTable[p * half + i] = Math.sin(angle);
    }
  }
  for (const [name, count] of tensorPlan(config)) {
    const src =
      name === 'freqCisReal' ? cosTable : name === 'freqCisImag' ? sinTable : weights[name];
    if (src.length !== count) {
      throw new ModelFormatError(`serializeCheckpoint: ${name} has ${src.length} floats, config needs ${count}`);
    }
    for (let i = 0; i < count; i++) view.setFloat32(offset + 4 * i, src[i] ?? 0, true);
    offset += 4 * count;
  }
  return out;
}
