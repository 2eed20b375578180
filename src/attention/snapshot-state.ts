import { GpuValidationError } from '../errors.js';
import type { ExportedRows, ImportedBlocks, SnapshotRow } from '../cache/sequence-export.js';
import type { PagedAttentionBackend } from './paged-backend.js';

// The attention half of a sequence snapshot: each row's per-token statistics and each layer's observation window,
// in one canonical form both engines read and write (so a snapshot moves between them), and the GPU engine's
// single-readback export and upload.

/** Window position of a ring slot that holds no query. */
export const EMPTY_WINDOW_POSITION = 0xffff_ffff;

/** The statistics of every row of a sequence: the first tokenCount entries of each row, rows in order, concatenated. */
export interface SnapshotStats {
  readonly attnSum: Float32Array;
  readonly attnSqSum: Float32Array;
  readonly attnCount: Float32Array;
}

/**
 * One layer's observation window. Canonical: a ring slot holds a query exactly when its position is not
 * {@link EMPTY_WINDOW_POSITION} (its queries are zero otherwise), slot j holds a position ≡ j mod capacity, `valid`
 * counts the filled slots, and `end` is one past the newest filled position (0 when none).
 */
export interface SnapshotWindow {
  readonly valid: number;
  readonly end: number;
  /** u32 [capacity]. */
  readonly positions: Uint32Array;
  /** f32 [capacity][nHeads][headDim], roped. */
  readonly queries: Float32Array;
}

/** The GPU words of a sequence read back in one staging copy. */
export interface PagedStateWords {
  readonly fullWords: Uint32Array;
  readonly quantWords: Uint32Array;
  readonly stats: SnapshotStats;
  readonly windows: SnapshotWindow[];
}

interface Copy {
  readonly src: GPUBuffer;
  readonly srcOffset: number;
  readonly bytes: number;
}

/**
 * Reads a sequence's blocks, statistics and window from the GPU with one staging buffer and one map: every
 * range is copied into it in one command buffer.
 */
