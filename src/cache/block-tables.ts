import { InvalidArgumentError, LimitExceededError } from '../errors.js';

/**
 * Dimensions of the block tables.
 */
export interface BlockTablesShape {
  readonly layers: number;
  readonly seqSlots: number;
  readonly kvHeads: number;
  /** Width of one row: the most blocks one (sequence, layer, kv head) may hold. */
  readonly maxBlocksPerHead: number;
}

/**
 * An exact copy of a {@link BlockTables}' contents (dirty flags excluded: restoring marks what changed).
 *
 * @example
 * ```ts
 * const saved: BlockTablesSnapshot = tables.snapshot();
 * tables.restore(saved);
 * ```
 */
export interface BlockTablesSnapshot {
  readonly words: Uint32Array;
  readonly numEntries: Uint32Array;
  readonly contextLens: Uint32Array;
}

/**
 * A run of consecutive dirty rows, for one `writeBuffer` per run.
 *
 * @example
 * ```ts
 * for (const { firstRow, rowCount } of tables.takeDirtyRanges()) {
 *   const w = tables.maxBlocksPerHead;
 *   queue.writeBuffer(tableBuf, firstRow * w * 4, tables.tableWords(), firstRow * w, rowCount * w);
 *   queue.writeBuffer(lensBuf, firstRow * 4, tables.contextLens(), firstRow, rowCount);
 * }
 * ```
 */
export interface DirtyRange {
  readonly firstRow: number;
  readonly rowCount: number;
}

/**
 * Host copy of the GPU block tables: for every (sequence slot, layer, kv head) — a "row" — a list of block-table
 * entries (`encodeBlockRef` words) and a token count. Storage is already the GPU layout, so an upload is a
 * plain copy: table `u32[layers][seqSlots][kvHeads][maxBlocksPerHead]` (unused entries 0 = null block) and
 * context lengths `u32[layers][seqSlots][kvHeads]`; row = (layer·seqSlots + slot)·kvHeads + head.
 *
 * Every mutation marks its row dirty, so only changed rows need uploading ({@link takeDirtyRows},
 * {@link takeDirtyRanges}, {@link writeDirty}). This class checks shapes only; reference counting and block
 * validity are {@link CacheMetadata}'s job.
 *
 * @example
 * ```ts
 * const tables = new BlockTables({ layers: 1, seqSlots: 2, kvHeads: 1, maxBlocksPerHead: 4 });
 * const row = tables.row(0, 0, 0);
 * tables.setRow(row, [encodeBlockRef('full', 3)], 5);
 * tables.takeDirtyRows(); // [0]
 * tables.rowWords(row);   // Uint32Array [3, 0, 0, 0]
 * ```
 */
export class BlockTables {
  readonly layers: number;
  readonly seqSlots: number;
  readonly kvHeads: number;
  readonly maxBlocksPerHead: number;
  /** layers × seqSlots × kvHeads. */
  readonly numRows: number;
  #words: Uint32Array;
  #numEntries: Uint32Array;
  #contextLens: Uint32Array;
  #dirty: Uint8Array;
  #dirtyList: number[] = [];

  constructor(shape: BlockTablesShape) {
    for (const field of ['layers', 'seqSlots', 'kvHeads', 'maxBlocksPerHead'] as const) {
      const v = shape[field];
      if (!Number.isSafeInteger(v) || v <= 0) {
        throw new InvalidArgumentError(field, `must be a positive integer; got ${v}`);
      }
    }
    this.layers = shape.layers;
    this.seqSlots = shape.seqSlots;
    this.kvHeads = shape.kvHeads;
    this.maxBlocksPerHead = shape.maxBlocksPerHead;
    this.numRows = shape.layers * shape.seqSlots * shape.kvHeads;
    this.#words = new Uint32Array(this.numRows * shape.maxBlocksPerHead);
    this.#numEntries = new Uint32Array(this.numRows);
    this.#contextLens = new Uint32Array(this.numRows);
    this.#dirty = new Uint8Array(this.numRows);
  }

