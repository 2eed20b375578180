import { readFileSync } from 'node:fs';
import type { LlamaConfig, LlamaWeights } from '../src/model/checkpoint.js';
import { mulberry32 } from '../src/random.js';

/** Bytes of a file under ../shared (beside the repository root). */
export function sharedBytes(path: string): Uint8Array {
  return new Uint8Array(readFileSync(new URL(`../../shared/${path}`, import.meta.url)));
}

/** Text of a file under ../shared. */
export function sharedText(path: string): string {
  return readFileSync(new URL(`../../shared/${path}`, import.meta.url), 'utf8');
}

/** A tiny random model (for separate-classifier and GQA layouts the shared file lacks). */
export function randomModel(overrides: Partial<LlamaConfig>, seed = 1): { config: LlamaConfig; weights: LlamaWeights } {
  const base = { dim: 16, hiddenDim: 24, nLayers: 2, nHeads: 4, nKvHeads: 2, vocabSize: 40, seqLen: 12, sharedClassifier: true, ...overrides };
  const headSize = base.dim / base.nHeads;
  const config: LlamaConfig = { ...base, headSize, kvDim: base.nKvHeads * headSize };
  const rng = mulberry32(seed);
  const rand = (n: number, scale = 0.3): Float32Array => Float32Array.from({ length: n }, () => (rng() * 2 - 1) * scale);
  const { dim, hiddenDim: h, nLayers: L, vocabSize: V, kvDim } = config;
  const tokenEmbedding = rand(V * dim, 1);
  const weights: LlamaWeights = {
    tokenEmbedding,
    rmsAttWeight: rand(L * dim, 1),
    wq: rand(L * dim * dim),
    wk: rand(L * kvDim * dim),
    wv: rand(L * kvDim * dim),
    wo: rand(L * dim * dim),
    rmsFfnWeight: rand(L * dim, 1),
    w1: rand(L * h * dim),
    w2: rand(L * dim * h),
    w3: rand(L * h * dim),
    rmsFinalWeight: rand(dim, 1),
    wcls: config.sharedClassifier ? tokenEmbedding : rand(V * dim),
  };
  return { config, weights };
}

