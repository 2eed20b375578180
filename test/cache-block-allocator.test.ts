import { describe, expect, it } from 'vitest';
import { InvalidArgumentError, LimitExceededError } from '../src/errors.js';
import { BlockAllocator } from '../src/cache/block-allocator.js';

describe('BlockAllocator', () => {
  it('never hands out the null block and allocates in id order at first', () => {
    const pool = new BlockAllocator(4);
    expect(pool.numFree).toBe(3);
    expect(pool.numUsed).toBe(0);
    expect([pool.allocate(), pool.allocate(), pool.allocate()]).toEqual([1, 2, 3]);
    expect(pool.allocate()).toBeNull();
    expect(pool.numFree).toBe(0);
    expect(pool.numUsed).toBe(3);
    expect(pool.refCount(0)).toBe(0);
  });

  it('a pool of only the null block has nothing to give', () => {
    const pool = new BlockAllocator(1);
    expect(pool.allocate()).toBeNull();
    expect(pool.allocateMany(0)).toEqual([]);
    expect(pool.allocateMany(1)).toBeNull();
  });

  it('is LRU: freed blocks go to the tail, removal from the middle is O(1)', () => {
    const pool = new BlockAllocator(6);
    const [a, b, c] = pool.allocateMany(3)!;
    pool.release(b!);
    pool.release(a!);
    // Queue: 4, 5, b, a.
    expect(pool.freeQueue()).toEqual([4, 5, b, a]);
    expect(pool.freeQueueBackward()).toEqual([a, b, 5, 4]);
    expect(pool.allocateMany(4)).toEqual([4, 5, b, a]);
    pool.release(c!);
    expect(pool.freeQueue()).toEqual([c]);
  });

  it('counts references', () => {
    const pool = new BlockAllocator(3);
    const a = pool.allocate()!;
    pool.retain(a);
    pool.retain(a);
    expect(pool.refCount(a)).toBe(3);
    pool.release(a);
    pool.release(a);
    expect(pool.isFree(a)).toBe(false);
    pool.release(a);
    expect(pool.isFree(a)).toBe(true);
    expect(pool.numFree).toBe(2);
  });

  it('allocateMany is all or nothing', () => {
    const pool = new BlockAllocator(5);
    const before = pool.snapshot();
    expect(pool.allocateMany(5)).toBeNull();
    expect(pool.snapshot()).toEqual(before);
    expect(pool.allocateMany(4)).toEqual([1, 2, 3, 4]);
    expect(() => pool.allocateMany(-1)).toThrow(InvalidArgumentError);
    expect(() => pool.allocateMany(1.5)).toThrow(InvalidArgumentError);
    expect(() => pool.allocateMany(Number.NaN)).toThrow(InvalidArgumentError);
  });

  it('refuses to release or retain free, null or out-of-range blocks', () => {
    const pool = new BlockAllocator(3);
    const a = pool.allocate()!;
    pool.release(a);
    expect(() => pool.release(a)).toThrow(InvalidArgumentError);
    expect(() => pool.retain(a)).toThrow(InvalidArgumentError);
    expect(() => pool.release(0)).toThrow(/null block/);
    expect(() => pool.retain(0)).toThrow(/null block/);
    expect(() => pool.release(3)).toThrow(InvalidArgumentError);
    expect(() => pool.refCount(-1)).toThrow(InvalidArgumentError);
    expect(() => pool.refCount(Number.NaN)).toThrow(InvalidArgumentError);
    expect(pool.numFree).toBe(2);
  });

  it('grows explicitly, never shrinks, and respects the pool bit', () => {
    const pool = new BlockAllocator(2);
    expect(pool.allocate()).toBe(1);
    pool.grow(2);
    pool.grow(5);
    expect(pool.numBlocks).toBe(5);
    expect(pool.numFree).toBe(3);
    expect(pool.freeQueue()).toEqual([2, 3, 4]);
    for (let i = 0; i < 100; i++) pool.grow(pool.numBlocks + 1);
    expect(pool.numFree).toBe(103);
    expect(() => pool.grow(3)).toThrow(InvalidArgumentError);
    expect(() => pool.grow(0x8000_0001)).toThrow(LimitExceededError);
    expect(() => new BlockAllocator(0)).toThrow(InvalidArgumentError);
  });

  it('snapshot/restore roll back exactly, including a grow', () => {
    const pool = new BlockAllocator(5);
    const a = pool.allocate()!;
    pool.retain(a);
    const saved = pool.snapshot();
    const queueBefore = pool.freeQueue();
    pool.release(a);
    pool.allocateMany(3);
    pool.grow(40);
    pool.allocateMany(30);
    pool.restore(saved);
    expect(pool.numBlocks).toBe(5);
    expect(pool.refCount(a)).toBe(2);
    expect(pool.freeQueue()).toEqual(queueBefore);
    expect(pool.freeQueueBackward()).toEqual([...queueBefore].reverse());
    expect(pool.snapshot()).toEqual(saved);
    // The snapshot is a private copy: restoring twice works.
    pool.allocate();
    pool.restore(saved);
    expect(pool.snapshot()).toEqual(saved);
    // Growing after a restore to a smaller size starts from clean links.
    pool.grow(7);
    expect(pool.freeQueue()).toEqual([...queueBefore, 5, 6]);
  });
});
