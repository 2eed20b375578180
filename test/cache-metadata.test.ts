import { utilisationReport } from '../src/cache/memory-report.js';
import { describe, expect, it } from 'vitest';
import {
  InvalidArgumentError,
  LimitExceededError,
  OutOfBlocksError,
  UnknownSequenceError,
} from '../src/errors.js';
import { CacheMetadata, type CacheMetadataOptions } from '../src/cache/cache-metadata.js';
import { assertInvariants, checkInvariants } from '../src/cache/invariants.js';
import { blockLayout, bytesPerBlock, encodeBlockRef } from '../src/format/layout.js';

const shape = { layers: 2, kvHeads: 2, headDim: 8, blockSize: 4 };
const FULL_BYTES = bytesPerBlock(blockLayout('f32', shape));
const QUANT_BYTES = bytesPerBlock(blockLayout('int4', shape));

function make(over: Partial<CacheMetadataOptions> = {}): CacheMetadata {
  return new CacheMetadata({
    shape,
    fullFormat: 'f32',
    quantFormat: 'int4',
    // Per layer (each layer has its own pools): 16 full and 8 quantized blocks in all.
    initialFullBlocks: 8,
    initialQuantBlocks: 4,
    maxBytes: 1 << 20,
    seqSlots: 3,
    maxBlocksPerHead: 6,
    ...over,
  });
}

const q = (b: number): number => encodeBlockRef('quant', b);

describe('CacheMetadata sequences', () => {
  it('adds, looks up and frees sequences, with typed errors', () => {
    const meta = make();
    expect(meta.addSequence(10)).toBe(0);
    expect(meta.addSequence(11)).toBe(1);
    expect(() => meta.addSequence(10)).toThrow(InvalidArgumentError);
    expect(() => meta.addSequence(-1)).toThrow(InvalidArgumentError);
    expect(() => meta.addSequence(1.5)).toThrow(InvalidArgumentError);
    expect(() => meta.addSequence(Number.NaN)).toThrow(InvalidArgumentError);
    expect(meta.addSequence(12)).toBe(2);
    expect(() => meta.addSequence(13)).toThrow(LimitExceededError);
    meta.freeSequence(11);
    expect(meta.addSequence(13)).toBe(1);
    expect(() => meta.freeSequence(99)).toThrow(UnknownSequenceError);
    expect(() => meta.planAppend(99, 1)).toThrow(UnknownSequenceError);
    expect(() => meta.headBlocks(99, 0, 0)).toThrow(UnknownSequenceError);
    expect(() => meta.tokenCount(99, 0, 0)).toThrow(UnknownSequenceError);
    expect(() => meta.fork(99, 5)).toThrow(UnknownSequenceError);
    expect(() => meta.replaceHeadBlocks(99, 0, 0, [], 0)).toThrow(UnknownSequenceError);
    expect(meta.sequenceIds()).toEqual([10, 12, 13]);
    assertInvariants(meta);
  });

  it('validates options and the byte budget', () => {
    expect(() => make({ initialFullBlocks: -1 })).toThrow(InvalidArgumentError);
    expect(() => make({ quantFormat: undefined })).toThrow(InvalidArgumentError); // quant blocks without a format
    expect(() => make({ maxBytes: 100 })).toThrow(LimitExceededError);
    expect(() => make({ shape: { ...shape, headDim: 7 } })).toThrow(InvalidArgumentError);
    expect(() => make({ seqSlots: 0 })).toThrow(InvalidArgumentError);
    const noQuant = make({ quantFormat: undefined, initialQuantBlocks: 0 });
    expect(noQuant.poolUsage('quant')).toMatchObject({ numBlocks: 2, bytes: 0 }); // a null block per layer
    expect(() => noQuant.growPool('quant', 0, 1)).toThrow(InvalidArgumentError);
  });
});

