import { InvalidArgumentError, LimitExceededError } from '../errors.js';
import { QUANT_POOL_BIT } from '../format/layout.js';

/**
 * An exact copy of a {@link BlockAllocator}'s state, taken with `snapshot()` and put back with `restore()`.
 * Treat it as opaque: its arrays are private copies, so later allocator calls never change it.
 *
 * @example
 * ```ts
 * const saved: BlockAllocatorSnapshot = pool.snapshot();
 * pool.allocate();
 * pool.restore(saved); // as if allocate() never ran
 * ```
 */
export interface BlockAllocatorSnapshot {
  readonly numBlocks: number;
  readonly refCounts: Uint32Array;
  readonly prev: Int32Array;
  readonly next: Int32Array;
  readonly head: number;
  readonly tail: number;
  readonly numFree: number;
}

/** Link value meaning "no neighbour" in the free queue. */
const NONE = -1;

/**
 * Reference-counted block allocator for ONE pool, modelled on vLLM v1's `BlockPool` +
 * `FreeKVCacheBlockQueue`. Block 0 is the null block: it is never handed out, never freed and never counted,
 * so a zeroed block-table word always means "no block".
 *
 * Free blocks sit in a doubly linked list over block ids (O(1) removal from anywhere, so a later prefix cache
 * can revive a free block in place). Allocation takes from the head and release appends to the tail, so the
 * blocks freed longest ago are reused first (LRU).
 *
 * @example
 * ```ts
 * const pool = new BlockAllocator(5); // blocks 1..4 usable
 * const a = pool.allocate();          // 1
 * pool.retain(a!);                    // shared by a fork: refcount 2
 * pool.release(a!);                   // refcount 1
 * pool.release(a!);                   // refcount 0: back to the free queue's tail
 * pool.allocateMany(5);               // null: only 4 usable blocks, nothing taken
 * ```
 */
export class BlockAllocator {
  #numBlocks: number;
  #refCounts: Uint32Array;
  #prev: Int32Array;
  #next: Int32Array;
  #head = NONE;
  #tail = NONE;
  #numFree = 0;

  /**
   * @param numBlocks total blocks of the pool INCLUDING the null block 0 (so 1 means "no usable block").
   * @param name used in error messages ("full", "quant").
   */
  constructor(
    numBlocks: number,
    readonly name = 'pool',
  ) {
    checkBlockCount('numBlocks', numBlocks, 1);
    this.#numBlocks = numBlocks;
    this.#refCounts = new Uint32Array(numBlocks);
    this.#prev = new Int32Array(numBlocks).fill(NONE);
    this.#next = new Int32Array(numBlocks).fill(NONE);
    for (let b = 1; b < numBlocks; b++) this.#pushTail(b);
  }

  /** Total blocks, the null block included (the GPU buffer holds this many). */
  get numBlocks(): number {
    return this.#numBlocks;
  }

  /** Blocks that can ever be handed out: `numBlocks − 1`. */
  get usableBlocks(): number {
    return this.#numBlocks - 1;
  }

  /** Blocks in the free queue. */
  get numFree(): number {
    return this.#numFree;
  }

  /** Blocks with a reference count above 0 (the null block is never counted). */
  get numUsed(): number {
    return this.#numBlocks - 1 - this.#numFree;
  }

  /** Reference count of `block` (0 for free blocks and the null block). Throws when out of range. */
  refCount(block: number): number {
    this.#checkIndex(block);
    return this.#refCounts[block] ?? 0;
  }

  /** True when `block` is in the free queue. */
  isFree(block: number): boolean {
    this.#checkIndex(block);
    return block !== 0 && this.#refCounts[block] === 0;
  }

  /**
   * Takes the least recently freed block, with reference count 1; null when no block is free.
   *
   * @example
   * ```ts
   * const b = pool.allocate();
   * if (b === null) throw new OutOfBlocksError('full', 1, 0);
   * ```
   */
  allocate(): number | null {
    const block = this.#head;
    if (block === NONE) return null;
    this.#unlink(block);
    this.#refCounts[block] = 1;
    return block;
  }

  /**
   * Takes `n` blocks, all or nothing: null (and nothing taken) when fewer than `n` are free.
   *
   * @example
   * ```ts
   * const blocks = pool.allocateMany(3); // [1, 2, 3] or null
   * ```
   */
  allocateMany(n: number): number[] | null {
    if (!Number.isSafeInteger(n) || n < 0) {
      throw new InvalidArgumentError('n', `must be a non-negative integer; got ${n}`);
    }
    if (n > this.#numFree) return null;
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const block = this.#head;
      this.#unlink(block);
      this.#refCounts[block] = 1;
      out.push(block);
    }
    return out;
  }

  /**
   * Adds a reference to an allocated block (a fork sharing it). Retaining a free block or the null block
   * throws: a free block's contents may already belong to someone else.
   */
  retain(block: number): void {
    this.#checkUsed(block, 'retain');
    this.#refCounts[block] = (this.#refCounts[block] ?? 0) + 1;
  }

