import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { HfModelError, InvalidArgumentError } from '../src/errors.js';
import { parseCheckpoint } from '../src/model/checkpoint.js';
import { ReferenceLlama } from '../src/model/reference-forward.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { detectModelFormat, directoryFolder, downloadHfModel, loadNodeModel, parseHubId, type HubFile } from '../src/node/hf-model-files.js';
import { loadModelFiles, sha256Hex, type FetchLike } from '../src/node/model-files.js';
import { hfFolderFiles, tokenizerJsonFromLlama2c } from './hf-fixtures.js';
import { sharedBytes } from './model-helpers.js';

const llama2c = parseCheckpoint(sharedBytes('models/stories260K.bin'));
const tok512 = Tokenizer.parse(sharedBytes('models/tok512.bin'), 512);
const storiesPath = new URL('../../shared/models/stories260K.bin', import.meta.url).pathname;

function storiesFolderFiles(): Record<string, Uint8Array> {
  return {
    ...hfFolderFiles({ ...llama2c.config, rmsNormEps: 1e-5 }, llama2c.weights, 'F32'),
    'tokenizer.json': new TextEncoder().encode(JSON.stringify(tokenizerJsonFromLlama2c(tok512))),
    'tokenizer_config.json': new TextEncoder().encode(JSON.stringify({ bos_token: '<s>', eos_token: '</s>' })),
  };
}

function writeFolder(files: Record<string, Uint8Array>): string {
  const dir = mkdtempSync(join(tmpdir(), 'kvcompact-hf-'));
  for (const [name, bytes] of Object.entries(files)) writeFileSync(join(dir, name), bytes);
  return dir;
}

describe('--model DIR: a Hugging Face folder or a llama2.c file, detected', () => {
  it('detects the format and loads a HF folder from disk like the llama2.c file', async () => {
    const dir = writeFolder(storiesFolderFiles());
    expect(detectModelFormat(dir)).toBe('hf-folder');
    expect(detectModelFormat(storiesPath)).toBe('llama2c');
    expect(detectModelFormat('hf:HuggingFaceTB/SmolLM2-135M-Instruct')).toBe('hf-hub');
    const hf = await loadNodeModel({ model: dir });
    expect(hf.format).toBe('hf-folder');
    expect(hf.message).toMatch(/^format: Hugging Face LlamaForCausalLM \(model.safetensors; 5 layers, 8 heads \/ 4 KV heads of 8, vocab 512, context 512\)/);
    expect(hf.tokenizer.encode('Once upon a time, Lily', { bos: true })).toEqual(tok512.encode('Once upon a time, Lily', { bos: true }));
    const a = new ReferenceLlama(hf.checkpoint).forward(1, 0);
    expect(a).toEqual(new ReferenceLlama(llama2c).forward(1, 0));
    const file = await loadNodeModel({ model: storiesPath, tokenizer: new URL('../../shared/models/tok512.bin', import.meta.url).pathname });
    expect(file.format).toBe('llama2c');
    expect(file.message).toMatch(/^format: llama2.c checkpoint/);
  });

  it('loadModelFiles points a HF folder to loadNodeModel instead of "file does not exist"', async () => {
    const dir = writeFolder(storiesFolderFiles());
    await expect(loadModelFiles({ model: dir })).rejects.toThrow(InvalidArgumentError);
    await expect(loadModelFiles({ model: dir })).rejects.toThrow(/Hugging Face model.*loadNodeModel/);
  });

  it('directoryFolder reads exact byte ranges and reports missing files', async () => {
    const dir = writeFolder({ 'a.bin': Uint8Array.from({ length: 100 }, (_, i) => i) });
    const folder = directoryFolder(dir);
    expect(await folder.open('missing')).toBeUndefined();
    const a = await folder.open('a.bin');
    expect(a?.byteLength).toBe(100);
    expect(Array.from(await a!.read(97, 3))).toEqual([97, 98, 99]);
  });
});

/** A fake hub for one repository: the tree listing with hashes as the hub publishes them, and the files. */
function fakeHub(files: Record<string, Uint8Array>, corrupt?: string, streamChunk?: number): { fetch: FetchLike; urls: string[] } {
  const urls: string[] = [];
  const listing: HubFile[] = Object.entries(files).map(([path, bytes]) =>
    path.endsWith('.safetensors')
      ? { path, size: bytes.byteLength, oid: 'x', lfs: { oid: sha256Hex(bytes), size: bytes.byteLength } }
      : { path, size: bytes.byteLength, oid: createHash('sha1').update(`blob ${bytes.byteLength}\0`).update(bytes).digest('hex') },
  );
  listing.push({ path: 'README.md', size: 3, oid: 'y' });
  const respond = (bytes: Uint8Array) => ({
    ok: true,
    status: 200,
    arrayBuffer: async () => bytes.slice().buffer,
    ...(streamChunk
      ? {
          body: (async function* () {
            for (let o = 0; o < bytes.length; o += streamChunk) yield bytes.subarray(o, o + streamChunk);
          })(),
        }
      : {}),
  });
  return {
    urls,
    fetch: async (url) => {
      urls.push(url);
      if (url === 'https://huggingface.co/api/models/tiny-org/tiny-llama/tree/main') return respond(new TextEncoder().encode(JSON.stringify(listing)));
      const m = /^https:\/\/huggingface\.co\/tiny-org\/tiny-llama\/resolve\/main\/(.+)$/.exec(url);
      const bytes = m ? files[m[1]!] : undefined;
      if (!bytes) return { ok: false, status: 404, arrayBuffer: async () => new ArrayBuffer(0) };
      if (m![1] === corrupt) {
        const bad = bytes.slice();
        bad[bad.length - 1] = (bad[bad.length - 1] as number) ^ 1;
        return respond(bad);
      }
      return respond(bytes);
    },
  };
}

