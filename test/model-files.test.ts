import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { InvalidArgumentError, ModelFormatError } from '../src/errors.js';
import {
  loadModelFiles,
  resolveModelFiles,
  sha256Hex,
  STORIES260K_MODEL,
  STORIES260K_TOKENIZER,
  type FetchLike,
  type OfficialFile,
} from '../src/node/model-files.js';

const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const base = mkdtempSync(join(tmpdir(), 'kvcompact-model-files-'));
afterAll(() => rmSync(base, { recursive: true, force: true }));

let n = 0;
/** A fresh directory with no ../shared beside it. */
function freshDir(): string {
  const dir = join(base, `case${n++}`, 'pkg');
  mkdirSync(dir, { recursive: true });
  return dir;
}

const modelBytes = new TextEncoder().encode('fake model bytes');
const tokBytes = new TextEncoder().encode('fake tokenizer bytes');
const files: { model: OfficialFile; tokenizer: OfficialFile } = {
  model: { fileName: 'm.bin', url: 'https://example.invalid/m.bin', sha256: sha256Hex(modelBytes) },
  tokenizer: { fileName: 't.bin', url: 'https://example.invalid/t.bin', sha256: sha256Hex(tokBytes) },
};

function fakeFetch(serve: Record<string, Uint8Array>, calls: string[] = []): FetchLike {
  return async (url) => {
    calls.push(url);
    const body = serve[url];
    return {
      ok: body !== undefined,
      status: body ? 200 : 404,
      statusText: body ? 'OK' : 'Not Found',
      arrayBuffer: async () => (body ?? new Uint8Array()).slice().buffer,
    };
  };
}

const noFetch: FetchLike = async (url) => {
  throw new Error(`unexpected network access to ${url}`);
};

