import { ModelFormatError } from '../../src/errors.js';
import { parseCheckpoint, type LlamaCheckpoint } from '../../src/model/checkpoint.js';
import { blobFolder, loadHfModel, SHARD_INDEX_FILE, type ModelFolder } from '../../src/model/hf/loader.js';
import { loadHfTokenizer } from '../../src/model/hf/tokenizer.js';
import { Tokenizer, type TextTokenizer } from '../../src/model/tokenizer.js';
import { toHex } from '../../src/store/canonical.js';

/**
 * A checkpoint and its tokenizer, parsed, with a name to show.
 *
 * @example
 * ```ts
 * Generator.create(gpu, loaded.checkpoint, loaded.tokenizer);
 * ```
 */
export interface LoadedModel {
  readonly name: string;
  /** 'sha256:' + hex SHA-256 of the checkpoint's bytes: what the store's keys name the model by. */
  readonly fingerprint: string;
  readonly checkpoint: LlamaCheckpoint;
  readonly tokenizer: TextTokenizer;
  /** `llama2c` (checkpoint + tokenizer.bin) or `hf` (a Hugging Face folder: config.json, tokenizer.json, safetensors). */
  readonly format: 'llama2c' | 'hf';
}

async function fingerprintOf(bytes: ArrayBuffer): Promise<string> {
  return `sha256:${toHex(new Uint8Array(await crypto.subtle.digest('SHA-256', bytes)))}`;
}

async function fetchBytes(url: string): Promise<ArrayBuffer> {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`GET ${url}: HTTP ${response.status} ${response.statusText}`);
  return response.arrayBuffer();
}

/**
 * Fetches and parses the model the server mounts (default stories260K under /models/).
 *
 * @example
 * ```ts
 * const model = await loadFromServer('/models/stories260K.bin', '/models/tok512.bin');
 * ```
 */
export async function loadFromServer(modelUrl: string, tokenizerUrl: string): Promise<LoadedModel> {
  const [model, tokenizer] = await Promise.all([fetchBytes(modelUrl), fetchBytes(tokenizerUrl)]);
  const checkpoint = parseCheckpoint(model);
  return {
    name: modelUrl.split('/').pop() ?? modelUrl,
    fingerprint: await fingerprintOf(model),
    checkpoint,
    tokenizer: Tokenizer.parse(tokenizer, checkpoint.config.vocabSize),
    format: 'llama2c',
  };
}

function baseName(file: File): string {
  return file.name.slice(file.name.lastIndexOf('/') + 1);
}

/** Bytes of each weights file hashed into the fingerprint: its head (the safetensors header and first tensors). */
const FINGERPRINT_HEAD = 8 << 20;

/**
 * The fingerprint of a HF folder without reading gigabytes into one buffer (WebCrypto has no streaming digest):
 * config.json and tokenizer.json whole, and per safetensors file its name, size and first 8 MiB, which hold the
 * header with every tensor's offsets and the first tensors' values. Two checkpoints that agree on all of that
 * would share store entries in this browser; fine-tunes differ in the first tensors already.
 */
async function folderFingerprint(folder: ModelFolder, weightFiles: readonly string[]): Promise<string> {
  const parts: Uint8Array[] = [];
  const text = new TextEncoder();
  for (const name of ['config.json', 'tokenizer.json', ...weightFiles]) {
    const source = await folder.open(name);
    if (!source) continue;
    const length = name.endsWith('.safetensors') ? Math.min(source.byteLength, FINGERPRINT_HEAD) : source.byteLength;
    parts.push(text.encode(`${name}\0${source.byteLength}\0`), await source.read(0, length));
  }
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  return fingerprintOf(all.buffer);
}

async function loadHfFolder(folder: ModelFolder, name: string, contextLength?: number): Promise<LoadedModel> {
  const model = await loadHfModel(folder, contextLength !== undefined ? { contextLength } : {});
  const tokenizer = await loadHfTokenizer(folder, model.config);
  return {
    name: `${name} (${model.config.architecture})`,
    fingerprint: await folderFingerprint(folder, model.files),
    checkpoint: model.checkpoint,
    tokenizer,
    format: 'hf',
  };
}

/**
 * A Hugging Face model from picked or dropped files: config.json, tokenizer.json, tokenizer_config.json and
 * model.safetensors (or the shards and model.safetensors.index.json), read tensor by tensor from the Files through
 * the same loader as Node. The folder's name comes from the files' relative path when a folder was picked.
 * Errors are HfModelError naming the file and field.
 *
 * @example
 * ```ts
 * const model = await loadHfFiles(Array.from(folderInput.files ?? []), { contextLength: 2048 });
 * ```
 */
