// Issue #11, items 5, 6, 7 and 9: protected windows clamp to the budget newest-first, the default policy works
// after a plain append (and the README's API example runs), and bad inputs are typed errors before any state
// changes. Through the public API of both engines.
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError, MissingObservationWindowError, NonFiniteValueError } from '../src/errors.js';
import { PagedKvCache } from '../src/engine/paged-kv-cache.js';
import { policyNames } from '../src/compress/registry.js';
import { createStorageBuffer } from '../src/gpu/buffers.js';
import { createNodeGpu } from '../src/node/gpu.js';
import { seededRandom } from './helpers/gpu.js';
import { ENGINES, type Engine, N_HEADS, OPTIONS, SHAPE, decode, headPositions, layerSlice, randomKv, randomQuery, trackBuffers } from './helpers/reliability.js';

const range = (from: number, to: number): number[] => Array.from({ length: to - from }, (_, i) => from + i);

/** What the host sees of a cache: enough to tell that a rejected call changed nothing. */
async function observable(cache: Engine, seq: number): Promise<unknown> {
  return {
    length: cache.sequenceLength(seq),
    memory: cache.memory(),
    bytes: cache.sequenceBytes(seq),
    positions: await headPositions(cache, seq),
    head: [...(await cache.readHead(seq, 1, 1)).keys],
  };
}

describe.each(ENGINES)('$name engine: budgets below the protected windows', (engine) => {
  it('(5) budget < sinks + recent keeps the newest tokens plus as many sinks as fit, for every policy', async () => {
    const cache = await engine.create({ seqSlots: 40 });
    cache.addSequence(0);
    await decode(cache, 0, 64, seededRandom(5)); // fills the observation window, so window policies run too
    // Defaults sinks 4, recent 32: the recent window takes the budget first, the sinks what is left.
    const expected = new Map([
      [2, range(62, 64)],
      [20, range(44, 64)],
      [34, [0, 1, ...range(32, 64)]],
      [36, [...range(0, 4), ...range(32, 64)]],
    ]);
    expect(policyNames()).toContain('streaming');
    let next = 1;
    for (const policy of policyNames()) {
      for (const [budget, kept] of expected) {
        const seq = next++;
        await cache.fork(0, seq);
        const report = await cache.compress(seq, { policy, budget });
        expect(report.policy).toBe(policy);
        for (const [head, positions] of (await headPositions(cache, seq)).entries()) {
          expect(positions, `${policy}, budget ${budget}, head ${head}`).toEqual(kept);
        }
        await cache.freeSequence(seq);
      }
    }
    // Explicit windows clamp the same way: sinks 8, recent 8, budget 10 → the 8 newest and 2 sinks.
    await cache.fork(0, next);
    await cache.compress(next, { policy: 'h2o', budget: 10, sinks: 8, recent: 8 });
    for (const positions of await headPositions(cache, next)) expect(positions.filter((p) => p >= 56)).toEqual(range(56, 64));
    expect(cache.checkInvariants()).toEqual([]);
  });
});

