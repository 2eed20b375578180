import { SnapshotMismatchError } from '../errors.js';
import { blockLayout, type CacheShape, type FullFormat, type QuantFormat } from '../format/layout.js';
import type { SnapshotBlockRef, SnapshotRow } from '../cache/sequence-export.js';
import { EMPTY_WINDOW_POSITION, type SnapshotStats, type SnapshotWindow } from '../attention/snapshot-state.js';
import { checkSnapshotSlots, type SnapshotSlots } from '../cache/slot-state.js';

export type { SnapshotBlockRef, SnapshotRow, SnapshotSlots, SnapshotStats, SnapshotWindow };
export { EMPTY_WINDOW_POSITION };

/**
 * The whole paged state of ONE sequence, as plain data: what `exportSequence` returns and `importSequence` takes,
 * on either engine (the CPU and GPU pools hold the same words per block, so a snapshot moves between them). A
 * restored sequence continues exactly as the original would have: same blocks, token counts, truncation bounds,
 * attention statistics and observation window.
 *
 * - `rows`: one per (layer, kv head), index layer · kvHeads + head; entries index `fullBlocks`/`quantBlocks`.
 * - `fullBlocks`, `quantBlocks`: the words of every referenced block, block i at i × wordsPerBlock of its layout
 *   (a block several heads share is stored once).
 * - `stats`: the first tokenCount statistics of each row, rows in order, concatenated.
 * - `windows`: one per layer, canonical (see {@link SnapshotWindow}).
 * - `slots`: merge 'slots' state (how many leading tokens of each row are slots, and their masses); absent when
 *   the sequence holds none.
 *
 * @example
 * ```ts
 * const snapshot = await gpuCache.exportSequence(1);
 * await cpuCache.importSequence(7, snapshot); // continues on the CPU engine
 * console.log(snapshotBytes(snapshot));
 * ```
 */
export interface SequenceSnapshot {
  readonly shape: CacheShape;
  readonly nHeads: number;
  readonly observationWindow: number;
  readonly fullFormat: FullFormat;
  /** Format of the quantized blocks, or null when the sequence's cache had no quantized pool. */
  readonly quantFormat: QuantFormat | null;
  /** Quantization group size of the quantized layout (0 without a quantFormat). */
  readonly groupSize: number;
  /** Tokens ever appended to the sequence (the position of its next token). */
  readonly sequenceLength: number;
  readonly rows: readonly SnapshotRow[];
  readonly fullBlocks: Uint32Array;
  readonly quantBlocks: Uint32Array;
  readonly stats: SnapshotStats;
  readonly windows: readonly SnapshotWindow[];
  readonly slots?: SnapshotSlots;
}

/** What a snapshot is checked against: the fields of a cache that must agree with it. */
export interface SnapshotTarget {
  readonly shape: CacheShape;
  readonly nHeads: number;
  readonly observationWindow: number;
  readonly fullFormat: FullFormat;
  /** The cache's quantized format, undefined while it has none (the import then sets the snapshot's). */
  readonly quantFormat: QuantFormat | undefined;
  /** Group size of the cache's quantized layout for `format` (the cache's own group-size rule). */
  groupSizeFor(format: QuantFormat): number;
  readonly maxTokensPerHead: number;
}

/**
 * Payload bytes of a snapshot: block words, row records (3 + entries u32 each), statistics and windows (2 + ring
 * u32 + queries f32 per layer). The size a store entry's sections take, before the container's header.
 */
export function snapshotBytes(snapshot: SequenceSnapshot): number {
  const rows = snapshot.rows.reduce((sum, row) => sum + (3 + row.entries.length) * 4, 0);
  const stats = (snapshot.stats.attnSum.length + snapshot.stats.attnSqSum.length + snapshot.stats.attnCount.length) * 4;
  const windows = snapshot.windows.reduce((sum, w) => sum + 8 + w.positions.byteLength + w.queries.byteLength, 0);
  const slots = snapshot.slots ? snapshot.slots.counts.byteLength + snapshot.slots.mass.byteLength : 0;
  return snapshot.fullBlocks.byteLength + snapshot.quantBlocks.byteLength + rows + stats + windows + slots;
}