  /** Row index of (slot, layer, head); throws InvalidArgumentError when any is out of range. */
  row(slot: number, layer: number, head: number): number {
    checkIndex('slot', slot, this.seqSlots);
    checkIndex('layer', layer, this.layers);
    checkIndex('head', head, this.kvHeads);
    return (layer * this.seqSlots + slot) * this.kvHeads + head;
  }

  /** Entries of a row (a copy). */
  entries(row: number): number[] {
    return Array.from(this.entryView(row));
  }

  /** Entries of a row as a read-only view into the table (valid until the next mutation). */
  entryView(row: number): Uint32Array {
    this.#checkRow(row);
    const start = row * this.maxBlocksPerHead;
    return this.#words.subarray(start, start + (this.#numEntries[row] ?? 0));
  }

  /** Number of entries (blocks) in a row. */
  numEntries(row: number): number {
    this.#checkRow(row);
    return this.#numEntries[row] ?? 0;
  }

  /** Token count (the GPU context length) of a row. */
  tokenCount(row: number): number {
    this.#checkRow(row);
    return this.#contextLens[row] ?? 0;
  }

  /** Replaces a row's entries and token count. Throws LimitExceededError past `maxBlocksPerHead`. */
  setRow(row: number, entries: ArrayLike<number>, tokenCount: number): void {
    this.#checkRow(row);
    if (entries.length > this.maxBlocksPerHead) {
      throw new LimitExceededError(
        'maxBlocksPerHead',
        entries.length,
        this.maxBlocksPerHead,
        'compress the sequence or create the cache with wider block tables',
      );
    }
    for (let i = 0; i < entries.length; i++) checkWord('entries', entries[i] ?? -1);
    checkWord('tokenCount', tokenCount);
    const start = row * this.maxBlocksPerHead;
    this.#words.fill(0, start, start + this.maxBlocksPerHead);
    for (let i = 0; i < entries.length; i++) this.#words[start + i] = entries[i] ?? 0;
    this.#numEntries[row] = entries.length;
    this.#contextLens[row] = tokenCount;
    this.#markDirty(row);
  }

  /** Appends one entry to a row. */
  pushEntry(row: number, entry: number): void {
    this.#checkRow(row);
    checkWord('entry', entry);
    const n = this.#numEntries[row] ?? 0;
    if (n >= this.maxBlocksPerHead) {
      throw new LimitExceededError('maxBlocksPerHead', n + 1, this.maxBlocksPerHead, 'compress the sequence');
    }
    this.#words[row * this.maxBlocksPerHead + n] = entry;
    this.#numEntries[row] = n + 1;
    this.#markDirty(row);
  }

