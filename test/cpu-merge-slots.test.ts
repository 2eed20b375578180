// MergeMode 'slots' on the CPU engine against the reference (absorbIntoSlots): slot tokens at the front of each
// head, the policy keeping budget − mergeSlots real tokens, masses persisting across two compactions, forks,
// snapshots, quantized slots, and the typed errors.
import { describe, expect, it } from 'vitest';
import { absorbIntoSlots, emptySlots, type MergeSlots } from '../src/compress/merge-slots.js';
import { CpuKvCache } from '../src/engine/cpu-kv-cache.js';
import { decodeSchedule } from '../src/compress/decode-schedule.js';
import { InvalidArgumentError, StoreEntryError } from '../src/errors.js';
import { decodeStoreEntry, encodeStoreEntry } from '../src/store/entry-format.js';
import { entryToSnapshot, snapshotToEntry } from '../src/store/snapshot-entry.js';
import { PagedKvCache } from '../src/engine/paged-kv-cache.js';
import { seededRandom, testGpu } from './helpers/gpu.js';
import { randomDecodeSteps } from './helpers/decode-steps.js';

const shape = { layers: 2, kvHeads: 2, headDim: 8, blockSize: 16 };
const nHeads = 4;
const M = 4;

function newCache(): CpuKvCache {
  return CpuKvCache.create({ shape, nHeads, fullFormat: 'f32', seqSlots: 4, maxTokensPerHead: 512 });
}

/** Decode steps with random q, k, v from position `from` to `to`, so statistics (the merge weights) build up. */
function run(cache: CpuKvCache, seq: number, from: number, to: number, seed: number): void {
  randomDecodeSteps(cache, shape, nHeads, seq, from, to, seed);
}

interface HeadState {
  keys: Float32Array;
  values: Float32Array;
  positions: Uint32Array;
  mass: Float32Array;
}

/** A head as the compaction will see it: its tokens and each one's mean attention per query. */
function headState(cache: CpuKvCache, seq: number, layer: number, head: number): HeadState {
  const { keys, values, positions } = cache.readHead(seq, layer, head);
  const stats = cache.stats(seq, layer, head);
  const mass = stats.attnSum.map((sum, t) => ((stats.attnCount[t] ?? 0) > 0 ? sum / (stats.attnCount[t] ?? 1) : 0));
  return { keys, values, positions, mass };
}

/** The reference: the real tokens (after `slots`) missing from the head after the compaction, absorbed in order. */
function expectedSlots(before: HeadState, slots: MergeSlots, after: Uint32Array): MergeSlots {
  const { headDim } = shape;
  const kept = new Set(Array.from(after.subarray(M)));
  const evicted: number[] = [];
  for (let t = slots.count; t < before.positions.length; t++) if (!kept.has(before.positions[t] ?? 0)) evicted.push(t);
  const pick = (data: Float32Array) => {
    const out = new Float32Array(evicted.length * headDim);
    evicted.forEach((t, i) => out.set(data.subarray(t * headDim, (t + 1) * headDim), i * headDim));
    return out;
  };
  return absorbIntoSlots(slots, {
    keys: pick(before.keys),
    values: pick(before.values),
    positions: evicted.map((t) => before.positions[t] ?? 0),
    mass: evicted.map((t) => before.mass[t] ?? 0),
  });
}

/** Slots as the cache holds them: the first `count` tokens and their masses from the slot state. */
function cachedSlots(cache: CpuKvCache, seq: number, layer: number, head: number): MergeSlots {
  const { headDim } = shape;
  const mass = cache.mergeSlots(seq, layer, head);
  const count = mass.length;
  const { keys, values, positions } = cache.readHead(seq, layer, head);
  const slots = emptySlots(M, headDim);
  slots.keys.set(keys.subarray(0, count * headDim));
  slots.values.set(values.subarray(0, count * headDim));
  slots.positions.set(positions.subarray(0, count));
  slots.mass.set(mass);
  return { ...slots, count };
}

