import { InvalidArgumentError } from '../errors.js';
import { decodeBlock, encodeBlock } from '../format/block-codec.js';
import { f32Bits, pack2x16float } from '../format/f16.js';
import { type BlockLayout, type QuantFormat, decodeBlockRef } from '../format/layout.js';
import type { AppendPlan, BlockCopy, CacheMetadata, PoolName } from './cache-metadata.js';

/** Decoded mirror of one pool: K and V of every slot of every block, `[block][blockSize][headDim]`. */
interface PoolStore {
  words: Uint32Array;
  k: Float32Array;
  v: Float32Array;
}

/** One head's tokens in logical order: K, V `[tokens][headDim]` and original positions. */
export interface HeadContents {
  readonly keys: Float32Array;
  readonly values: Float32Array;
  readonly positions: Uint32Array;
}

/**
 * The paged cache's CPU storage: the same host metadata as the GPU storage, each layer's pools held as `Uint32Array`
 * word arrays laid out exactly like that layer's GPU buffers (block b at word b × wordsPerBlock), so byte accounting is
 * identical, plus a decoded f32 mirror of every block so reads cost no decoding. Every write goes through the
 * reference block codec. It knows nothing of attention or compression.
 *
 * @example
 * ```ts
 * const storage = new CpuKvStorage(new CacheMetadata(resolveCacheOptions(options).metadata));
 * const { keys, positions } = storage.readRow(storage.meta.rowOf(seq, 0, 0));
 * ```
 */
export class CpuKvStorage {
  /** Per pool, one store per layer (block ids are local to a layer). */
  readonly #pools: Record<PoolName, PoolStore[]>;

  constructor(readonly meta: CacheMetadata) {
    const stores = (): PoolStore[] => Array.from({ length: meta.shape.layers }, emptyStore);
    this.#pools = { full: stores(), quant: stores() };
    this.syncPools();
  }

  /** Tokens one (sequence, layer, KV head) may hold: the width of statistics and index rows. */
  get maxTokensPerHead(): number {
    return this.meta.maxBlocksPerHead * this.meta.shape.blockSize;
  }

  /** The words of one layer's pool, laid out as its GPU buffer (`numBlocks × wordsPerBlock`). A live view: do not write. */
  poolWords(pool: PoolName, layer: number): Uint32Array {
    return this.#store(pool, layer).words;
  }

  /** The layout of a pool's blocks (InvalidArgumentError for a quantized pool without a format). */
  layout(pool: PoolName): BlockLayout {
    const layout = pool === 'full' ? this.meta.fullLayout : this.meta.quantLayout;
    if (!layout) throw new InvalidArgumentError('pool', 'this cache has no quantized pool yet');
    return layout;
  }

  /** Grows one layer's pool by `blocks` blocks within the byte budget (LimitExceededError past it). */
  growPool(pool: PoolName, layer: number, blocks: number): void {
    this.meta.growPool(pool, layer, blocks);
    this.syncPools();
  }

  /** Gives the quantized pool a format while it holds no block (see `CacheMetadata.setQuantFormat`). */
  setQuantFormat(format: QuantFormat): void {
    this.meta.setQuantFormat(format);
    this.syncPools();
  }

  /** Resizes the pool arrays to the metadata's block counts (after a grow, a restore or a format change). */
  syncPools(): void {
    const { blockSize, headDim } = this.meta.shape;
    for (const [pool, layer] of (['full', 'quant'] as const).flatMap((p) => Array.from({ length: this.meta.shape.layers }, (_, l) => [p, l] as const))) {
      const layout = pool === 'full' ? this.meta.fullLayout : this.meta.quantLayout;
      const store = this.#store(pool, layer);
      const blocks = layout ? this.meta.pool(pool, layer).numBlocks : 0;
      const words = layout ? blocks * layout.wordsPerBlock : 0;
      if (store.words.length === words) continue;
      // Contents of free blocks never matter (a block is written before it is read), so copying the overlap is
      // right even when the quantized pool changed layout.
      const next = new Uint32Array(words);
      next.set(store.words.subarray(0, Math.min(words, store.words.length)));
      store.words = next;
      const values = blocks * blockSize * headDim;
      const k = new Float32Array(values);
      const v = new Float32Array(values);
      k.set(store.k.subarray(0, Math.min(values, store.k.length)));
      v.set(store.v.subarray(0, Math.min(values, store.v.length)));
      store.k = k;
      store.v = v;
    }
  }

  /** Runs whole-block copies (copy-on-write of shared partly filled blocks). */
  copyBlocks(copies: readonly BlockCopy[]): void {
    const { blockSize, headDim } = this.meta.shape;
    const span = blockSize * headDim;
    for (const copy of copies) {
      const wpb = this.layout(copy.pool).wordsPerBlock;
      const store = this.#store(copy.pool, copy.layer);
      store.words.copyWithin(copy.dst * wpb, copy.src * wpb, (copy.src + 1) * wpb);
      store.k.copyWithin(copy.dst * span, copy.src * span, (copy.src + 1) * span);
      store.v.copyWithin(copy.dst * span, copy.src * span, (copy.src + 1) * span);
    }
  }

