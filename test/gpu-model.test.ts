import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '../src/errors.js';
import { createStorageBuffer, readBuffer } from '../src/gpu/buffers.js';
import type { GpuContext } from '../src/gpu/context.js';
import { EmbeddingKernel } from '../src/kernels/model/embedding.js';
import { MATMUL_SMALL_TILE, MatmulKernel } from '../src/kernels/model/matmul.js';
import { RmsNormKernel } from '../src/kernels/model/rmsnorm.js';
import { RopeKernel, ropeCosSinTable } from '../src/kernels/model/rope.js';
import { SwigluKernel } from '../src/kernels/model/swiglu.js';
import type { GpuAttentionBackend } from '../src/attention/backend.js';
import { parseCheckpoint } from '../src/model/checkpoint.js';
import { prepareEvalWindows } from '../src/eval/eval-text.js';
import { PerplexityAccumulator } from '../src/eval/metrics.js';
import { GpuLlama } from '../src/model/gpu-llama.js';
import { PagedKvCache } from '../src/engine/paged-kv-cache.js';
import { matmul, ReferenceLlama, rmsnorm, rope, silu } from '../src/model/reference-forward.js';
import { argmax } from '../src/model/sampling.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { DenseAttentionBackend } from './helpers/dense-backend.js';
import { seededRandom, testGpu } from './helpers/gpu.js';
import { maxError, randomFloats } from './helpers/numeric.js';
import { sharedBytes, sharedText } from './model-helpers.js';

async function readF32(gpu: GpuContext, buffer: GPUBuffer, floats: number): Promise<Float32Array> {
  return new Float32Array(await readBuffer(gpu, buffer, 0, floats * 4));
}

async function run(gpu: GpuContext, encode: (encoder: GPUCommandEncoder) => void): Promise<void> {
  await gpu.withErrorScope(() => {
    const encoder = gpu.device.createCommandEncoder();
    encode(encoder);
    gpu.submit([encoder.finish()]);
  });
}

