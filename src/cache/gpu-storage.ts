import { CacheDestroyedError, InvalidArgumentError } from '../errors.js';
import { decodeBlock } from '../format/block-codec.js';
import { type BlockLayout, type QuantFormat, bytesPerBlock, decodeBlockRef } from '../format/layout.js';
import { createStorageBuffer, readBuffer } from '../gpu/buffers.js';
import type { GpuContext } from '../gpu/context.js';
import { CopyRangesKernel, type WordRange } from '../kernels/cache/copy-ranges.js';
import { KvAppendKernel } from '../kernels/cache/kv-append.js';
import type { PagedCacheBindings } from '../kernels/cache/paged-attention.js';
import type { BlockCopy, CacheMetadata, PoolName } from './cache-metadata.js';

/** One layer of an append: the new tokens' K/V (f32 [n][kvHeads][headDim]) and where each head's token goes. */
export interface AppendWrite {
  readonly layer: number;
  readonly numTokens: number;
  readonly keys: GPUBuffer;
  readonly values: GPUBuffer;
  /** u32 [layers][n][kvHeads] slot indices of the append plan. */
  readonly destSlots: GPUBuffer;
  /** u32 [n] original positions. */
  readonly positions: GPUBuffer;
  /** A compute pass the caller keeps open to record into (default: a pass of its own). */
  readonly pass?: GPUComputePassEncoder;
}

/**
 * The paged cache's GPU storage: per layer the two block pools (each layer's in its own buffers, so that no binding
 * holds more than one layer: src/cache/layer-pools.ts), the block table and context lengths mirrored from the host
 * metadata, growth within the byte budget, the K/V write path and host reads. It knows nothing of attention or
 * compression; the attention backend and the compression stages read and write through it.
 *
 * @example
 * ```ts
 * const storage = new GpuKvStorage(gpu, new CacheMetadata(resolveCacheOptions(options).metadata));
 * storage.meta.addSequence(1);
 * storage.uploadDirtyRows();
 * const { keys, values, positions } = await storage.readHead(1, 0, 0);
 * attention.encode(encoder, { cache: storage.bindings(layer), layer, ... }); // one layer's buffers
 * storage.destroy();
 * ```
 */
export class GpuKvStorage {
  readonly blockTable: GPUBuffer;
  readonly contextLens: GPUBuffer;
  /** Per layer, that layer's full pool. */
  private readonly fullPoolBuffers: GPUBuffer[];
  /** Per layer, that layer's quantized pool (a 4-byte placeholder without a format). */
  private quantPoolBuffers: GPUBuffer[];
  /** u32: set by the append kernel when a value is NaN, ±Inf or past the pool format's range. */
  private readonly flags: GPUBuffer;
  private readonly appendKernel: KvAppendKernel;
  private readonly copyRanges: CopyRangesKernel;
  private destroyed = false;

  constructor(
    readonly gpu: GpuContext,
    readonly meta: CacheMetadata,
  ) {
    const rows = meta.tables.numRows;
    // One layer's pool is one binding: growth stops at the device's limits instead of failing to create a buffer.
    const { maxStorageBufferBindingSize, maxBufferSize } = gpu.limits;
    meta.capPoolBytes(Math.min(maxStorageBufferBindingSize, maxBufferSize));
    this.fullPoolBuffers = Array.from({ length: meta.shape.layers }, (_, layer) =>
      createStorageBuffer(gpu, `kv:full-pool:${layer}`, meta.pool('full', layer).numBlocks * bytesPerBlock(meta.fullLayout)),
    );
    this.quantPoolBuffers = this.createQuantBuffers();
    this.blockTable = createStorageBuffer(gpu, 'kv:block-table', rows * meta.maxBlocksPerHead * 4);
    this.contextLens = createStorageBuffer(gpu, 'kv:context-lens', rows * 4);
    this.flags = createStorageBuffer(gpu, 'kv:flags', 4);
    this.appendKernel = new KvAppendKernel(gpu, { kvHeads: meta.shape.kvHeads, full: meta.fullLayout });
    this.copyRanges = new CopyRangesKernel(gpu);
  }

  /** Tokens one (sequence, layer, KV head) may hold: the width of statistics and index rows. */
  get maxTokensPerHead(): number {
    return this.meta.maxBlocksPerHead * this.meta.shape.blockSize;
  }

