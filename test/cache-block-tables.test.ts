import { describe, expect, it } from 'vitest';
import { InvalidArgumentError, LimitExceededError } from '../src/errors.js';
import { BlockTables } from '../src/cache/block-tables.js';
import { encodeBlockRef } from '../src/format/layout.js';

const shape = { layers: 2, seqSlots: 3, kvHeads: 2, maxBlocksPerHead: 4 };

describe('BlockTables', () => {
  it('maps (slot, layer, head) to the GPU row order', () => {
    const t = new BlockTables(shape);
    expect(t.numRows).toBe(12);
    expect(t.row(0, 0, 0)).toBe(0);
    expect(t.row(0, 0, 1)).toBe(1);
    expect(t.row(1, 0, 0)).toBe(2);
    expect(t.row(2, 1, 1)).toBe((1 * 3 + 2) * 2 + 1);
    expect(() => t.row(3, 0, 0)).toThrow(InvalidArgumentError);
    expect(() => t.row(0, 2, 0)).toThrow(InvalidArgumentError);
    expect(() => t.row(0, 0, -1)).toThrow(InvalidArgumentError);
    expect(() => t.row(Number.NaN, 0, 0)).toThrow(InvalidArgumentError);
  });

  it('stores entries zero-padded and token counts as context lengths', () => {
    const t = new BlockTables(shape);
    const row = t.row(1, 1, 0);
    t.setRow(row, [encodeBlockRef('quant', 2), encodeBlockRef('full', 5)], 20);
    expect(t.entries(row)).toEqual([0x8000_0002, 5]);
    expect(Array.from(t.rowWords(row))).toEqual([0x8000_0002, 5, 0, 0]);
    expect(t.tokenCount(row)).toBe(20);
    expect(t.contextLen(row)).toBe(20);
    t.pushEntry(row, 9);
    t.setEntry(row, 1, 6);
    t.setTokenCount(row, 33);
    expect(t.entries(row)).toEqual([0x8000_0002, 6, 9]);
    const { tableWords, contextLens } = t.flatten();
    expect(tableWords.length).toBe(12 * 4);
    expect(Array.from(tableWords.subarray(row * 4, row * 4 + 4))).toEqual([0x8000_0002, 6, 9, 0]);
    expect(contextLens[row]).toBe(33);
    t.clearRow(row);
    expect(Array.from(t.rowWords(row))).toEqual([0, 0, 0, 0]);
    expect(t.tokenCount(row)).toBe(0);
  });

  it('rejects rows past maxBlocksPerHead and bad words', () => {
    const t = new BlockTables(shape);
    expect(() => t.setRow(0, [1, 2, 3, 4, 5], 70)).toThrow(LimitExceededError);
    t.setRow(0, [1, 2, 3, 4], 64);
    expect(() => t.pushEntry(0, 5)).toThrow(LimitExceededError);
    expect(() => t.setRow(0, [-1], 1)).toThrow(InvalidArgumentError);
    expect(() => t.setRow(0, [1], Number.NaN)).toThrow(InvalidArgumentError);
    expect(() => t.setTokenCount(0, -3)).toThrow(InvalidArgumentError);
    expect(() => t.setEntry(0, 4, 1)).toThrow(InvalidArgumentError);
    expect(t.entries(0)).toEqual([1, 2, 3, 4]);
    expect(() => new BlockTables({ ...shape, maxBlocksPerHead: 0 })).toThrow(InvalidArgumentError);
  });

  it('tracks dirty rows and merges them into ranges', () => {
    const t = new BlockTables(shape);
    expect(t.takeDirtyRows()).toEqual([]);
    t.setRow(5, [1], 1);
    t.setRow(3, [2], 1);
    t.setTokenCount(4, 0);
    t.pushEntry(9, 7);
    t.setRow(5, [1], 2);
    expect(t.dirtyRows()).toEqual([3, 4, 5, 9]);
    expect(t.takeDirtyRanges()).toEqual([
      { firstRow: 3, rowCount: 3 },
      { firstRow: 9, rowCount: 1 },
    ]);
    expect(t.takeDirtyRows()).toEqual([]);
    t.markAllDirty();
    expect(t.takeDirtyRows().length).toBe(12);
  });

  it('writeDirty copies only dirty rows into caller arrays', () => {
    const t = new BlockTables(shape);
    const words = new Uint32Array(48).fill(0xdead);
    const lens = new Uint32Array(12).fill(0xdead);
    t.setRow(2, [4, 8], 17);
    expect(t.writeDirty(words, lens)).toEqual([{ row: 2 }]);
    expect(Array.from(words.subarray(8, 12))).toEqual([4, 8, 0, 0]);
    expect(lens[2]).toBe(17);
    expect(words[0]).toBe(0xdead);
    expect(() => t.writeDirty(new Uint32Array(3), lens)).toThrow(InvalidArgumentError);
  });

  it('restore puts contents back and marks exactly the changed rows dirty', () => {
    const t = new BlockTables(shape);
    t.setRow(1, [3], 4);
    t.takeDirtyRows();
    const saved = t.snapshot();
    t.setRow(1, [3, 4], 20);
    t.setRow(7, [9], 1);
    t.takeDirtyRows(); // uploaded the mutated state
    t.restore(saved);
    expect(t.entries(1)).toEqual([3]);
    expect(t.tokenCount(1)).toBe(4);
    expect(t.entries(7)).toEqual([]);
    expect(t.takeDirtyRows()).toEqual([1, 7]);
    expect(t.snapshot()).toEqual(saved);
  });
});
