import { InvalidArgumentError, LimitExceededError, OutOfBlocksError, UnknownSequenceError } from '../errors.js';
import { blockLayout, bytesPerBlock as bytesPerLayout, decodeBlockRef, encodeBlockRef, validateShape, type BlockLayout, type CacheShape, type FullFormat, type QuantFormat } from '../format/layout.js';
import type { BlockAllocator } from './block-allocator.js';
import { BlockTables } from './block-tables.js';
import { LayerPools } from './layer-pools.js';
import { validateHeadEntries } from './head-entries.js';
import type { AppendPlan, BlockCopy, CacheMetadataOptions, CacheMetadataSnapshot, HeadAppend, PoolName, PoolUsage, TruncatePlan } from './metadata-types.js';
import { minTruncateLength, slotRows, truncateRows } from './truncate-plan.js';

// The data types live beside the class; importers keep one path.
export type * from './metadata-types.js';

interface SequenceState {
  readonly slot: number;
  /** Tokens ever appended: the original position of the next token. */
  length: number;
}

/**
 * The whole host-side state of one paged KV cache: per layer a full pool and a quantized pool (src/cache/
 * layer-pools.ts: each reference counted, block ids local to the layer, block 0 the null block), the block tables,
 * and the live sequences. A table row of layer l refers to blocks of layer l's pools. Every public method either succeeds or
 * throws / returns null with the state exactly as before; {@link snapshot}/{@link restore} roll back a
 * multi-step operation whose GPU part failed.
 *
 * Per (sequence, layer, kv head) the table lists quantized blocks first, then full blocks. Quantized blocks
 * are always completely filled (KIVI keeps the partial residual in full precision): only the last block, a
 * full-pool one, may be partly filled, so token i of a head is always in entry ⌊i / blockSize⌋, slot
 * i mod blockSize.
 *
 * @example
 * ```ts
 * const meta = new CacheMetadata({
 *   shape: { layers: 2, kvHeads: 2, headDim: 8, blockSize: 16 }, fullFormat: 'f32', quantFormat: 'int4',
 *   initialFullBlocks: 64, initialQuantBlocks: 16, maxBytes: 1 << 20, seqSlots: 4, maxBlocksPerHead: 32,
 * });
 * meta.addSequence(7);
 * const plan = meta.planAppend(7, 20); // 2 full blocks per head, destSlots for 2·20·2 writes
 * meta.fork(7, 8);                     // shares every block
 * meta.freeSequence(7);
 * ```
 */
export class CacheMetadata {
  readonly shape: CacheShape;
  readonly fullFormat: FullFormat;
  #quantFormat: QuantFormat | undefined;
  readonly fullLayout: BlockLayout;
  #quantLayout: BlockLayout | null;
  readonly #groupSize: number | undefined;
  readonly maxBytes: number;
  readonly seqSlots: number;
  readonly maxBlocksPerHead: number;
  /** Full blocks appends leave free or growable for compactions (see CacheMetadataOptions). */
  readonly compactionReserve: number;
  /** Every layer's pools. */
  readonly #pools: LayerPools;
  readonly tables: BlockTables;
  #sequences = new Map<number, SequenceState>();
  /** Free slots; popped from the end, so the lowest slot is used first. */
  #freeSlots: number[];
  /** Per block-table row, {@link intactFrom}: what lets {@link truncate} find positions on the host. */
  #intactFrom: Uint32Array;