describe('resolveModelFiles', () => {
  it('uses explicit paths first', async () => {
    const dir = freshDir();
    writeFileSync(join(dir, 'a.bin'), modelBytes);
    writeFileSync(join(dir, 'b.bin'), tokBytes);
    const r = await resolveModelFiles({ model: 'a.bin', tokenizer: join(dir, 'b.bin'), cwd: dir, env: { KVCOMPACT_MODEL_DIR: '/nonexistent' }, fetch: noFetch });
    expect(r).toMatchObject({ modelPath: join(dir, 'a.bin'), tokenizerPath: join(dir, 'b.bin'), source: 'flag' });
    expect(r.message).toMatch(/given explicitly/);
    await expect(resolveModelFiles({ model: join(dir, 'missing.bin'), cwd: dir, fetch: noFetch })).rejects.toThrow(InvalidArgumentError);
  });

  it('then KVCOMPACT_MODEL_DIR', async () => {
    const dir = freshDir();
    writeFileSync(join(dir, 'm.bin'), modelBytes);
    writeFileSync(join(dir, 't.bin'), tokBytes);
    const r = await resolveModelFiles({ files, env: { KVCOMPACT_MODEL_DIR: dir }, cwd: repoRoot, fetch: noFetch });
    expect(r).toMatchObject({ modelPath: join(dir, 'm.bin'), tokenizerPath: join(dir, 't.bin'), source: 'env' });
    expect(r.message).toMatch(/KVCOMPACT_MODEL_DIR/);
    // The explicit model wins while the tokenizer still comes from the environment.
    const mixed = await resolveModelFiles({ files, model: join(dir, 'm.bin'), env: { KVCOMPACT_MODEL_DIR: dir }, fetch: noFetch });
    expect(mixed.sources).toEqual({ model: 'flag', tokenizer: 'env' });
    await expect(resolveModelFiles({ files, env: { KVCOMPACT_MODEL_DIR: freshDir() }, fetch: noFetch })).rejects.toThrow(/KVCOMPACT_MODEL_DIR/);
  });

  it('then ../shared/models beside the working directory, then beside the package root', async () => {
    const fromCwd = await resolveModelFiles({ env: {}, cwd: repoRoot, packageRoot: freshDir(), fetch: noFetch });
    expect(fromCwd.source).toBe('shared');
    expect(fromCwd.modelPath).toBe(join(repoRoot, '..', 'shared', 'models', 'stories260K.bin'));
    expect(fromCwd.tokenizerPath).toBe(join(repoRoot, '..', 'shared', 'models', 'tok512.bin'));
    const fromPkg = await resolveModelFiles({ env: {}, cwd: freshDir(), packageRoot: repoRoot, fetch: noFetch });
    expect(fromPkg.modelPath).toBe(fromCwd.modelPath);
    // Default package root is found from the module's own location.
    const fromModule = await resolveModelFiles({ env: {}, cwd: freshDir(), fetch: noFetch });
    expect(fromModule.modelPath).toBe(fromCwd.modelPath);
    expect(fromModule.message).toMatch(/shared models directory/);
  });

  it('then downloads into the cache with sha256 verification, and reuses the cache', async () => {
    const cacheDir = join(freshDir(), 'cache');
    const calls: string[] = [];
    const opts = { files, env: { KVCOMPACT_CACHE_DIR: cacheDir }, cwd: freshDir(), packageRoot: freshDir() };
    const serve = { [files.model.url]: modelBytes, [files.tokenizer.url]: tokBytes };
    const r = await resolveModelFiles({ ...opts, fetch: fakeFetch(serve, calls) });
    expect(r).toMatchObject({ modelPath: join(cacheDir, 'm.bin'), tokenizerPath: join(cacheDir, 't.bin'), source: 'download' });
    expect(r.message).toMatch(/downloaded https:\/\/example.invalid\/m.bin .*sha256 verified/);
    expect(calls).toEqual([files.model.url, files.tokenizer.url]);
    expect(readdirSync(cacheDir).sort()).toEqual(['m.bin', 't.bin']);
    const again = await resolveModelFiles({ ...opts, fetch: noFetch });
    expect(again.source).toBe('cache');
    expect(again.message).toMatch(/cached download, sha256 verified/);
    // A corrupted cache entry is replaced by a fresh download.
    writeFileSync(join(cacheDir, 'm.bin'), 'corrupt');
    const healed = await resolveModelFiles({ ...opts, fetch: fakeFetch(serve) });
    expect(healed.sources).toEqual({ model: 'download', tokenizer: 'cache' });
    // cacheDir option wins over the environment.
    const other = join(freshDir(), 'c2');
    const r2 = await resolveModelFiles({ ...opts, cacheDir: other, fetch: fakeFetch(serve) });
    expect(r2.modelPath).toBe(join(other, 'm.bin'));
  });

  it('throws ModelFormatError on a checksum mismatch and deletes the partial file', async () => {
    const cacheDir = join(freshDir(), 'cache');
    const opts = { files, cacheDir, env: {}, cwd: freshDir(), packageRoot: freshDir() };
    const bad = fakeFetch({ [files.model.url]: new TextEncoder().encode('tampered'), [files.tokenizer.url]: tokBytes });
    const err = await resolveModelFiles({ ...opts, fetch: bad }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ModelFormatError);
    expect((err as Error).message).toMatch(new RegExp(`m.bin.*${files.model.sha256}.*partial download was deleted`));
    expect(readdirSync(cacheDir)).toEqual([]);
    expect(existsSync(join(cacheDir, 'm.bin.partial'))).toBe(false);
    await expect(resolveModelFiles({ ...opts, fetch: fakeFetch({}) })).rejects.toThrow(/HTTP 404/);
    await expect(resolveModelFiles({ ...opts, download: false, fetch: noFetch })).rejects.toThrow(/downloads are disabled/);
  });

  it('knows the official files', () => {
    expect(STORIES260K_MODEL.url).toBe('https://huggingface.co/karpathy/tinyllamas/resolve/main/stories260K/stories260K.bin');
    expect(STORIES260K_TOKENIZER.sha256).toBe('037cb335abb25d1fa9e8ecae30ed2a3a8ace9302862ebcdc05d51a6bbb10c312');
  });
});

describe('loadModelFiles', () => {
  it('parses the resolved checkpoint and tokenizer', async () => {
    const { files: f, checkpoint, tokenizer } = await loadModelFiles({ env: {}, cwd: repoRoot, fetch: noFetch });
    expect(f.source).toBe('shared');
    expect(checkpoint.config.dim).toBe(64);
    expect(tokenizer.vocabSize).toBe(checkpoint.config.vocabSize);
  });
});