export async function readPagedState(backend: PagedAttentionBackend, seqId: number, rows: ExportedRows): Promise<PagedStateWords> {
  const { storage } = backend;
  const { gpu, meta } = storage;
  const slot = meta.slotOf(seqId);
  const { layers, headDim } = meta.shape;
  const capacity = backend.observationWindow;
  const rowValues = backend.nHeads * headDim;
  const copies: Copy[] = [];
  const blockCopies = (pool: 'full' | 'quant', blocks: readonly number[], layersOf: readonly number[]): number => {
    if (blocks.length === 0) return 0;
    const bytes = storage.layout(pool).wordsPerBlock * 4;
    blocks.forEach((block, i) => copies.push({ src: storage.poolBuffer(pool, layersOf[i] ?? 0), srcOffset: block * bytes, bytes }));
    return (blocks.length * bytes) / 4;
  };
  const fullWords = blockCopies('full', rows.fullBlocks, rows.fullLayers);
  const quantWords = blockCopies('quant', rows.quantBlocks, rows.quantLayers);
  const tableRows = statsRows(meta.shape.layers, meta.shape.kvHeads, (layer, head) => meta.rowOf(seqId, layer, head));
  const statsTotal = rows.rows.reduce((sum, r) => sum + r.tokenCount, 0);
  const stride = storage.maxTokensPerHead;
  for (const stats of [backend.statistics.attnSum, backend.statistics.attnSqSum, backend.statistics.attnCount]) {
    rows.rows.forEach((r, i) => {
      if (r.tokenCount > 0) copies.push({ src: stats, srcOffset: (tableRows[i] ?? 0) * stride * 4, bytes: r.tokenCount * 4 });
    });
  }
  for (let layer = 0; layer < layers; layer++) {
    const base = layer * meta.seqSlots + slot;
    copies.push({ src: backend.window.queries, srcOffset: base * capacity * rowValues * 4, bytes: capacity * rowValues * 4 });
  }
  for (let layer = 0; layer < layers; layer++) {
    copies.push({ src: backend.window.positions, srcOffset: (layer * meta.seqSlots + slot) * capacity * 4, bytes: capacity * 4 });
  }
  // The bookkeeping is read with the copies, before the map resolves (the caller's queue keeps the sequence still).
  const states = Array.from({ length: layers }, (_, layer) => backend.windowState(slot, layer));
  const total = copies.reduce((sum, c) => sum + c.bytes, 0);
  const staging = gpu.device.createBuffer({ label: 'kv:export-sequence', size: Math.max(4, total), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  let words: Uint32Array;
  try {
    const encoder = gpu.device.createCommandEncoder({ label: 'kv:export-sequence' });
    let at = 0;
    for (const c of copies) {
      encoder.copyBufferToBuffer(c.src, c.srcOffset, staging, at, c.bytes);
      at += c.bytes;
    }
    gpu.submit([encoder.finish()]);
    try {
      await staging.mapAsync(GPUMapMode.READ);
    } catch (error) {
      gpu.assertUsable();
      throw new GpuValidationError(`reading back the sequence for a snapshot failed: ${error instanceof Error && error.message ? error.message : String(error)}`);
    }
    words = new Uint32Array(staging.getMappedRange().slice(0));
  } finally {
    staging.destroy();
  }
  let at = 0;
  const take = (n: number): Uint32Array => words.slice(at, (at += n));
  const full = take(fullWords);
  const quant = take(quantWords);
  const floats = (n: number): Float32Array => new Float32Array(take(n).buffer);
  const stats: SnapshotStats = { attnSum: floats(statsTotal), attnSqSum: floats(statsTotal), attnCount: floats(statsTotal) };
  const queries = Array.from({ length: layers }, () => floats(capacity * rowValues));
  const windows = queries.map((q, layer) => {
    const state = states[layer] ?? { valid: 0, end: 0 };
    return canonicalWindow(state.valid, state.end, take(capacity), q, capacity, rowValues);
  });
  return { fullWords: full, quantWords: quant, stats, windows };
}

/**
 * The canonical form of a GPU window: the GPU engine knows a window as (valid, end) and reads the ring slots of
 * positions [end − valid, end); any other slot content is stale and is blanked here.
 */
function canonicalWindow(valid: number, end: number, positions: Uint32Array, queries: Float32Array, capacity: number, rowValues: number): SnapshotWindow {
  let count = 0;
  let newest = -1;
  for (let j = 0; j < capacity; j++) {
    const p = positions[j] ?? EMPTY_WINDOW_POSITION;
    if (p !== EMPTY_WINDOW_POSITION && p >= end - valid && p < end && p % capacity === j) {
      count++;
      newest = Math.max(newest, p);
    } else {
      positions[j] = EMPTY_WINDOW_POSITION;
      queries.fill(0, j * rowValues, (j + 1) * rowValues);
    }
  }
  return { valid: count, end: newest + 1, positions, queries };
}

/** Block-table rows of a sequence in snapshot order. */
function statsRows(layers: number, kvHeads: number, rowOf: (layer: number, head: number) => number): number[] {
  const rows: number[] = [];
  for (let layer = 0; layer < layers; layer++) for (let head = 0; head < kvHeads; head++) rows.push(rowOf(layer, head));
  return rows;
}

/**
 * Uploads an imported sequence's block words, statistics and window (the metadata already holds its rows; the
 * slot's statistics were cleared, so the tail of each row past its token count stays zero).
 */
export function writePagedState(
  backend: PagedAttentionBackend,
  placed: ImportedBlocks,
  rows: readonly SnapshotRow[],
  state: PagedStateWords,
): void {
  const { storage } = backend;
  const { gpu, meta } = storage;
  const queue = gpu.device.queue;
  const upload = (pool: 'full' | 'quant', blocks: readonly number[], layersOf: readonly number[], words: Uint32Array): void => {
    if (blocks.length === 0) return;
    const wpb = storage.layout(pool).wordsPerBlock;
    blocks.forEach((block, i) => queue.writeBuffer(storage.poolBuffer(pool, layersOf[i] ?? 0), block * wpb * 4, words as Uint32Array<ArrayBuffer>, i * wpb, wpb));
  };
  upload('full', placed.fullBlocks, placed.fullLayers, state.fullWords);
  upload('quant', placed.quantBlocks, placed.quantLayers, state.quantWords);
  const stride = storage.maxTokensPerHead;
  const { layers, kvHeads } = meta.shape;
  const tableRows = statsRows(layers, kvHeads, (layer, head) => meta.tables.row(placed.slot, layer, head));
  for (const key of ['attnSum', 'attnSqSum', 'attnCount'] as const) {
    let at = 0;
    rows.forEach((r, i) => {
      if (r.tokenCount > 0) queue.writeBuffer(backend.statistics[key], (tableRows[i] ?? 0) * stride * 4, state.stats[key] as Float32Array<ArrayBuffer>, at, r.tokenCount);
      at += r.tokenCount;
    });
  }
  const capacity = backend.observationWindow;
  const rowValues = backend.nHeads * meta.shape.headDim;
  state.windows.forEach((w, layer) => {
    const base = layer * meta.seqSlots + placed.slot;
    queue.writeBuffer(backend.window.queries, base * capacity * rowValues * 4, w.queries as Float32Array<ArrayBuffer>, 0, capacity * rowValues);
    queue.writeBuffer(backend.window.positions, base * capacity * 4, w.positions as Uint32Array<ArrayBuffer>, 0, capacity);
    backend.setWindowState(placed.slot, layer, w.valid, w.end);
  });
}
