// Issue #11, items 1, 2, 3 and 8: operations that overlap on one sequence take effect in call order, nothing is
// lost or leaked, and destroy() / device loss surface as typed errors. Through the public API of both engines.
import { describe, expect, it } from 'vitest';
import { CacheDestroyedError, DeviceLostError, SequenceBusyError } from '../src/errors.js';
import { PagedKvCache } from '../src/engine/paged-kv-cache.js';
import { CpuKvCache } from '../src/engine/cpu-kv-cache.js';
import { createStorageBuffer } from '../src/gpu/buffers.js';
import type { CompressOptions } from '../src/compress/options.js';
import { createNodeGpu } from '../src/node/gpu.js';
import { seededRandom, testGpu } from './helpers/gpu.js';
import { OPTIONS, SHAPE, decode, ENGINES, headContents, headPositions, layerSlice, randomKv, randomQuery, settle } from './helpers/reliability.js';

describe.each(ENGINES)('$name engine: overlapping operations on one sequence', (engine) => {
  it('(1) an append made while a compress is in flight lands after it: 64 + 10 tokens end at position 73', async () => {
    const cache = await engine.create();
    const random = seededRandom(1);
    cache.addSequence(0);
    const prompt = randomKv(64, random);
    await cache.append(0, prompt.keys, prompt.values);
    const extra = randomKv(10, random);
    const compressed = cache.compress(0, { policy: 'knorm', budget: 32 });
    const appended = cache.append(0, extra.keys, extra.values);
    // A model step would race the queued work: refused until it is done.
    if (cache instanceof CpuKvCache) expect(() => cache.step(0, 0, 74, randomQuery(random), extra.keys, extra.values)).toThrow(SequenceBusyError);
    else expect(() => cache.beginStep(0, 1)).toThrow(SequenceBusyError);
    const report = await compressed;
    await appended;
    expect(report.keptPerHead).toEqual([[32, 32], [32, 32]]);
    expect(cache.sequenceLength(0)).toBe(74);
    for (const positions of await headPositions(cache, 0)) {
      expect(positions).toHaveLength(42);
      expect(positions.slice(-10)).toEqual([64, 65, 66, 67, 68, 69, 70, 71, 72, 73]);
      expect(positions.at(-11)).toBeLessThan(64);
    }
    // The appended tokens are the ones given, not zeros or stale slots.
    const head = await cache.readHead(0, 1, 1);
    const { headDim } = SHAPE;
    const firstAppended = layerSlice(extra.keys, 1, 10).subarray(1 * headDim, 1 * headDim + headDim);
    expect([...head.keys.subarray(32 * headDim, 33 * headDim)]).toEqual([...firstAppended]);
    expect(cache.checkInvariants()).toEqual([]);
  });

  it('(1) a read made while a compress is in flight sees its result (GPU: queued) or is refused (CPU: synchronous)', async () => {
    const cache = await engine.create();
    const random = seededRandom(11);
    cache.addSequence(0);
    const prompt = randomKv(64, random);
    await cache.append(0, prompt.keys, prompt.values);
    const query = randomQuery(random);
    const compressed = cache.compress(0, { policy: 'knorm', budget: 8 });
    if (cache instanceof CpuKvCache) {
      expect(() => cache.attend(0, 0, query)).toThrow(SequenceBusyError);
      expect(() => cache.readHead(0, 1, 0)).toThrow(SequenceBusyError);
      await compressed;
      expect(cache.attend(0, 0, query).probsPerKvHead.map((p) => p.length)).toEqual([8, 8]);
    } else {
      const attended = cache.attend(0, 0, query);
      const head = cache.readHead(0, 1, 0);
      await compressed;
      expect((await attended).probsPerKvHead.map((p) => p.length)).toEqual([8, 8]);
      expect((await head).positions).toHaveLength(8);
    }
  });

  it('(2) freeSequence during a compress waits for it; nothing leaks', async () => {
    const cache = await engine.create({ quantBits: 4 });
    const random = seededRandom(2);
    for (const seq of [0, 1]) {
      cache.addSequence(seq);
      const { keys, values } = randomKv(80, random);
      await cache.append(seq, keys, values);
    }
    const compressed = cache.compress(0, { policy: 'knorm', budget: 40, bits: 4 });
    const freed = cache.freeSequence(0);
    // The id is not free until the queued free has run.
    expect(() => cache.addSequence(0)).toThrow(SequenceBusyError);
    const report = await compressed;
    await freed;
    expect(report.keptPerHead).toEqual([[40, 40], [40, 40]]);
    expect(cache.hasSequence(0)).toBe(false);
    expect(cache.checkInvariants()).toEqual([]);
    // A free queued behind a compress of another sequence, and a compress queued behind a free of its own.
    const other = cache.compress(1, { policy: 'knorm', budget: 24, bits: 4 });
    const freedOther = cache.freeSequence(1);
    const late = cache.compress(1, { budget: 8 });
    const errors = await settle([other, freedOther, late]);
    expect(errors.slice(0, 2)).toEqual([undefined, undefined]);
    expect((errors[2] as Error).name).toBe('UnknownSequenceError');
    expect(cache.checkInvariants()).toEqual([]);
    const memory = cache.memory();
    expect(memory.full.used + memory.quant.used).toBe(0);
    expect(memory.usedBytes).toBe(0);
    cache.addSequence(0); // free again once the free ran
    expect(cache.sequenceLength(0)).toBe(0);
  });

  it('(3) two un-awaited compress calls keep the same set as the same two calls in order', async () => {
    const sequential = await engine.create({ quantBits: 4 });
    const overlapped = await engine.create({ quantBits: 4 });
    for (const cache of [sequential, overlapped]) {
      const random = seededRandom(3);
      for (const seq of [0, 1]) {
        cache.addSequence(seq);
        await decode(cache, seq, 70, random);
      }
    }
    const calls: { seq: number; options: CompressOptions }[] = [
      { seq: 0, options: { policy: 'snapkv', budget: 48, budgetMode: 'adakv', measureMass: true } },
      { seq: 0, options: { policy: 'h2o', budget: 24, bits: 4, measureMass: true } },
      { seq: 1, options: { policy: 'knorm', budget: 40, bits: 4, measureMass: true } }, // another sequence: shares the compressor
      { seq: 1, options: { policy: 'kvcompress', budget: 20, budgetMode: 'global' as const, bits: 4, measureMass: true } },
    ];
    const inOrder = [];
    for (const { seq, options } of calls) inOrder.push(await sequential.compress(seq, options));
    const together = await Promise.all(calls.map(({ seq, options }) => overlapped.compress(seq, options)));
    for (const [i, report] of together.entries()) {
      expect(report.keptPerHead, `call ${i}`).toEqual(inOrder[i]?.keptPerHead);
      expect(report.bytesFreed, `call ${i}`).toBe(inOrder[i]?.bytesFreed);
      expect(report.attentionMassKept, `call ${i}`).toBeCloseTo(inOrder[i]?.attentionMassKept ?? Number.NaN, 5);
    }
    for (const seq of [0, 1]) expect(await headContents(overlapped, seq)).toEqual(await headContents(sequential, seq));
    expect(overlapped.memory()).toEqual(sequential.memory());
    expect(overlapped.checkInvariants()).toEqual([]);
  });
});

