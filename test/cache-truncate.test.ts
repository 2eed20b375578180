import { describe, expect, it } from 'vitest';
import { CacheMetadata } from '../src/cache/cache-metadata.js';
import { checkInvariants } from '../src/cache/invariants.js';
import { InvalidArgumentError, TruncateCompressedError } from '../src/errors.js';
import { decodeBlockRef, encodeBlockRef } from '../src/format/layout.js';
import { mulberry32 } from '../src/random.js';

const shape = { layers: 2, kvHeads: 2, headDim: 8, blockSize: 4 };
const HEADS = shape.layers * shape.kvHeads;

function metadata(quant = false): CacheMetadata {
  return new CacheMetadata({
    shape,
    fullFormat: 'f32',
    ...(quant ? { quantFormat: 'int4' as const } : {}),
    initialFullBlocks: 64,
    initialQuantBlocks: quant ? 16 : 0,
    maxBytes: 1 << 24,
    seqSlots: 4,
    maxBlocksPerHead: 16,
  });
}

function counts(meta: CacheMetadata, id: number): number[] {
  return Array.from({ length: HEADS }, (_, i) => meta.tokenCount(id, Math.floor(i / shape.kvHeads), i % shape.kvHeads));
}

describe('CacheMetadata.truncate', () => {
  it('drops the tokens at and past the length and the blocks past the new end', () => {
    const meta = metadata();
    meta.addSequence(1);
    meta.planAppend(1, 10); // 3 blocks per head
    const used = meta.poolUsage('full').used;
    const plan = meta.truncate(1, 5); // 2 blocks per head
    expect(plan.lengthBefore).toBe(10);
    expect(plan.lengthAfter).toBe(5);
    expect(plan.heads.map((h) => [h.tokensBefore, h.tokensAfter, h.dropped.length])).toEqual(Array(HEADS).fill([10, 5, 1]));
    expect(meta.sequenceLength(1)).toBe(5);
    expect(counts(meta, 1)).toEqual([5, 5, 5, 5]);
    expect(meta.poolUsage('full').used).toBe(used - HEADS);
    expect(checkInvariants(meta)).toEqual([]);
    // The next token lands at position 5, slot 1 of the second block.
    const next = meta.planAppend(1, 1);
    expect(next?.firstPosition).toBe(5);
    expect((next?.destSlots[0] ?? 0) % shape.blockSize).toBe(1);
    meta.truncate(1, 0);
    expect(meta.poolUsage('full').used).toBe(0);
    expect(checkInvariants(meta)).toEqual([]);
  });

  it('keeps blocks a fork shares, and the next append copies the shared partly filled block', () => {
    const meta = metadata();
    meta.addSequence(1);
    meta.planAppend(1, 8);
    meta.fork(1, 2);
    const used = meta.poolUsage('full').used;
    meta.truncate(2, 6);
    expect(meta.poolUsage('full').used).toBe(used); // both blocks still held by sequence 1
    expect(counts(meta, 1)).toEqual([8, 8, 8, 8]);
    const plan = meta.planAppend(2, 1);
    expect(plan?.copies.length).toBe(HEADS);
    expect(checkInvariants(meta)).toEqual([]);
  });

  it('refuses a length outside [0, sequenceLength] with the state unchanged', () => {
    const meta = metadata();
    meta.addSequence(1);
    meta.planAppend(1, 3);
    expect(() => meta.truncate(1, 4)).toThrow(InvalidArgumentError);
    expect(() => meta.truncate(1, -1)).toThrow(InvalidArgumentError);
    expect(meta.sequenceLength(1)).toBe(3);
  });

  it('after an evicting compaction, truncates only tokens appended since (TruncateCompressedError below)', () => {
    const meta = metadata();
    meta.addSequence(1);
    meta.planAppend(1, 12);
    // Evict to 4 tokens in head (0, 0): one fresh block.
    const [block] = meta.allocateBlocksOrThrow('full', 0, 1);
    meta.replaceHeadBlocks(1, 0, 0, [encodeBlockRef('full', block ?? 0)], 4);
    expect(meta.intactFrom(1, 0, 0)).toBe(12);
    expect(meta.intactFrom(1, 0, 1)).toBe(0);
    meta.planAppend(1, 3);
    expect(meta.minTruncateLength(1)).toBe(12);
    const before = meta.snapshot();
    let error: unknown;
    try {
      meta.truncate(1, 11);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(TruncateCompressedError);
    expect((error as TruncateCompressedError).minLength).toBe(12);
    expect(meta.snapshot()).toEqual(before);
    meta.truncate(1, 13);
    expect(counts(meta, 1)).toEqual([5, 13, 13, 13]);
    meta.truncate(1, 12);
    expect(counts(meta, 1)).toEqual([4, 12, 12, 12]);
    expect(checkInvariants(meta)).toEqual([]);
  });

  it('keeps quantized blocks full: cuts only at their boundaries', () => {
    const meta = metadata(true);
    meta.addSequence(1);
    meta.planAppend(1, 10);
    // Quantize the first two blocks of every head without evicting (positions stay known).
    for (let layer = 0; layer < shape.layers; layer++) {
      for (let head = 0; head < shape.kvHeads; head++) {
        const entries = meta.headBlocks(1, layer, head);
        const quant = meta.allocateBlocksOrThrow('quant', layer, 2).map((b) => encodeBlockRef('quant', b));
        meta.replaceHeadBlocks(1, layer, head, [...quant, ...entries.slice(2)], 10);
      }
    }
    expect(meta.minTruncateLength(1)).toBe(8);
    expect(() => meta.truncate(1, 7)).toThrow(TruncateCompressedError);
    meta.truncate(1, 8);
    expect(meta.headBlocks(1, 0, 0).map((e) => decodeBlockRef(e).pool)).toEqual(['quant', 'quant']);
    meta.truncate(1, 4);
    expect(meta.headBlocks(1, 0, 0).map((e) => decodeBlockRef(e).pool)).toEqual(['quant']);
    expect(checkInvariants(meta)).toEqual([]);
  });

  it('survives 2,000 random appends, forks, compactions, truncates and frees with every invariant intact', () => {
    const meta = metadata(true);
    const rand = mulberry32(7);
    const pick = (n: number) => Math.floor(rand() * n);
    const live: number[] = [];
    let nextId = 0;
    for (let op = 0; op < 2000; op++) {
      const choice = pick(10);
      const id = live[pick(live.length)];
      if (id === undefined || (choice === 0 && live.length < 4)) {
        meta.addSequence(nextId);
        live.push(nextId++);
      } else if (choice <= 3) {
        const n = 1 + pick(6);
        if (counts(meta, id).every((c) => c + n <= 60)) meta.planAppend(id, n);
      } else if (choice <= 6) {
        const min = meta.minTruncateLength(id);
        const length = min + pick(meta.sequenceLength(id) - min + 1);
        meta.truncate(id, length);
        expect(meta.sequenceLength(id)).toBe(length);
      } else if (choice === 7 && live.length < 4) {
        meta.fork(id, nextId);
        live.push(nextId++);
      } else if (choice === 8) {
        // Evict the oldest block of one head into a fresh copy of the rest (a compaction's shape).
        const layer = pick(shape.layers);
        const head = pick(shape.kvHeads);
        const count = meta.tokenCount(id, layer, head);
        const entries = meta.headBlocks(id, layer, head);
        const quant = entries.filter((e) => decodeBlockRef(e).pool === 'quant').length;
        if (count > 2 * shape.blockSize && quant === 0) {
          const fresh = meta.allocateBlocks('full', layer, entries.length - 1);
          if (fresh) meta.replaceHeadBlocks(id, layer, head, fresh.map((b) => encodeBlockRef('full', b)), count - shape.blockSize);
        }
      } else {
        meta.freeSequence(id);
        live.splice(live.indexOf(id), 1);
      }
      expect(checkInvariants(meta)).toEqual([]);
    }
  });
});