  /**
   * Drops a reference; at 0 the block goes to the free queue's tail (reused last). Releasing a free block or
   * the null block throws, because it means some table counted a reference twice.
   */
  release(block: number): void {
    this.#checkUsed(block, 'release');
    const count = (this.#refCounts[block] ?? 0) - 1;
    this.#refCounts[block] = count;
    if (count === 0) this.#pushTail(block);
  }

  /**
   * Grows the pool to `newNumBlocks` blocks (null block included); the new blocks join the free queue's tail.
   * Shrinking is refused: a block may be referenced anywhere.
   *
   * @example
   * ```ts
   * pool.grow(pool.numBlocks + 64); // after growing the GPU buffer to match
   * ```
   */
  grow(newNumBlocks: number): void {
    checkBlockCount('newNumBlocks', newNumBlocks, this.#numBlocks);
    if (newNumBlocks === this.#numBlocks) return;
    if (newNumBlocks > this.#refCounts.length) {
      // Amortised doubling: repeated small grows stay O(total).
      const capacity = Math.min(QUANT_POOL_BIT, Math.max(newNumBlocks, this.#refCounts.length * 2));
      const refCounts = new Uint32Array(capacity);
      refCounts.set(this.#refCounts);
      const prev = new Int32Array(capacity).fill(NONE);
      prev.set(this.#prev);
      const next = new Int32Array(capacity).fill(NONE);
      next.set(this.#next);
      this.#refCounts = refCounts;
      this.#prev = prev;
      this.#next = next;
    }
    const old = this.#numBlocks;
    this.#numBlocks = newNumBlocks;
    for (let b = old; b < newNumBlocks; b++) this.#pushTail(b);
  }

  /** The free queue from head (next to be allocated) to tail. Stops after `numBlocks` steps if corrupt. */
  freeQueue(): number[] {
    const out: number[] = [];
    for (let b = this.#head; b !== NONE && out.length <= this.#numBlocks; b = this.#next[b] ?? NONE) out.push(b);
    return out;
  }

  /** The free queue walked backwards from the tail (for consistency checks of the back links). */
  freeQueueBackward(): number[] {
    const out: number[] = [];
    for (let b = this.#tail; b !== NONE && out.length <= this.#numBlocks; b = this.#prev[b] ?? NONE) out.push(b);
    return out;
  }

  /** Copies the whole state, for an exact rollback with {@link restore}. */
  snapshot(): BlockAllocatorSnapshot {
    const n = this.#numBlocks;
    return {
      numBlocks: n,
      refCounts: this.#refCounts.slice(0, n),
      prev: this.#prev.slice(0, n),
      next: this.#next.slice(0, n),
      head: this.#head,
      tail: this.#tail,
      numFree: this.#numFree,
    };
  }

  /**
   * Puts back a state from {@link snapshot}, including the block count (a grow after the snapshot is undone;
   * a GPU buffer grown meanwhile may simply stay larger). The snapshot stays usable for another restore.
   */
  restore(s: BlockAllocatorSnapshot): void {
    const n = s.numBlocks;
    this.#numBlocks = n;
    if (this.#refCounts.length < n) {
      this.#refCounts = new Uint32Array(n);
      this.#prev = new Int32Array(n);
      this.#next = new Int32Array(n);
    }
    this.#refCounts.fill(0);
    this.#prev.fill(NONE);
    this.#next.fill(NONE);
    this.#refCounts.set(s.refCounts);
    this.#prev.set(s.prev);
    this.#next.set(s.next);
    this.#head = s.head;
    this.#tail = s.tail;
    this.#numFree = s.numFree;
  }

  #pushTail(block: number): void {
    this.#prev[block] = this.#tail;
    this.#next[block] = NONE;
    if (this.#tail === NONE) this.#head = block;
    else this.#next[this.#tail] = block;
    this.#tail = block;
    this.#numFree++;
  }

  #unlink(block: number): void {
    const p = this.#prev[block] ?? NONE;
    const n = this.#next[block] ?? NONE;
    if (p === NONE) this.#head = n;
    else this.#next[p] = n;
    if (n === NONE) this.#tail = p;
    else this.#prev[n] = p;
    this.#prev[block] = NONE;
    this.#next[block] = NONE;
    this.#numFree--;
  }

  #checkIndex(block: number): void {
    if (!Number.isInteger(block) || block < 0 || block >= this.#numBlocks) {
      throw new InvalidArgumentError(
        'block',
        `${block} is not a block of the ${this.name} pool (0..${this.#numBlocks - 1})`,
      );
    }
  }

  #checkUsed(block: number, op: string): void {
    this.#checkIndex(block);
    if (block === 0) {
      throw new InvalidArgumentError('block', `cannot ${op} the null block 0 of the ${this.name} pool`);
    }
    if (this.#refCounts[block] === 0) {
      throw new InvalidArgumentError(
        'block',
        `cannot ${op} block ${block} of the ${this.name} pool: it is free (released twice, or never allocated)`,
      );
    }
  }
}

function checkBlockCount(field: string, value: number, minimum: number): void {
  if (!Number.isSafeInteger(value) || value < minimum) {
    throw new InvalidArgumentError(field, `must be an integer ≥ ${minimum}; got ${value}`);
  }
  // The top bit of a block-table word selects the pool, so a pool can never reach 2^31 blocks.
  if (value > QUANT_POOL_BIT) {
    throw new LimitExceededError('blocks per pool', value, QUANT_POOL_BIT, 'the top bit of a table entry is the pool bit');
  }
}