describe('gpu engine: destroy and device loss', () => {
  it('(8) destroy() during a compress rejects it, and the queued and later work, with CacheDestroyedError', async () => {
    const gpu = await testGpu();
    const cache = PagedKvCache.create(gpu, OPTIONS);
    const random = seededRandom(8);
    cache.addSequence(0);
    await decode(cache, 0, 60, random);
    const { keys, values } = randomKv(4, random);
    const compressed = cache.compress(0, { budget: 16 });
    const appended = cache.append(0, keys, values);
    const attended = cache.attend(0, 0, randomQuery(random));
    cache.destroy();
    const errors = await settle([compressed, appended, attended]);
    for (const error of errors) expect(error).toBeInstanceOf(CacheDestroyedError);
    await expect(cache.append(0, keys, values)).rejects.toThrow(CacheDestroyedError);
    await expect(cache.compress(0, { budget: 8 })).rejects.toThrow(CacheDestroyedError);
    await expect(cache.freeSequence(0)).rejects.toThrow(CacheDestroyedError);
    expect(() => cache.addSequence(1)).toThrow(CacheDestroyedError);
    // testGpu() fails this test if Dawn reported a validation error (work on destroyed buffers).
  });

  it('(8) device loss during attend, compress and appendBuffers raises DeviceLostError; so does an append after it', async () => {
    const own = await createNodeGpu();
    const cache = PagedKvCache.create(own, OPTIONS);
    const random = seededRandom(9);
    for (const seq of [0, 1, 2]) {
      cache.addSequence(seq);
      const { keys, values } = randomKv(40, random);
      await cache.append(seq, keys, values);
    }
    const { keys, values } = randomKv(3, random);
    const keyBuffers = Array.from({ length: SHAPE.layers }, (_, l) => createStorageBuffer(own, 'k', layerSlice(keys, l, 3)));
    const valueBuffers = Array.from({ length: SHAPE.layers }, (_, l) => createStorageBuffer(own, 'v', layerSlice(values, l, 3)));
    const attended = cache.attend(0, 1, randomQuery(random));
    const compressed = cache.compress(1, { policy: 'knorm', budget: 16 });
    const appendedBuffers = cache.appendBuffers(2, keyBuffers, valueBuffers, 3);
    own.device.destroy(); // as if the driver took it away
    const errors = await settle([attended, compressed, appendedBuffers]);
    for (const [i, error] of errors.entries()) {
      expect(error, `operation ${i}: ${String(error)}`).toBeInstanceOf(DeviceLostError);
    }
    expect(String(errors[0])).toMatch(/Create a new context/);
    await expect(cache.append(0, keys, values)).rejects.toThrow(DeviceLostError);
    await expect(cache.attend(0, 0, randomQuery(random))).rejects.toThrow(DeviceLostError);
    await expect(cache.compress(0, { budget: 8 })).rejects.toThrow(DeviceLostError);
    // The host tables are intact: a failed compress committed nothing.
    expect(cache.tokenCount(1, 0, 0)).toBe(40);
    expect(cache.checkInvariants()).toEqual([]);
    cache.destroy();
    await own.destroy();
  });
});