  constructor(options: CacheMetadataOptions) {
    validateShape(options.shape);
    this.shape = { ...options.shape };
    this.fullFormat = options.fullFormat;
    this.#quantFormat = options.quantFormat;
    this.#groupSize = options.groupSize;
    if (options.fullFormat !== 'f32' && options.fullFormat !== 'f16') {
      throw new InvalidArgumentError('fullFormat', `must be 'f32' or 'f16'; got ${String(options.fullFormat)}`);
    }
    this.fullLayout = blockLayout(options.fullFormat, this.shape);
    this.#quantLayout = options.quantFormat ? blockLayout(options.quantFormat, this.shape, options.groupSize) : null;
    this.#pools = new LayerPools(this.shape.layers, this.fullLayout, this.#quantLayout, options.maxBytes);
    checkCount('initialFullBlocks', options.initialFullBlocks);
    checkCount('initialQuantBlocks', options.initialQuantBlocks);
    if (this.#quantLayout === null && options.initialQuantBlocks !== 0) {
      throw new InvalidArgumentError('initialQuantBlocks', 'must be 0 without a quantFormat');
    }
    if (!(options.maxBytes >= 0) || !Number.isFinite(options.maxBytes)) {
      throw new InvalidArgumentError('maxBytes', `must be a finite non-negative number; got ${options.maxBytes}`);
    }
    this.maxBytes = options.maxBytes;
    const bytes = this.shape.layers * ((options.initialFullBlocks + 1) * this.bytesPerBlock('full') + (options.initialQuantBlocks + 1) * this.bytesPerBlock('quant'));
    if (bytes > this.maxBytes) {
      throw new LimitExceededError(
        'KV cache byte budget (maxBytes)',
        bytes,
        this.maxBytes,
        'start with fewer blocks or raise maxBytes',
      );
    }
    this.tables = new BlockTables({
      layers: this.shape.layers,
      seqSlots: options.seqSlots,
      kvHeads: this.shape.kvHeads,
      maxBlocksPerHead: options.maxBlocksPerHead,
    });
    this.seqSlots = options.seqSlots;
    this.maxBlocksPerHead = options.maxBlocksPerHead;
    this.compactionReserve = options.compactionReserve ?? 0;
    checkCount('compactionReserve', this.compactionReserve);
    this.#pools.reset('full', options.initialFullBlocks);
    this.#pools.reset('quant', options.initialQuantBlocks);
    if (options.maxPoolBytes !== undefined) this.capPoolBytes(options.maxPoolBytes);
    this.#freeSlots = [];
    for (let s = options.seqSlots - 1; s >= 0; s--) this.#freeSlots.push(s);
    this.#intactFrom = new Uint32Array(this.tables.numRows);
  }

  /** Format of the quantized pool (undefined until a cache created without quantBits first quantizes). */
  get quantFormat(): QuantFormat | undefined {
    return this.#quantFormat;
  }

  /** Layout of the quantized pool's blocks; null without a quantized format. */
  get quantLayout(): BlockLayout | null {
    return this.#quantLayout;
  }

  /** Bytes one layer's pool may hold (the per-binding limit; Infinity unless capped). */
  get maxPoolBytes(): number {
    return this.#pools.maxPoolBytes;
  }

  /**
   * Lowers the bytes one layer's pool may hold (a GPU storage passes its device's binding limit): growth stops
   * there. LimitExceededError when a pool already holds more.
   */
  capPoolBytes(bytes: number): void {
    this.#pools.capPoolBytes(bytes);
  }

