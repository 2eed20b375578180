import { HfModelError, MissingTensorError } from '../../errors.js';
import { queryDim, type LlamaCheckpoint, type LlamaConfig, type LlamaWeights } from '../checkpoint.js';
import { parseHfConfig, type HfModelConfig } from './config.js';
import { openSafetensors, requireReadableDtype, type ByteSource, type SafetensorsFile } from './safetensors.js';

/**
 * The files of a model folder, opened by name: a directory in Node (src/node/hf-model-files.ts), files dropped
 * on a page, or bytes in memory ({@link memoryFolder}).
 */
export interface ModelFolder {
  /** Shown in messages (a path or a folder name). */
  readonly name: string;
  /** The file of that name, or undefined when the folder has none. */
  open(fileName: string): Promise<ByteSource | undefined>;
}

/**
 * A {@link ModelFolder} over files in memory (tests, conversions, a page that read the files).
 *
 * @example
 * ```ts
 * const folder = memoryFolder('tiny', { 'config.json': configBytes, 'model.safetensors': weights });
 * ```
 */
export function memoryFolder(name: string, files: Readonly<Record<string, Uint8Array>>): ModelFolder {
  return {
    name,
    open: async (fileName) => {
      const bytes = files[fileName];
      if (bytes === undefined) return undefined;
      return { name: fileName, byteLength: bytes.byteLength, read: async (offset, length) => bytes.subarray(offset, offset + length) };
    },
  };
}

/**
 * A {@link ModelFolder} over browser `File`s (a dropped folder, or files picked with `<input type="file"
 * multiple webkitdirectory>`), matched by base name. Each tensor is read with `Blob.slice`, so a page holds
 * one tensor's bytes at a time besides the converted weights.
 *
 * @example
 * ```ts
 * const model = await loadHfModel(blobFolder('SmolLM2', input.files ?? []));
 * ```
 */
export function blobFolder(name: string, files: Iterable<Blob & { readonly name: string }>): ModelFolder {
  const byName = new Map<string, Blob & { readonly name: string }>();
  for (const f of files) byName.set(f.name.slice(f.name.lastIndexOf('/') + 1), f);
  return {
    name,
    open: async (fileName) => {
      const file = byName.get(fileName);
      if (!file) return undefined;
      return {
        name: fileName,
        byteLength: file.size,
        read: async (offset, length) => new Uint8Array(await file.slice(offset, offset + length).arrayBuffer()),
      };
    },
  };
}

/**
 * The text of a folder's file, or undefined when absent.
 *
 * @example
 * ```ts
 * const template = await readFolderText(folder, 'tokenizer_config.json');
 * ```
 */
export async function readFolderText(folder: ModelFolder, fileName: string): Promise<string | undefined> {
  const source = await folder.open(fileName);
  if (!source) return undefined;
  return new TextDecoder().decode(await source.read(0, source.byteLength));
}

/**
 * Options of {@link loadHfModel}.
 *
 * @example
 * ```ts
 * await loadHfModel(folder, { contextLength: 2048, onTensor: (name, i, n) => bar.update(i / n) });
 * ```
 */
export interface LoadHfModelOptions {
  /** Context to run with (see {@link HfConfigOptions.contextLength}). Default `max_position_embeddings`. */
  readonly contextLength?: number;
  /** Called after each tensor is read (progress). */
  readonly onTensor?: (name: string, index: number, count: number) => void;
}

/**
 * A loaded Hugging Face model: the engine's checkpoint (f32 weights in llama2.c's layout and RoPE order) and
 * the parsed config.
 *
 * @example
 * ```ts
 * const { checkpoint, config } = await loadHfModel(folder);
 * new ReferenceLlama(checkpoint).forward(config.bosTokenId ?? 1, 0);
 * ```
 */
export interface HfModel {
  readonly config: HfModelConfig;
  readonly checkpoint: LlamaCheckpoint;
  /** The safetensors files read. */
  readonly files: readonly string[];
}