function mismatch(field: string, got: string | number, expected: string | number): never {
  throw new SnapshotMismatchError(field, got, expected);
}

function expectEqual(field: string, got: string | number, expected: string | number): void {
  if (got !== expected) mismatch(field, got, expected);
}

function isCount(value: number): boolean {
  return Number.isSafeInteger(value) && value >= 0;
}

/**
 * Checks that a snapshot is self-consistent: row count, each row's blocks (count for its tokens, quantized first and
 * full, indices in range, none repeated), every listed block referenced, statistics and window lengths, window
 * positions. SnapshotMismatchError naming the first field that is not.
 */
export function checkSnapshot(s: SequenceSnapshot): void {
  const { layers, kvHeads, headDim, blockSize } = s.shape;
  for (const [field, value] of Object.entries({ layers, kvHeads, headDim, blockSize, nHeads: s.nHeads, observationWindow: s.observationWindow })) {
    if (!isCount(value) || value === 0) mismatch(field, value, 'a positive integer');
  }
  if (!isCount(s.sequenceLength) || s.sequenceLength > 0xffff_ffff) mismatch('sequenceLength', s.sequenceLength, 'an integer in 0..2³²−1');
  if (s.fullFormat !== 'f32' && s.fullFormat !== 'f16') mismatch('fullFormat', String(s.fullFormat), "'f32' or 'f16'");
  if (s.quantFormat !== null && s.quantFormat !== 'int8' && s.quantFormat !== 'int4' && s.quantFormat !== 'int2') {
    mismatch('quantFormat', String(s.quantFormat), "'int8', 'int4', 'int2' or null");
  }
  let fullLayout;
  let quantLayout = null;
  try {
    fullLayout = blockLayout(s.fullFormat, s.shape);
    quantLayout = s.quantFormat === null ? null : blockLayout(s.quantFormat, s.shape, s.groupSize);
  } catch (error) {
    mismatch('layout', `group size ${s.groupSize}`, `a shape and group size the block layout accepts (${error instanceof Error ? error.message : String(error)})`);
  }
  if (s.quantFormat === null) expectEqual('groupSize', s.groupSize, 0);
  const fullCount = s.fullBlocks.length / fullLayout.wordsPerBlock;
  if (!Number.isInteger(fullCount)) mismatch('fullBlocks length', s.fullBlocks.length, `a multiple of ${fullLayout.wordsPerBlock} words`);
  const quantWords = quantLayout?.wordsPerBlock ?? 1;
  const quantCount = s.quantBlocks.length / quantWords;
  if (!Number.isInteger(quantCount) || (quantLayout === null && quantCount !== 0)) {
    mismatch('quantBlocks length', s.quantBlocks.length, quantLayout ? `a multiple of ${quantWords} words` : '0 without a quantFormat');
  }
  expectEqual('rows', s.rows.length, layers * kvHeads);
  const referenced = { full: new Uint8Array(fullCount), quant: new Uint8Array(quantCount) };
  let statsTotal = 0;
  s.rows.forEach((row, i) => {
    const at = `rows[${i}]`;
    if (!isCount(row.tokenCount) || row.tokenCount > s.sequenceLength) mismatch(`${at}.tokenCount`, row.tokenCount, `an integer ≤ sequenceLength ${s.sequenceLength}`);
    if (!isCount(row.intactFrom) || row.intactFrom > s.sequenceLength) mismatch(`${at}.intactFrom`, row.intactFrom, `an integer ≤ sequenceLength ${s.sequenceLength}`);
    expectEqual(`${at}.entries`, row.entries.length, Math.ceil(row.tokenCount / blockSize));
    const seen = { full: new Set<number>(), quant: new Set<number>() };
    let fullSeen = false;
    row.entries.forEach((ref, b) => {
      const count = ref.pool === 'full' ? fullCount : ref.pool === 'quant' ? quantCount : -1;
      if (count < 0) mismatch(`${at}.entries[${b}].pool`, String(ref.pool), "'full' or 'quant'");
      if (!isCount(ref.index) || ref.index >= count) mismatch(`${at}.entries[${b}].index`, ref.index, `an index below ${count}`);
      if (seen[ref.pool].has(ref.index)) mismatch(`${at}.entries[${b}].index`, ref.index, 'a block not already in the row');
      seen[ref.pool].add(ref.index);
      referenced[ref.pool][ref.index] = 1;
      if (ref.pool === 'full') fullSeen = true;
      // Quantized blocks come first and are always completely filled (CacheMetadata's rule).
      else if (fullSeen || (b + 1) * blockSize > row.tokenCount) mismatch(`${at}.entries[${b}].pool`, 'quant', 'full (only leading, completely filled blocks are quantized)');
    });
    statsTotal += row.tokenCount;
  });
  for (const pool of ['full', 'quant'] as const) {
    const unused = referenced[pool].indexOf(0);
    if (unused >= 0) mismatch(`${pool}Blocks[${unused}]`, 'unreferenced', 'referenced by a row');
  }
  for (const key of ['attnSum', 'attnSqSum', 'attnCount'] as const) expectEqual(`stats.${key} length`, s.stats[key].length, statsTotal);
  expectEqual('windows', s.windows.length, layers);
  const w = s.observationWindow;
  s.windows.forEach((win, layer) => {
    const at = `windows[${layer}]`;
    expectEqual(`${at}.positions length`, win.positions.length, w);
    expectEqual(`${at}.queries length`, win.queries.length, w * s.nHeads * headDim);
    let count = 0;
    let newest = -1;
    win.positions.forEach((p, j) => {
      if (p === EMPTY_WINDOW_POSITION) return;
      if (p % w !== j || p >= s.sequenceLength) mismatch(`${at}.positions[${j}]`, p, `a position ≡ ${j} mod ${w} below ${s.sequenceLength}`);
      count++;
      newest = Math.max(newest, p);
    });
    expectEqual(`${at}.valid`, win.valid, count);
    expectEqual(`${at}.end`, win.end, newest + 1);
  });
  if (s.slots) {
    try {
      checkSnapshotSlots(s.slots, layers * kvHeads, s.rows.map((row) => row.tokenCount));
    } catch (error) {
      mismatch('slots', error instanceof Error ? error.message : String(error), 'one count per row within its tokens, and that many finite masses ≥ 0');
    }
  }
}

/**
 * Checks a snapshot against a cache (after {@link checkSnapshot}): shape, formats, head and window counts, token
 * counts within the cache's rows. SnapshotMismatchError naming the field, the snapshot's value and the cache's.
 */
export function validateSnapshot(s: SequenceSnapshot, target: SnapshotTarget): void {
  checkSnapshot(s);
  for (const key of ['layers', 'kvHeads', 'headDim', 'blockSize'] as const) expectEqual(`shape.${key}`, s.shape[key], target.shape[key]);
  expectEqual('nHeads', s.nHeads, target.nHeads);
  expectEqual('observationWindow', s.observationWindow, target.observationWindow);
  expectEqual('fullFormat', s.fullFormat, target.fullFormat);
  if (s.quantFormat !== null && s.quantBlocks.length > 0) {
    if (target.quantFormat !== undefined) expectEqual('quantFormat', s.quantFormat, target.quantFormat);
    expectEqual('groupSize', s.groupSize, target.groupSizeFor(s.quantFormat));
  }
  s.rows.forEach((row, i) => {
    if (row.tokenCount > target.maxTokensPerHead) mismatch(`rows[${i}].tokenCount`, row.tokenCount, `at most maxTokensPerHead ${target.maxTokensPerHead}`);
  });
}