describe('CacheMetadata.planAppend', () => {
  it('prefill allocates ceil(n / blockSize) blocks per head and lists destination slots', () => {
    const meta = make();
    meta.addSequence(1);
    const plan = meta.planAppend(1, 6)!;
    expect(plan.firstPosition).toBe(0);
    expect(plan.copies).toEqual([]);
    expect(plan.allocated.map((blocks) => blocks.length)).toEqual([2 * 2, 2 * 2]); // per layer
    expect(plan.destSlots.length).toBe(2 * 6 * 2);
    for (let layer = 0; layer < 2; layer++) {
      for (let head = 0; head < 2; head++) {
        const blocks = meta.headBlocks(1, layer, head);
        expect(blocks.length).toBe(2);
        expect(meta.tokenCount(1, layer, head)).toBe(6);
        const h = plan.heads[layer * 2 + head]!;
        expect(h).toMatchObject({ layer, head, tokensBefore: 0, tokensAfter: 6, copy: null });
        expect(h.newBlocks).toEqual(blocks);
        for (let t = 0; t < 6; t++) {
          const s = plan.destSlots[(layer * 6 + t) * 2 + head]!;
          expect(s).toBe(blocks[Math.floor(t / 4)]! * 4 + (t % 4));
        }
      }
    }
    expect(meta.tables.takeDirtyRows()).toEqual([...plan.rows].sort((a, b) => a - b));
    // Decode fills the partial block first, then opens a new one.
    const d1 = meta.planAppend(1, 1)!;
    expect(d1.allocated).toEqual([[], []]);
    expect(d1.firstPosition).toBe(6);
    meta.planAppend(1, 1);
    const d3 = meta.planAppend(1, 1)!;
    expect(d3.allocated.flat().length).toBe(4);
    expect(meta.tokenCount(1, 1, 1)).toBe(9);
    expect(meta.sequenceLength(1)).toBe(9);
    assertInvariants(meta);
  });

  it('returns null and changes nothing when the pool runs short; throws past maxBlocksPerHead', () => {
    const meta = make({ initialFullBlocks: 3 });
    meta.addSequence(1);
    const before = meta.snapshot();
    expect(meta.planAppend(1, 5)).toBeNull(); // needs 4 blocks in each layer, 3 free in each
    expect(meta.snapshot()).toEqual(before);
    expect(meta.tables.takeDirtyRows()).toEqual([]);
    expect(meta.planAppend(1, 4)).not.toBeNull(); // 2 blocks per layer
    expect(() => meta.planAppend(1, 0)).toThrow(InvalidArgumentError);
    expect(() => meta.planAppend(1, -2)).toThrow(InvalidArgumentError);
    expect(() => meta.planAppend(1, Number.NaN)).toThrow(InvalidArgumentError);
    const big = make({ initialFullBlocks: 100 });
    big.addSequence(1);
    const s = big.snapshot();
    expect(() => big.planAppend(1, 25)).toThrow(LimitExceededError); // 7 blocks > 6
    expect(big.snapshot()).toEqual(s);
    assertInvariants(meta);
  });

  it('copy-on-write: a shared partly filled last block is copied, a full one is not', () => {
    const meta = make();
    meta.addSequence(1);
    meta.planAppend(1, 6);
    meta.fork(1, 2);
    expect(meta.headBlocks(2, 0, 0)).toEqual(meta.headBlocks(1, 0, 0));
    expect(meta.sequenceLength(2)).toBe(6);
    const shared = meta.headBlocks(1, 0, 0);
    expect(meta.pool('full', 0).refCount(shared[1]!)).toBe(2);
    assertInvariants(meta);

    const plan = meta.planAppend(2, 1)!;
    expect(plan.copies.length).toBe(4);
    const c = plan.heads[0]!.copy!;
    expect(c).toEqual({ pool: 'full', layer: 0, src: shared[1], dst: plan.heads[0]!.newBlocks[0] });
    expect(meta.headBlocks(2, 0, 0)).toEqual([shared[0], c.dst]);
    expect(meta.headBlocks(1, 0, 0)).toEqual(shared);
    expect(meta.pool('full', 0).refCount(shared[1]!)).toBe(1);
    expect(meta.pool('full', 0).refCount(shared[0]!)).toBe(2);
    expect(plan.destSlots[0]).toBe(c.dst * 4 + 2);
    // The source still owns its partial block alone now: no copy.
    expect(meta.planAppend(1, 1)!.copies).toEqual([]);
    assertInvariants(meta);

    // Shared full blocks need no copy.
    meta.addSequence(3);
    meta.planAppend(3, 4);
    meta.freeSequence(2);
    meta.fork(3, 4);
    const p4 = meta.planAppend(4, 2)!;
    expect(p4.copies).toEqual([]);
    expect(p4.allocated.flat().length).toBe(4);
    assertInvariants(meta);
  });

  it('COW needs one more block per head and is all-or-nothing too', () => {
    const meta = make({ initialFullBlocks: 5 });
    meta.addSequence(1);
    meta.planAppend(1, 6); // 4 blocks per layer, 1 free in each
    meta.fork(1, 2);
    const before = meta.snapshot();
    expect(meta.planAppend(2, 1)).toBeNull(); // needs 2 private copies per layer
    expect(meta.snapshot()).toEqual(before);
    assertInvariants(meta);
  });
});

