import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import { mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { HfModelError, InvalidArgumentError } from '../errors.js';
import type { LlamaCheckpoint } from '../model/checkpoint.js';
import type { HfModelConfig } from '../model/hf/config.js';
import { loadHfModel, SHARD_INDEX_FILE, type ModelFolder } from '../model/hf/loader.js';
import type { ByteSource } from '../model/hf/safetensors.js';
import { HfTokenizer, loadHfTokenizer } from '../model/hf/tokenizer.js';
import type { Tokenizer } from '../model/tokenizer.js';
import { loadModelFiles, type FetchLike, type ResolveModelFilesOptions } from './model-files.js';

/**
 * The formats `--model` accepts: a llama2.c checkpoint file, a Hugging Face model folder, or `hf:ORG/NAME`
 * (downloaded into the cache folder).
 *
 * @example
 * ```ts
 * detectModelFormat('../shared/models/stories260K.bin'); // 'llama2c'
 * ```
 */
export type ModelFormat = 'llama2c' | 'hf-folder' | 'hf-hub';

/**
 * Prefix of a Hugging Face Hub model id given to `--model`.
 *
 * @example
 * ```ts
 * `${HF_PREFIX}HuggingFaceTB/SmolLM2-135M-Instruct`;
 * ```
 */
export const HF_PREFIX = 'hf:';

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/**
 * Which format `spec` (a `--model` value) is: `hf:ORG/NAME`, a directory with a config.json, or (anything else,
 * including a missing path) a llama2.c checkpoint, which the llama2.c resolver then looks for.
 *
 * @example
 * ```ts
 * detectModelFormat('models/SmolLM2-135M-Instruct'); // 'hf-folder' when it holds config.json
 * ```
 */
export function detectModelFormat(spec: string, cwd = process.cwd()): ModelFormat {
  if (spec.startsWith(HF_PREFIX)) return 'hf-hub';
  const path = resolve(cwd, spec);
  if (isDirectory(path) && isFile(join(path, 'config.json'))) return 'hf-folder';
  return 'llama2c';
}

/**
 * A {@link ModelFolder} over a directory: each read opens the file, reads the range and closes it, so a tensor
 * at a time is in memory.
 *
 * @example
 * ```ts
 * const model = await loadHfModel(directoryFolder('models/SmolLM2-135M-Instruct'));
 * ```
 */
export function directoryFolder(dir: string): ModelFolder {
  return {
    name: dir,
    open: async (fileName): Promise<ByteSource | undefined> => {
      const path = join(dir, fileName);
      let size: number;
      try {
        const s = await stat(path);
        if (!s.isFile()) return undefined;
        size = s.size;
      } catch {
        return undefined;
      }
      return {
        name: fileName,
        byteLength: size,
        read: async (offset, length) => {
          const handle = await open(path, 'r');
          try {
            const out = new Uint8Array(length);
            let done = 0;
            while (done < length) {
              const { bytesRead } = await handle.read(out, done, length - done, offset + done);
              if (bytesRead === 0) break;
              done += bytesRead;
            }
            return done === length ? out : out.subarray(0, done);
          } finally {
            await handle.close();
          }
        },
      };
    },
  };
}

/**
 * A model loaded by {@link loadNodeModel}: llama2.c (checkpoint + llama2.c tokenizer) or Hugging Face
 * (checkpoint + HF tokenizer + config).
 *
 * @example
 * ```ts
 * const model = await loadNodeModel({ model: args.model });
 * console.error(model.message); // says the format and where each file came from
 * ```
 */
export type NodeModel =
  | {
      readonly format: 'llama2c';
      readonly checkpoint: LlamaCheckpoint;
      readonly tokenizer: Tokenizer;
      /** The checkpoint file read. */
      readonly modelPath: string;
      readonly message: string;
    }
  | {
      readonly format: 'hf-folder' | 'hf-hub';
      /** The model folder read (for an `hf:` model, its cache folder); the same as `directory`. */
      readonly modelPath: string;
      readonly checkpoint: LlamaCheckpoint;
      readonly tokenizer: HfTokenizer;
      readonly config: HfModelConfig;
      readonly directory: string;
      readonly message: string;
    };

/**
 * Options of {@link loadNodeModel}: those of the llama2.c resolver plus what HF models take.
 *
 * @example
 * ```ts
 * await loadNodeModel({ model: 'hf:HuggingFaceTB/SmolLM2-135M-Instruct', contextLength: 2048 });
 * ```
 */
export interface LoadNodeModelOptions extends ResolveModelFilesOptions {
  /** Context for HF models (default their max_position_embeddings). */
  readonly contextLength?: number;
  /** Download progress of `hf:` models, per file. */
  readonly onProgress?: (file: string, index: number, count: number) => void;
  /** Download progress of `hf:` models, in bytes of the current file. */
  readonly onBytes?: (file: string, received: number, total: number) => void;
}

/**
 * Loads `--model` whatever its format (see {@link detectModelFormat}): a llama2.c file through
 * loadModelFiles, a HF folder through loadHfModel + loadHfTokenizer, `hf:ORG/NAME` through
 * {@link downloadHfModel} first. The message names the format detected.
 *
 * @example
 * ```ts
 * const { checkpoint, tokenizer, format } = await loadNodeModel({ model: 'models/SmolLM2-135M-Instruct' });
 * ```
 */
export async function loadNodeModel(options: LoadNodeModelOptions = {}): Promise<NodeModel> {
  const cwd = options.cwd ?? process.cwd();
  const format = options.model === undefined ? 'llama2c' : detectModelFormat(options.model, cwd);
  if (format === 'llama2c') {
    const loaded = await loadModelFiles(options);
    return {
      format,
      checkpoint: loaded.checkpoint,
      tokenizer: loaded.tokenizer,
      modelPath: loaded.files.modelPath,
      message: `format: llama2.c checkpoint\n${loaded.files.message}`,
    };
  }
  const spec = options.model as string;
  let directory: string;
  let where: string;
  if (format === 'hf-hub') {
    const downloaded = await downloadHfModel(spec, {
      ...(options.cacheDir !== undefined ? { cacheDir: options.cacheDir } : {}),
      ...(options.env !== undefined ? { env: options.env } : {}),
      ...(options.fetch !== undefined ? { fetch: options.fetch } : {}),
      ...(options.download !== undefined ? { download: options.download } : {}),
      ...(options.onProgress !== undefined ? { onProgress: options.onProgress } : {}),
      ...(options.onBytes !== undefined ? { onBytes: options.onBytes } : {}),
    });
    directory = downloaded.directory;
    where = downloaded.message;
  } else {
    directory = resolve(cwd, spec);
    where = `model: using the folder ${directory} (given explicitly)`;
  }
  const folder = directoryFolder(directory);
  const model = await loadHfModel(folder, options.contextLength !== undefined ? { contextLength: options.contextLength } : {});
  const tokenizer = await loadHfTokenizer(folder, model.config);
  const c = model.checkpoint.config;
  return {
    format,
    checkpoint: model.checkpoint,
    tokenizer,
    config: model.config,
    directory,
    modelPath: directory,
    message:
      `format: Hugging Face ${model.config.architecture} (${model.files.join(', ')}; ${c.nLayers} layers, ` +
      `${c.nHeads} heads / ${c.nKvHeads} KV heads of ${c.headSize}, vocab ${c.vocabSize}, context ${c.seqLen})\n${where}`,
  };
}

/**
 * One file of a Hub repository as its tree API lists it: LFS files carry their sha256 (`lfs.oid`), others the
 * git blob sha1 (`oid`).
 */
export interface HubFile {
  readonly path: string;
  readonly size: number;
  readonly oid?: string;
  readonly lfs?: { readonly oid: string; readonly size: number };
}

/**
 * Options of {@link downloadHfModel}.
 *
 * @example
 * ```ts
 * await downloadHfModel('hf:HuggingFaceTB/SmolLM2-135M-Instruct', { onProgress: (f, i, n) => console.error(`${i}/${n} ${f}`) });
 * ```
 */
export interface DownloadHfModelOptions {
  /** Cache root (the model lands in `<cacheDir>/hf/ORG/NAME`). Default KVCOMPACT_CACHE_DIR, else ~/.cache/kvcompact. */
  readonly cacheDir?: string;
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Default global fetch. */
  readonly fetch?: FetchLike;
  /** Set false to use only what is in the cache. Default true. */
  readonly download?: boolean;
  /** Git revision. Default `main`. */
  readonly revision?: string;
  /** Host. Default https://huggingface.co. */
  readonly endpoint?: string;
  readonly onProgress?: (file: string, index: number, count: number) => void;
  /** Bytes of the file being downloaded so far, and its size (for a progress bar). */
  readonly onBytes?: (file: string, received: number, total: number) => void;
}

/** Files a model folder needs besides the weights, and those worth having. */
const REQUIRED_FILES = ['config.json', 'tokenizer.json'];
const OPTIONAL_FILES = ['tokenizer_config.json', 'generation_config.json', 'special_tokens_map.json', SHARD_INDEX_FILE];

function wantedFile(path: string): boolean {
  return REQUIRED_FILES.includes(path) || OPTIONAL_FILES.includes(path) || /^[^/]+\.safetensors$/.test(path);
}

/** The hub's hash of a file, fed chunk by chunk: sha256 of LFS files, git blob sha1 of the others, else the size. */
function hubHasher(file: HubFile): { update(chunk: Uint8Array): void; check(): { ok: boolean; actual: string; expected: string; algorithm: string } } {
  let length = 0;
  if (file.lfs) {
    const hash = createHash('sha256');
    const expected = file.lfs.oid;
    return {
      update: (chunk) => void hash.update(chunk),
      check: () => {
        const actual = hash.digest('hex');
        return { ok: actual === expected, actual, expected, algorithm: 'sha256' };
      },
    };
  }
  if (file.oid) {
    // A git blob id hashes a header holding the length first; the listing gives the length up front.
    const hash = createHash('sha1').update(`blob ${file.size}\0`);
    const expected = file.oid;
    return {
      update: (chunk) => {
        length += chunk.byteLength;
        hash.update(chunk);
      },
      check: () => {
        const actual = length === file.size ? hash.digest('hex') : `${length} bytes`;
        return { ok: actual === expected, actual, expected, algorithm: 'git sha1' };
      },
    };
  }
  return {
    update: (chunk) => void (length += chunk.byteLength),
    check: () => ({ ok: length === file.size, actual: `${length} bytes`, expected: `${file.size} bytes`, algorithm: 'size' }),
  };
}

/** Whether a file on disk is the hub's (read in chunks, never whole). */
async function matchesHub(path: string, file: HubFile): Promise<boolean> {
  const hasher = hubHasher(file);
  const handle = await open(path, 'r');
  try {
    const chunk = new Uint8Array(1 << 20);
    for (;;) {
      const { bytesRead } = await handle.read(chunk, 0, chunk.length, null);
      if (bytesRead === 0) break;
      hasher.update(chunk.subarray(0, bytesRead));
    }
  } finally {
    await handle.close();
  }
  return hasher.check().ok;
}

/**
 * A fetch response that may stream its body (WHATWG `fetch` does): downloads then go to disk chunk by chunk with
 * byte progress instead of through one ArrayBuffer.
 */
export type StreamingResponse = Awaited<ReturnType<FetchLike>> & { readonly body?: AsyncIterable<Uint8Array> | null };

/**
 * The model id of `hf:ORG/NAME`, validated (letters, digits, `-`, `_`, `.`).
 *
 * @example
 * ```ts
 * parseHubId('hf:HuggingFaceTB/SmolLM2-135M-Instruct'); // 'HuggingFaceTB/SmolLM2-135M-Instruct'
 * ```
 */
export function parseHubId(spec: string): string {
  const id = spec.startsWith(HF_PREFIX) ? spec.slice(HF_PREFIX.length) : spec;
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*\/[A-Za-z0-9][A-Za-z0-9._-]*$/.test(id) || id.includes('..')) {
    throw new InvalidArgumentError('model', `${JSON.stringify(spec)} is not hf:ORG/NAME (e.g. hf:HuggingFaceTB/SmolLM2-135M-Instruct)`);
  }
  return id;
}

