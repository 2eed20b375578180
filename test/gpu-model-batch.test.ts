import { describe, expect, it } from 'vitest';
import type { GpuContext } from '../src/gpu/context.js';
import { readBuffer } from '../src/gpu/buffers.js';
import { PagedKvCache } from '../src/engine/paged-kv-cache.js';
import { parseCheckpoint } from '../src/model/checkpoint.js';
import { GpuLlama } from '../src/model/gpu-llama.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { testGpu } from './helpers/gpu.js';
import { sharedBytes, sharedText } from './model-helpers.js';

const checkpoint = parseCheckpoint(sharedBytes('models/stories260K.bin'));
const { config } = checkpoint;

function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs((a[i] as number) - (b[i] as number)));
  return worst;
}

interface Run {
  logits: Float32Array[][];
  /** Σp, Σp², count of every (layer, slot, head, token), as the cache accumulated them. */
  stats: Float32Array[];
  /** How many layers encodeLayerBatch served in one dispatch. */
  batchedLayers: number;
}

/**
 * Prefills `batch` sequences with prompts of different lengths (so their contexts differ), then runs 3 batched
 * decode steps: `mode` 'batched' attends every sequence in one dispatch per layer, 'per-sequence' one attention
 * per sequence (GpuLlamaOptions.batchedAttention false), 'single' plain forward() calls.
 */
async function decode(gpu: GpuContext, batch: number, mode: 'batched' | 'per-sequence' | 'single'): Promise<Run> {
  const seqs = Array.from({ length: batch }, (_, i) => i + 1);
  const cache = PagedKvCache.create(gpu, {
    shape: { layers: config.nLayers, kvHeads: config.nKvHeads, headDim: config.headSize },
    nHeads: config.nHeads,
    fullFormat: 'f32',
    seqSlots: batch,
    maxTokensPerHead: config.seqLen,
  });
  for (const s of seqs) cache.addSequence(s);
  let batchedLayers = 0;
  const encodeLayerBatch = cache.encodeLayerBatch.bind(cache);
  cache.encodeLayerBatch = (...args) => {
    const served = encodeLayerBatch(...args);
    if (served) batchedLayers++;
    return served;
  };
  const model = new GpuLlama(gpu, checkpoint, cache, { weights: 'f32', batchedAttention: mode === 'batched' });
  const tokenizer = Tokenizer.parse(sharedBytes('models/tok512.bin'), config.vocabSize);
  const ids = Array.from(tokenizer.encode(sharedText('data/tinystories_dev.txt').slice(0, 400), { bos: true }));
  // prompt lengths 3, 20, 7, 41, …: contexts spread over several 16-token blocks, one of them shorter than a block
  for (const s of seqs) await model.forward(s, ids.slice(0, 3 + ((s * 17) % 45)));
  const logits: Float32Array[][] = [];
  for (let step = 0; step < 3; step++) {
    const tokens = seqs.map((s) => (ids[s + step] as number) % config.vocabSize);
    if (mode === 'single') {
      const row: Float32Array[] = [];
      for (const [i, s] of seqs.entries()) row.push(await model.forward(s, [tokens[i] as number]));
      logits.push(row);
    } else {
      logits.push(await gpu.withErrorScope(() => model.forwardBatch(seqs, tokens)));
    }
  }
  const { attnSum, attnSqSum, attnCount } = cache.attention.statistics;
  const stats = await Promise.all([attnSum, attnSqSum, attnCount].map(async (b) => new Float32Array(await readBuffer(gpu, b))));
  model.destroy();
  cache.destroy();
  return { logits, stats, batchedLayers };
}

describe('batched decode: one attention dispatch per layer over all sequences', () => {
  it.each([1, 3, 8])(
    'batch %i at different context lengths matches per-sequence attention and single forwards',
    async (batch) => {
      const gpu = await testGpu();
      const batched = await decode(gpu, batch, 'batched');
      const perSequence = await decode(gpu, batch, 'per-sequence');
      const single = await decode(gpu, batch, 'single');
      // every layer of every step went through the one-dispatch path, and only in the batched mode
      expect(batched.batchedLayers).toBe(3 * config.nLayers);
      expect(perSequence.batchedLayers).toBe(0);
      expect(single.batchedLayers).toBe(0);
      let worst = 0;
      batched.logits.forEach((row, step) =>
        row.forEach((l, b) => {
          worst = Math.max(worst, maxAbs(l, perSequence.logits[step]?.[b] as Float32Array));
          worst = Math.max(worst, maxAbs(l, single.logits[step]?.[b] as Float32Array));
        }),
      );
      // The same kernels in another grouping: f32 sums in the same order per sequence, so tiny differences at most.
      expect(worst).toBeLessThan(1e-5);
      // statistics (Σp, Σp², visible count per token) accumulate the same
      batched.stats.forEach((s, i) => expect(maxAbs(s, single.stats[i] as Float32Array)).toBeLessThan(1e-5));
      expect(batched.stats[2]?.some((c) => c > 0)).toBe(true);
      if (batch > 1) {
        // rows of the batch differ: each sequence attended its own cache
        expect(maxAbs(batched.logits[0]?.[0] as Float32Array, batched.logits[0]?.[1] as Float32Array)).toBeGreaterThan(1e-3);
      }
    },
    120_000,
  );
});
