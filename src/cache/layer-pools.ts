import { InvalidArgumentError, LimitExceededError } from '../errors.js';
import { bytesPerBlock, type BlockLayout } from '../format/layout.js';
import { BlockAllocator, type BlockAllocatorSnapshot } from './block-allocator.js';
import type { PoolName, PoolUsage } from './metadata-types.js';

/** An exact copy of a {@link LayerPools}' allocators, one snapshot per layer and pool. */
export interface LayerPoolsSnapshot {
  readonly full: readonly BlockAllocatorSnapshot[];
  readonly quant: readonly BlockAllocatorSnapshot[];
}

/**
 * The block pools of a paged cache, one full and one quantized pool PER LAYER: a layer's blocks live in that
 * layer's own buffers, so no single binding has to hold every layer (64K tokens × 32 layers of f16 pass the 1 GiB
 * a binding may hold on many adapters; one layer does not). Block ids are local to their layer's pool, and block 0
 * of every pool is its null block. One byte budget covers every pool of every layer; `maxPoolBytes` caps one
 * layer's pool (the per-binding limit of the device).
 *
 * @example
 * ```ts
 * const pools = new LayerPools(2, full, null, 1 << 20);
 * pools.reset('full', 16);              // 16 usable blocks in each layer's full pool
 * pools.pool('full', 1).allocate();     // block 1 of layer 1
 * pools.grow('full', 0, 8);             // layer 0 only
 * pools.usage('full').numBlocks;        // 17 + 25, summed over the layers
 * ```
 */
export class LayerPools {
  readonly #pools: Record<PoolName, BlockAllocator[]>;
  #quantLayout: BlockLayout | null;
  /** Bytes one layer's pool buffer may hold (the per-binding limit); Infinity unless capped. */
  #maxPoolBytes = Number.POSITIVE_INFINITY;

  constructor(
    readonly layers: number,
    readonly fullLayout: BlockLayout,
    quantLayout: BlockLayout | null,
    readonly maxBytes: number,
  ) {
    this.#quantLayout = quantLayout;
    this.#pools = { full: fresh(layers, 'full', 1), quant: fresh(layers, 'quant', 1) };
  }

  /** Layout of the quantized pools (null without a quantized format). */
  get quantLayout(): BlockLayout | null {
    return this.#quantLayout;
  }

  /** Bytes one layer's pool may hold (Infinity unless {@link capPoolBytes} lowered it). */
  get maxPoolBytes(): number {
    return this.#maxPoolBytes;
  }

  /**
   * Lowers the bytes one layer's pool may hold: a GPU storage passes its device's binding and buffer limits.
   * LimitExceededError when a pool already holds more.
   */
  capPoolBytes(bytes: number): void {
    if (!(bytes > 0)) throw new InvalidArgumentError('maxPoolBytes', `must be positive; got ${bytes}`);
    for (const pool of ['full', 'quant'] as const) {
      for (let layer = 0; layer < this.layers; layer++) {
        const have = this.layerBytes(pool, layer);
        if (have > bytes) {
          throw new LimitExceededError('bytes of one layer’s pool (the per-binding limit)', have, bytes, `start the ${pool} pool with fewer blocks per layer`);
        }
      }
    }
    this.#maxPoolBytes = Math.min(this.#maxPoolBytes, bytes);
  }

  /** The allocator of one layer's pool. */
  pool(pool: PoolName, layer: number): BlockAllocator {
    const allocator = this.#pools[pool][layer];
    if (allocator === undefined) throw new InvalidArgumentError('layer', `${layer} is not a layer of this cache (0..${this.layers - 1})`);
    return allocator;
  }

  /** Bytes of one block of a pool (0 for a quantized pool without a format). */
  bytesPerBlock(pool: PoolName): number {
    if (pool === 'full') return bytesPerBlock(this.fullLayout);
    return this.#quantLayout ? bytesPerBlock(this.#quantLayout) : 0;
  }

  /** Bytes of one layer's pool now (its buffer size), null block included. */
  layerBytes(pool: PoolName, layer: number): number {
    return this.pool(pool, layer).numBlocks * this.bytesPerBlock(pool);
  }

