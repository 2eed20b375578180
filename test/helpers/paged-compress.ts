import type { PagedKvCache } from '../../src/engine/paged-kv-cache.js';
import { allocateBudgets, type BudgetMode } from '../../src/compress/budgets.js';
import type { ScoreInput, ScoringPolicy } from '../../src/compress/policy.js';
import { selectTopK } from '../../src/compress/select.js';
import { createStorageBuffer, readBuffer } from '../../src/gpu/buffers.js';
import type { GpuContext } from '../../src/gpu/context.js';
import { seededRandom } from './gpu.js';

/**
 * Runs chunks of random tokens through every layer of the cache, like a model would (append, window,
 * attention, statistics). Returns the queries of each (chunk, layer).
 */
export async function fillSequence(
  gpu: GpuContext,
  cache: PagedKvCache,
  seq: number,
  chunks: number[],
  seed: number,
): Promise<Float32Array[]> {
  const random = seededRandom(seed);
  const { layers, kvHeads, headDim } = cache.shape;
  const queriesByStep: Float32Array[] = [];
  for (const n of chunks) {
    const step = cache.beginStep(seq, n);
    const encoder = gpu.device.createCommandEncoder();
    const scratch: GPUBuffer[] = [];
    for (let layer = 0; layer < layers; layer++) {
      const kv = () => Float32Array.from({ length: n * kvHeads * headDim }, () => random() * 2 - 1);
      const q = Float32Array.from({ length: n * cache.nHeads * headDim }, () => (random() * 2 - 1) * 3);
      queriesByStep.push(q);
      const io = {
        keys: createStorageBuffer(gpu, 'k', kv()),
        values: createStorageBuffer(gpu, 'v', kv()),
        queries: createStorageBuffer(gpu, 'q', q),
        out: createStorageBuffer(gpu, 'out', q.byteLength),
      };
      scratch.push(...Object.values(io));
      cache.encodeLayer(encoder, step, layer, io);
    }
    gpu.submit([encoder.finish()]);
    cache.endStep(step);
    await gpu.idle();
    for (const b of scratch) b.destroy();
  }
  return queriesByStep;
}

/** Per layer: the CPU score input of a sequence, read back from the cache's GPU state. */
export async function referenceInputs(cache: PagedKvCache, seq: number, seed: number): Promise<ScoreInput[]> {
  const { layers, kvHeads, headDim } = cache.shape;
  const nHeads = cache.nHeads;
  const capacity = cache.observationWindow;
  const slot = cache.meta.slotOf(seq);
  const stride = cache.maxTokensPerHead;
  const stats = await Promise.all([cache.attention.statistics.attnSum, cache.attention.statistics.attnSqSum, cache.attention.statistics.attnCount].map((b) => readBuffer(cache.gpu, b)));
  const [sum, sq, count] = stats.map((s) => new Float32Array(s));
  const windowQ = new Float32Array(await readBuffer(cache.gpu, cache.attention.window.queries));
  const windowP = new Uint32Array(await readBuffer(cache.gpu, cache.attention.window.positions));
  const seqLen = cache.sequenceLength(seq);
  const valid = cache.attention.windowCount(seq, 0);
  const inputs: ScoreInput[] = [];
  for (let layer = 0; layer < layers; layer++) {
    const heads = await Promise.all(Array.from({ length: kvHeads }, (_, h) => cache.readHead(seq, layer, h)));
    const rows = heads.map((_, h) => (layer * cache.meta.seqSlots + slot) * kvHeads + h);
    const slice = (a: Float32Array | undefined, row: number, n: number) => (a ?? new Float32Array()).slice(row * stride, row * stride + n);
    // window: newest `valid` queries in position order
    const w = valid;
    const wq = new Float32Array(w * nHeads * headDim);
    const wp = new Uint32Array(w);
    for (let i = 0; i < w; i++) {
      const pos = seqLen - w + i;
      const ring = pos % capacity;
      const base = (layer * cache.meta.seqSlots + slot) * capacity + ring;
      wq.set(windowQ.subarray(base * nHeads * headDim, (base + 1) * nHeads * headDim), i * nHeads * headDim);
      wp[i] = windowP[base] ?? 0;
    }
    inputs.push({
      nHeads,
      kvHeads,
      headDim,
      keys: heads.map((h) => h.keys),
      positions: heads.map((h) => h.positions),
      windowQueries: wq,
      windowPositions: wp,
      attnSum: heads.map((h, i) => slice(sum, rows[i] ?? 0, h.positions.length)),
      attnSqSum: heads.map((h, i) => slice(sq, rows[i] ?? 0, h.positions.length)),
      attnCount: heads.map((h, i) => slice(count, rows[i] ?? 0, h.positions.length)),
      sequenceLength: seqLen,
      layer,
      seed,
    });
  }
  return inputs;
}

/**
 * Reads the GPU state of a sequence and asks the CPU reference of `policy` (scores, budgets, top-k) which
 * positions each head keeps: `[layer][head][kept positions]`.
 */
export async function referenceKeep(
  cache: PagedKvCache,
  seq: number,
  policy: ScoringPolicy,
  mode: BudgetMode,
  budget: number,
  seed: number,
): Promise<number[][][]> {
  const inputs = await referenceInputs(cache, seq, seed);
  const scores = inputs.map((input) => policy.score(input));
  const counts = allocateBudgets(scores, { mode, budget });
  return scores.map((layer, l) =>
    layer.map((s, h) => [...selectTopK(s, counts[l]?.[h] ?? 0)].map((i) => inputs[l]?.positions[h]?.[i] ?? -1)),
  );
}
