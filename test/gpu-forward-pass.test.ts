import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '../src/errors.js';
import { createStorageBuffer, readBuffer } from '../src/gpu/buffers.js';
import type { GpuContext } from '../src/gpu/context.js';
import { PagedKvCache } from '../src/engine/paged-kv-cache.js';
import { CopyRowsKernel, copyRowsReference } from '../src/kernels/cache/copy-rows.js';
import { parseCheckpoint } from '../src/model/checkpoint.js';
import { GpuLlama } from '../src/model/gpu-llama.js';
import { argmax } from '../src/model/sampling.js';
import { seededRandom, testGpu } from './helpers/gpu.js';
import { sharedBytes, sharedText } from './model-helpers.js';

const checkpoint = parseCheckpoint(sharedBytes('models/stories260K.bin'));
const { config } = checkpoint;
const reference = JSON.parse(sharedText('data/stories260K_greedy_reference.json')) as { tokens: number[]; steps: number };

function randomWords(count: number, seed: number): Uint32Array {
  const random = seededRandom(seed);
  return Uint32Array.from({ length: count }, () => Math.floor(random() * 0xffff_ffff));
}

describe('copy_rows kernel', () => {
  it.each([
    [1, 1],
    [63, 3],
    [65, 5],
    [129, 2],
  ])('copies rows of %i words (%i rows, offsets, rows out of order) like the CPU reference', async (wordsPerRow, numRows) => {
    const gpu = await testGpu();
    const srcOffset = 7;
    const dstOffset = 3;
    const srcWords = srcOffset + (numRows + 1) * wordsPerRow;
    const dstWords = dstOffset + (2 * numRows + 1) * wordsPerRow;
    const srcData = randomWords(srcWords, wordsPerRow);
    const dstData = randomWords(dstWords, wordsPerRow + 1);
    // source row r goes to destination row 2·(numRows − 1 − r) + 1: reversed, with gaps left as they were
    const pairs = Array.from({ length: numRows }, (_, r) => [r + 1, 2 * (numRows - 1 - r) + 1] as const);
    const src = createStorageBuffer(gpu, 'src', srcData);
    const dst = createStorageBuffer(gpu, 'dst', dstData);
    const rows = createStorageBuffer(gpu, 'rows', Uint32Array.from(pairs.flat()));
    const kernel = new CopyRowsKernel(gpu);
    await gpu.withErrorScope(async () => {
      const encoder = gpu.device.createCommandEncoder();
      kernel.encode(encoder, { src, dst, rows, numRows, wordsPerRow, srcOffset, dstOffset });
      gpu.submit([encoder.finish()]);
    });
    const output = new Uint32Array(await readBuffer(gpu, dst));
    const want = copyRowsReference(srcData, dstData, pairs, wordsPerRow, srcOffset, dstOffset);
    expect(output).toEqual(want);
    // the reference itself moved the words (a reference that copies nothing would pass the comparison above)
    expect(want).not.toEqual(dstData);
    kernel.destroy();
    for (const buffer of [src, dst, rows]) buffer.destroy();
  });

  it('encodeRange copies one range into an open pass; bad input throws typed errors before recording', async () => {
    const gpu = await testGpu();
    const srcData = randomWords(100, 1);
    const src = createStorageBuffer(gpu, 'src', srcData);
    const dst = createStorageBuffer(gpu, 'dst', 64 * 4);
    const kernel = new CopyRowsKernel(gpu);
    await gpu.withErrorScope(async () => {
      const encoder = gpu.device.createCommandEncoder();
      const pass = encoder.beginComputePass();
      kernel.encodeRange(encoder, { src, srcOffset: 37, dst, dstOffset: 1, words: 63, pass });
      pass.end();
      gpu.submit([encoder.finish()]);
    });
    const output = new Uint32Array(await readBuffer(gpu, dst));
    expect(output).toEqual(copyRowsReference(srcData, new Uint32Array(64), [[0, 0]], 63, 37, 1));
    const encoder = gpu.device.createCommandEncoder();
    expect(() => kernel.encodeRange(encoder, { src, srcOffset: 40, dst, dstOffset: 0, words: 61 })).toThrow(/outside "src"/);
    expect(() => kernel.encodeRange(encoder, { src, srcOffset: 0, dst, dstOffset: 2, words: 63 })).toThrow(/outside "dst"/);
    expect(() => kernel.encodeRange(encoder, { src, srcOffset: 0, dst: src, dstOffset: 50, words: 4 })).toThrow(InvalidArgumentError);
    expect(() => kernel.encodeRange(encoder, { src, srcOffset: 0, dst, dstOffset: 0, words: 0 })).toThrow(/positive integer/);
    kernel.destroy();
    src.destroy();
    dst.destroy();
  });
});