  /** Bytes of every pool of every layer now, null blocks included. */
  get bytesAllocated(): number {
    let bytes = 0;
    for (const pool of ['full', 'quant'] as const) for (const a of this.#pools[pool]) bytes += a.numBlocks * this.bytesPerBlock(pool);
    return bytes;
  }

  /** Usage of one layer's pool, or of the pool summed over every layer when `layer` is omitted. */
  usage(pool: PoolName, layer?: number): PoolUsage {
    const allocators = layer === undefined ? this.#pools[pool] : [this.pool(pool, layer)];
    const per = this.bytesPerBlock(pool);
    let numBlocks = 0;
    let used = 0;
    let free = 0;
    for (const a of allocators) {
      numBlocks += a.numBlocks;
      used += a.numUsed;
      free += a.numFree;
    }
    return { pool, numBlocks, used, free, bytesPerBlock: per, bytes: numBlocks * per };
  }

  /**
   * Blocks one layer's pool may still grow by: within the byte budget (less `keepBytes`) and the per-pool cap.
   * Without a layer, the budget's share alone (the same for every layer).
   */
  growableBlocks(pool: PoolName, layer?: number, keepBytes = 0): number {
    const per = this.bytesPerBlock(pool);
    if (per === 0) return 0;
    const budget = Math.max(0, Math.floor((this.maxBytes - keepBytes - this.bytesAllocated) / per));
    if (layer === undefined) return budget;
    const cap = Math.floor(this.#maxPoolBytes / per) - this.pool(pool, layer).numBlocks;
    return Math.max(0, Math.min(budget, cap));
  }

  /**
   * Adds blocks to one layer's pool. LimitExceededError naming the byte budget or the per-pool cap when it would
   * pass either. Returns that pool's new block count (null block included).
   */
  grow(pool: PoolName, layer: number, additional: number): number {
    if (!Number.isSafeInteger(additional) || additional < 0) {
      throw new InvalidArgumentError('additionalBlocks', `must be a non-negative integer; got ${additional}`);
    }
    const allocator = this.pool(pool, layer);
    const per = this.bytesPerBlock(pool);
    const after = this.bytesAllocated + additional * per;
    if (after > this.maxBytes) {
      throw new LimitExceededError(
        'KV cache byte budget (maxBytes)',
        after,
        this.maxBytes,
        `growing the ${pool} pool of layer ${layer} by ${additional} blocks; at most ${this.growableBlocks(pool)} more fit — compress or free sequences instead`,
      );
    }
    const layerAfter = (allocator.numBlocks + additional) * per;
    if (layerAfter > this.#maxPoolBytes) {
      throw new LimitExceededError('bytes of one layer’s pool (the per-binding limit)', layerAfter, this.#maxPoolBytes, 'compress or free sequences, or use a smaller maxTokensPerHead');
    }
    allocator.grow(allocator.numBlocks + additional);
    return allocator.numBlocks;
  }

  /** Restarts every layer's pool with `usableBlocks` free blocks (after a format change, or at construction). */
  reset(pool: PoolName, usableBlocks: number, quantLayout?: BlockLayout | null): void {
    if (pool === 'quant' && quantLayout !== undefined) this.#quantLayout = quantLayout;
    this.#pools[pool] = fresh(this.layers, pool, usableBlocks + 1);
  }

  /** Copies every allocator's state. */
  snapshot(): LayerPoolsSnapshot {
    return { full: this.#pools.full.map((a) => a.snapshot()), quant: this.#pools.quant.map((a) => a.snapshot()) };
  }

  /** Puts back a {@link snapshot} exactly (a grow after it is undone too). */
  restore(s: LayerPoolsSnapshot): void {
    for (const pool of ['full', 'quant'] as const) {
      s[pool].forEach((saved, layer) => this.pool(pool, layer).restore(saved));
    }
  }
}

function fresh(layers: number, pool: PoolName, numBlocks: number): BlockAllocator[] {
  return Array.from({ length: layers }, () => new BlockAllocator(numBlocks, pool));
}
