import { describe, expect, it } from 'vitest';
import { CacheMetadata } from '../src/cache/cache-metadata.js';
import { checkInvariants } from '../src/cache/invariants.js';
import { LayerPools } from '../src/cache/layer-pools.js';
import { memoryReport } from '../src/cache/memory-report.js';
import { planCompaction, abandonCompaction } from '../src/cache/compaction-plan.js';
import { planAppendWithGrowth } from '../src/cache/pool-growth.js';
import { exportRows, importRows } from '../src/cache/sequence-export.js';
import { InvalidArgumentError, LimitExceededError, OutOfBlocksError } from '../src/errors.js';
import { blockLayout, bytesPerBlock, decodeBlockRef } from '../src/format/layout.js';

// Pools per layer with no GPU: each layer's blocks come from its own allocator (ids local to the layer, block 0 the
// null block of every pool), one byte budget covers all layers, and a per-pool cap (the per-binding limit) stops
// one layer's pool without stopping the others.

const shape = { layers: 3, kvHeads: 2, headDim: 8, blockSize: 4 };
const FULL = bytesPerBlock(blockLayout('f32', shape));
const QUANT = bytesPerBlock(blockLayout('int4', shape));

function make(over: Partial<ConstructorParameters<typeof CacheMetadata>[0]> = {}): CacheMetadata {
  return new CacheMetadata({
    shape,
    fullFormat: 'f32',
    quantFormat: 'int4',
    initialFullBlocks: 4,
    initialQuantBlocks: 2,
    maxBytes: 1 << 20,
    seqSlots: 2,
    maxBlocksPerHead: 8,
    ...over,
  });
}

describe('LayerPools', () => {
  it('keeps one allocator per layer and pool, sums usage and bytes, grows one layer at a time', () => {
    const pools = new LayerPools(3, blockLayout('f32', shape), blockLayout('int4', shape), 1 << 20);
    pools.reset('full', 4);
    pools.reset('quant', 2);
    expect(pools.pool('full', 0)).not.toBe(pools.pool('full', 1));
    expect(pools.pool('full', 2).allocate()).toBe(1); // ids are local: every layer starts at block 1
    expect(pools.pool('full', 0).allocate()).toBe(1);
    expect(pools.usage('full')).toMatchObject({ numBlocks: 15, used: 2, free: 10, bytes: 15 * FULL });
    expect(pools.usage('full', 2)).toMatchObject({ numBlocks: 5, used: 1, free: 3 });
    expect(pools.bytesAllocated).toBe(15 * FULL + 9 * QUANT);
    expect(pools.grow('full', 1, 3)).toBe(8);
    expect(pools.usage('full', 1).numBlocks).toBe(8);
    expect(pools.usage('full', 0).numBlocks).toBe(5);
    expect(() => pools.pool('full', 3)).toThrow(InvalidArgumentError);
    const saved = pools.snapshot();
    pools.grow('quant', 2, 5);
    pools.pool('full', 1).allocate();
    pools.restore(saved);
    expect(pools.snapshot()).toEqual(saved);
  });

  it('caps one layer’s pool at maxPoolBytes (the per-binding limit) while the budget still covers them all', () => {
    const pools = new LayerPools(2, blockLayout('f32', shape), null, 100 * FULL);
    pools.reset('full', 3);
    pools.capPoolBytes(6 * FULL); // each layer's buffer may hold 6 blocks; 12 in all is still within the budget
    expect(pools.growableBlocks('full', 0)).toBe(2);
    expect(pools.growableBlocks('full')).toBe(92);
    pools.grow('full', 0, 2);
    expect(() => pools.grow('full', 0, 1)).toThrow(LimitExceededError);
    expect(() => pools.grow('full', 0, 1)).toThrow(/per-binding/);
    pools.grow('full', 1, 2); // the other layer still grows
    expect(pools.usage('full').numBlocks).toBe(12);
    expect(() => pools.capPoolBytes(5 * FULL)).toThrow(LimitExceededError); // already past it
  });
});