describe('--model hf:ORG/NAME (injected fetch; no network here)', () => {
  it('downloads the wanted files into the cache, verified by sha256 (LFS) and git sha1, then loads them', async () => {
    const cacheDir = mkdtempSync(join(tmpdir(), 'kvcompact-cache-'));
    const hub = fakeHub(storiesFolderFiles());
    const progress: string[] = [];
    const model = await loadNodeModel({ model: 'hf:tiny-org/tiny-llama', cacheDir, fetch: hub.fetch, onProgress: (f) => progress.push(f) });
    expect(model.format).toBe('hf-hub');
    expect(model.message).toMatch(/4 of 4 files downloaded/);
    expect(readdirSync(join(cacheDir, 'hf', 'tiny-org', 'tiny-llama')).sort()).toEqual(['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
    expect(hub.urls.some((u) => u.endsWith('README.md'))).toBe(false);
    expect(progress).toHaveLength(4);
    // Again: everything is cached with the right hashes, nothing is downloaded; offline, the cache is used.
    const again = await downloadHfModel('hf:tiny-org/tiny-llama', { cacheDir, fetch: hub.fetch });
    expect(again.message).toMatch(/0 of 4 files downloaded/);
    const offline = await downloadHfModel('hf:tiny-org/tiny-llama', { cacheDir, fetch: async () => Promise.reject(new Error('getaddrinfo ENOTFOUND')) });
    expect(offline.message).toMatch(/cached folder .* hub is unreachable/);
  });

  it('a streamed body goes to disk chunk by chunk with byte progress, hashed on the way', async () => {
    const cacheDir = mkdtempSync(join(tmpdir(), 'kvcompact-cache-'));
    const files = storiesFolderFiles();
    const bytes: Array<[string, number, number]> = [];
    const { directory } = await downloadHfModel('hf:tiny-org/tiny-llama', {
      cacheDir,
      fetch: fakeHub(files, undefined, 65536).fetch,
      onBytes: (file, received, total) => bytes.push([file, received, total]),
    });
    const weights = bytes.filter(([f]) => f === 'model.safetensors');
    const size = (files['model.safetensors'] as Uint8Array).length;
    expect(weights.length).toBe(Math.ceil(size / 65536));
    expect(weights.at(-1)).toEqual(['model.safetensors', size, size]);
    expect(new Uint8Array(readFileSync(join(directory, 'model.safetensors')))).toEqual(files['model.safetensors']);
    await expect(downloadHfModel('hf:tiny-org/tiny-llama', { cacheDir, fetch: fakeHub(files, 'model.safetensors', 65536).fetch })).resolves.toBeDefined();
    const corruptDir = mkdtempSync(join(tmpdir(), 'kvcompact-cache-'));
    await expect(downloadHfModel('hf:tiny-org/tiny-llama', { cacheDir: corruptDir, fetch: fakeHub(files, 'config.json', 7).fetch })).rejects.toThrow(
      /config.json: git sha1/,
    );
  });

  it('a file whose hash does not match is deleted and named; offline with no cache says what to download and where', async () => {
    const cacheDir = mkdtempSync(join(tmpdir(), 'kvcompact-cache-'));
    const hub = fakeHub(storiesFolderFiles(), 'model.safetensors');
    const err = await downloadHfModel('hf:tiny-org/tiny-llama', { cacheDir, fetch: hub.fetch }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HfModelError);
    expect((err as HfModelError).field).toBe('model.safetensors');
    expect((err as Error).message).toMatch(/sha256 [0-9a-f]{64} .* does not match the hub's [0-9a-f]{64}/);
    expect(readdirSync(join(cacheDir, 'hf', 'tiny-org', 'tiny-llama')).some((f) => f.startsWith('model.safetensors'))).toBe(false);
    const empty = mkdtempSync(join(tmpdir(), 'kvcompact-cache-'));
    const offline = downloadHfModel('hf:tiny-org/tiny-llama', { cacheDir: empty, fetch: async () => Promise.reject(new Error('ENOTFOUND')) });
    await expect(offline).rejects.toThrow(
      new RegExp(`Download config.json, tokenizer.json, tokenizer_config.json and model.safetensors .* from https://huggingface.co/tiny-org/tiny-llama/tree/main into ${join(empty, 'hf', 'tiny-org', 'tiny-llama')}`),
    );
    await expect(downloadHfModel('hf:tiny-org/tiny-llama', { cacheDir: empty, download: false })).rejects.toThrow(/downloads are disabled/);
    expect(() => parseHubId('hf:../etc')).toThrow(InvalidArgumentError);
  });
});