  /**
   * The buffers kernels read for one layer (that layer's pools; the block table is shared): they change when a
   * pool grows, so fetch them per encode. A kernel reads only the table rows of `layer` through them.
   */
  bindings(layer: number): PagedCacheBindings {
    return {
      blockTable: this.blockTable,
      contextLens: this.contextLens,
      fullPool: this.poolBuffer('full', layer),
      quantPool: this.poolBuffer('quant', layer),
      seqSlots: this.meta.seqSlots,
      maxBlocksPerHead: this.meta.maxBlocksPerHead,
    };
  }

  /** The GPU buffer of one layer's pool. */
  poolBuffer(pool: PoolName, layer: number): GPUBuffer {
    const buffer = (pool === 'full' ? this.fullPoolBuffers : this.quantPoolBuffers)[layer];
    if (buffer === undefined) throw new InvalidArgumentError('layer', `${layer} is not a layer of this cache (0..${this.meta.shape.layers - 1})`);
    return buffer;
  }

  /** The layout of a pool's blocks (InvalidArgumentError for a quantized pool without a format). */
  layout(pool: PoolName): BlockLayout {
    const layout = pool === 'full' ? this.meta.fullLayout : this.meta.quantLayout;
    if (!layout) throw new InvalidArgumentError('pool', 'this cache has no quantized pool yet');
    return layout;
  }

  /**
   * Grows one layer's pool by `blocks` blocks within the byte budget: a bigger GPU buffer, the old contents copied
   * over. Explicit and bounded (LimitExceededError past the budget or the per-binding limit).
   */
  growPool(pool: PoolName, layer: number, blocks: number): void {
    this.assertUsable();
    const layout = this.layout(pool);
    const oldBuffer = this.poolBuffer(pool, layer);
    const numBlocks = this.meta.growPool(pool, layer, blocks);
    const buffer = createStorageBuffer(this.gpu, `kv:${pool}-pool:${layer}`, numBlocks * bytesPerBlock(layout));
    const encoder = this.gpu.device.createCommandEncoder({ label: `kv:grow-${pool}` });
    encoder.copyBufferToBuffer(oldBuffer, 0, buffer, 0, Math.min(oldBuffer.size, buffer.size));
    this.gpu.submit([encoder.finish()]);
    (pool === 'full' ? this.fullPoolBuffers : this.quantPoolBuffers)[layer] = buffer;
    // destroy() waits for the copy: WebGPU keeps a destroyed buffer's pending reads valid until they finish
    oldBuffer.destroy();
  }

  /**
   * Gives the quantized pool a format while it holds no block (see `CacheMetadata.setQuantFormat`): a fresh
   * buffer of the new layout replaces the old one.
   */
  setQuantFormat(format: QuantFormat): void {
    if (this.meta.quantFormat === format) return;
    this.meta.setQuantFormat(format);
    const old = this.quantPoolBuffers;
    this.quantPoolBuffers = this.createQuantBuffers();
    for (const buffer of old) buffer.destroy();
  }

  /** Writes the dirty block-table rows and their context lengths to the GPU. */
  uploadDirtyRows(): void {
    const tables = this.meta.tables;
    const words = tables.tableWords();
    const lens = tables.contextLens();
    const width = tables.maxBlocksPerHead;
    for (const range of tables.takeDirtyRanges()) {
      const table = words as Uint32Array<ArrayBuffer>;
      this.gpu.device.queue.writeBuffer(this.blockTable, range.firstRow * width * 4, table, range.firstRow * width, range.rowCount * width);
      this.gpu.device.queue.writeBuffer(this.contextLens, range.firstRow * 4, lens as Uint32Array<ArrayBuffer>, range.firstRow, range.rowCount);
    }
  }

  /** Submits whole-block copies (copy-on-write of shared partly filled blocks). */
  copyBlocks(copies: readonly BlockCopy[]): void {
    if (copies.length === 0) return;
    const encoder = this.gpu.device.createCommandEncoder({ label: 'kv:copy-on-write' });
    const scratch: (GPUBuffer | null)[] = [];
    for (const pool of ['full', 'quant'] as const) {
      for (let layer = 0; layer < this.meta.shape.layers; layer++) {
        const ofPool = copies.filter((copy) => copy.pool === pool && copy.layer === layer);
        if (ofPool.length === 0) continue;
        const words = this.layout(pool).wordsPerBlock;
        const ranges = ofPool.map((copy) => ({ src: copy.src * words, dst: copy.dst * words }));
        scratch.push(this.copyRanges.encode(encoder, this.poolBuffer(pool, layer), ranges, words));
      }
    }
    this.gpu.submit([encoder.finish()]);
    this.destroyAfterSubmit(scratch);
  }

