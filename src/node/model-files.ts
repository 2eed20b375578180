import { createHash } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { InvalidArgumentError, ModelFormatError } from '../errors.js';
import { parseCheckpoint, type LlamaCheckpoint } from '../model/checkpoint.js';
import { Tokenizer } from '../model/tokenizer.js';

/**
 * Where a model file was found.
 *
 * @example
 * ```ts
 * if (files.source === 'download') console.error(files.message);
 * ```
 */
export type ModelFileSource = 'flag' | 'env' | 'shared' | 'cache' | 'download';

/**
 * An official file: its name, download address and checksum.
 */
export interface OfficialFile {
  readonly fileName: string;
  readonly url: string;
  readonly sha256: string;
}

/**
 * Karpathy's stories260K checkpoint (llama2.c legacy format).
 *
 * @example
 * ```ts
 * await downloadVerified(STORIES260K_MODEL, cacheDir);
 * ```
 */
export const STORIES260K_MODEL: OfficialFile = {
  fileName: 'stories260K.bin',
  url: 'https://huggingface.co/karpathy/tinyllamas/resolve/main/stories260K/stories260K.bin',
  sha256: 'b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696',
};

/**
 * Its 512-token tokenizer.
 *
 * @example
 * ```ts
 * await downloadVerified(STORIES260K_TOKENIZER, cacheDir);
 * ```
 */
export const STORIES260K_TOKENIZER: OfficialFile = {
  fileName: 'tok512.bin',
  url: 'https://huggingface.co/karpathy/tinyllamas/resolve/main/stories260K/tok512.bin',
  sha256: '037cb335abb25d1fa9e8ecae30ed2a3a8ace9302862ebcdc05d51a6bbb10c312',
};

/**
 * The subset of `fetch` that downloads need (inject a fake in tests).
 *
 * @example
 * ```ts
 * await resolveModelFiles({ fetch: async (url) => new Response(bytes) });
 * ```
 */
export type FetchLike = (url: string) => Promise<{
  readonly ok: boolean;
  readonly status: number;
  readonly statusText?: string;
  arrayBuffer(): Promise<ArrayBuffer>;
}>;

/**
 * Options of {@link resolveModelFiles}.
 *
 * @example
 * ```ts
 * await resolveModelFiles({ model: 'my.bin', tokenizer: 'tok.bin', download: false });
 * ```
 */
export interface ResolveModelFilesOptions {
  /** Explicit checkpoint path (e.g. from `--model`). */
  readonly model?: string;
  /** Explicit tokenizer path (e.g. from `--tokenizer`). */
  readonly tokenizer?: string;
  /** Environment to read KVCOMPACT_MODEL_DIR / KVCOMPACT_CACHE_DIR from. Default `process.env`. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Directory `../shared/models` is resolved against first. Default `process.cwd()`. */
  readonly cwd?: string;
  /** Package root, the second base for `../shared/models`. Default: found from this module's location. */
  readonly packageRoot?: string;
  /** Download cache. Default KVCOMPACT_CACHE_DIR, else ~/.cache/kvcompact. */
  readonly cacheDir?: string;
  /** Fetch used for downloads. Default global `fetch`. */
  readonly fetch?: FetchLike;
  /** Set false to fail instead of downloading. Default true. */
  readonly download?: boolean;
  /** Which files to look for (defaults: stories260K). */
  readonly files?: { readonly model: OfficialFile; readonly tokenizer: OfficialFile };
}

/**
 * Result of {@link resolveModelFiles}.
 *
 * @example
 * ```ts
 * const { modelPath, tokenizerPath, source, message } = await resolveModelFiles();
 * ```
 */
export interface ResolvedModelFiles {
  readonly modelPath: string;
  readonly tokenizerPath: string;
  /** Where the checkpoint came from. */
  readonly source: ModelFileSource;
  /** Where each file came from (they can differ, e.g. `--model` with the tokenizer from the cache). */
  readonly sources: { readonly model: ModelFileSource; readonly tokenizer: ModelFileSource };
  /** One human-readable line per file saying what was done. */
  readonly message: string;
}