describe('model kernels vs the TS reference', () => {
  it.each([1, 63, 65])('embedding gathers %i tokens exactly', async (n) => {
    const gpu = await testGpu();
    const vocab = 70;
    const dim = 63;
    const tableData = randomFloats(vocab * dim, n);
    const ids = Uint32Array.from({ length: n }, (_, i) => (i * 37 + 5) % vocab);
    const tokens = createStorageBuffer(gpu, 'tokens', ids);
    const table = createStorageBuffer(gpu, 'table', tableData);
    const out = createStorageBuffer(gpu, 'out', n * dim * 4);
    await run(gpu, (e) => new EmbeddingKernel(gpu).encode(e, { numTokens: n, dim, tokens, table, out }));
    const want = new Float32Array(n * dim);
    ids.forEach((id, t) => want.set(tableData.subarray(id * dim, (id + 1) * dim), t * dim));
    expect(await readF32(gpu, out, n * dim)).toEqual(want);
  });

  // f32 sum of squares and sqrt vs the reference's double: a few ulp.
  it.each([
    [1, 64],
    [63, 65],
    [65, 172],
    [2, 1],
  ])('rmsnorm of %i rows × %i within 2e-6 relative', async (rows, dim) => {
    const gpu = await testGpu();
    const xData = randomFloats(rows * dim, rows + dim, 3);
    const wData = randomFloats(dim, dim);
    const x = createStorageBuffer(gpu, 'x', xData);
    const weight = createStorageBuffer(gpu, 'w', wData);
    const out = createStorageBuffer(gpu, 'out', rows * dim * 4);
    await run(gpu, (e) => new RmsNormKernel(gpu).encode(e, { rows, dim, x, weight, out }));
    const want = new Float32Array(rows * dim);
    for (let r = 0; r < rows; r++) rmsnorm(want.subarray(r * dim, (r + 1) * dim), xData.subarray(r * dim, (r + 1) * dim), wData, dim);
    expect(maxError(await readF32(gpu, out, rows * dim), want)).toBeLessThan(2e-6);
  });

  // f32 accumulation over `in` terms vs the reference's double: error grows like √in · ulp.
  const matmulCases = [
    [1, 64, 172, false],
    [1, 172, 64, true],
    [63, 172, 65, false],
    [65, 63, 1, true],
    [65, 65, 63, false],
    [1, 1, 1, false],
    [33, 64, 512, false],
  ] as const;
  it.each((['tiled', 'direct'] as const).flatMap((strategy) => matmulCases.map((c) => [strategy, ...c] as const)))(
    'matmul (%s) rows %i in %i out %i (accumulate %s) within 1e-5',
    async (strategy, rows, inDim, outDim, accumulate) => {
      const gpu = await testGpu();
      const xData = randomFloats(rows * inDim, rows * 7 + inDim);
      const wData = randomFloats(outDim * inDim, outDim, 0.5);
      const initial = randomFloats(rows * outDim, 99);
      const x = createStorageBuffer(gpu, 'x', xData);
      const w = createStorageBuffer(gpu, 'w', wData);
      const out = createStorageBuffer(gpu, 'out', initial);
      await run(gpu, (e) => new MatmulKernel(gpu, { strategy }).encode(e, { rows, inDim, outDim, x, w, out, accumulate }));
      const want = new Float32Array(rows * outDim);
      const row = new Float32Array(outDim);
      for (let r = 0; r < rows; r++) {
        matmul(row, xData.subarray(r * inDim, (r + 1) * inDim), wData, inDim, outDim);
        for (let o = 0; o < outDim; o++) want[r * outDim + o] = (accumulate ? (initial[r * outDim + o] as number) : 0) + (row[o] as number);
      }
      expect(maxError(await readF32(gpu, out, rows * outDim), want)).toBeLessThan(1e-5);
    },
  );

  it.each(['tiled', 'direct'] as const)('matmul (%s, small tile when tiled) at 65 rows with a folded dispatch', async (strategy) => {
    const gpu = await testGpu();
    const [rows, inDim, outDim] = [65, 172, 130];
    const xData = randomFloats(rows * inDim, 5);
    const wData = randomFloats(outDim * inDim, 6, 0.5);
    const x = createStorageBuffer(gpu, 'x', xData);
    const w = createStorageBuffer(gpu, 'w', wData);
    const out = createStorageBuffer(gpu, 'out', rows * outDim * 4);
    const kernel = new MatmulKernel(gpu, { strategy, small: MATMUL_SMALL_TILE, smallRowsBelow: 1000 });
    const saved = gpu.maxWorkgroupsPerDimension;
    gpu.maxWorkgroupsPerDimension = 6;
    try {
      await run(gpu, (e) => kernel.encode(e, { rows, inDim, outDim, x, w, out }));
    } finally {
      gpu.maxWorkgroupsPerDimension = saved;
    }
    const want = new Float32Array(rows * outDim);
    for (let r = 0; r < rows; r++) matmul(want.subarray(r * outDim, (r + 1) * outDim), xData.subarray(r * inDim, (r + 1) * inDim), wData, inDim, outDim);
    expect(maxError(await readF32(gpu, out, rows * outDim), want)).toBeLessThan(1e-5);
  });

  // Same angles as the reference bit for bit (host table); the rotation itself is f32 vs double: ≤ 2 ulp of |v|.
  it.each([1, 63, 65])('rope of %i tokens at scattered positions within 1e-6', async (n) => {
    const gpu = await testGpu();
    const [nHeads, kvHeads, headDim] = [8, 4, 8];
    const random = seededRandom(n + 11);
    const pos = Uint32Array.from({ length: n }, () => Math.floor(random() * 1500));
    const qData = randomFloats(n * nHeads * headDim, n);
    const kData = randomFloats(n * kvHeads * headDim, n + 1);
    const tableRows = 1536;
    const q = createStorageBuffer(gpu, 'q', qData);
    const k = createStorageBuffer(gpu, 'k', kData);
    const positions = createStorageBuffer(gpu, 'positions', pos);
    const table = createStorageBuffer(gpu, 'table', ropeCosSinTable(headDim, tableRows));
    await run(gpu, (e) => new RopeKernel(gpu, { nHeads, kvHeads, headDim }).encode(e, { numTokens: n, positions, table, tableRows, q, k }));
    const wantQ = qData.slice();
    const wantK = kData.slice();
    for (let t = 0; t < n; t++) {
      rope(wantQ.subarray(t * nHeads * headDim, (t + 1) * nHeads * headDim), pos[t] as number, headDim);
      rope(wantK.subarray(t * kvHeads * headDim, (t + 1) * kvHeads * headDim), pos[t] as number, headDim);
    }
    expect(maxError(await readF32(gpu, q, qData.length), wantQ)).toBeLessThan(1e-6);
    expect(maxError(await readF32(gpu, k, kData.length), wantK)).toBeLessThan(1e-6);
  });

  // GPU exp is specified to 3 + 2|x| ulp; the reference's silu is double.
  it.each([
    [1, 172],
    [63, 65],
    [65, 1],
  ])('swiglu of %i rows × %i within 2e-6', async (rows, width) => {
    const gpu = await testGpu();
    const data = randomFloats(rows * 2 * width, rows + width, 6);
    const gateUp = createStorageBuffer(gpu, 'gate_up', data);
    const out = createStorageBuffer(gpu, 'out', rows * width * 4);
    await run(gpu, (e) => new SwigluKernel(gpu).encode(e, { rows, width, gateUp, out }));
    const want = new Float32Array(rows * width);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < width; c++) {
        want[r * width + c] = silu(data[r * 2 * width + c] as number) * (data[r * 2 * width + width + c] as number);
      }
    }
    expect(maxError(await readF32(gpu, out, rows * width), want)).toBeLessThan(2e-6);
  });

  it('rejects bad sizes and aliasing before encoding', async () => {
    const gpu = await testGpu();
    const small = createStorageBuffer(gpu, 'small', 64);
    const encoder = gpu.device.createCommandEncoder();
    const matmulKernel = new MatmulKernel(gpu);
    expect(() => matmulKernel.encode(encoder, { rows: 0, inDim: 4, outDim: 4, x: small, w: small, out: small })).toThrow(InvalidArgumentError);
    expect(() => matmulKernel.encode(encoder, { rows: 5, inDim: 4, outDim: 4, x: small, w: small, out: createStorageBuffer(gpu, 'o', 80) })).toThrow(/holds 64 B; 80 B needed/);
    expect(() => matmulKernel.encode(encoder, { rows: 1, inDim: 4, outDim: 4, x: small, w: small, out: small })).toThrow(/different buffer/);
    expect(() => new RmsNormKernel(gpu).encode(encoder, { rows: 1, dim: 4, x: small, weight: small, out: small })).toThrow(/in place/);
    expect(() => new RopeKernel(gpu, { nHeads: 2, kvHeads: 1, headDim: 3 })).toThrow(/even/);
    expect(() => new MatmulKernel(gpu, { large: { tileM: 64, tileN: 64, tileK: 64, threadM: 1, threadN: 1 } })).toThrow(InvalidArgumentError);
  });
});