describe.each(ENGINES)('$name engine: the default policy and window policies', (engine) => {
  it('(6) compress({ budget }) after a plain append works; snapkv and tova without window queries say how to get them', async () => {
    const cache = await engine.create({ quantBits: 4, fullFormat: 'f16' });
    cache.addSequence(1);
    const { keys, values } = randomKv(100, seededRandom(6));
    await cache.append(1, keys, values);
    const before = await observable(cache, 1);
    for (const policy of ['snapkv', 'tova']) {
      const error = await cache.compress(1, { policy, budget: 64, budgetMode: 'adakv', bits: 4 }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(MissingObservationWindowError);
      expect(String(error)).toMatch(/beginStep|leave policy unset/);
      expect(await observable(cache, 1)).toEqual(before);
    }
    const report = await cache.compress(1, { budget: 64, budgetMode: 'adakv', bits: 4 });
    expect(report.policy).toBe('knorm');
    expect(report.keptPerLayer).toEqual([128, 128]);
    expect(report.ratio).toBeGreaterThan(1);
    // Once a model run fills the window, the default is snapkv.
    cache.addSequence(2);
    await decode(cache, 2, 40, seededRandom(7));
    expect((await cache.compress(2, { budget: 20 })).policy).toBe('snapkv');
    expect(cache.checkInvariants()).toEqual([]);
  });
});

// (6) The README's API examples run as written: test/readme-examples.test.ts runs every block.

describe.each(ENGINES)('$name engine: inputs', (engine) => {
  it('(7) a plain array, Float64Array or Int32Array append is a typed error with the cache unchanged', async () => {
    const cache = await engine.create();
    cache.addSequence(0);
    const good = randomKv(8, seededRandom(70));
    await cache.append(0, good.keys, good.values);
    const before = await observable(cache, 0);
    const n = good.keys.length;
    const bad: [string, unknown][] = [
      ['a plain array', Array.from({ length: n }, (_, i) => i + 1)],
      ['a Float64Array', Float64Array.from({ length: n }, (_, i) => i + 1)],
      ['an Int32Array', Int32Array.from({ length: n }, (_, i) => i + 1)],
      ['a Uint8Array', new Uint8Array(n * 4)],
      ['null', null],
    ];
    for (const [what, keys] of bad) {
      for (const order of ['keys', 'values'] as const) {
        const args = (order === 'keys' ? [keys, good.values] : [good.keys, keys]) as [Float32Array, Float32Array];
        const error = await (async () => cache.append(0, ...args))().catch((e: unknown) => e);
        expect(error, `${what} as ${order}`).toBeInstanceOf(InvalidArgumentError);
        expect((error as InvalidArgumentError).field).toBe(order);
        expect(String(error)).toMatch(/Float32Array/);
      }
    }
    // Half a token, and K and V of different lengths.
    for (const [k, v] of [[good.keys.subarray(1), good.values.subarray(1)], [good.keys, good.values.subarray(SHAPE.layers * SHAPE.kvHeads * SHAPE.headDim)]]) {
      const error = await (async () => cache.append(0, k as Float32Array, v as Float32Array))().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(InvalidArgumentError);
    }
    const inf = good.keys.slice();
    inf[5] = Number.POSITIVE_INFINITY;
    await expect((async () => cache.append(0, inf, good.values))()).rejects.toThrow(NonFiniteValueError);
    expect(await observable(cache, 0)).toEqual(before);
    expect(cache.checkInvariants()).toEqual([]);
    // The cache still works.
    await cache.append(0, good.keys, good.values);
    expect(cache.sequenceLength(0)).toBe(16);
  });

  it('(9) attend with a NaN or infinite query is a NonFiniteValueError; a wrongly typed query an InvalidArgumentError', async () => {
    const cache = await engine.create();
    cache.addSequence(0);
    const { keys, values } = randomKv(20, seededRandom(9));
    await cache.append(0, keys, values);
    const query = randomQuery(seededRandom(90));
    const fine = await cache.attend(0, 1, query);
    expect(fine.out.every(Number.isFinite)).toBe(true);
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
      const q = query.slice();
      q[N_HEADS * SHAPE.headDim - 1] = bad;
      await expect((async () => cache.attend(0, 1, q))(), String(bad)).rejects.toThrow(NonFiniteValueError);
    }
    const asArray = [...query] as unknown as Float32Array;
    await expect((async () => cache.attend(0, 1, asArray))()).rejects.toThrow(InvalidArgumentError);
    await expect((async () => cache.attend(0, 1, Float64Array.from(query) as unknown as Float32Array))()).rejects.toThrow(InvalidArgumentError);
    expect((await cache.attend(0, 1, query)).out).toEqual(fine.out);
  });
});

describe('gpu engine: rejected appends leak no GPU buffers', () => {
  it('(7) creates and keeps no buffer for a rejected append; a non-finite appendBuffers is rolled back', async () => {
    const gpu = await createNodeGpu();
    const buffers = trackBuffers(gpu);
    const cache = PagedKvCache.create(gpu, OPTIONS);
    try {
      cache.addSequence(0);
      const good = randomKv(8, seededRandom(71));
      await cache.append(0, good.keys, good.values);
      await gpu.idle();
      const live = buffers.live();
      const created = buffers.created();
      const pooled = gpu.buffers.pendingCount + gpu.buffers.freeCount;
      const plain = Array.from(good.keys) as unknown as Float32Array;
      for (let i = 0; i < 20; i++) {
        await expect(cache.append(0, plain, good.values)).rejects.toThrow(InvalidArgumentError);
        await expect(cache.append(0, Float64Array.from(good.keys) as unknown as Float32Array, good.values)).rejects.toThrow(InvalidArgumentError);
      }
      await gpu.idle();
      expect(buffers.created() - created).toBe(0);
      expect(buffers.live()).toBe(live);
      expect(gpu.buffers.pendingCount + gpu.buffers.freeCount).toBe(pooled);
      expect(cache.sequenceLength(0)).toBe(8);

      const bad = good.keys.slice();
      bad[3] = Number.NaN;
      const keyBuffers = Array.from({ length: SHAPE.layers }, (_, l) => createStorageBuffer(gpu, 'k', layerSlice(bad, l, 8)));
      const valueBuffers = Array.from({ length: SHAPE.layers }, (_, l) => createStorageBuffer(gpu, 'v', layerSlice(good.values, l, 8)));
      const before = await observable(cache, 0);
      await expect(cache.appendBuffers(0, keyBuffers, valueBuffers, 8)).rejects.toThrow(NonFiniteValueError);
      expect(await observable(cache, 0)).toEqual(before);
      for (const buffer of [...keyBuffers, ...valueBuffers]) buffer.destroy();
      await gpu.idle();
      const afterRollback = buffers.live();
      for (let i = 0; i < 5; i++) {
        const k = Array.from({ length: SHAPE.layers }, (_, l) => createStorageBuffer(gpu, 'k', layerSlice(bad, l, 8)));
        const v = Array.from({ length: SHAPE.layers }, (_, l) => createStorageBuffer(gpu, 'v', layerSlice(good.values, l, 8)));
        await expect(cache.appendBuffers(0, k, v, 8)).rejects.toThrow(NonFiniteValueError);
        for (const buffer of [...k, ...v]) buffer.destroy();
      }
      await gpu.idle();
      expect(buffers.live()).toBe(afterRollback);
      expect(cache.checkInvariants()).toEqual([]);
    } finally {
      cache.destroy();
      await gpu.destroy();
    }
  });
});