/**
 * `model.safetensors.index.json` name of a sharded checkpoint.
 *
 * @example
 * ```ts
 * await folder.open(SHARD_INDEX_FILE);
 * ```
 */
export const SHARD_INDEX_FILE = 'model.safetensors.index.json';

/** The engine tensor a HF tensor lands in, at which offset, and whether its rows need the RoPE un-permutation. */
interface TensorTarget {
  readonly hfName: string;
  readonly shape: readonly number[];
  readonly target: Exclude<keyof LlamaWeights, 'wcls'> | 'wcls';
  readonly offset: number;
  /** Heads whose rows are in rotate-half order (q: nHeads, k: nKvHeads); 0 for no permutation. */
  readonly ropeHeads: number;
}

function plan(config: HfModelConfig): TensorTarget[] {
  const c = config.llama;
  const { dim, hiddenDim: h, kvDim, nLayers, vocabSize, nHeads, nKvHeads } = c;
  const qDim = queryDim(c);
  const out: TensorTarget[] = [
    { hfName: 'model.embed_tokens.weight', shape: [vocabSize, dim], target: 'tokenEmbedding', offset: 0, ropeHeads: 0 },
  ];
  for (let l = 0; l < nLayers; l++) {
    const p = `model.layers.${l}.`;
    const t = (name: string, shape: number[], target: TensorTarget['target'], perLayer: number, ropeHeads = 0): void => {
      out.push({ hfName: p + name, shape, target, offset: l * perLayer, ropeHeads });
    };
    t('input_layernorm.weight', [dim], 'rmsAttWeight', dim);
    t('self_attn.q_proj.weight', [qDim, dim], 'wq', qDim * dim, nHeads);
    t('self_attn.k_proj.weight', [kvDim, dim], 'wk', kvDim * dim, nKvHeads);
    t('self_attn.v_proj.weight', [kvDim, dim], 'wv', kvDim * dim);
    if (config.attentionBias) {
      t('self_attn.q_proj.bias', [qDim], 'bq', qDim, nHeads);
      t('self_attn.k_proj.bias', [kvDim], 'bk', kvDim, nKvHeads);
      t('self_attn.v_proj.bias', [kvDim], 'bv', kvDim);
    }
    t('self_attn.o_proj.weight', [dim, qDim], 'wo', dim * qDim);
    t('post_attention_layernorm.weight', [dim], 'rmsFfnWeight', dim);
    t('mlp.gate_proj.weight', [h, dim], 'w1', h * dim);
    t('mlp.down_proj.weight', [dim, h], 'w2', dim * h);
    t('mlp.up_proj.weight', [h, dim], 'w3', h * dim);
  }
  out.push({ hfName: 'model.norm.weight', shape: [dim], target: 'rmsFinalWeight', offset: 0, ropeHeads: 0 });
  if (!c.sharedClassifier) out.push({ hfName: 'lm_head.weight', shape: [vocabSize, dim], target: 'wcls', offset: 0, ropeHeads: 0 });
  return out;
}

function allocate(c: LlamaConfig, attentionBias: boolean): Record<TensorTarget['target'], Float32Array | undefined> {
  const { dim, hiddenDim: h, kvDim, nLayers: L, vocabSize: V } = c;
  const qDim = queryDim(c);
  const tokenEmbedding = new Float32Array(V * dim);
  return {
    tokenEmbedding,
    rmsAttWeight: new Float32Array(L * dim),
    wq: new Float32Array(L * qDim * dim),
    wk: new Float32Array(L * kvDim * dim),
    wv: new Float32Array(L * kvDim * dim),
    wo: new Float32Array(L * dim * qDim),
    rmsFfnWeight: new Float32Array(L * dim),
    w1: new Float32Array(L * h * dim),
    w2: new Float32Array(L * dim * h),
    w3: new Float32Array(L * h * dim),
    rmsFinalWeight: new Float32Array(dim),
    wcls: c.sharedClassifier ? tokenEmbedding : new Float32Array(V * dim),
    bq: attentionBias ? new Float32Array(L * qDim) : undefined,
    bk: attentionBias ? new Float32Array(L * kvDim) : undefined,
    bv: attentionBias ? new Float32Array(L * kvDim) : undefined,
  };
}

