import { describe, expect, it } from 'vitest';
import { PagedKvCache } from '../src/engine/paged-kv-cache.js';
import { assertInvariants } from '../src/cache/invariants.js';
import {
  InvalidArgumentError,
  NonFiniteValueError,
  OutOfBlocksError,
  UnknownSequenceError,
} from '../src/errors.js';
import { decodeAttention } from '../src/attention/reference-attention.js';
import { roundToF16 } from '../src/format/f16.js';
import { createStorageBuffer } from '../src/gpu/buffers.js';
import { seededRandom, testGpu } from './helpers/gpu.js';

const SHAPE = { layers: 2, kvHeads: 2, headDim: 8, blockSize: 16 };
const N_HEADS = 4;

/** Host-side mirror of what each (seq, layer, head) should hold. */
type Mirror = Map<number, { k: number[][]; v: number[][] }>;

function randomTokens(random: () => number, tokens: number): Float32Array {
  return Float32Array.from({ length: SHAPE.layers * tokens * SHAPE.kvHeads * SHAPE.headDim }, () => random() * 2 - 1);
}

function recordAppend(mirror: Mirror, seq: number, keys: Float32Array, values: Float32Array, round: (x: number) => number) {
  const { layers, kvHeads, headDim } = SHAPE;
  const tokens = keys.length / (layers * kvHeads * headDim);
  const entry = mirror.get(seq) ?? { k: [], v: [] };
  for (let layer = 0; layer < layers; layer++) {
    for (let head = 0; head < kvHeads; head++) {
      const index = layer * kvHeads + head;
      entry.k[index] ??= [];
      entry.v[index] ??= [];
      for (let t = 0; t < tokens; t++) {
        for (let d = 0; d < headDim; d++) {
          const at = ((layer * tokens + t) * kvHeads + head) * headDim + d;
          entry.k[index]?.push(round(keys[at] ?? 0));
          entry.v[index]?.push(round(values[at] ?? 0));
        }
      }
    }
  }
  mirror.set(seq, entry);
}

async function expectMatchesMirror(cache: PagedKvCache, mirror: Mirror, seq: number) {
  const entry = mirror.get(seq);
  for (let layer = 0; layer < SHAPE.layers; layer++) {
    for (let head = 0; head < SHAPE.kvHeads; head++) {
      const got = await cache.readHead(seq, layer, head);
      const index = layer * SHAPE.kvHeads + head;
      expect([...got.keys]).toEqual(entry?.k[index] ?? []);
      expect([...got.values]).toEqual(entry?.v[index] ?? []);
      expect([...got.positions]).toEqual(Array.from({ length: got.positions.length }, (_, i) => i));
    }
  }
}