describe('CacheMetadata with pools per layer', () => {
  it('an append takes blocks from each layer’s own pool, and is all or nothing across layers', () => {
    const meta = make();
    meta.addSequence(1);
    const plan = meta.planAppend(1, 5)!; // 2 blocks per head, 4 per layer
    expect(plan.allocated).toEqual([[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]]);
    for (let layer = 0; layer < 3; layer++) expect(meta.headBlocks(1, layer, 1)).toEqual([3, 4]);
    // Layer 1 alone grows: an append that needs more in every layer still fails with nothing taken.
    meta.growPool('full', 1, 4);
    const before = meta.snapshot();
    expect(meta.planAppend(1, 4)).toBeNull();
    expect(meta.snapshot()).toEqual(before);
    expect(checkInvariants(meta)).toEqual([]);
  });

  it('forks share, copy-on-write copies within the layer, and freeing returns each layer its blocks', () => {
    const meta = make({ initialFullBlocks: 8 });
    meta.addSequence(1);
    meta.planAppend(1, 6);
    meta.fork(1, 2);
    for (let layer = 0; layer < 3; layer++) expect(meta.pool('full', layer).refCount(meta.headBlocks(1, layer, 0)[1]!)).toBe(2);
    const plan = meta.planAppend(2, 1)!;
    expect(plan.copies.map((c) => c.layer)).toEqual([0, 0, 1, 1, 2, 2]);
    for (const copy of plan.copies) expect(meta.pool('full', copy.layer).refCount(copy.dst)).toBe(1);
    meta.freeSequence(1);
    meta.freeSequence(2);
    for (let layer = 0; layer < 3; layer++) expect(meta.poolUsage('full', layer).used).toBe(0);
    expect(checkInvariants(meta)).toEqual([]);
  });

  it('growth by the shared rule is per layer, within the one byte budget', () => {
    const meta = make({ initialFullBlocks: 1, maxBytes: 3 * (12 * FULL + 3 * QUANT) });
    meta.addSequence(1);
    const grown: Array<[string, number, number]> = [];
    planAppendWithGrowth(meta, 1, 16, (pool, layer, blocks) => {
      grown.push([pool, layer, blocks]);
      meta.growPool(pool, layer, blocks);
    });
    // 2 heads × 4 blocks per layer, 1 free: each layer grows by what it is short.
    expect(grown).toEqual([['full', 0, 7], ['full', 1, 7], ['full', 2, 7]]);
    expect(() => planAppendWithGrowth(meta, 1, 16, (pool, layer, blocks) => meta.growPool(pool, layer, blocks))).toThrow(OutOfBlocksError);
    expect(meta.sequenceLength(1)).toBe(16);
    expect(checkInvariants(meta)).toEqual([]);
    const report = memoryReport(meta);
    expect(report.poolBytes).toBe(meta.bytesAllocated);
    expect(report.full.used).toBe(3 * 8);
  });

  it('a compaction allocates in each head’s layer; abandoning it releases them all', () => {
    const meta = make({ initialFullBlocks: 12, initialQuantBlocks: 4 });
    meta.addSequence(1);
    meta.planAppend(1, 12);
    const before = meta.snapshot();
    const plan = planCompaction(meta, { seqId: 1, kept: [5, 5, 4, 4, 12, 12], quantize: true, residual: 4, indexStride: 32 });
    expect(plan.allocated.quant.map((b) => b.length)).toEqual([0, 0, 4]);
    expect(plan.allocated.full.map((b) => b.length)).toEqual([4, 2, 0]);
    abandonCompaction(meta, plan);
    expect(meta.poolUsage('full').used).toBe(before.full.reduce((n, s) => n + s.numBlocks - 1 - s.numFree, 0));
    expect(checkInvariants(meta)).toEqual([]);
  });

  it('a sequence exported and imported keeps each block in its own layer', () => {
    const meta = make({ initialFullBlocks: 8 });
    meta.addSequence(1);
    meta.planAppend(1, 6);
    const rows = exportRows(meta, 1);
    expect(rows.fullLayers).toEqual([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
    expect(rows.fullBlocks).toEqual([1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4]);
    const placed = importRows(meta, 2, rows.sequenceLength, rows.rows, rows.fullBlocks.length, 0, (pool, layer, blocks) => meta.growPool(pool, layer, blocks));
    expect(placed.fullLayers).toEqual(rows.fullLayers);
    for (let layer = 0; layer < 3; layer++) {
      const blocks = meta.headBlocks(2, layer, 0).map((e) => decodeBlockRef(e).block);
      expect(blocks).toEqual(placed.fullBlocks.slice(layer * 4, layer * 4 + 2));
    }
    expect(checkInvariants(meta)).toEqual([]);
  });
});