  /**
   * Encodes word-range copies inside one buffer (`rangeWords` words each); returns the scratch buffer the copy
   * needs (destroy it after the submit, see {@link destroyAfterSubmit}) or null.
   */
  encodeCopyRanges(encoder: GPUCommandEncoder, buffer: GPUBuffer, ranges: readonly WordRange[], rangeWords: number): GPUBuffer | null {
    return this.copyRanges.encode(encoder, buffer, ranges, rangeWords);
  }

  /** Destroys buffers once the work submitted so far has completed. */
  destroyAfterSubmit(buffers: readonly (GPUBuffer | null)[]): void {
    const live = buffers.filter((b): b is GPUBuffer => b !== null);
    if (live.length === 0) return;
    void this.gpu.device.queue.onSubmittedWorkDone().then(() => {
      for (const buffer of live) buffer.destroy();
    });
  }

  /** Encodes the scatter of one layer's new K/V into their slots (every write path goes through here). */
  encodeAppend(encoder: GPUCommandEncoder, write: AppendWrite): void {
    this.appendKernel.encode(encoder, { ...write, fullPool: this.poolBuffer('full', write.layer), flags: this.flags });
  }

  /** Clears the non-finite flag of the append kernel. */
  clearNonFiniteFlag(): void {
    this.gpu.device.queue.writeBuffer(this.flags, 0, new Uint32Array(1));
  }

  /** True if a K/V value appended since the flag was last cleared was NaN, ±Inf or out of range (clears it). */
  async takeNonFiniteFlag(): Promise<boolean> {
    const flag = new Uint32Array(await readBuffer(this.gpu, this.flags))[0] ?? 0;
    if (flag !== 0) this.clearNonFiniteFlag();
    return flag !== 0;
  }

  /** Reads one head back and decodes it with the reference codec: K, V `[tokens][headDim]`, original positions. */
  async readHead(seqId: number, layer: number, kvHead: number): Promise<{ keys: Float32Array; values: Float32Array; positions: Uint32Array }> {
    this.assertUsable();
    const entries = this.meta.headBlocks(seqId, layer, kvHead);
    const count = this.meta.tokenCount(seqId, layer, kvHead);
    const { headDim, blockSize } = this.meta.shape;
    const keys = new Float32Array(count * headDim);
    const values = new Float32Array(count * headDim);
    const positions = new Uint32Array(count);
    for (let b = 0; b < entries.length; b++) {
      const { pool, block } = decodeBlockRef(entries[b] ?? 0);
      const layout = this.layout(pool);
      const bytes = layout.wordsPerBlock * 4;
      const words = new Uint32Array(await readBuffer(this.gpu, this.poolBuffer(pool, layer), block * bytes, bytes));
      const n = Math.min(blockSize, count - b * blockSize);
      const decoded = decodeBlock(layout, words, n);
      keys.set(decoded.k.subarray(0, n * headDim), b * blockSize * headDim);
      values.set(decoded.v.subarray(0, n * headDim), b * blockSize * headDim);
      positions.set(decoded.positions.subarray(0, n), b * blockSize);
    }
    return { keys, values, positions };
  }

  private createQuantBuffers(): GPUBuffer[] {
    const layout = this.meta.quantLayout;
    return Array.from({ length: this.meta.shape.layers }, (_, layer) =>
      createStorageBuffer(this.gpu, `kv:quant-pool:${layer}`, layout ? this.meta.pool('quant', layer).numBlocks * bytesPerBlock(layout) : 4),
    );
  }

  /** Whether {@link destroy} ran. */
  get isDestroyed(): boolean {
    return this.destroyed;
  }

  private assertUsable(): void {
    if (this.destroyed) throw new CacheDestroyedError('this cache');
  }

  /** Destroys every GPU buffer of the storage. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const buffer of [...this.fullPoolBuffers, ...this.quantPoolBuffers, this.blockTable, this.contextLens, this.flags]) buffer.destroy();
  }
}