function expectSlotsEqual(actual: MergeSlots, expected: MergeSlots): void {
  expect(actual.count).toBe(expected.count);
  const n = expected.count * shape.headDim;
  // The CPU engine stores f32 exactly: the cache's slots are the reference's, bit for bit.
  expect(Array.from(actual.keys.subarray(0, n))).toEqual(Array.from(expected.keys.subarray(0, n)));
  expect(Array.from(actual.values.subarray(0, n))).toEqual(Array.from(expected.values.subarray(0, n)));
  expect(Array.from(actual.positions.subarray(0, expected.count))).toEqual(Array.from(expected.positions.subarray(0, expected.count)));
  for (let s = 0; s < expected.count; s++) expect(actual.mass[s] ?? 0).toBeCloseTo(expected.mass[s] ?? 0, 9);
}

describe("merge 'slots' on the CPU engine", () => {
  it('two compactions match absorbIntoSlots run twice; the policy keeps budget − mergeSlots real tokens', async () => {
    const cache = newCache();
    cache.addSequence(0);
    run(cache, 0, 0, 80, 1);
    const options = { policy: 'h2o', budget: 40, merge: 'slots', mergeSlots: M, sinks: 2, recent: 8 } as const;
    const heads = [
      [0, 0],
      [0, 1],
      [1, 0],
      [1, 1],
    ] as const;
    const before1 = heads.map(([l, h]) => headState(cache, 0, l, h));
    const report1 = await cache.compress(0, options);
    expect(report1.merge).toBe('slots');
    expect(cache.slotStateBytes(0)).toBe(shape.layers * shape.kvHeads * M * 8);
    expect(cache.memory().slotStateBytes).toBe(shape.layers * shape.kvHeads * M * 8);
    const expected1 = heads.map(([l, h], i) => {
      expect(cache.tokenCount(0, l, h)).toBe(40);
      const expected = expectedSlots(before1[i] as HeadState, emptySlots(M, shape.headDim), cache.readHead(0, l, h).positions);
      expect(expected.count).toBe(M);
      expectSlotsEqual(cachedSlots(cache, 0, l, h), expected);
      // The real tokens after the slots are the kept ones, unchanged and in order.
      const after = cache.readHead(0, l, h);
      const real = Array.from(after.positions.subarray(M));
      expect(real).toEqual([...real].sort((a, b) => a - b));
      expect(real.slice(0, 2)).toEqual([0, 1]);
      expect(real.slice(-8)).toEqual([72, 73, 74, 75, 76, 77, 78, 79]);
      return expected;
    });
    expect(cache.checkInvariants()).toEqual([]);

    // Second compaction: the new evictions fold into the same slots with the masses the first left.
    run(cache, 0, 80, 110, 2);
    const before2 = heads.map(([l, h]) => headState(cache, 0, l, h));
    await cache.compress(0, options);
    heads.forEach(([l, h], i) => {
      const slotsBefore = cachedSlotsFrom(before2[i] as HeadState, expected1[i] as MergeSlots);
      const expected = expectedSlots(before2[i] as HeadState, slotsBefore, cache.readHead(0, l, h).positions);
      expect(cache.tokenCount(0, l, h)).toBe(40);
      expectSlotsEqual(cachedSlots(cache, 0, l, h), expected);
      // A slot that absorbed more keeps more mass: every slot got some of the 30 + 36 evictions.
      for (let s = 0; s < M; s++) expect(expected.mass[s] ?? 0).toBeGreaterThan(expected1[i]?.mass[s] ?? 0);
    });
    expect(cache.checkInvariants()).toEqual([]);
  });

  it('fork copies the slots; snapshots carry them; freeing forgets them', async () => {
    const cache = newCache();
    cache.addSequence(0);
    run(cache, 0, 0, 70, 3);
    await cache.compress(0, { policy: 'h2o', budget: 32, merge: 'slots', sinks: 2, recent: 8 });
    await cache.fork(0, 1);
    const snapshot = await cache.exportSequence(0);
    expect(snapshot.slots?.counts).toEqual(Uint32Array.from([M, M, M, M]));
    const other = newCache();
    await other.importSequence(5, snapshot);
    for (const [l, h] of [
      [0, 0],
      [1, 1],
    ] as const) {
      const masses = Array.from(cache.mergeSlots(0, l, h));
      expect(Array.from(cache.mergeSlots(1, l, h))).toEqual(masses);
      expect(Array.from(other.mergeSlots(5, l, h))).toEqual(masses);
      expect(Array.from(other.readHead(5, l, h).keys)).toEqual(Array.from(cache.readHead(0, l, h).keys));
    }
    // The fork and the original go on apart: compressing one changes only its own slots.
    run(cache, 1, 70, 90, 4);
    await cache.compress(1, { policy: 'h2o', budget: 32, merge: 'slots', sinks: 2, recent: 8 });
    expect(Array.from(cache.mergeSlots(1, 0, 0))).not.toEqual(Array.from(cache.mergeSlots(0, 0, 0)));
    await cache.freeSequence(1);
    cache.addSequence(2);
    expect(cache.mergeSlots(2, 0, 0).length).toBe(0);
    expect(cache.slotStateBytes(2)).toBe(0);
    expect(cache.checkInvariants()).toEqual([]);
  });

  it('a store entry round-trips the slots, and the restored sequence continues exactly as the original', async () => {
    const cache = newCache();
    cache.addSequence(0);
    run(cache, 0, 0, 70, 8);
    const options = { policy: 'h2o', budget: 32, merge: 'slots', sinks: 2, recent: 8 } as const;
    await cache.compress(0, options);
    const meta = { fingerprint: 'model-x', settings: { merge: 'slots' }, tokenCount: 70 };
    const bytes = await encodeStoreEntry(snapshotToEntry(await cache.exportSequence(0), meta));
    const { snapshot } = entryToSnapshot(await decodeStoreEntry(bytes, { fingerprint: 'model-x', settings: meta.settings }));
    expect(snapshot.slots?.counts).toEqual(Uint32Array.from([M, M, M, M]));
    await cache.importSequence(3, snapshot);
    for (const seq of [0, 3]) {
      run(cache, seq, 70, 95, 9);
      await cache.compress(seq, options);
    }
    for (const [l, h] of [
      [0, 0],
      [1, 1],
    ] as const) {
      expect(Array.from(cache.mergeSlots(3, l, h))).toEqual(Array.from(cache.mergeSlots(0, l, h)));
      expect(Array.from(cache.readHead(3, l, h).values)).toEqual(Array.from(cache.readHead(0, l, h).values));
    }
    // A section whose counts disagree with its masses is refused, never imported half-read.
    const entry = snapshotToEntry(await cache.exportSequence(0), meta);
    const broken = new Map(entry.sections);
    broken.set('slots', (entry.sections.get('slots') ?? new Uint8Array(0)).slice(0, -8));
    await expect(decodeStoreEntry(await encodeStoreEntry({ ...entry, sections: broken })).then(entryToSnapshot)).rejects.toBeInstanceOf(StoreEntryError);
  });

  it('quantized slots (int4) are stored like the rest and still absorb', async () => {
    const cache = CpuKvCache.create({ shape, nHeads, fullFormat: 'f32', quantBits: 4, seqSlots: 2, maxTokensPerHead: 512 });
    cache.addSequence(0);
    run(cache, 0, 0, 100, 5);
    const before = headState(cache, 0, 0, 0);
    await cache.compress(0, { policy: 'h2o', budget: 48, merge: 'slots', bits: 4, sinks: 2, recent: 8 });
    const expected = expectedSlots(before, emptySlots(M, shape.headDim), cache.readHead(0, 0, 0).positions);
    const actual = cachedSlots(cache, 0, 0, 0);
    expect(cache.quantLayout?.bits).toBe(4);
    // The first 32 tokens (slots included) sit in quantized blocks: the keys and values come back within int4's step.
    expect(actual.count).toBe(M);
    for (let i = 0; i < M * shape.headDim; i++) {
      expect(Math.abs((actual.values[i] ?? 0) - (expected.values[i] ?? 0))).toBeLessThan(0.15);
      expect(Math.abs((actual.keys[i] ?? 0) - (expected.keys[i] ?? 0))).toBeLessThan(0.15);
    }
    expect(Array.from(actual.positions)).toEqual(Array.from(expected.positions));
    run(cache, 0, 100, 120, 6);
    await cache.compress(0, { policy: 'h2o', budget: 48, merge: 'slots', bits: 4, sinks: 2, recent: 8 });
    expect(cache.mergeSlots(0, 0, 0).length).toBe(M);
    expect(cache.tokenCount(0, 0, 0)).toBe(48);
    expect(cache.checkInvariants()).toEqual([]);
  });

  it('another merge mode turns the slots into ordinary tokens; bad mergeSlots are typed errors', async () => {
    const cache = newCache();
    cache.addSequence(0);
    run(cache, 0, 0, 60, 7);
    await expect(cache.compress(0, { policy: 'h2o', budget: 16, merge: 'slots', mergeSlots: 16 })).rejects.toThrow(InvalidArgumentError);
    await expect(cache.compress(0, { policy: 'h2o', budget: 16, merge: 'slots', mergeSlots: 0 })).rejects.toThrow(InvalidArgumentError);
    await cache.compress(0, { policy: 'h2o', budget: 40, merge: 'slots', mergeSlots: 6, sinks: 2, recent: 8 });
    expect(cache.mergeSlots(0, 0, 0).length).toBe(6);
    await expect(cache.compress(0, { policy: 'h2o', budget: 40, merge: 'slots', mergeSlots: 4 })).rejects.toThrow(/mergeSlots ≥ 6/);
    await cache.compress(0, { policy: 'h2o', budget: 30, merge: 'none', sinks: 2, recent: 8 });
    expect(cache.mergeSlots(0, 0, 0).length).toBe(0);
    expect(cache.tokenCount(0, 0, 0)).toBe(30);
  });
});