const checkpoint = parseCheckpoint(sharedBytes('models/stories260K.bin'));
const { config } = checkpoint;

function denseBackend(gpu: GpuContext): DenseAttentionBackend {
  return new DenseAttentionBackend(gpu, {
    layers: config.nLayers,
    nHeads: config.nHeads,
    kvHeads: config.nKvHeads,
    headDim: config.headSize,
    maxTokens: config.seqLen,
  });
}

/** The engine's paged cache, f32 blocks (no compression), as the model's attention. */
function pagedBackend(gpu: GpuContext, sequences: readonly number[]): PagedKvCache {
  const cache = PagedKvCache.create(gpu, {
    shape: { layers: config.nLayers, kvHeads: config.nKvHeads, headDim: config.headSize },
    nHeads: config.nHeads,
    fullFormat: 'f32',
    maxTokensPerHead: config.seqLen,
  });
  for (const id of sequences) cache.addSequence(id);
  return cache;
}

const backends = {
  // The dense backend creates sequences on first use, so it ignores the ids.
  dense: (gpu: GpuContext) => {
    const backend = denseBackend(gpu);
    return { backend, destroy: () => backend.destroy() };
  },
  paged: (gpu: GpuContext, sequences: readonly number[]) => {
    const backend = pagedBackend(gpu, sequences);
    return { backend: backend as GpuAttentionBackend, destroy: () => backend.destroy() };
  },
};