/**
 * Copies `src` (rows of `heads` heads in Hugging Face's rotate-half order: per head the first components of all
 * pairs, then the second ones) into `dst` at `offset` in llama2.c's interleaved order (pair i at rows 2i, 2i+1),
 * the inverse of the `permute` of transformers' convert_llama_weights_to_hf.py. Works for matrices (rows of
 * `cols` floats) and bias vectors (cols = 1).
 *
 * @example
 * ```ts
 * unpermuteRope(wqHf, wq, 0, nHeads, headSize, dim);
 * ```
 */
export function unpermuteRope(src: Float32Array, dst: Float32Array, offset: number, heads: number, headSize: number, cols: number): void {
  const half = headSize / 2;
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < 2; j++) {
      for (let i = 0; i < half; i++) {
        const from = (h * headSize + j * half + i) * cols;
        const to = offset + (h * headSize + 2 * i + j) * cols;
        dst.set(src.subarray(from, from + cols), to);
      }
    }
  }
}

/**
 * The inverse of {@link unpermuteRope}: llama2.c's interleaved rows into Hugging Face's rotate-half order (what
 * transformers' conversion script does to wq/wk), for converting llama2.c checkpoints in tests.
 *
 * @example
 * ```ts
 * const wqHf = permuteRope(lw.wq, nHeads, headSize, dim);
 * ```
 */
export function permuteRope(src: Float32Array, heads: number, headSize: number, cols: number): Float32Array {
  const out = new Float32Array(src.length);
  const half = headSize / 2;
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < 2; j++) {
      for (let i = 0; i < half; i++) {
        const from = (h * headSize + 2 * i + j) * cols;
        out.set(src.subarray(from, from + cols), (h * headSize + j * half + i) * cols);
      }
    }
  }
  return out;
}

/** Every safetensors file of the folder by tensor name (from the shard index, else the single file). */
async function openWeights(folder: ModelFolder): Promise<{ byTensor: Map<string, SafetensorsFile>; files: string[] }> {
  const byTensor = new Map<string, SafetensorsFile>();
  const indexText = await readFolderText(folder, SHARD_INDEX_FILE);
  if (indexText === undefined) {
    const source = await folder.open('model.safetensors');
    if (!source) {
      throw new HfModelError(
        folder.name,
        'model.safetensors',
        `missing (and no ${SHARD_INDEX_FILE}); download the model's safetensors weights into the folder`,
      );
    }
    const file = await openSafetensors(source);
    for (const name of file.tensors.keys()) byTensor.set(name, file);
    return { byTensor, files: [source.name] };
  }
  let index: unknown;
  try {
    index = JSON.parse(indexText);
  } catch (err) {
    throw new HfModelError(SHARD_INDEX_FILE, 'json', `is not valid JSON (${(err as Error).message})`);
  }
  const weightMap = (index as { weight_map?: unknown } | null)?.weight_map;
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
    throw new HfModelError(SHARD_INDEX_FILE, 'weight_map', 'must be an object mapping tensor names to shard files');
  }
  const shards = new Map<string, SafetensorsFile>();
  for (const [tensor, shard] of Object.entries(weightMap as Record<string, unknown>)) {
    if (typeof shard !== 'string' || shard === '' || /[\\/]/.test(shard) || shard === '..' || shard === '.') {
      throw new HfModelError(SHARD_INDEX_FILE, `weight_map.${tensor}`, `${JSON.stringify(shard)} must be a file name in the folder`);
    }
    let file = shards.get(shard);
    if (!file) {
      const source = await folder.open(shard);
      if (!source) throw new HfModelError(SHARD_INDEX_FILE, `weight_map.${tensor}`, `shard ${shard} is missing from ${folder.name}`);
      file = await openSafetensors(source);
      shards.set(shard, file);
    }
    if (!file.tensors.has(tensor)) throw new MissingTensorError(shard, tensor, `${SHARD_INDEX_FILE} puts it in this shard, which lacks it`);
    byTensor.set(tensor, file);
  }
  return { byTensor, files: [...shards.keys()] };
}