  /** Overwrites entry `index` (< numEntries) of a row. */
  setEntry(row: number, index: number, entry: number): void {
    this.#checkRow(row);
    checkIndex('index', index, this.#numEntries[row] ?? 0);
    checkWord('entry', entry);
    this.#words[row * this.maxBlocksPerHead + index] = entry;
    this.#markDirty(row);
  }

  /** Sets a row's token count. */
  setTokenCount(row: number, tokenCount: number): void {
    this.#checkRow(row);
    checkWord('tokenCount', tokenCount);
    this.#contextLens[row] = tokenCount;
    this.#markDirty(row);
  }

  /** Empties a row (entries zeroed = null block, count 0). */
  clearRow(row: number): void {
    this.setRow(row, [], 0);
  }

  /** The table words of one row (`maxBlocksPerHead` words, zero-padded) as a view, for upload at `row · maxBlocksPerHead`. */
  rowWords(row: number): Uint32Array {
    this.#checkRow(row);
    const start = row * this.maxBlocksPerHead;
    return this.#words.subarray(start, start + this.maxBlocksPerHead);
  }

  /** The context length of one row (= `tokenCount(row)`), for upload at `row` of the lengths buffer. */
  contextLen(row: number): number {
    return this.tokenCount(row);
  }

  /** The whole flattened table `u32[layers][seqSlots][kvHeads][maxBlocksPerHead]` (a live view; do not write). */
  tableWords(): Uint32Array {
    return this.#words;
  }

  /** The whole context-length array `u32[layers][seqSlots][kvHeads]` (a live view; do not write). */
  contextLens(): Uint32Array {
    return this.#contextLens;
  }

  /** Copies of both flattened arrays (for a full upload, or a test). */
  flatten(): { tableWords: Uint32Array; contextLens: Uint32Array } {
    return { tableWords: this.#words.slice(), contextLens: this.#contextLens.slice() };
  }

  /** Dirty rows in ascending order, without clearing them. */
  dirtyRows(): number[] {
    return [...this.#dirtyList].sort((a, b) => a - b);
  }

  /** Dirty rows in ascending order; clears the dirty set (call once the rows are uploaded, or about to be). */
  takeDirtyRows(): number[] {
    const rows = this.dirtyRows();
    for (const r of rows) this.#dirty[r] = 0;
    this.#dirtyList = [];
    return rows;
  }

  /** Like {@link takeDirtyRows} but merged into runs of consecutive rows. */
  takeDirtyRanges(): DirtyRange[] {
    const out: DirtyRange[] = [];
    for (const r of this.takeDirtyRows()) {
      const last = out[out.length - 1];
      if (last && last.firstRow + last.rowCount === r) out[out.length - 1] = { firstRow: last.firstRow, rowCount: last.rowCount + 1 };
      else out.push({ firstRow: r, rowCount: 1 });
    }
    return out;
  }

  /**
   * Copies every dirty row into caller-owned flattened arrays (same layout as {@link tableWords} and
   * {@link contextLens}), clears the dirty set and returns the rows copied.
   */
  writeDirty(tableWords: Uint32Array, contextLens: Uint32Array): Array<{ row: number }> {
    if (tableWords.length !== this.#words.length || contextLens.length !== this.#contextLens.length) {
      throw new InvalidArgumentError(
        'tableWords',
        `expected ${this.#words.length} table words and ${this.#contextLens.length} lengths; got ${tableWords.length} and ${contextLens.length}`,
      );
    }
    const rows = this.takeDirtyRows();
    for (const row of rows) {
      tableWords.set(this.rowWords(row), row * this.maxBlocksPerHead);
      contextLens[row] = this.#contextLens[row] ?? 0;
    }
    return rows.map((row) => ({ row }));
  }

  /** Marks every row dirty (after the GPU buffers were recreated). */
  markAllDirty(): void {
    for (let r = 0; r < this.numRows; r++) this.#markDirty(r);
  }

  /** Copies the contents for {@link restore}. */
  snapshot(): BlockTablesSnapshot {
    return {
      words: this.#words.slice(),
      numEntries: this.#numEntries.slice(),
      contextLens: this.#contextLens.slice(),
    };
  }

  /**
   * Puts back contents from {@link snapshot}. Every row whose contents differ from the current ones is marked
   * dirty (rows already dirty stay dirty), so the GPU copy is brought back in line by the next upload.
   */
  restore(s: BlockTablesSnapshot): void {
    if (s.words.length !== this.#words.length || s.contextLens.length !== this.numRows) {
      throw new InvalidArgumentError('snapshot', 'taken from block tables of another shape');
    }
    const w = this.maxBlocksPerHead;
    for (let r = 0; r < this.numRows; r++) {
      let differs = s.numEntries[r] !== this.#numEntries[r] || s.contextLens[r] !== this.#contextLens[r];
      for (let i = r * w; !differs && i < (r + 1) * w; i++) differs = s.words[i] !== this.#words[i];
      if (differs) this.#markDirty(r);
    }
    this.#words.set(s.words);
    this.#numEntries.set(s.numEntries);
    this.#contextLens.set(s.contextLens);
  }

  #markDirty(row: number): void {
    if (this.#dirty[row] === 0) {
      this.#dirty[row] = 1;
      this.#dirtyList.push(row);
    }
  }

  #checkRow(row: number): void {
    checkIndex('row', row, this.numRows);
  }
}

function checkIndex(field: string, value: number, size: number): void {
  if (!Number.isInteger(value) || value < 0 || value >= size) {
    throw new InvalidArgumentError(field, `must be an integer in 0..${size - 1}; got ${value}`);
  }
}

function checkWord(field: string, value: number): void {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
    throw new InvalidArgumentError(field, `must be a u32; got ${value}`);
  }
}