describe('GpuLlama on stories260K', () => {
  it.each([
    ['dense', 'tiled'],
    ['dense', 'direct'],
    ['paged', 'direct'],
  ] as const)('prefill-chunk logits (%s cache, %s matmul) match ReferenceLlama within 1e-4', async (kind, strategy) => {
    const gpu = await testGpu();
    const { backend, destroy } = backends[kind](gpu, [7, 8]);
    const model = new GpuLlama(gpu, checkpoint, backend, { weights: 'f32', matmul: { strategy } });
    const tokenizer = Tokenizer.parse(sharedBytes('models/tok512.bin'), config.vocabSize);
    const ids = tokenizer.encode(sharedText('data/tinystories_dev.txt').slice(0, 400), { bos: true });
    const ref = new ReferenceLlama(checkpoint);
    // A 40-token chunk (large tile), then a 3-token chunk and a decode step (small tile) continuing the sequence.
    const chunks = [ids.slice(0, 40), ids.slice(40, 43), ids.slice(43, 44)];
    let pos = 0;
    let worst = 0;
    for (const chunk of chunks) {
      const logits = await gpu.withErrorScope(() => model.forward(7, Array.from(chunk), { allLogits: true }));
      expect(logits).toHaveLength(chunk.length * config.vocabSize);
      for (let i = 0; i < chunk.length; i++) {
        const want = ref.forward(chunk[i] as number, pos++);
        worst = Math.max(worst, maxError(logits.subarray(i * config.vocabSize, (i + 1) * config.vocabSize), want));
      }
    }
    console.log(`GPU (${kind}, ${strategy}) vs reference logits: max |Δ|/max(1,|ref|) = ${worst.toExponential(2)} over ${pos} tokens`);
    expect(worst).toBeLessThan(1e-4);
    // Without allLogits only the last row comes back: the same numbers as the last row with it.
    const first = Array.from(chunks[0] ?? []);
    const all = await model.forward(8, first, { allLogits: true });
    expect(await model.forward(8, [3])).toHaveLength(config.vocabSize);
    expect(all.subarray((first.length - 1) * config.vocabSize)).toHaveLength(config.vocabSize);
    model.destroy();
    destroy();
  });

  it('rejects bad chunks before reserving cache slots, and overlapping or post-destroy calls', async () => {
    const gpu = await testGpu();
    const { backend, destroy } = backends.dense(gpu);
    const model = new GpuLlama(gpu, checkpoint, backend);
    await expect(model.forward(1, [])).rejects.toThrow(InvalidArgumentError);
    await expect(model.forward(1, [1, config.vocabSize])).rejects.toThrow(/tokens\[1\]/);
    const first = model.forward(1, [1]);
    await expect(model.forward(1, [2])).rejects.toThrow(/overlap/);
    await first;
    model.destroy();
    await expect(model.forward(1, [1])).rejects.toThrow(/destroyed/);
    destroy();
  });

  it('greedy decoding from BOS on the paged cache reproduces the 257 reference ids exactly', async () => {
    const gpu = await testGpu();
    const reference = JSON.parse(sharedText('data/stories260K_greedy_reference.json')) as { tokens: number[]; steps: number };
    const { backend, destroy } = backends.paged(gpu, [1]);
    // f32 weights here; the f16 default is held to the same 257 ids in gpu-model-f16.test.ts.
    const model = new GpuLlama(gpu, checkpoint, backend, { weights: 'f32' });
    const ids = [1];
    const start = performance.now();
    for (let step = 0; step < reference.steps; step++) ids.push(argmax(await model.forward(1, [ids[step] as number])));
    const seconds = (performance.now() - start) / 1000;
    console.log(`greedy on GPU: ${reference.steps} steps in ${seconds.toFixed(2)} s (${((1000 * seconds) / reference.steps).toFixed(1)} ms/token)`);
    expect(ids).toEqual(reference.tokens);
    model.destroy();
    destroy();
  });

  // The dense test backend keeps this under 10 s on SwiftShader (the paged kernel's barrier loops take ~4× longer
  // at 511 queries); the paged cache's prefill is covered above and the full 8-window figure on the paged cache
  // comes from `kvcompact eval --engine gpu --policies full --bits 32`.
  it('full-cache perplexity of 2 evaluation windows (one 511-token chunk each) matches the reference within 0.02%', async () => {
    const gpu = await testGpu();
    const tokenizer = Tokenizer.parse(sharedBytes('models/tok512.bin'), config.vocabSize);
    const windows = prepareEvalWindows(sharedText('data/tinystories_dev.txt'), tokenizer).slice(0, 2);
    const { backend, destroy } = backends.dense(gpu);
    const model = new GpuLlama(gpu, checkpoint, backend, { weights: 'f32' });
    const acc = new PerplexityAccumulator();
    const start = performance.now();
    for (const [w, win] of windows.entries()) {
      const logits = await model.forward(100 + w, Array.from(win.subarray(0, win.length - 1)), { allLogits: true });
      for (let t = 0; t + 1 < win.length; t++) acc.add(logits.subarray(t * config.vocabSize, (t + 1) * config.vocabSize), win[t + 1] as number);
    }
    const gpuSeconds = (performance.now() - start) / 1000;
    const ref = new ReferenceLlama(checkpoint);
    const refAcc = new PerplexityAccumulator();
    for (const win of windows) {
      ref.reset();
      for (let t = 0; t + 1 < win.length; t++) refAcc.add(ref.forward(win[t] as number, t), win[t + 1] as number);
    }
    const r = acc.result();
    const want = refAcc.result();
    console.log(
      `ppl over 2 windows: GPU ${r.perplexity.toFixed(5)} (top-1 ${(100 * r.top1).toFixed(2)}%, ${gpuSeconds.toFixed(2)} s), ` +
        `reference ${want.perplexity.toFixed(5)} (top-1 ${(100 * want.top1).toFixed(2)}%)`,
    );
    expect(r.count).toBe(1022);
    expect(Math.abs(r.perplexity / want.perplexity - 1)).toBeLessThan(2e-4);
    expect(Math.abs(r.top1 - want.top1)).toBeLessThanOrEqual(2 / 1022);
    model.destroy();
    destroy();
  });
});