/** The slots a head held before a compaction: its first `count` tokens (as stored) and the masses carried over. */
function cachedSlotsFrom(head: HeadState, previous: MergeSlots): MergeSlots {
  const { headDim } = shape;
  const slots = emptySlots(M, headDim);
  slots.keys.set(head.keys.subarray(0, previous.count * headDim));
  slots.values.set(head.values.subarray(0, previous.count * headDim));
  slots.positions.set(head.positions.subarray(0, previous.count));
  slots.mass.set(previous.mass);
  return { ...slots, count: previous.count };
}

describe("merge 'slots' at the edges", () => {
  it('with the pools full (one head per round) the slots are those of a roomy cache', async () => {
    const tight = { shape, nHeads, fullFormat: 'f32' as const, maxTokensPerHead: 512, maxBytes: 96 * 1024, initialFullBlocks: 4, seqSlots: 2 };
    const caches = [CpuKvCache.create(tight), CpuKvCache.create({ ...tight, maxBytes: 1 << 24 })];
    const random = seededRandom(11);
    const perToken = shape.layers * shape.kvHeads * shape.headDim;
    const chunks: Float32Array[] = [];
    for (const cache of caches) cache.addSequence(0);
    // Fill the tight cache until the byte budget refuses a chunk; the roomy one takes the same tokens.
    for (;;) {
      const chunk = chunks.length < 64 ? Float32Array.from({ length: 16 * perToken }, () => random() - 0.5) : null;
      if (!chunk) break;
      try {
        await caches[0]?.append(0, chunk, chunk.map((x) => -x));
      } catch {
        break;
      }
      chunks.push(chunk);
      await caches[1]?.append(0, chunk, chunk.map((x) => -x));
    }
    expect(chunks.length).toBeGreaterThan(6);
    // 6 blocks per head for 4 heads do not fit the free blocks of the full pools: the heads compact one per round.
    expect(caches[0]?.memory().full.free).toBeLessThan(4 * 6);
    for (const cache of caches) await cache.compress(0, { policy: 'knorm', budget: 96, merge: 'slots', sinks: 0, recent: 0 });
    for (const [l, h] of [
      [0, 0],
      [1, 1],
    ] as const) {
      expect(Array.from(caches[0]?.mergeSlots(0, l, h) ?? [])).toEqual(Array.from(caches[1]?.mergeSlots(0, l, h) ?? []));
      expect(Array.from(caches[0]?.readHead(0, l, h).values ?? [])).toEqual(Array.from(caches[1]?.readHead(0, l, h).values ?? []));
    }
    expect(caches[0]?.mergeSlots(0, 0, 0).length).toBe(M);
    expect(caches[0]?.checkInvariants()).toEqual([]);
  });

  it('truncating the tokens appended since leaves the slots; the next compaction folds into them', async () => {
    const cache = newCache();
    cache.addSequence(0);
    run(cache, 0, 0, 60, 12);
    const options = { policy: 'h2o', budget: 32, merge: 'slots', sinks: 2, recent: 8 } as const;
    await cache.compress(0, options);
    const slots = Array.from(cache.mergeSlots(0, 0, 0));
    const head = Array.from(cache.readHead(0, 0, 0).values);
    run(cache, 0, 60, 70, 13);
    await cache.truncate(0, 62);
    expect(Array.from(cache.mergeSlots(0, 0, 0))).toEqual(slots);
    expect(Array.from(cache.readHead(0, 0, 0).values.subarray(0, head.length))).toEqual(head);
    expect(cache.checkInvariants()).toEqual([]);
    run(cache, 0, 62, 80, 14);
    await cache.compress(0, options);
    expect(cache.tokenCount(0, 0, 0)).toBe(32);
    expect(cache.mergeSlots(0, 0, 0).reduce((a, b) => a + b, 0)).toBeGreaterThan(slots.reduce((a, b) => a + b, 0));
  });

  it('the GPU engine takes a CPU snapshot holding slots and refuses more slots than it holds, cache untouched', async () => {
    // The GPU engine runs merge 'slots' (test/gpu-slots-engine.test.ts compares it with this engine in depth).
    const gpu = await testGpu();
    const paged = PagedKvCache.create(gpu, { shape, nHeads, fullFormat: 'f32', maxTokensPerHead: 512, seqSlots: 2 });
    try {
      paged.addSequence(0);
      const n = 60 * shape.kvHeads * shape.headDim * shape.layers;
      const random = seededRandom(15);
      await paged.append(0, Float32Array.from({ length: n }, () => random() - 0.5), Float32Array.from({ length: n }, () => random() - 0.5));
      await expect(paged.compress(0, { policy: 'knorm', budget: 32, merge: 'slots', mergeSlots: 17 })).rejects.toThrow(InvalidArgumentError);
      expect(paged.tokenCount(0, 0, 0)).toBe(60);
      const cpu = newCache();
      cpu.addSequence(0);
      run(cpu, 0, 0, 60, 16);
      await cpu.compress(0, { policy: 'h2o', budget: 32, merge: 'slots', sinks: 2, recent: 8 });
      await paged.importSequence(1, await cpu.exportSequence(0));
      expect(Array.from(await paged.mergeSlots(1, 0, 0))).toEqual(Array.from(cpu.mergeSlots(0, 0, 0)).map((m) => Math.fround(m)));
      expect(paged.checkInvariants()).toEqual([]);
    } finally {
      paged.destroy();
    }
  });
});

describe("the decode schedule under merge 'slots'", () => {
  it('fits the protected windows in the target less the slots, and refuses slots that fill the target', () => {
    const plain = decodeSchedule({ budget: 32, blockSize: 16, compress: { merge: 'slots' } });
    // Budget 32: target 24; 4 slots leave 20, enough for the usual 4 sinks + 8 recent.
    expect([plain.target, plain.sinks, plain.recent]).toEqual([24, 4, 8]);
    const many = decodeSchedule({ budget: 32, blockSize: 16, compress: { merge: 'slots', mergeSlots: 16 } });
    expect([many.target, many.sinks, many.recent]).toEqual([24, 4, 4]);
    expect(() => decodeSchedule({ budget: 32, blockSize: 16, compress: { merge: 'slots', mergeSlots: 24 } })).toThrow(/mergeSlots/);
    expect(() => decodeSchedule({ budget: 32, blockSize: 16, sinks: 4, recent: 20, compress: { merge: 'slots' } })).toThrow(/after 4 merge slots/);
    // Other modes keep the whole target for the windows.
    expect(decodeSchedule({ budget: 32, blockSize: 16, sinks: 4, recent: 20, compress: { merge: 'nearest' } }).recent).toBe(20);
  });
});