/** Counts, per command encoder labelled `llama:forward`, its compute passes and buffer copies. */
function countForwardPasses(gpu: GpuContext): { forwards: { passes: number; copies: number }[]; restore: () => void } {
  const device = gpu.device;
  const original = device.createCommandEncoder.bind(device);
  const forwards: { passes: number; copies: number }[] = [];
  device.createCommandEncoder = (descriptor?: GPUCommandEncoderDescriptor) => {
    const encoder = original(descriptor);
    if (descriptor?.label !== 'llama:forward') return encoder;
    const counts = { passes: 0, copies: 0 };
    forwards.push(counts);
    const begin = encoder.beginComputePass.bind(encoder);
    const copy = encoder.copyBufferToBuffer.bind(encoder) as (...args: unknown[]) => void;
    encoder.beginComputePass = (d?: GPUComputePassDescriptor) => {
      counts.passes++;
      return begin(d);
    };
    (encoder as unknown as { copyBufferToBuffer: (...args: unknown[]) => void }).copyBufferToBuffer = (...args: unknown[]) => {
      counts.copies++;
      copy(...args);
    };
    return encoder;
  };
  return {
    forwards,
    restore: () => {
      device.createCommandEncoder = original;
    },
  };
}

function pagedCache(gpu: GpuContext, sequences: number): PagedKvCache {
  const cache = PagedKvCache.create(gpu, {
    shape: { layers: config.nLayers, kvHeads: config.nKvHeads, headDim: config.headSize },
    nHeads: config.nHeads,
    fullFormat: 'f32',
    seqSlots: sequences,
    maxTokensPerHead: config.seqLen,
  });
  for (let s = 1; s <= sequences; s++) cache.addSequence(s);
  return cache;
}

describe('one compute pass per forward on the paged cache', () => {
  it('greedy decoding from BOS records each forward as one pass (plus the logits readback copy) and reproduces the reference ids', async () => {
    const gpu = await testGpu();
    const cache = pagedCache(gpu, 1);
    const model = new GpuLlama(gpu, checkpoint, cache, { weights: 'f32' });
    const counter = countForwardPasses(gpu);
    try {
      const ids = [1];
      for (let step = 0; step < reference.steps; step++) ids.push(argmax(await model.forward(1, [ids[step] as number])));
      expect(ids).toEqual(reference.tokens);
      // a prefill chunk takes the tiled kernel and the last-row copy: still one pass
      await gpu.withErrorScope(() => model.forward(1, reference.tokens.slice(1, 6)));
    } finally {
      counter.restore();
    }
    expect(counter.forwards).toHaveLength(reference.steps + 1);
    for (const counts of counter.forwards) expect(counts).toEqual({ passes: 1, copies: 1 });
    model.destroy();
    cache.destroy();
  });

  it.each([
    ['batched attention', true],
    ['attention per sequence', false],
  ] as const)('batched greedy decode of 3 sequences (%s): one pass per forward, each sequence on the reference ids', async (_, batchedAttention) => {
    const gpu = await testGpu();
    const batch = 3;
    const steps = 48;
    const cache = pagedCache(gpu, batch);
    const model = new GpuLlama(gpu, checkpoint, cache, { weights: 'f32', batchedAttention });
    const seqs = Array.from({ length: batch }, (_, i) => i + 1);
    const counter = countForwardPasses(gpu);
    const ids = seqs.map(() => [1]);
    try {
      for (let step = 0; step < steps; step++) {
        const logits = await gpu.withErrorScope(() => model.forwardBatch(seqs, ids.map((row) => row[step] as number)));
        logits.forEach((row, b) => ids[b]?.push(argmax(row)));
      }
    } finally {
      counter.restore();
    }
    for (const row of ids) expect(row).toEqual(reference.tokens.slice(0, steps + 1));
    expect(counter.forwards).toHaveLength(steps);
    for (const counts of counter.forwards) expect(counts).toEqual({ passes: 1, copies: 1 });
    model.destroy();
    cache.destroy();
  });
});
