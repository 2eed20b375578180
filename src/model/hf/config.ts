import { HfModelError, UnknownArchitectureError } from '../../errors.js';
import type { Llama3RopeScaling, LlamaConfig } from '../checkpoint.js';

/**
 * The `config.json` architectures the engine runs: one decoder with RMSNorm, RoPE, GQA attention and a SwiGLU
 * feed-forward; Qwen2 adds q/k/v biases.
 *
 * @example
 * ```ts
 * HF_ARCHITECTURES.includes('LlamaForCausalLM'); // true
 * ```
 */
export const HF_ARCHITECTURES = ['LlamaForCausalLM', 'Qwen2ForCausalLM', 'MistralForCausalLM'] as const;

/**
 * One of {@link HF_ARCHITECTURES}.
 */
export type HfArchitecture = (typeof HF_ARCHITECTURES)[number];

/**
 * A parsed `config.json`: the engine's model config plus what only the loader and tokenizer need.
 *
 * @example
 * ```ts
 * const { architecture, llama, attentionBias } = parseHfConfig(text);
 * ```
 */
export interface HfModelConfig {
  readonly architecture: HfArchitecture;
  /** The engine's config (seqLen is `max_position_embeddings`, or the `contextLength` asked for). */
  readonly llama: LlamaConfig;
  /** q/k/v projections carry biases (Qwen2). */
  readonly attentionBias: boolean;
  readonly bosTokenId: number | undefined;
  /** `eos_token_id` (a list in Llama 3 configs). */
  readonly eosTokenIds: readonly number[];
  /** `torch_dtype` as written (informative: the loader reads each tensor's own dtype). */
  readonly torchDtype: string | undefined;
  /**
   * Mistral/Qwen2 sliding-window width when enabled. The engine attends to the whole cache, which equals the
   * model's attention only while the context is at most this long.
   */
  readonly slidingWindow: number | undefined;
}

/**
 * Options of {@link parseHfConfig}.
 *
 * @example
 * ```ts
 * parseHfConfig(text, { contextLength: 2048 });
 * ```
 */
export interface HfConfigOptions {
  /** File name used in errors. Default `config.json`. */
  readonly fileName?: string;
  /**
   * Context the model is run with (the engine's seqLen: the dense reference cache and the first RoPE table are
   * this long). Default `max_position_embeddings`, which is 128K for Llama 3.2: pass less to save memory.
   */
  readonly contextLength?: number;
}

type Json = Record<string, unknown>;