function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** Walks up from this module to the directory holding kvcompact's package.json. */
function findPackageRoot(): string | undefined {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) return dir;
    const up = dirname(dir);
    if (up === dir) return undefined;
    dir = up;
  }
}

/**
 * SHA-256 of bytes as lowercase hex.
 *
 * @example
 * ```ts
 * sha256Hex(await readFile(path)) === STORIES260K_MODEL.sha256;
 * ```
 */
export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/**
 * Downloads `file` into `cacheDir` through a `.partial` file, verifies its SHA-256 and renames it into place.
 * A mismatch deletes the partial file and throws {@link ModelFormatError}.
 *
 * @example
 * ```ts
 * const path = await downloadVerified(STORIES260K_MODEL, join(homedir(), '.cache/kvcompact'));
 * ```
 */
export async function downloadVerified(file: OfficialFile, cacheDir: string, fetchFn: FetchLike = fetch): Promise<string> {
  await mkdir(cacheDir, { recursive: true });
  const target = join(cacheDir, file.fileName);
  const partial = `${target}.partial`;
  const res = await fetchFn(file.url);
  if (!res.ok) {
    throw new InvalidArgumentError(
      'download',
      `GET ${file.url} failed with HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}; ` +
        `download it yourself and pass its path, or set KVCOMPACT_MODEL_DIR`,
    );
  }
  const bytes = new Uint8Array(await res.arrayBuffer());
  await writeFile(partial, bytes);
  const actual = sha256Hex(bytes);
  if (actual !== file.sha256) {
    await rm(partial, { force: true });
    throw new ModelFormatError(
      `${file.fileName} from ${file.url}: sha256 ${actual} (${bytes.length} bytes) does not match the expected ` +
        `${file.sha256}; the partial download was deleted. Retry, or download it yourself and pass its path.`,
    );
  }
  await rename(partial, target);
  return target;
}

interface OneResolved {
  readonly path: string;
  readonly source: ModelFileSource;
  readonly message: string;
}

/** The file an explicit path names; a directory is refused with the file expected inside it. */
function explicitFile(kind: 'model' | 'tokenizer', path: string, file: OfficialFile): string {
  if (isFile(path)) return path;
  if (isDirectory(path)) {
    const inside = join(path, file.fileName);
    const what = kind === 'model' ? 'a llama2.c checkpoint file (.bin)' : 'a llama2.c tokenizer file (.bin)';
    throw new InvalidArgumentError(
      kind,
      `${path} is a directory; pass ${what}` + (isFile(inside) ? `, e.g. ${inside}` : `, such as ${file.fileName}`),
    );
  }
  throw new InvalidArgumentError(kind, `file ${path} does not exist (given explicitly)`);
}