export async function loadHfFiles(files: readonly File[], options: { readonly contextLength?: number } = {}): Promise<LoadedModel> {
  const config = files.find((file) => baseName(file) === 'config.json');
  const relative = (config as (File & { readonly webkitRelativePath?: string }) | undefined)?.webkitRelativePath ?? '';
  const name = relative.includes('/') ? relative.slice(0, relative.indexOf('/')) : 'dropped model';
  return loadHfFolder(blobFolder(name, files), name, options.contextLength);
}

/** A folder served over HTTP: each file fetched once, whole, when the loader opens it (404: absent). */
function urlFolder(baseUrl: string): ModelFolder {
  const base = baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`;
  return {
    name: base,
    open: async (fileName) => {
      const response = await fetch(`${base}${fileName}`);
      if (response.status === 404) return undefined;
      if (!response.ok) throw new Error(`GET ${base}${fileName}: HTTP ${response.status} ${response.statusText}`);
      const blob = await response.blob();
      return {
        name: fileName,
        byteLength: blob.size,
        read: async (offset, length) => new Uint8Array(await blob.slice(offset, offset + length).arrayBuffer()),
      };
    },
  };
}

/**
 * A Hugging Face model folder the server mounts (`kvcompact serve-demo --model DIR|hf:ORG/NAME` mounts it at
 * /hf/ and passes `?hf=/hf/`).
 *
 * @example
 * ```ts
 * const model = await loadHfFromServer('/hf/', { contextLength: 2048 });
 * ```
 */
export async function loadHfFromServer(baseUrl: string, options: { readonly contextLength?: number } = {}): Promise<LoadedModel> {
  const folder = urlFolder(baseUrl);
  if (!(await folder.open('config.json'))) throw new ModelFormatError(`${baseUrl}config.json is missing: serve a Hugging Face model folder there`);
  return loadHfFolder(folder, baseUrl.replace(/\/+$/, '').split('/').pop() || baseUrl, options.contextLength);
}

/** Names the loader reads: what a folder pick should keep (other files of a Hub clone are skipped). */
export function isHfModelFile(name: string): boolean {
  return ['config.json', 'tokenizer.json', 'tokenizer_config.json', SHARD_INDEX_FILE].includes(name) || name.endsWith('.safetensors');
}

/**
 * Parses dropped files: with a config.json among them, a Hugging Face folder ({@link loadHfFiles}); else the
 * one that parses as a llama2.c checkpoint is the model, the other its tokenizer. A checkpoint alone keeps
 * `current`'s tokenizer when the vocabulary sizes match. Errors say what to drop.
 *
 * @example
 * ```ts
 * const model = await loadDropped(Array.from(event.dataTransfer?.files ?? []), current);
 * ```
 */
export async function loadDropped(files: readonly File[], current: LoadedModel | null): Promise<LoadedModel> {
  if (files.some((file) => baseName(file) === 'config.json')) return loadHfFiles(files);
  if (files.length === 0 || files.length > 2) {
    throw new ModelFormatError(`drop one checkpoint and its tokenizer (two files), or a Hugging Face model folder; got ${files.length} files`);
  }
  const bytes = await Promise.all(files.map(async (file) => ({ file, data: await file.arrayBuffer() })));
  // Tokenizers are a few kB, checkpoints much more: try the larger file as the checkpoint first.
  bytes.sort((a, b) => b.data.byteLength - a.data.byteLength);
  let checkpoint: LlamaCheckpoint | null = null;
  let modelFile: File | null = null;
  let modelBytes: ArrayBuffer | null = null;
  let firstError: unknown = null;
  for (const { file, data } of bytes) {
    try {
      checkpoint = parseCheckpoint(data);
      modelFile = file;
      modelBytes = data;
      break;
    } catch (error) {
      firstError ??= error;
    }
  }
  if (!checkpoint || !modelFile || !modelBytes) {
    const why = firstError instanceof Error ? firstError.message : String(firstError);
    throw new ModelFormatError(`none of the dropped files is a llama2.c checkpoint: ${why}`);
  }
  const fingerprint = await fingerprintOf(modelBytes);
  const other = bytes.find((b) => b.file !== modelFile);
  if (!other) {
    if (current && current.tokenizer.vocabSize === checkpoint.config.vocabSize) {
      return { name: `${modelFile.name} + ${current.name}'s tokenizer`, fingerprint, checkpoint, tokenizer: current.tokenizer, format: 'llama2c' };
    }
    throw new ModelFormatError(
      `${modelFile.name} has a vocabulary of ${checkpoint.config.vocabSize} tokens: drop its tokenizer file with it`,
    );
  }
  const tokenizer = Tokenizer.parse(other.data, checkpoint.config.vocabSize);
  return { name: `${modelFile.name} + ${other.file.name}`, fingerprint, checkpoint, tokenizer, format: 'llama2c' };
}