describe('CacheMetadata.replaceHeadBlocks', () => {
  it('commits a quantization and returns old memory to the pool', () => {
    const meta = make();
    meta.addSequence(1);
    meta.planAppend(1, 10); // 3 blocks per head
    const freeFull = meta.pool('full', 0).numFree;
    const old = meta.headBlocks(1, 0, 1);
    const [qb1, qb2] = meta.allocateBlocks('quant', 0, 2)!;
    const [tail] = meta.allocateBlocks('full', 0, 1)!;
    meta.replaceHeadBlocks(1, 0, 1, [q(qb1!), q(qb2!), tail!], 10);
    expect(meta.headBlocks(1, 0, 1)).toEqual([q(qb1!), q(qb2!), tail]);
    for (const b of old) expect(meta.pool('full', 0).isFree(b)).toBe(true);
    expect(meta.pool('full', 0).numFree).toBe(freeFull - 1 + 3);
    assertInvariants(meta);
    // Appends go to the full tail block after quantized ones.
    const p = meta.planAppend(1, 1)!;
    expect(p.destSlots[0 * 2 + 1]).toBe(tail! * 4 + 2);
    assertInvariants(meta);
  });

  it('keeps blocks that stay and evicts to fewer tokens', () => {
    const meta = make();
    meta.addSequence(1);
    meta.planAppend(1, 12);
    const [a, b, c] = meta.headBlocks(1, 1, 0);
    meta.replaceHeadBlocks(1, 1, 0, [a!, b!], 7); // evicted a block's worth and compacted into a, b
    expect(meta.pool('full', 1).isFree(c!)).toBe(true); // layer 1's own pool
    expect(meta.pool('full', 1).refCount(a!)).toBe(1);
    expect(meta.tokenCount(1, 1, 0)).toBe(7);
    meta.replaceHeadBlocks(1, 1, 0, [], 0);
    expect(meta.pool('full', 1).isFree(a!)).toBe(true);
    assertInvariants(meta);
  });

  it('on a forked sequence only drops its own references', () => {
    const meta = make();
    meta.addSequence(1);
    meta.planAppend(1, 8);
    meta.fork(1, 2);
    const [a, b] = meta.headBlocks(1, 0, 0);
    meta.replaceHeadBlocks(2, 0, 0, [a!], 4);
    expect(meta.pool('full', 0).refCount(b!)).toBe(1);
    expect(meta.pool('full', 0).refCount(a!)).toBe(2);
    assertInvariants(meta);
  });

  it('rejects bad results and leaves the state exactly as before', () => {
    const meta = make();
    meta.addSequence(1);
    meta.planAppend(1, 8);
    const [a, b] = meta.headBlocks(1, 0, 0);
    const [fresh] = meta.allocateBlocks('full', 0, 1)!;
    const [qb] = meta.allocateBlocks('quant', 0, 1)!;
    const freeBlock = meta.pool('full', 0).freeQueue()[0]!;
    const before = meta.snapshot();
    const bad: Array<[number[], number]> = [
      [[0], 1], // null block
      [[freeBlock], 1], // free block
      [[999], 1], // out of range
      [[q(50)], 4], // out of range (quant)
      [[a!, a!], 8], // duplicate
      [[a!, q(qb!)], 8], // quant after full
      [[q(qb!)], 3], // partly filled quantized block
      [[a!, b!], 4], // too few tokens for 2 blocks
      [[a!], 5], // too many tokens
      [[], 1],
      [[a!], -1],
      [[a!], Number.NaN],
      [[a!], 2.5],
      [[a!, b!, fresh!, 5, 6, 7, 8], 28], // past maxBlocksPerHead
      [[a!, b!, fresh!], 9], // more tokens than ever appended
      [[-1], 1],
    ];
    for (const [entries, count] of bad) {
      expect(() => meta.replaceHeadBlocks(1, 0, 0, entries, count), JSON.stringify([entries, count])).toThrow();
      expect(meta.snapshot()).toEqual(before);
    }
    expect(() => meta.replaceHeadBlocks(1, 2, 0, [a!], 4)).toThrow(InvalidArgumentError);
    expect(() => meta.replaceHeadBlocks(1, 0, 2, [a!], 4)).toThrow(InvalidArgumentError);
    meta.releaseBlocks('full', 0, [fresh!]);
    meta.releaseBlocks('quant', 0, [qb!]);
    expect(() => meta.releaseBlocks('full', 0, [fresh!])).toThrow(InvalidArgumentError);
    expect(() => meta.releaseBlocks('full', 0, [a!, a!])).toThrow(InvalidArgumentError);
    assertInvariants(meta);
  });
});