describe('PagedKvCache on the GPU', () => {
  it.each(['f32', 'f16'] as const)('prefill, decode, fork with copy-on-write and free (%s)', async (fullFormat) => {
    const gpu = await testGpu();
    const round = fullFormat === 'f16' ? roundToF16 : Math.fround;
    const cache = PagedKvCache.create(gpu, {
      shape: SHAPE,
      nHeads: N_HEADS,
      fullFormat,
      initialFullBlocks: 4,
      maxTokensPerHead: 256,
      seqSlots: 4,
    });
    const random = seededRandom(11);
    const mirror: Mirror = new Map();
    cache.addSequence(1);
    const k1 = randomTokens(random, 17);
    const v1 = randomTokens(random, 17);
    await cache.append(1, k1, v1); // grows the pool past its 4 initial blocks
    recordAppend(mirror, 1, k1, v1, round);
    assertInvariants(cache.meta);
    for (let step = 0; step < 3; step++) {
      const k = randomTokens(random, 1);
      const v = randomTokens(random, 1);
      await cache.append(1, k, v);
      recordAppend(mirror, 1, k, v, round);
    }
    cache.fork(1, 2);
    mirror.set(2, structuredClone(mirror.get(1) ?? { k: [], v: [] }));
    const k2 = randomTokens(random, 1);
    const v2 = randomTokens(random, 1);
    await cache.append(2, k2, v2); // the shared partly filled last block is copied first
    recordAppend(mirror, 2, k2, v2, round);
    assertInvariants(cache.meta);
    await expectMatchesMirror(cache, mirror, 1);
    await expectMatchesMirror(cache, mirror, 2);

    // attention of each sequence against the reference
    for (const seq of [1, 2]) {
      const q = Float32Array.from({ length: N_HEADS * SHAPE.headDim }, () => random() * 2 - 1);
      const got = await cache.attend(seq, 1, q);
      const entry = mirror.get(seq);
      const ref = decodeAttention({
        q,
        keys: [0, 1].map((h) => Float32Array.from(entry?.k[SHAPE.kvHeads + h] ?? [])),
        values: [0, 1].map((h) => Float32Array.from(entry?.v[SHAPE.kvHeads + h] ?? [])),
        nHeads: N_HEADS,
        kvHeads: SHAPE.kvHeads,
        headDim: SHAPE.headDim,
      });
      got.out.forEach((x, i) => expect(x).toBeCloseTo(ref.out[i] ?? NaN, 5));
    }

    const usedBefore = cache.memory().full.used;
    cache.freeSequence(1);
    assertInvariants(cache.meta);
    expect(cache.memory().full.used).toBeLessThan(usedBefore);
    await expectMatchesMirror(cache, mirror, 2);
    cache.destroy();
  });

  it('rejects bad input with typed errors and leaves the cache exactly as it was', async () => {
    const gpu = await testGpu();
    const cache = PagedKvCache.create(gpu, {
      shape: SHAPE,
      nHeads: N_HEADS,
      fullFormat: 'f32',
      initialFullBlocks: 8,
      maxTokensPerHead: 64,
      // room for the initial pools only (8 blocks and a null block per layer): no growth possible; no compaction
      // reserve, so the 8 blocks take appends
      maxBytes: (8 + SHAPE.layers) * (2 * 16 * 8 + 16) * 4,
      compactionReserve: 0,
    });
    const random = seededRandom(3);
    cache.addSequence(5);
    const k = randomTokens(random, 3);
    await cache.append(5, k, k);
    const before = cache.meta.snapshot();
    const tokensBefore = cache.sequenceLength(5);

    const bad = randomTokens(random, 2);
    bad[7] = Number.NaN;
    await expect(cache.append(5, bad, bad)).rejects.toThrow(NonFiniteValueError);
    bad[7] = Number.POSITIVE_INFINITY;
    await expect(cache.append(5, bad, bad)).rejects.toThrow(NonFiniteValueError);
    await expect(cache.append(5, new Float32Array(5), new Float32Array(5))).rejects.toThrow(InvalidArgumentError);
    await expect(cache.append(99, k, k)).rejects.toThrow(UnknownSequenceError);
    // 8 blocks hold 2 layers × 2 heads × 2 blocks = 32 tokens; 40 more do not fit and the budget forbids growth
    await expect(cache.append(5, randomTokens(random, 40), randomTokens(random, 40))).rejects.toThrow(OutOfBlocksError);
    expect(() => cache.beginStep(5, 0)).toThrow(InvalidArgumentError);
    await expect(cache.attend(5, 7, new Float32Array(N_HEADS * 8))).rejects.toThrow(/layer/);

    expect(cache.meta.snapshot()).toEqual(before);
    expect(cache.sequenceLength(5)).toBe(tokensBefore);
    assertInvariants(cache.meta);
    const head = await cache.readHead(5, 0, 0);
    expect(head.keys.length).toBe(3 * 8);
    cache.destroy();
  });

  it('appends from GPU buffers, and rolls back a batch holding NaN', async () => {
    const gpu = await testGpu();
    const cache = PagedKvCache.create(gpu, { shape: SHAPE, nHeads: N_HEADS, fullFormat: 'f32', maxTokensPerHead: 64 });
    cache.addSequence(3);
    const random = seededRandom(8);
    const perLayer = () => Float32Array.from({ length: 5 * SHAPE.kvHeads * SHAPE.headDim }, () => random());
    const k = [perLayer(), perLayer()];
    const buffers = k.map((data) => createStorageBuffer(gpu, 'k', data));
    await cache.appendBuffers(3, buffers, buffers, 5);
    const head = await cache.readHead(3, 1, 0);
    expect(head.keys[SHAPE.headDim]).toBe(k[1]?.[SHAPE.kvHeads * SHAPE.headDim]);
    const snapshot = cache.meta.snapshot();
    const bad = perLayer();
    bad[3] = Number.NaN;
    const badBuffers = [createStorageBuffer(gpu, 'bad', bad), buffers[1] as GPUBuffer];
    await expect(cache.appendBuffers(3, badBuffers, buffers, 5)).rejects.toThrow(NonFiniteValueError);
    expect(cache.meta.snapshot()).toEqual(snapshot);
    assertInvariants(cache.meta);
    await expect(cache.appendBuffers(3, buffers, buffers, 500)).rejects.toThrow(/tokens need/);
    for (const b of [...buffers, ...badBuffers]) b.destroy();
    cache.destroy();
  });

  it('rejects values an f16 cache cannot hold, on the host and on the GPU', async () => {
    const gpu = await testGpu();
    const cache = PagedKvCache.create(gpu, { shape: SHAPE, nHeads: N_HEADS, fullFormat: 'f16', maxTokensPerHead: 64 });
    cache.addSequence(1);
    const big = new Float32Array(SHAPE.layers * SHAPE.kvHeads * SHAPE.headDim).fill(0.25);
    big[3] = 70000;
    await expect(cache.append(1, big, big)).rejects.toThrow(/65504/);
    const perLayer = new Float32Array(SHAPE.kvHeads * SHAPE.headDim).fill(0.25);
    const ok = createStorageBuffer(gpu, 'ok', perLayer);
    perLayer[2] = -1e6;
    const tooBig = createStorageBuffer(gpu, 'big', perLayer);
    await expect(cache.appendBuffers(1, [ok, tooBig], [ok, ok], 1)).rejects.toThrow(NonFiniteValueError);
    expect(cache.sequenceLength(1)).toBe(0);
    await cache.appendBuffers(1, [ok, ok], [ok, ok], 1);
    expect(cache.sequenceLength(1)).toBe(1);
    ok.destroy();
    tooBig.destroy();
    cache.destroy();
  });

  it('rejects impossible configurations before creating GPU objects', async () => {
    const gpu = await testGpu();
    expect(() => PagedKvCache.create(gpu, { shape: SHAPE, nHeads: 3 })).toThrow(/multiple of kvHeads/);
    expect(() => PagedKvCache.create(gpu, { shape: { ...SHAPE, headDim: 7 }, nHeads: 4 })).toThrow(/even/);
    expect(() => PagedKvCache.create(gpu, { shape: SHAPE, nHeads: 4, quantBits: 3 as 4 })).toThrow(/bits/);
    expect(() => PagedKvCache.create(gpu, { shape: SHAPE, nHeads: 4, quantBits: 4, groupSize: 3 })).toThrow(/groupSize/);
  });
});