  /**
   * Gives the quantized pool a format while it holds no block: a cache created without `quantBits` takes the bits
   * of its first quantizing compression (both engines follow this one rule). The pool restarts with its null block
   * alone and grows on demand. InvalidArgumentError once the pool holds blocks of another format.
   */
  setQuantFormat(format: QuantFormat): void {
    if (format === this.#quantFormat) return;
    const held = this.#pools.usage('quant').used;
    if (held > 0) {
      throw new InvalidArgumentError(
        'bits',
        `the quantized pool holds ${held} ${this.#quantFormat ?? ''} blocks; compress with its bits or free those sequences first`,
      );
    }
    const layout = blockLayout(format, this.shape, this.#groupSize);
    const bytes = this.#pools.usage('full').bytes + this.shape.layers * bytesPerLayout(layout);
    if (bytes > this.maxBytes) {
      throw new LimitExceededError('KV cache byte budget (maxBytes)', bytes, this.maxBytes, 'raise maxBytes to hold a quantized pool');
    }
    this.#quantFormat = format;
    this.#quantLayout = layout;
    this.#pools.reset('quant', 0, layout);
  }

  /** The block layout a quantized pool of `format` would have in this cache (same shape and group size). */
  layoutFor(format: QuantFormat): BlockLayout {
    return blockLayout(format, this.shape, this.#groupSize);
  }

  /**
   * The allocator of one layer's pool (block ids are local to it). Prefer this class's methods; a direct
   * release/retain bypasses the tables.
   */
  pool(pool: PoolName, layer: number): BlockAllocator {
    return this.#pools.pool(pool, layer);
  }

  /** The layer a block-table row belongs to (whose pools its entries refer to). */
  layerOfRow(row: number): number {
    return Math.floor(row / (this.seqSlots * this.shape.kvHeads));
  }

  /** Bytes of one block of a pool (0 for a quantized pool without a format). */
  bytesPerBlock(pool: PoolName): number {
    return this.#pools.bytesPerBlock(pool);
  }

  /** Bytes of every layer's pools now, null blocks included. */
  get bytesAllocated(): number {
    return this.#pools.bytesAllocated;
  }

  // ---------------------------------------------------------------- sequences

  /**
   * Registers a sequence and returns its slot (its rows in the block tables). Throws InvalidArgumentError on a
   * bad or duplicate id, LimitExceededError when every slot is taken.
   */
  addSequence(id: number): number {
    checkId(id);
    if (this.#sequences.has(id)) {
      throw new InvalidArgumentError('id', `sequence ${id} already exists; free it first or pick another id`);
    }
    const slot = this.#takeSlot();
    this.#sequences.set(id, { slot, length: 0 });
    for (const row of slotRows(this, slot)) this.#intactFrom[row] = 0;
    return slot;
  }

  /** True when the sequence is live. */
  hasSequence(id: number): boolean {
    return this.#sequences.has(id);
  }

  /** Live sequence ids, in insertion order. */
  sequenceIds(): number[] {
    return [...this.#sequences.keys()];
  }

  /** Slot of a live sequence. */
  slotOf(id: number): number {
    return this.#seq(id).slot;
  }

  /** Tokens ever appended to a sequence (the original position of its next token); eviction does not lower it. */
  sequenceLength(id: number): number {
    return this.#seq(id).length;
  }

  /** Number of free sequence slots. */
  get freeSlotCount(): number {
    return this.#freeSlots.length;
  }

  /** Frees a sequence: every block reference it holds is released (blocks nobody else holds become free). */
  freeSequence(id: number): void {
    const seq = this.#seq(id);
    for (const row of slotRows(this, seq.slot)) {
      for (const entry of this.tables.entryView(row)) this.#releaseEntry(entry, this.layerOfRow(row));
      this.tables.clearRow(row);
    }
    this.#sequences.delete(id);
    this.#freeSlots.push(seq.slot);
  }

  /**
   * Creates `dstId` as a copy of `srcId` that shares every block (reference counts go up; the next append to
   * either copies a shared partly filled block first). Returns the new slot.
   */
  fork(srcId: number, dstId: number): number {
    const src = this.#seq(srcId);
    checkId(dstId);
    if (this.#sequences.has(dstId)) {
      throw new InvalidArgumentError('dstId', `sequence ${dstId} already exists; pick another id`);
    }
    const slot = this.#takeSlot();
    const dstRows = slotRows(this, slot);
    slotRows(this, src.slot).forEach((srcRow, i) => {
      const dstRow = dstRows[i] ?? 0;
      const entries = this.tables.entryView(srcRow);
      const layer = this.layerOfRow(srcRow);
      for (const entry of entries) this.pool(decodeBlockRef(entry).pool, layer).retain(decodeBlockRef(entry).block);
      this.tables.setRow(dstRow, entries, this.tables.tokenCount(srcRow));
      this.#intactFrom[dstRow] = this.#intactFrom[srcRow] ?? 0;
    });
    this.#sequences.set(dstId, { slot, length: src.length });
    return slot;
  }

  // ---------------------------------------------------------------- per head

  /** Block-table entries (`encodeBlockRef` words) of one head, a copy. */
  headBlocks(id: number, layer: number, head: number): number[] {
    return this.tables.entries(this.#row(id, layer, head));
  }

  /** Token count of one head. */
  tokenCount(id: number, layer: number, head: number): number {
    return this.tables.tokenCount(this.#row(id, layer, head));
  }

  /** Block-table row of one head. */
  rowOf(id: number, layer: number, head: number): number {
    return this.#row(id, layer, head);
  }

  // ---------------------------------------------------------------- append

  /**
   * Appends `numTokens` tokens to every (layer, kv head) of a sequence: finds each token's destination slot in
   * the full pool, allocating full blocks as needed, copy-on-write for a shared partly filled last block.
   * All or nothing: returns null, with the state unchanged, when the full pool cannot supply every block.
   * Throws (state unchanged) on an unknown id, a bad count, or a head that would pass `maxBlocksPerHead`.
   */
  planAppend(id: number, numTokens: number): AppendPlan | null {
    const seq = this.#seq(id);
    if (!Number.isSafeInteger(numTokens) || numTokens <= 0) {
      throw new InvalidArgumentError('numTokens', `must be a positive integer; got ${numTokens}`);
    }
    const { layers, kvHeads, blockSize } = this.shape;

    // Pass 1: work out every head's needs without touching anything.
    interface Need {
      row: number;
      before: number;
      /** Entry index of the partly filled last block, or -1. */
      partialIndex: number;
      partialBlock: number;
      cow: boolean;
      fresh: number;
    }
    const needs: Need[] = [];
    const perLayer = new Array<number>(layers).fill(0);
    for (let layer = 0; layer < layers; layer++) {
      for (let head = 0; head < kvHeads; head++) {
        const row = this.tables.row(seq.slot, layer, head);
        const before = this.tables.tokenCount(row);
        const n = this.tables.numEntries(row);
        const filled = before % blockSize;
        let partialIndex = -1;
        let partialBlock = 0;
        let cow = false;
        if (filled !== 0) {
          partialIndex = n - 1;
          const last = decodeBlockRef(this.tables.entryView(row)[partialIndex] ?? 0);
          if (last.pool !== 'full') {
            // replaceHeadBlocks refuses partly filled quantized blocks; reaching this means the tables were edited directly.
            throw new InvalidArgumentError('tables', `row ${row} ends in a partly filled quantized block`);
          }
          // Quantized blocks are always full (see the class doc), so a partial block is a full-pool one.
          partialBlock = last.block;
          cow = this.pool('full', layer).refCount(last.block) > 1;
        }
        const room = filled === 0 ? 0 : blockSize - filled;
        const fresh = Math.ceil(Math.max(0, numTokens - room) / blockSize);
        if (n + fresh > this.maxBlocksPerHead) {
          throw new LimitExceededError(
            'maxBlocksPerHead',
            n + fresh,
            this.maxBlocksPerHead,
            `appending ${numTokens} tokens to layer ${layer} head ${head} of sequence ${id}; compress the sequence first`,
          );
        }
        needs.push({ row, before, partialIndex, partialBlock, cow, fresh });
        perLayer[layer] = (perLayer[layer] ?? 0) + fresh + (cow ? 1 : 0);
      }
    }
    // Head counts never exceed the sequence length, so this bounds every u32 context length and position.
    if (seq.length + numTokens > 0xffff_ffff) {
      throw new LimitExceededError('sequence length', seq.length + numTokens, 0xffff_ffff);
    }

    // Pass 2: allocate everything at once (the only step that can run short: every layer's pool is checked
    // before any takes a block), then commit.
    if (perLayer.some((n, layer) => n > this.pool('full', layer).numFree)) return null;
    const allocated = perLayer.map((n, layer) => this.pool('full', layer).allocateMany(n) ?? []);
    let next = 0;
    const destSlots = new Uint32Array(layers * numTokens * kvHeads);
    const heads: HeadAppend[] = [];
    const copies: BlockCopy[] = [];
    for (let i = 0; i < needs.length; i++) {
      const need = needs[i]!;
      const layer = Math.floor(i / kvHeads);
      const head = i % kvHeads;
      if (head === 0) next = 0;
      const blocks = allocated[layer] ?? [];
      const newBlocks: number[] = [];
      let copy: BlockCopy | null = null;
      // Blocks that receive tokens, in order: the (private) partial block, then fresh ones.
      const targets: number[] = [];
      if (need.partialIndex >= 0) {
        if (need.cow) {
          const dst = blocks[next++]!;
          copy = { pool: 'full', layer, src: need.partialBlock, dst };
          copies.push(copy);
          newBlocks.push(dst);
          this.pool('full', layer).release(need.partialBlock);
          this.tables.setEntry(need.row, need.partialIndex, encodeBlockRef('full', dst));
          targets.push(dst);
        } else {
          targets.push(need.partialBlock);
        }
      }
      for (let f = 0; f < need.fresh; f++) {
        const b = blocks[next++]!;
        newBlocks.push(b);
        targets.push(b);
        this.tables.pushEntry(need.row, encodeBlockRef('full', b));
      }
      const firstSlot = need.before % blockSize;
      for (let t = 0; t < numTokens; t++) {
        const k = firstSlot + t;
        const block = targets[Math.floor(k / blockSize)]!;
        destSlots[(layer * numTokens + t) * kvHeads + head] = block * blockSize + (k % blockSize);
      }
      this.tables.setTokenCount(need.row, need.before + numTokens);
      heads.push({ layer, head, row: need.row, tokensBefore: need.before, tokensAfter: need.before + numTokens, newBlocks, copy });
    }
    const firstPosition = seq.length;
    seq.length += numTokens;
    return {
      seqId: id,
      slot: seq.slot,
      numTokens,
      firstPosition,
      blockSize,
      layers,
      kvHeads,
      copies,
      heads,
      destSlots,
      allocated,
      rows: needs.map((n) => n.row),
    };
  }

  // ---------------------------------------------------------------- compaction

  /**
   * Allocates `n` blocks of a pool for a compaction/quantization result, all or nothing (null when short).
   * The caller owns one reference to each until it hands them to {@link replaceHeadBlocks} or
   * {@link releaseBlocks}.
   */
  allocateBlocks(pool: PoolName, layer: number, n: number): number[] | null {
    return this.pool(pool, layer).allocateMany(n);
  }

  /** Like {@link allocateBlocks} but throws OutOfBlocksError when short. */
  allocateBlocksOrThrow(pool: PoolName, layer: number, n: number): number[] {
    const blocks = this.allocateBlocks(pool, layer, n);
    if (blocks === null) throw new OutOfBlocksError(pool, n, this.pool(pool, layer).numFree, `free or compress a sequence, or grow layer ${layer}'s pool`);
    return blocks;
  }

  /** Releases caller-owned references of one layer's pool (scratch blocks of a compaction that was abandoned). */
  releaseBlocks(pool: PoolName, layer: number, blocks: readonly number[]): void {
    const allocator = this.pool(pool, layer);
    // Validate all first so a bad block leaves every count untouched.
    const counts = new Map<number, number>();
    for (const b of blocks) {
      const c = (counts.get(b) ?? 0) + 1;
      counts.set(b, c);
      if (b === 0 || allocator.refCount(b) < c) {
        throw new InvalidArgumentError('blocks', `block ${b} of the ${pool} pool is not held ${c} time(s)`);
      }
    }
    for (const b of blocks) allocator.release(b);
  }

  /**
   * Commits a compaction/quantization of one head: `newEntries` (`encodeBlockRef` words, quantized first, all
   * quantized blocks full, only the last block partly filled) replaces the head's list and `tokenCount` its
   * count. References: an entry already in the old list keeps its reference; an entry not in the old list takes
   * over the caller's reference (from {@link allocateBlocks}); old entries not in the new list are released, so
   * their memory returns to the pool. Throws InvalidArgumentError (state unchanged) when an entry is the null
   * block, out of range, free, repeated, or the list does not fit `tokenCount`.
   */
  replaceHeadBlocks(id: number, layer: number, head: number, newEntries: readonly number[], tokenCount: number): void {
    const row = this.#row(id, layer, head);
    const seen = validateHeadEntries(newEntries, tokenCount, { blockSize: this.shape.blockSize, maxBlocksPerHead: this.maxBlocksPerHead, pool: (pool) => this.pool(pool, layer) });
    const seq = this.#seq(id);
    if (tokenCount > seq.length) {
      throw new InvalidArgumentError('tokenCount', `${tokenCount} exceeds the ${seq.length} tokens ever appended`);
    }
    const old = this.tables.entries(row);
    // Dropping any token leaves the host knowing only that tokens appended from now on follow in order.
    if (tokenCount !== this.tables.tokenCount(row)) this.#intactFrom[row] = seq.length;
    for (const entry of old) if (!seen.has(entry)) this.#releaseEntry(entry, layer);
    this.tables.setRow(row, newEntries, tokenCount);
  }

  /** The position from which a head holds every token, in order, at its end (src/cache/truncate-plan.ts). */
  intactFrom(id: number, layer: number, head: number): number {
    return this.#intactFrom[this.#row(id, layer, head)] ?? 0;
  }

  /** The shortest length {@link truncate} accepts for a sequence (see `minTruncateLength` in truncate-plan.ts). */
  minTruncateLength(id: number): number {
    const seq = this.#seq(id);
    return minTruncateLength(this, seq.slot, seq.length, this.#intactFrom);
  }

  /**
   * Drops every token at original position ≥ `length` (evicted ones stay evicted) and the blocks past each head's
   * end; all or nothing (`truncateRows`: TruncateCompressedError below {@link minTruncateLength}).
   */
  truncate(id: number, length: number): TruncatePlan {
    const seq = this.#seq(id);
    const heads = truncateRows(this, { id, slot: seq.slot, length: seq.length }, length, this.#intactFrom);
    const lengthBefore = seq.length;
    seq.length = length;
    return { seqId: id, slot: seq.slot, lengthBefore, lengthAfter: length, heads };
  }

  // ---------------------------------------------------------------- growth

  /**
   * Adds `additionalBlocks` blocks to one layer's pool (after growing its storage). Throws LimitExceededError
   * naming the byte budget (or the per-pool cap) when the pools would pass it, InvalidArgumentError for a quantized
   * pool without a format. Returns that pool's new block count (null included).
   */
  growPool(pool: PoolName, layer: number, additionalBlocks: number): number {
    if (pool === 'quant' && this.quantLayout === null) {
      throw new InvalidArgumentError('growQuant', 'this cache has no quantFormat, so no quantized pool');
    }
    return this.#pools.grow(pool, layer, additionalBlocks);
  }

  /**
   * Blocks a pool could still be added within `maxBytes` (less `keepBytes`); with a layer, also within that
   * layer's per-pool cap.
   */
  growableBlocks(pool: PoolName, layer?: number, keepBytes = 0): number {
    return this.#pools.growableBlocks(pool, layer, keepBytes);
  }

  // ---------------------------------------------------------------- reports

  /** Block counts and bytes of one layer's pool, or of the pool summed over every layer without `layer`. */
  poolUsage(pool: PoolName, layer?: number): PoolUsage {
    return this.#pools.usage(pool, layer);
  }

  // ---------------------------------------------------------------- transactions

  /** Copies the whole state: every layer's pools, the tables and the sequences. */
  snapshot(): CacheMetadataSnapshot {
    const pools = this.#pools.snapshot();
    return {
      full: pools.full,
      quant: pools.quant,
      tables: this.tables.snapshot(),
      sequences: [...this.#sequences].map(([id, s]) => [id, s.slot, s.length] as const),
      freeSlots: [...this.#freeSlots],
      quantFormat: this.#quantFormat,
      intactFrom: this.#intactFrom.slice(),
    };
  }

  /**
   * Puts back a state from {@link snapshot} exactly (a grow after it is undone too). Table rows that change are
   * marked dirty so the next upload brings the GPU copy back in line.
   */
  restore(s: CacheMetadataSnapshot): void {
    if (s.quantFormat !== this.#quantFormat) {
      this.#quantFormat = s.quantFormat;
      this.#quantLayout = s.quantFormat ? blockLayout(s.quantFormat, this.shape, this.#groupSize) : null;
      this.#pools.reset('quant', 0, this.#quantLayout);
    }
    this.#pools.restore(s);
    this.tables.restore(s.tables);
    this.#sequences = new Map(s.sequences.map(([id, slot, length]) => [id, { slot, length }]));
    this.#freeSlots = [...s.freeSlots];
    this.#intactFrom = s.intactFrom.slice();
  }

  // ---------------------------------------------------------------- private

  #seq(id: number): SequenceState {
    const seq = this.#sequences.get(id);
    if (seq === undefined) throw new UnknownSequenceError(id);
    return seq;
  }

  #row(id: number, layer: number, head: number): number {
    return this.tables.row(this.#seq(id).slot, layer, head);
  }

  #takeSlot(): number {
    const slot = this.#freeSlots.pop();
    if (slot === undefined) {
      throw new LimitExceededError(
        'sequence slots',
        this.seqSlots + 1,
        this.seqSlots,
        'free a sequence first or create the cache with more seqSlots',
      );
    }
    return slot;
  }

  #releaseEntry(entry: number, layer: number): void {
    const { pool, block } = decodeBlockRef(entry);
    this.pool(pool, layer).release(block);
  }
}

function checkId(id: number): void {
  if (!Number.isSafeInteger(id) || id < 0) throw new InvalidArgumentError('id', `a sequence id must be a non-negative integer; got ${id}`);
}

function checkCount(field: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new InvalidArgumentError(field, `must be a non-negative integer; got ${value}`);
}