/**
 * Downloads a Hub model's config, tokenizer files and safetensors weights into `<cacheDir>/hf/ORG/NAME`, each
 * through a `.partial` file checked against the hub's published hash (sha256 for LFS files) before it is
 * renamed into place; files already there with the right hash are kept. Offline (the listing cannot be
 * fetched, or downloads are disabled) a complete cached folder is used as it is; otherwise the error says which
 * files to download and where to put them.
 *
 * @example
 * ```ts
 * const { directory } = await downloadHfModel('hf:HuggingFaceTB/SmolLM2-135M-Instruct');
 * ```
 */
export async function downloadHfModel(spec: string, options: DownloadHfModelOptions = {}): Promise<{ directory: string; message: string }> {
  const id = parseHubId(spec);
  const env = options.env ?? process.env;
  const cacheRoot = options.cacheDir ?? env.KVCOMPACT_CACHE_DIR ?? join(homedir(), '.cache', 'kvcompact');
  const directory = join(cacheRoot, 'hf', ...id.split('/'));
  const endpoint = options.endpoint ?? 'https://huggingface.co';
  const revision = options.revision ?? 'main';
  const fetchFn = options.fetch ?? fetch;
  const complete = (): boolean =>
    REQUIRED_FILES.every((f) => isFile(join(directory, f))) &&
    (isFile(join(directory, 'model.safetensors')) || isFile(join(directory, SHARD_INDEX_FILE)));
  const offlineHelp = (why: string): HfModelError =>
    new HfModelError(
      spec,
      'download',
      `${why}. Download config.json, tokenizer.json, tokenizer_config.json and model.safetensors (or ` +
        `${SHARD_INDEX_FILE} and every shard it names) from ${endpoint}/${id}/tree/${revision} into ${directory}, ` +
        `or pass --model with a folder that holds them`,
    );
  if (options.download === false) {
    if (complete()) return { directory, message: `model: using the cached folder ${directory} (downloads disabled)` };
    throw offlineHelp('downloads are disabled and the cache folder is incomplete');
  }
  let listing: HubFile[];
  try {
    const res = await fetchFn(`${endpoint}/api/models/${id}/tree/${revision}`);
    if (!res.ok) throw new Error(`HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}`);
    listing = JSON.parse(new TextDecoder().decode(await res.arrayBuffer())) as HubFile[];
    if (!Array.isArray(listing)) throw new Error('the file listing is not a list');
  } catch (err) {
    if (complete()) return { directory, message: `model: using the cached folder ${directory} (the hub is unreachable: ${(err as Error).message})` };
    throw offlineHelp(`cannot list ${id} on ${endpoint} (${(err as Error).message})`);
  }
  const files = listing.filter((f) => typeof f.path === 'string' && wantedFile(f.path));
  for (const required of REQUIRED_FILES) {
    if (!files.some((f) => f.path === required)) throw new HfModelError(spec, required, `the repository ${id} has no ${required}; is it a transformers model?`);
  }
  if (!files.some((f) => f.path.endsWith('.safetensors'))) {
    throw new HfModelError(spec, 'model.safetensors', `the repository ${id} has no safetensors weights (only those are read)`);
  }
  await mkdir(directory, { recursive: true });
  let fetched = 0;
  for (const [i, file] of files.entries()) {
    const target = join(directory, file.path);
    if (isFile(target)) {
      if (await matchesHub(target, file)) {
        options.onProgress?.(file.path, i + 1, files.length);
        continue;
      }
      await rm(target, { force: true });
    }
    const url = `${endpoint}/${id}/resolve/${revision}/${file.path}`;
    const res = (await fetchFn(url).catch((err: unknown) => {
      throw offlineHelp(`downloading ${url} failed (${(err as Error).message})`);
    })) as StreamingResponse;
    if (!res.ok) throw offlineHelp(`GET ${url} failed with HTTP ${res.status}`);
    const partial = `${target}.partial`;
    const hasher = hubHasher(file);
    let received = 0;
    const handle = await open(partial, 'w');
    try {
      const chunks: AsyncIterable<Uint8Array> | Uint8Array[] = res.body ?? [new Uint8Array(await res.arrayBuffer())];
      for await (const chunk of chunks) {
        hasher.update(chunk);
        await handle.write(chunk);
        received += chunk.byteLength;
        options.onBytes?.(file.path, received, file.lfs?.size ?? file.size);
      }
    } finally {
      await handle.close();
    }
    const check = hasher.check();
    if (!check.ok) {
      await rm(partial, { force: true });
      throw new HfModelError(
        spec,
        file.path,
        `${check.algorithm} ${check.actual} (${received} bytes) does not match the hub's ${check.expected}; ` +
          'the partial download was deleted. Retry, or download it yourself into ' + directory,
      );
    }
    await rename(partial, target);
    fetched++;
    options.onProgress?.(file.path, i + 1, files.length);
  }
  return {
    directory,
    message: `model: ${id} in ${directory} (${fetched} of ${files.length} files downloaded, each checked against the hub's hash)`,
  };
}