  /** Writes a whole block of one layer's pool and refreshes its decoded mirror through the codec. */
  storeBlock(pool: PoolName, layer: number, block: number, k: Float32Array, v: Float32Array, positions: Uint32Array, n: number): void {
    const layout = this.layout(pool);
    const words = encodeBlock(layout, k, v, positions, n);
    this.#store(pool, layer).words.set(words.subarray(0, layout.wordsPerBlock), block * layout.wordsPerBlock);
    this.#refreshMirror(pool, layer, block, n);
  }

  /**
   * Writes a block's raw words as another cache (or engine) holds them, a restored snapshot, and refreshes the
   * first `n` slots of its decoded mirror through the codec.
   */
  writeBlockWords(pool: PoolName, layer: number, block: number, words: Uint32Array, n: number): void {
    const layout = this.layout(pool);
    this.#store(pool, layer).words.set(words.subarray(0, layout.wordsPerBlock), block * layout.wordsPerBlock);
    this.#refreshMirror(pool, layer, block, n);
  }

  /** Token `index` of a row of `layer` (its logical index) from the decoded mirror: K, V views and its position. */
  token(entries: ArrayLike<number>, index: number, layer: number): { k: Float32Array; v: Float32Array; position: number } {
    const { blockSize, headDim } = this.meta.shape;
    const { pool, block } = decodeBlockRef(entries[Math.floor(index / blockSize)] ?? 0);
    const store = this.#store(pool, layer);
    const layout = this.layout(pool);
    const at = (block * blockSize + (index % blockSize)) * headDim;
    return {
      k: store.k.subarray(at, at + headDim),
      v: store.v.subarray(at, at + headDim),
      position: store.words[block * layout.wordsPerBlock + layout.positionsOffset + (index % blockSize)] ?? 0,
    };
  }

  /** Writes token `t` of an append plan for one layer: K/V `[kvHeads][headDim]` at `offset`, and its position. */
  writeToken(plan: AppendPlan, layer: number, t: number, k: Float32Array, v: Float32Array, offset: number): void {
    const { kvHeads, headDim, blockSize } = this.meta.shape;
    const layout = this.meta.fullLayout;
    const words = this.#store('full', layer).words;
    for (let head = 0; head < kvHeads; head++) {
      const dest = plan.destSlots[(layer * plan.numTokens + t) * kvHeads + head] ?? 0;
      const block = Math.floor(dest / blockSize);
      const slot = dest % blockSize;
      const base = block * layout.wordsPerBlock;
      const src = offset + head * headDim;
      if (layout.format === 'f32') {
        for (let c = 0; c < headDim; c++) {
          words[base + layout.kOffset + slot * headDim + c] = f32Bits(k[src + c] ?? 0);
          words[base + layout.vOffset + slot * headDim + c] = f32Bits(v[src + c] ?? 0);
        }
      } else {
        for (let c = 0; c < headDim; c += 2) {
          words[base + layout.kOffset + (slot * headDim + c) / 2] = pack2x16float(k[src + c] ?? 0, k[src + c + 1] ?? 0);
          words[base + layout.vOffset + (slot * headDim + c) / 2] = pack2x16float(v[src + c] ?? 0, v[src + c + 1] ?? 0);
        }
      }
      words[base + layout.positionsOffset + slot] = plan.firstPosition + t;
      this.#refreshMirror('full', layer, block, slot + 1);
    }
  }

  /** K, V and positions of one row in logical order, from the decoded mirror (the codec's output). */
  readRow(row: number): HeadContents {
    const { headDim, blockSize } = this.meta.shape;
    const tables = this.meta.tables;
    const entries = tables.entryView(row);
    const n = tables.tokenCount(row);
    const layer = this.meta.layerOfRow(row);
    const keys = new Float32Array(n * headDim);
    const values = new Float32Array(n * headDim);
    const positions = new Uint32Array(n);
    for (let b = 0; b < entries.length; b++) {
      const { pool, block } = decodeBlockRef(entries[b] ?? 0);
      const store = this.#store(pool, layer);
      const layout = this.layout(pool);
      const count = Math.min(blockSize, n - b * blockSize);
      const at = block * blockSize * headDim;
      keys.set(store.k.subarray(at, at + count * headDim), b * blockSize * headDim);
      values.set(store.v.subarray(at, at + count * headDim), b * blockSize * headDim);
      const p = block * layout.wordsPerBlock + layout.positionsOffset;
      positions.set(store.words.subarray(p, p + count), b * blockSize);
    }
    return { keys, values, positions };
  }

  #store(pool: PoolName, layer: number): PoolStore {
    const store = this.#pools[pool][layer];
    if (store === undefined) throw new InvalidArgumentError('layer', `${layer} is not a layer of this cache (0..${this.meta.shape.layers - 1})`);
    return store;
  }

  #refreshMirror(pool: PoolName, layer: number, block: number, n: number): void {
    const layout = this.layout(pool);
    const { blockSize, headDim } = this.meta.shape;
    const store = this.#store(pool, layer);
    const decoded = decodeBlock(layout, store.words.subarray(block * layout.wordsPerBlock), n);
    const at = block * blockSize * headDim;
    store.k.fill(0, at, at + blockSize * headDim);
    store.v.fill(0, at, at + blockSize * headDim);
    store.k.set(decoded.k, at);
    store.v.set(decoded.v, at);
  }
}

function emptyStore(): PoolStore {
  return { words: new Uint32Array(0), k: new Float32Array(0), v: new Float32Array(0) };
}
