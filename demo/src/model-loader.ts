import { ModelFormatError } from '../../src/errors.js';
import { parseCheckpoint, type LlamaCheckpoint } from '../../src/model/checkpoint.js';
import { Tokenizer } from '../../src/model/tokenizer.js';
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
  readonly tokenizer: Tokenizer;
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
  };
}

/**
 * Parses dropped files: the one that parses as a llama2.c checkpoint is the model, the other its tokenizer. A
 * checkpoint alone keeps `current`'s tokenizer when the vocabulary sizes match. Errors say what to drop.
 *
 * @example
 * ```ts
 * const model = await loadDropped(Array.from(event.dataTransfer?.files ?? []), current);
 * ```
 */
export async function loadDropped(files: readonly File[], current: LoadedModel | null): Promise<LoadedModel> {
  if (files.length === 0 || files.length > 2) {
    throw new ModelFormatError(`drop one checkpoint and its tokenizer (two files); got ${files.length}`);
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
      return { name: `${modelFile.name} + ${current.name}'s tokenizer`, fingerprint, checkpoint, tokenizer: current.tokenizer };
    }
    throw new ModelFormatError(
      `${modelFile.name} has a vocabulary of ${checkpoint.config.vocabSize} tokens: drop its tokenizer file with it`,
    );
  }
  const tokenizer = Tokenizer.parse(other.data, checkpoint.config.vocabSize);
  return { name: `${modelFile.name} + ${other.file.name}`, fingerprint, checkpoint, tokenizer };
}
