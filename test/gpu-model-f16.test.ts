import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '../src/errors.js';
import type { GpuContext } from '../src/gpu/context.js';
import { PagedKvCache } from '../src/engine/paged-kv-cache.js';
import { type LlamaCheckpoint, parseCheckpoint } from '../src/model/checkpoint.js';
import { GpuLlama, type GpuLlamaOptions } from '../src/model/gpu-llama.js';
import { ReferenceLlama } from '../src/model/reference-forward.js';
import { argmax } from '../src/model/sampling.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { testGpu } from './helpers/gpu.js';
import { randomModel, sharedBytes, sharedText } from './model-helpers.js';

const checkpoint = parseCheckpoint(sharedBytes('models/stories260K.bin'));
const { config } = checkpoint;

/** The engine's paged cache, f32 blocks (no compression), as the model's attention. */
function pagedCache(gpu: GpuContext, sequences: readonly number[], model = config): PagedKvCache {
  const cache = PagedKvCache.create(gpu, {
    shape: { layers: model.nLayers, kvHeads: model.nKvHeads, headDim: model.headSize },
    nHeads: model.nHeads,
    fullFormat: 'f32',
    maxTokensPerHead: model.seqLen,
  });
  for (const id of sequences) cache.addSequence(id);
  return cache;
}

/** Largest |a − b|. */
function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs((a[i] as number) - (b[i] as number)));
  return worst;
}

const promptIds = (): number[] => {
  const tokenizer = Tokenizer.parse(sharedBytes('models/tok512.bin'), config.vocabSize);
  return Array.from(tokenizer.encode(sharedText('data/tinystories_dev.txt').slice(0, 300), { bos: true }));
};

/** Logits of a 30-token prefill chunk (every row) and 3 decode steps continuing it. */
async function logitsOf(gpu: GpuContext, options: GpuLlamaOptions): Promise<Float32Array[]> {
  const cache = pagedCache(gpu, [1]);
  const model = new GpuLlama(gpu, checkpoint, cache, options);
  const ids = promptIds();
  const out = [await gpu.withErrorScope(() => model.forward(1, ids.slice(0, 30), { allLogits: true }))];
  for (const t of ids.slice(30, 33)) out.push(await model.forward(1, [t]));
  model.destroy();
  cache.destroy();
  return out;
}