describe('CacheMetadata budget, usage and transactions', () => {
  it('grows within maxBytes and names the budget when refusing', () => {
    // Two layers, each with 8 + 1 full and 4 + 1 quantized blocks, and room for 2 more full and 1 quantized.
    const maxBytes = 18 * FULL_BYTES + 10 * QUANT_BYTES + 2 * FULL_BYTES + QUANT_BYTES;
    const meta = make({ maxBytes });
    expect(meta.bytesAllocated).toBe(18 * FULL_BYTES + 10 * QUANT_BYTES);
    expect(meta.growableBlocks('full')).toBe(2);
    expect(meta.growPool('full', 0, 2)).toBe(11);
    expect(meta.poolUsage('full', 0)).toMatchObject({ numBlocks: 11, free: 10, used: 0, bytesPerBlock: FULL_BYTES });
    expect(meta.poolUsage('full', 1)).toMatchObject({ numBlocks: 9, free: 8 });
    expect(meta.poolUsage('full')).toMatchObject({ numBlocks: 20, free: 18, used: 0, bytesPerBlock: FULL_BYTES });
    expect(() => meta.growPool('full', 0, 1)).toThrow(LimitExceededError);
    expect(() => meta.growPool('full', 0, 1)).toThrow(/maxBytes/);
    expect(meta.growPool('quant', 1, 1)).toBe(6);
    expect(() => meta.growPool('quant', 0, 1)).toThrow(LimitExceededError);
    expect(meta.bytesAllocated).toBe(maxBytes);
    expect(() => meta.growPool('full', 0, -1)).toThrow(InvalidArgumentError);
    expect(() => meta.growPool('full', 0, Number.NaN)).toThrow(InvalidArgumentError);
    // A pool at zero usable blocks still works: appends just return null until it grows.
    const empty = make({ initialFullBlocks: 0 });
    empty.addSequence(1);
    expect(empty.planAppend(1, 1)).toBeNull();
    empty.growPool('full', 0, 2);
    expect(empty.planAppend(1, 1)).toBeNull(); // layer 1's pool is still empty: nothing taken from layer 0's
    expect(empty.poolUsage('full', 0).free).toBe(2);
    empty.growPool('full', 1, 2);
    expect(empty.planAppend(1, 1)).not.toBeNull();
    expect(() => empty.allocateBlocksOrThrow('full', 0, 1)).toThrow(OutOfBlocksError);
    assertInvariants(empty);
  });

  it('reports internal fragmentation, counting shared blocks once', () => {
    const meta = make();
    meta.addSequence(1);
    meta.planAppend(1, 6);
    const u = utilisationReport(meta);
    expect(u.full).toEqual({ blocks: 8, slotsAllocated: 32, slotsUsed: 24, waste: 0.25 });
    expect(u.quant).toEqual({ blocks: 0, slotsAllocated: 0, slotsUsed: 0, waste: 0 });
    expect(u.logicalTokens).toBe(24);
    meta.fork(1, 2);
    const v = utilisationReport(meta);
    expect(v.full.slotsUsed).toBe(24);
    expect(v.logicalTokens).toBe(48);
    // Copy-on-write: seq 1 gets private full blocks, seq 2 keeps the half-filled originals.
    meta.planAppend(1, 2);
    const w = utilisationReport(meta);
    expect(w.full).toMatchObject({ blocks: 12, slotsAllocated: 48, slotsUsed: 40 });
    expect(w.total.waste).toBeCloseTo(1 / 6, 12);
  });

  it('snapshot/restore undo a failed multi-step operation exactly', () => {
    const meta = make();
    meta.addSequence(1);
    meta.planAppend(1, 5);
    meta.tables.takeDirtyRows();
    const before = meta.snapshot();
    meta.fork(1, 2);
    meta.planAppend(2, 3);
    meta.addSequence(3);
    meta.freeSequence(1);
    meta.growPool('full', 0, 4);
    meta.tables.takeDirtyRows();
    meta.restore(before);
    expect(meta.snapshot()).toEqual(before);
    expect(meta.sequenceIds()).toEqual([1]);
    expect(() => meta.slotOf(2)).toThrow(UnknownSequenceError);
    expect(meta.tables.takeDirtyRows().length).toBeGreaterThan(0);
    expect(checkInvariants(meta)).toEqual([]);
    expect(meta.addSequence(2)).toBe(1);
  });

  it('checkInvariants notices corruption', () => {
    const meta = make();
    meta.addSequence(1);
    meta.planAppend(1, 5);
    meta.pool('full', 0).retain(meta.headBlocks(1, 0, 0)[0]!);
    expect(checkInvariants(meta).join('\n')).toMatch(/refcount 2 but 1 table references/);
    expect(() => assertInvariants(meta)).toThrow(/inconsistent/);
    const m2 = make();
    m2.addSequence(1);
    m2.planAppend(1, 5);
    m2.tables.setTokenCount(m2.rowOf(1, 1, 1), 9);
    expect(checkInvariants(m2).join('\n')).toMatch(/only the last may be partly filled/);
    const m3 = make();
    m3.addSequence(1);
    m3.planAppend(1, 4);
    const row = m3.rowOf(1, 0, 0);
    m3.tables.setRow(row, [q(1), ...m3.headBlocks(1, 0, 0)], 6);
    expect(checkInvariants(m3).length).toBeGreaterThan(0);
  });
});
