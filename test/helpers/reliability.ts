// Shared pieces of the reliability tests (test/reliability-*.test.ts): small shapes, random K/V, decoding through
// each engine's model-runner API (which fills the observation window), per-head contents, live-buffer counting.
import { CpuKvCache } from '../../src/engine/cpu-kv-cache.js';
import { PagedKvCache } from '../../src/engine/paged-kv-cache.js';
import type { PagedKvCacheOptions } from '../../src/cache/cache-options.js';
import { createStorageBuffer } from '../../src/gpu/buffers.js';
import type { GpuContext } from '../../src/gpu/context.js';
import { testGpu } from './gpu.js';

export const SHAPE = { layers: 2, kvHeads: 2, headDim: 8, blockSize: 16 } as const;
export const N_HEADS = 4;
export const OPTIONS: PagedKvCacheOptions = {
  shape: SHAPE,
  nHeads: N_HEADS,
  fullFormat: 'f32',
  maxTokensPerHead: 512,
  observationWindow: 8,
  initialFullBlocks: 8,
};

export type Engine = PagedKvCache | CpuKvCache;

/** One engine of each kind, named for test titles. */
export interface EngineCase {
  readonly name: 'gpu' | 'cpu';
  /** A cache with {@link OPTIONS} and `options` over them; call inside a test (the GPU one uses testGpu()). */
  create(options?: Partial<PagedKvCacheOptions>): Promise<Engine>;
}

export const ENGINES: readonly EngineCase[] = [
  { name: 'gpu', create: async (options = {}) => PagedKvCache.create(await testGpu(), { ...OPTIONS, ...options }) },
  { name: 'cpu', create: async (options = {}) => CpuKvCache.create({ ...OPTIONS, ...options }) },
];

/** K and V f32 [layers][tokens][kvHeads][headDim], uniform in [-1, 1). */
export function randomKv(tokens: number, random: () => number): { keys: Float32Array; values: Float32Array } {
  const n = SHAPE.layers * tokens * SHAPE.kvHeads * SHAPE.headDim;
  return {
    keys: Float32Array.from({ length: n }, () => random() * 2 - 1),
    values: Float32Array.from({ length: n }, () => random() * 2 - 1),
  };
}

/** One layer's slice `[tokens][kvHeads][headDim]` of a [layers][tokens][kvHeads][headDim] array. */
export function layerSlice(data: Float32Array, layer: number, tokens: number): Float32Array {
  const floats = tokens * SHAPE.kvHeads * SHAPE.headDim;
  return data.subarray(layer * floats, (layer + 1) * floats);
}

/** A random query [nHeads][headDim]. */
export function randomQuery(random: () => number): Float32Array {
  return Float32Array.from({ length: N_HEADS * SHAPE.headDim }, () => (random() * 2 - 1) * 3);
}

/**
 * Decodes `tokens` random tokens one at a time through the model-runner API (GPU beginStep/encodeLayer/endStep,
 * CPU step), which records the observation window and the attention statistics as a model run would.
 */
export async function decode(cache: Engine, seq: number, tokens: number, random: () => number): Promise<void> {
  const { layers, kvHeads, headDim } = SHAPE;
  for (let t = 0; t < tokens; t++) {
    const pos = cache.sequenceLength(seq);
    const perLayer = Array.from({ length: layers }, () => ({
      k: Float32Array.from({ length: kvHeads * headDim }, () => random() * 2 - 1),
      v: Float32Array.from({ length: kvHeads * headDim }, () => random() * 2 - 1),
      q: randomQuery(random),
    }));
    if (cache instanceof CpuKvCache) {
      for (const [layer, { q, k, v }] of perLayer.entries()) cache.step(seq, layer, pos, q, k, v);
      continue;
    }
    const gpu = cache.gpu;
    const step = cache.beginStep(seq, 1);
    const encoder = gpu.device.createCommandEncoder();
    const scratch: GPUBuffer[] = [];
    for (const [layer, { q, k, v }] of perLayer.entries()) {
      const io = {
        keys: createStorageBuffer(gpu, 'k', k),
        values: createStorageBuffer(gpu, 'v', v),
        queries: createStorageBuffer(gpu, 'q', q),
        out: createStorageBuffer(gpu, 'out', q.byteLength),
      };
      scratch.push(...Object.values(io));
      cache.encodeLayer(encoder, step, layer, io);
    }
    gpu.submit([encoder.finish()]);
    cache.endStep(step);
    await gpu.idle();
    for (const buffer of scratch) buffer.destroy();
  }
}

/** Original positions of every head, [layer × kvHeads + head]. */
export async function headPositions(cache: Engine, seq: number): Promise<number[][]> {
  const heads: number[][] = [];
  for (let layer = 0; layer < SHAPE.layers; layer++) {
    for (let head = 0; head < SHAPE.kvHeads; head++) heads.push([...(await cache.readHead(seq, layer, head)).positions]);
  }
  return heads;
}

/** Every head's contents: positions and K/V values. */
export async function headContents(cache: Engine, seq: number): Promise<{ positions: number[]; keys: number[]; values: number[] }[]> {
  const heads = [];
  for (let layer = 0; layer < SHAPE.layers; layer++) {
    for (let head = 0; head < SHAPE.kvHeads; head++) {
      const h = await cache.readHead(seq, layer, head);
      heads.push({ positions: [...h.positions], keys: [...h.keys], values: [...h.values] });
    }
  }
  return heads;
}

/**
 * Counts the live GPU buffers of a device this test owns: wraps `createBuffer` and each buffer's `destroy`.
 * Works for every buffer, pooled or not, so a leak anywhere shows as a count that keeps rising.
 */
export function trackBuffers(gpu: GpuContext): { live(): number; created(): number } {
  const device = gpu.device;
  const original = device.createBuffer.bind(device);
  const alive = new Set<GPUBuffer>();
  let created = 0;
  device.createBuffer = (descriptor: GPUBufferDescriptor): GPUBuffer => {
    const buffer = original(descriptor);
    created++;
    alive.add(buffer);
    const destroy = buffer.destroy.bind(buffer);
    buffer.destroy = (): undefined => {
      alive.delete(buffer);
      destroy();
      return undefined;
    };
    return buffer;
  };
  return { live: () => alive.size, created: () => created };
}

/** Settles every promise; the rejections, in order (undefined for fulfilled ones). */
export async function settle(promises: readonly Promise<unknown>[]): Promise<unknown[]> {
  const results = await Promise.allSettled(promises);
  return results.map((r) => (r.status === 'rejected' ? r.reason : undefined));
}
