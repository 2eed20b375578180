// Issue #11, item 4: with the pools at maxBytes, append says "compress", and compressing a sequence to fewer tokens
// then succeeds (it used to allocate the new blocks before releasing the old, and ran out too). And both engines
// reach the limit at the same token by the same growth rule. Through the public API of both engines.
import { describe, expect, it } from 'vitest';
import { OutOfBlocksError } from '../src/errors.js';
import { seededRandom } from './helpers/gpu.js';
import { ENGINES, type Engine, type EngineCase, SHAPE, randomKv } from './helpers/reliability.js';

/** Bytes of one f32 full block of the test shape (16 tokens × 8 dims × K and V × 4 B). */
const FULL_BLOCK_BYTES = 16 * 8 * 2 * 4;

/** Appends to `seq` in chunks of `chunk`, then single tokens, until the pool cannot take one more token. */
async function fill(cache: Engine, seq: number, random: () => number, chunk = 16): Promise<OutOfBlocksError> {
  for (const size of [chunk, 1]) {
    for (;;) {
      const { keys, values } = randomKv(size, random);
      const before = cache.sequenceLength(seq);
      // (async: the CPU engine throws an idle sequence's errors synchronously, the GPU engine rejects)
      const error = await (async () => cache.append(seq, keys, values))().then(
        () => null,
        (e: unknown) => e,
      );
      if (error === null) continue;
      expect(error).toBeInstanceOf(OutOfBlocksError);
      expect(cache.sequenceLength(seq)).toBe(before); // all or nothing
      if (size === 1) return error as OutOfBlocksError;
      break;
    }
  }
  throw new Error('unreachable');
}

/**
 * A byte budget of `blocks` full blocks as one pool for all layers would use it, plus what each further layer's own
 * pools cost on top: its null block and its compaction reserve (16 blocks: appends leave it to every layer).
 */
function budgetBytes(blocks: number): number {
  const withPositions = FULL_BLOCK_BYTES + 16 * 4;
  return blocks * FULL_BLOCK_BYTES + (SHAPE.layers - 1) * 17 * withPositions;
}

async function create(engine: EngineCase, blocks: number, quantBits?: 4): Promise<Engine> {
  return engine.create({ maxBytes: budgetBytes(blocks), initialFullBlocks: 4, ...(quantBits ? { quantBits, initialQuantBlocks: 4 } : {}) });
}

describe.each(ENGINES)('$name engine: compression at maxBytes', (engine) => {
  it('(4) compresses a sequence that filled the pool, at bits 16, down to budget 1 and to half', async () => {
    const cache = await create(engine, 48);
    const random = seededRandom(40);
    cache.addSequence(0);
    const full = await fill(cache, 0, random);
    expect(full.pool).toBe('full');
    expect(full.message).toMatch(/compress/);
    expect(cache.memory().poolBytes).toBeLessThanOrEqual(budgetBytes(48));
    const length = cache.sequenceLength(0);
    expect(length).toBeGreaterThan(100);
    const half = Math.floor(length / 2);
    const report = await cache.compress(0, { policy: 'knorm', budget: half });
    expect(report.keptPerHead).toEqual([[half, half], [half, half]]);
    expect(report.bytesFreed).toBeGreaterThan(0);
    expect(cache.checkInvariants()).toEqual([]);
    // Fill it again and compress to one token per head.
    await fill(cache, 0, random);
    const tiny = await cache.compress(0, { policy: 'streaming', budget: 1 });
    expect(tiny.keptPerHead).toEqual([[1, 1], [1, 1]]);
    expect(cache.checkInvariants()).toEqual([]);
    const { keys, values } = randomKv(16, random);
    await cache.append(0, keys, values); // room again
  });

  it('(4) compresses into the quantized pool at maxBytes (bits 4)', async () => {
    const cache = await create(engine, 48, 4);
    const random = seededRandom(41);
    cache.addSequence(0);
    await fill(cache, 0, random);
    expect(cache.memory().poolBytes).toBeLessThanOrEqual(budgetBytes(48));
    const report = await cache.compress(0, { policy: 'knorm', budget: 64, bits: 4 });
    expect(report.keptPerHead).toEqual([[64, 64], [64, 64]]);
    expect(cache.memory().quant.used).toBeGreaterThan(0);
    expect(cache.checkInvariants()).toEqual([]);
    await fill(cache, 0, random);
    const again = await cache.compress(0, { policy: 'knorm', budget: 40, bits: 4 });
    expect(again.keptPerHead).toEqual([[40, 40], [40, 40]]);
    expect(cache.checkInvariants()).toEqual([]);
  });

  it('(4) compresses one of two sequences that together filled the pool, and a fork that shares its blocks', async () => {
    const cache = await create(engine, 48, 4);
    const random = seededRandom(42);
    cache.addSequence(0);
    cache.addSequence(1);
    const { keys, values } = randomKv(64, random);
    await cache.append(0, keys, values);
    await cache.fork(0, 2); // shares all of 0's blocks
    await fill(cache, 1, random);
    for (const [seq, budget] of [[2, 8], [1, 1], [0, 16]] as const) {
      const report = await cache.compress(seq, { policy: 'knorm', budget, bits: 4 });
      expect(report.keptPerHead, `sequence ${seq}`).toEqual([[budget, budget], [budget, budget]]);
      expect(cache.checkInvariants()).toEqual([]);
    }
    for (const seq of [0, 1, 2]) await cache.freeSequence(seq);
    expect(cache.memory().usedBytes).toBe(0);
  });
});

describe('both engines reach maxBytes at the same token', () => {
  it('grows their pools by one rule', async () => {
    const lengths: number[] = [];
    const memories: unknown[] = [];
    for (const engine of ENGINES) {
      const cache = await create(engine, 40, 4);
      const random = seededRandom(43);
      cache.addSequence(0);
      cache.addSequence(1);
      const { keys, values } = randomKv(37, random);
      await cache.append(1, keys, values);
      await fill(cache, 0, random, 5);
      lengths.push(cache.sequenceLength(0));
      memories.push(cache.memory());
    }
    expect(lengths[0]).toBe(lengths[1]);
    expect(memories[0]).toEqual(memories[1]);
  });
});