function isRecord(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Parses `config.json` of a Llama, Qwen2 or Mistral causal LM into the engine's {@link LlamaConfig}. Unknown
 * architectures throw {@link UnknownArchitectureError}; missing, mistyped or unsupported fields (a non-SiLU
 * activation, an o_proj or MLP bias, a `rope_scaling` other than llama3) throw {@link HfModelError} naming the
 * field.
 *
 * @example
 * ```ts
 * const config = parseHfConfig(await readFile('SmolLM2-135M-Instruct/config.json', 'utf8'), { contextLength: 8192 });
 * config.llama.headSize; // 64
 * ```
 */
export function parseHfConfig(text: string, options: HfConfigOptions = {}): HfModelConfig {
  const file = options.fileName ?? 'config.json';
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new HfModelError(file, 'json', `is not valid JSON (${(err as Error).message})`);
  }
  if (!isRecord(json)) throw new HfModelError(file, 'json', 'must be a JSON object');
  const c = json;

  const architectures = c.architectures;
  if (!Array.isArray(architectures) || typeof architectures[0] !== 'string') {
    throw new HfModelError(file, 'architectures', 'must be a list naming the model class, e.g. ["LlamaForCausalLM"]');
  }
  const name = architectures[0];
  if (!(HF_ARCHITECTURES as readonly string[]).includes(name)) throw new UnknownArchitectureError(file, name, HF_ARCHITECTURES);
  const architecture = name as HfArchitecture;

  const int = (field: string, fallback?: number): number => {
    const v = c[field] ?? fallback;
    if (v === undefined) throw new HfModelError(file, field, 'is required');
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) {
      throw new HfModelError(file, field, `${JSON.stringify(v)} must be a positive integer`);
    }
    return v;
  };
  const positive = (field: string, fallback: number): number => {
    const v = c[field] ?? fallback;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
      throw new HfModelError(file, field, `${JSON.stringify(v)} must be a positive number`);
    }
    return v;
  };
  const bool = (field: string, fallback: boolean): boolean => {
    const v = c[field] ?? fallback;
    if (typeof v !== 'boolean') throw new HfModelError(file, field, `${JSON.stringify(v)} must be true or false`);
    return v;
  };

  const dim = int('hidden_size');
  const hiddenDim = int('intermediate_size');
  const nLayers = int('num_hidden_layers');
  const nHeads = int('num_attention_heads');
  const nKvHeads = int('num_key_value_heads', nHeads);
  const vocabSize = int('vocab_size');
  const maxPositions = int('max_position_embeddings');
  if (c.head_dim === undefined || c.head_dim === null) {
    if (dim % nHeads !== 0) {
      throw new HfModelError(file, 'head_dim', `absent, and hidden_size ${dim} is not divisible by num_attention_heads ${nHeads}`);
    }
  }
  const headSize = c.head_dim === undefined || c.head_dim === null ? dim / nHeads : int('head_dim');
  if (headSize % 2 !== 0) throw new HfModelError(file, 'head_dim', `${headSize} must be even for RoPE`);
  if (nHeads % nKvHeads !== 0) {
    throw new HfModelError(file, 'num_key_value_heads', `${nKvHeads} must divide num_attention_heads ${nHeads}`);
  }
  const act = c.hidden_act ?? 'silu';
  if (act !== 'silu') throw new HfModelError(file, 'hidden_act', `${JSON.stringify(act)} is not supported (only silu, SwiGLU)`);
  if (architecture !== 'Qwen2ForCausalLM' && bool('attention_bias', false)) {
    throw new HfModelError(file, 'attention_bias', 'true (biases on q/k/v/o projections) is not supported for this architecture');
  }
  if (bool('mlp_bias', false)) throw new HfModelError(file, 'mlp_bias', 'true is not supported');
  const ropeTheta = positive('rope_theta', 10000);
  const rmsNormEps = positive('rms_norm_eps', 1e-6);
  const ropeScaling = parseRopeScaling(file, c.rope_scaling);
  const sharedClassifier = bool('tie_word_embeddings', false);

  let seqLen = maxPositions;
  if (options.contextLength !== undefined) {
    if (!Number.isSafeInteger(options.contextLength) || options.contextLength <= 0) {
      throw new HfModelError(file, 'contextLength', `${options.contextLength} must be a positive integer`);
    }
    seqLen = options.contextLength;
  }

  let slidingWindow: number | undefined;
  const sw = c.sliding_window;
  const swEnabled = architecture === 'Qwen2ForCausalLM' ? bool('use_sliding_window', false) : true;
  if (swEnabled && sw !== undefined && sw !== null) slidingWindow = int('sliding_window');

  const eos = c.eos_token_id;
  const eosTokenIds = Array.isArray(eos) ? eos.filter((e): e is number => Number.isInteger(e)) : Number.isInteger(eos) ? [eos as number] : [];
  const bos = c.bos_token_id;
  const torchDtype = typeof c.torch_dtype === 'string' ? c.torch_dtype : typeof c.dtype === 'string' ? c.dtype : undefined;

  const llama: LlamaConfig = {
    dim,
    hiddenDim,
    nLayers,
    nHeads,
    nKvHeads,
    vocabSize,
    seqLen,
    headSize,
    kvDim: nKvHeads * headSize,
    sharedClassifier,
    ropeTheta,
    rmsNormEps,
    ...(ropeScaling ? { ropeScaling } : {}),
  };
  return {
    architecture,
    llama,
    attentionBias: architecture === 'Qwen2ForCausalLM',
    bosTokenId: typeof bos === 'number' && Number.isInteger(bos) ? bos : undefined,
    eosTokenIds,
    torchDtype,
    slidingWindow,
  };
}

function parseRopeScaling(file: string, v: unknown): Llama3RopeScaling | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isRecord(v)) throw new HfModelError(file, 'rope_scaling', 'must be an object or null');
  const type = v.rope_type ?? v.type;
  if (type === 'default') return undefined;
  if (type !== 'llama3') {
    throw new HfModelError(file, 'rope_scaling.rope_type', `${JSON.stringify(type)} is not supported (only llama3 scaling or none)`);
  }
  const num = (field: string): number => {
    const x = v[field];
    if (typeof x !== 'number' || !Number.isFinite(x) || x <= 0) {
      throw new HfModelError(file, `rope_scaling.${field}`, `${JSON.stringify(x)} must be a positive number`);
    }
    return x;
  };
  const scaling: Llama3RopeScaling = {
    factor: num('factor'),
    lowFreqFactor: num('low_freq_factor'),
    highFreqFactor: num('high_freq_factor'),
    originalMaxPositionEmbeddings: num('original_max_position_embeddings'),
  };
  if (scaling.highFreqFactor <= scaling.lowFreqFactor) {
    throw new HfModelError(file, 'rope_scaling.high_freq_factor', `${scaling.highFreqFactor} must exceed low_freq_factor ${scaling.lowFreqFactor}`);
  }
  return scaling;
}