/**
 * Loads a Hugging Face Llama/Qwen2/Mistral folder: `config.json`, then `model.safetensors` or the shards of
 * `model.safetensors.index.json`. Every header, shape and dtype is checked before the first tensor is read
 * (typed errors naming the file and field: {@link HfModelError}, {@link MissingTensorError},
 * UnsupportedDtypeError, UnknownArchitectureError); tensors are then read one at a time, converted to f32 and
 * written into the engine's layer-stacked arrays, so peak host memory is one f32 copy of the weights plus one
 * tensor. q/k rows (and biases) are un-permuted from HF's rotate-half order into the engine's interleaved RoPE
 * pairs, which makes the engine's RoPE equal HF's.
 *
 * @example
 * ```ts
 * const model = await loadHfModel(folder, { contextLength: 2048 });
 * const gpuModel = new GpuLlama(gpu, model.checkpoint, cache);
 * ```
 */
export async function loadHfModel(folder: ModelFolder, options: LoadHfModelOptions = {}): Promise<HfModel> {
  const configText = await readFolderText(folder, 'config.json');
  if (configText === undefined) throw new HfModelError(folder.name, 'config.json', 'missing; a Hugging Face model folder needs its config.json');
  const config = parseHfConfig(configText, options.contextLength !== undefined ? { contextLength: options.contextLength } : {});
  const { byTensor, files } = await openWeights(folder);
  const targets = plan(config);
  const someFile = files[0] ?? 'model.safetensors';
  for (const t of targets) {
    const file = byTensor.get(t.hfName);
    if (!file) throw new MissingTensorError(files.length > 1 ? SHARD_INDEX_FILE : someFile, t.hfName);
    const info = file.tensor(t.hfName);
    if (!info) throw new MissingTensorError(file.name, t.hfName);
    if (info.shape.length !== t.shape.length || info.shape.some((d, i) => d !== t.shape[i])) {
      throw new HfModelError(
        file.name,
        `${t.hfName}.shape`,
        `${JSON.stringify(info.shape)} does not match ${JSON.stringify(t.shape)} from config.json`,
      );
    }
    requireReadableDtype(file.name, info);
  }
  const arrays = allocate(config.llama, config.attentionBias);
  const { headSize } = config.llama;
  for (let i = 0; i < targets.length; i++) {
    const t = targets[i] as TensorTarget;
    const file = byTensor.get(t.hfName) as SafetensorsFile;
    const data = await file.readF32(t.hfName);
    const dst = arrays[t.target] as Float32Array;
    if (t.ropeHeads > 0) unpermuteRope(data, dst, t.offset, t.ropeHeads, headSize, t.shape[1] ?? 1);
    else dst.set(data, t.offset);
    options.onTensor?.(t.hfName, i + 1, targets.length);
  }
  const a = arrays;
  const need = (x: Float32Array | undefined): Float32Array => x as Float32Array;
  const weights: LlamaWeights = {
    tokenEmbedding: need(a.tokenEmbedding),
    rmsAttWeight: need(a.rmsAttWeight),
    wq: need(a.wq),
    wk: need(a.wk),
    wv: need(a.wv),
    wo: need(a.wo),
    rmsFfnWeight: need(a.rmsFfnWeight),
    w1: need(a.w1),
    w2: need(a.w2),
    w3: need(a.w3),
    rmsFinalWeight: need(a.rmsFinalWeight),
    wcls: need(a.wcls),
    ...(a.bq && a.bk && a.bv ? { bq: a.bq, bk: a.bk, bv: a.bv } : {}),
  };
  return { config, checkpoint: { config: config.llama, weights }, files };
}