describe('GpuLlama weight precision, split weights and batched decode (stories260K)', () => {
  it('f16 weights: logits within 2e-2 of f32 (logits span ~±20), f32 within 1e-4 of the reference', async () => {
    const gpu = await testGpu();
    const f32 = await logitsOf(gpu, { weights: 'f32' });
    const f16 = await logitsOf(gpu, { weights: 'f16' });
    const ref = new ReferenceLlama(checkpoint);
    const ids = promptIds();
    const want = ref.forward(ids[0] as number, 0);
    expect(maxAbs((f32[0] as Float32Array).subarray(0, config.vocabSize), want)).toBeLessThan(1e-4);
    let worst = 0;
    let top1Agree = 0;
    let rows = 0;
    f32.forEach((a, i) => {
      const b = f16[i] as Float32Array;
      worst = Math.max(worst, maxAbs(b, a));
      for (let r = 0; r < a.length / config.vocabSize; r++) {
        rows++;
        const sa = a.subarray(r * config.vocabSize, (r + 1) * config.vocabSize);
        const sb = b.subarray(r * config.vocabSize, (r + 1) * config.vocabSize);
        if (argmax(sa) === argmax(sb)) top1Agree++;
      }
    });
    console.log(`stories260K f16 vs f32 weights: max |Δlogit| = ${worst.toExponential(2)} over ${rows} rows; top-1 agrees on ${top1Agree}/${rows}`);
    expect(worst).toBeLessThan(2e-2);
    expect(worst).toBeGreaterThan(0); // f16 really ran: the weights were rounded
    expect(top1Agree).toBeGreaterThanOrEqual(rows - 1);
  });

  it('f16 weights (the default): greedy decoding from BOS on the paged cache reproduces the 257 reference ids', async () => {
    const gpu = await testGpu();
    const reference = JSON.parse(sharedText('data/stories260K_greedy_reference.json')) as { tokens: number[]; steps: number };
    const cache = pagedCache(gpu, [1]);
    const model = new GpuLlama(gpu, checkpoint, cache);
    expect(model.weightPrecision).toBe('f16');
    const ids = [1];
    for (let step = 0; step < reference.steps; step++) ids.push(argmax(await model.forward(1, [ids[step] as number])));
    expect(ids).toEqual(reference.tokens);
    model.destroy();
    cache.destroy();
  });

  it.each(['f32', 'f16'] as const)('%s weights split by rows (forced 4 KiB binding limit) give the logits of unsplit weights, with either matvec strategy', async (weights) => {
    const gpu = await testGpu();
    const whole = await logitsOf(gpu, { weights });
    const cache = pagedCache(gpu, [1]);
    // stories260K: classifier 512 × 64, w13 [1376][64]: f32 rows are 256 B, so 4 KiB parts of 16 rows.
    const model = new GpuLlama(gpu, checkpoint, cache, { weights, maxBindingBytes: 4096 });
    expect(model.weightParts.get('token_embedding')).toBe(weights === 'f32' ? 32 : 16);
    expect(model.weightParts.get('0:w13')).toBeGreaterThan(1);
    model.destroy();
    cache.destroy();
    const split = await logitsOf(gpu, { weights, maxBindingBytes: 4096 });
    split.forEach((s, i) => expect(maxAbs(s, whole[i] as Float32Array)).toBeLessThan(1e-5));
    // The real-GPU work split (one workgroup per column, tree reduction) on the same split weights: f32 sums in
    // another order, so within 1e-4 of the logits (which span ~±20).
    const grouped = await logitsOf(gpu, { weights, maxBindingBytes: 4096, matvec: { strategy: 'workgroup' } });
    grouped.forEach((s, i) => expect(maxAbs(s, whole[i] as Float32Array)).toBeLessThan(1e-4));
  });

  it.each(['f32', 'f16'] as const)('batched decode of 8 sequences (%s weights) gives the logits of 8 single decodes within 1e-5', async (weights) => {
    const gpu = await testGpu();
    const seqs = [1, 2, 3, 4, 5, 6, 7, 8];
    const ids = promptIds();
    // Each sequence gets a different prompt length (2..9 tokens), so positions differ across the batch.
    const prompts = seqs.map((s) => ids.slice(s, s + 1 + s));
    const next = seqs.map((s) => ids[s + 20] as number);
    const runAll = async (batched: boolean): Promise<Float32Array[][]> => {
      const cache = pagedCache(gpu, seqs);
      const model = new GpuLlama(gpu, checkpoint, cache, { weights });
      for (const [i, s] of seqs.entries()) await model.forward(s, prompts[i] as number[]);
      const steps: Float32Array[][] = [];
      for (let step = 0; step < 3; step++) {
        const tokens = next.map((t, i) => (t + 31 * step + i) % config.vocabSize);
        if (batched) steps.push(await gpu.withErrorScope(() => model.forwardBatch(seqs, tokens)));
        else {
          const row: Float32Array[] = [];
          for (const [i, s] of seqs.entries()) row.push(await model.forward(s, [tokens[i] as number]));
          steps.push(row);
        }
      }
      model.destroy();
      cache.destroy();
      return steps;
    };
    const single = await runAll(false);
    const batch = await runAll(true);
    let worst = 0;
    batch.forEach((row, step) => row.forEach((l, b) => (worst = Math.max(worst, maxAbs(l, single[step]?.[b] as Float32Array)))));
    console.log(`batched vs single decode (${weights}): max |Δlogit| = ${worst.toExponential(2)}`);
    expect(worst).toBeLessThan(1e-5);
    // The batch is not one sequence repeated: its rows differ.
    expect(maxAbs(batch[0]?.[0] as Float32Array, batch[0]?.[1] as Float32Array)).toBeGreaterThan(1e-3);
  });

  it('forwardBatch rejects a repeated sequence, mismatched lengths and bad ids before reserving slots', async () => {
    const gpu = await testGpu();
    const cache = pagedCache(gpu, [1, 2]);
    const model = new GpuLlama(gpu, checkpoint, cache);
    await expect(model.forwardBatch([1, 1], [3, 4])).rejects.toThrow(/one token per sequence/);
    await expect(model.forwardBatch([1, 2], [3])).rejects.toThrow(InvalidArgumentError);
    await expect(model.forwardBatch([1, 2], [3, config.vocabSize])).rejects.toThrow(/tokens\[1\]/);
    expect(cache.sequenceLength(1)).toBe(0);
    model.destroy();
    cache.destroy();
  });

  it('an untied classifier and GQA (random model): f16 split and batched paths agree with f32 within 2e-2', async () => {
    const gpu = await testGpu();
    const { config: rc, weights } = randomModel({ sharedClassifier: false, vocabSize: 67, dim: 32, nHeads: 4, nKvHeads: 2, hiddenDim: 40 });
    const ck: LlamaCheckpoint = { config: rc, weights };
    const run = async (options: GpuLlamaOptions): Promise<Float32Array[]> => {
      const cache = pagedCache(gpu, [1, 2], rc);
      const model = new GpuLlama(gpu, ck, cache, options);
      await model.forward(1, [1, 5, 9]);
      await model.forward(2, [2]);
      const out = await model.forwardBatch([1, 2], [7, 8]);
      model.destroy();
      cache.destroy();
      return out;
    };
    const f32 = await run({ weights: 'f32' });
    const f16 = await run({ weights: 'f16', maxBindingBytes: 256 });
    f32.forEach((a, i) => expect(maxAbs(f16[i] as Float32Array, a)).toBeLessThan(2e-2));
  });
});