async function resolveOne(
  kind: 'model' | 'tokenizer',
  explicit: string | undefined,
  file: OfficialFile,
  o: ResolveModelFilesOptions,
): Promise<OneResolved> {
  const env = o.env ?? process.env;
  const cwd = o.cwd ?? process.cwd();
  if (explicit !== undefined) {
    const path = explicitFile(kind, resolve(cwd, explicit), file);
    return { path, source: 'flag', message: `${kind}: using ${path} (given explicitly)` };
  }
  const envDir = env.KVCOMPACT_MODEL_DIR;
  if (envDir) {
    const path = resolve(cwd, envDir, file.fileName);
    if (!isFile(path)) {
      throw new InvalidArgumentError(
        'KVCOMPACT_MODEL_DIR',
        `${path} does not exist; put ${file.fileName} there or unset KVCOMPACT_MODEL_DIR`,
      );
    }
    return { path, source: 'env', message: `${kind}: using ${path} (from KVCOMPACT_MODEL_DIR)` };
  }
  const roots = [cwd, o.packageRoot ?? findPackageRoot()].filter((r): r is string => r !== undefined);
  for (const root of roots) {
    const path = resolve(root, '..', 'shared', 'models', file.fileName);
    if (isFile(path)) return { path, source: 'shared', message: `${kind}: using ${path} (shared models directory)` };
  }
  const cacheDir = o.cacheDir ?? env.KVCOMPACT_CACHE_DIR ?? join(homedir(), '.cache', 'kvcompact');
  const cached = join(cacheDir, file.fileName);
  if (isFile(cached)) {
    const actual = sha256Hex(await readFile(cached));
    if (actual === file.sha256) {
      return { path: cached, source: 'cache', message: `${kind}: using ${cached} (cached download, sha256 verified)` };
    }
    // A corrupt cache entry is replaced rather than trusted.
    await rm(cached, { force: true });
  }
  if (o.download === false) {
    throw new InvalidArgumentError(
      kind,
      `${file.fileName} not found (no explicit path, KVCOMPACT_MODEL_DIR unset, not in ../shared/models, not in ${cacheDir}) and downloads are disabled`,
    );
  }
  const path = await downloadVerified(file, cacheDir, o.fetch ?? fetch);
  return { path, source: 'download', message: `${kind}: downloaded ${file.url} to ${path} (sha256 verified)` };
}

/**
 * Finds the checkpoint and tokenizer, each by the first of: the explicit path, `$KVCOMPACT_MODEL_DIR`,
 * `../shared/models` beside the working directory, then beside the package root, a verified copy in the cache
 * (`$KVCOMPACT_CACHE_DIR` or ~/.cache/kvcompact), or a download of the official file there (SHA-256 verified).
 *
 * @example
 * ```ts
 * const files = await resolveModelFiles({ model: args.model });
 * console.error(files.message);
 * ```
 */
export async function resolveModelFiles(options: ResolveModelFilesOptions = {}): Promise<ResolvedModelFiles> {
  const files = options.files ?? { model: STORIES260K_MODEL, tokenizer: STORIES260K_TOKENIZER };
  const model = await resolveOne('model', options.model, files.model, options);
  const tokenizer = await resolveOne('tokenizer', options.tokenizer, files.tokenizer, options);
  return {
    modelPath: model.path,
    tokenizerPath: tokenizer.path,
    source: model.source,
    sources: { model: model.source, tokenizer: tokenizer.source },
    message: `${model.message}\n${tokenizer.message}`,
  };
}

/**
 * Result of {@link loadModelFiles}.
 *
 * @example
 * ```ts
 * const { checkpoint, tokenizer, files } = await loadModelFiles();
 * ```
 */
export interface LoadedModel {
  readonly files: ResolvedModelFiles;
  readonly checkpoint: LlamaCheckpoint;
  readonly tokenizer: Tokenizer;
}

/**
 * Resolves (see {@link resolveModelFiles}), reads and parses the checkpoint and its tokenizer.
 *
 * @example
 * ```ts
 * const { checkpoint, tokenizer } = await loadModelFiles();
 * new ReferenceLlama(checkpoint).forward(1, 0);
 * ```
 */
export async function loadModelFiles(options: ResolveModelFilesOptions = {}): Promise<LoadedModel> {
  const model = options.model;
  if (model !== undefined && (model.startsWith('hf:') || isFile(join(resolve(options.cwd ?? process.cwd(), model), 'config.json')))) {
    throw new InvalidArgumentError('model', `${model} is a Hugging Face model, not a llama2.c checkpoint: load it with loadNodeModel (src/node/hf-model-files.ts)`);
  }
  const files = await resolveModelFiles(options);
  const checkpoint = parseCheckpoint(await readFile(files.modelPath));
  const tokenizer = Tokenizer.parse(await readFile(files.tokenizerPath), checkpoint.config.vocabSize);
  return { files, checkpoint, tokenizer };
}
