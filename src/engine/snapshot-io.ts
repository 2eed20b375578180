import { InvalidArgumentError } from '../errors.js';
import type { CacheMetadata, CacheMetadataSnapshot, PoolName } from '../cache/cache-metadata.js';
import type { QuantFormat } from '../format/layout.js';
import type { CpuKvStorage } from '../cache/cpu-storage.js';
import type { GpuKvStorage } from '../cache/gpu-storage.js';
import { type ExportedRows, type ImportedBlocks, exportRows, importRows } from '../cache/sequence-export.js';
import type { CpuAttentionBackend } from '../attention/cpu-backend.js';
import type { PagedAttentionBackend } from '../attention/paged-backend.js';
import { readPagedState, writePagedState } from '../attention/snapshot-state.js';
import { type SlotStateStore, slotRows } from '../cache/slot-state.js';
import { GPU_SLOT_CAPACITY, type GpuSlotState } from '../cache/gpu-slot-state.js';
import { type SequenceSnapshot, type SnapshotTarget, validateSnapshot } from './sequence-snapshot.js';

// Both engines' export and import of one sequence: the metadata plan (src/cache/sequence-export.ts), the block
// words, the statistics and the window. The caches call these inside their per-sequence queue.

/** What an import needs of either engine's storage. */
interface GrowableStorage {
  growPool(pool: PoolName, layer: number, blocks: number): void;
  setQuantFormat(format: QuantFormat): void;
}

type Header = Pick<SequenceSnapshot, 'shape' | 'nHeads' | 'observationWindow' | 'fullFormat' | 'quantFormat' | 'groupSize' | 'sequenceLength' | 'rows'>;

function header(meta: CacheMetadata, nHeads: number, observationWindow: number, rows: ExportedRows): Header {
  const { layers, kvHeads, headDim, blockSize } = meta.shape;
  // A snapshot holding no quantized block needs no quantized format: it then imports into any cache.
  const quant = rows.quantBlocks.length > 0 ? meta.quantLayout : null;
  return {
    shape: { layers, kvHeads, headDim, blockSize },
    nHeads,
    observationWindow,
    fullFormat: meta.fullFormat,
    quantFormat: quant === null ? null : (meta.quantFormat ?? null),
    groupSize: quant?.groupSize ?? 0,
    sequenceLength: rows.sequenceLength,
    rows: rows.rows,
  };
}

function target(meta: CacheMetadata, nHeads: number, observationWindow: number, maxTokensPerHead: number): SnapshotTarget {
  return {
    shape: meta.shape,
    nHeads,
    observationWindow,
    fullFormat: meta.fullFormat,
    quantFormat: meta.quantFormat,
    groupSizeFor: (format) => meta.layoutFor(format).groupSize,
    maxTokensPerHead,
  };
}

function refuseSpeculation(open: boolean, seqId: number): void {
  // Settling would decide the speculation for the caller; a snapshot of provisional state would not restore.
  if (open) throw new InvalidArgumentError('speculation', `sequence ${seqId} has an open speculation; settle it with truncate() before exporting`);
}

/**
 * Validates, then plans the import in the metadata (all or nothing), setting the quantized format first when the
 * cache has none. On any error the metadata is put back and `undo` brings the storage in line.
 */
function planImport(meta: CacheMetadata, seqId: number, s: SequenceSnapshot, t: SnapshotTarget, storage: GrowableStorage, undo: () => void): ImportedBlocks {
  validateSnapshot(s, t);
  const before: CacheMetadataSnapshot = meta.snapshot();
  try {
    if (s.quantFormat !== null && s.quantBlocks.length > 0 && meta.quantFormat === undefined) storage.setQuantFormat(s.quantFormat);
    const quantWords = meta.quantLayout?.wordsPerBlock ?? 1;
    return importRows(meta, seqId, s.sequenceLength, s.rows, s.fullBlocks.length / meta.fullLayout.wordsPerBlock, s.quantBlocks.length / quantWords, (pool, layer, blocks) =>
      storage.growPool(pool, layer, blocks),
    );
  } catch (error) {
    meta.restore(before);
    undo();
    throw error;
  }
}

/** Exports a sequence of the GPU engine with one staging readback. */
export async function exportPaged(storage: GpuKvStorage, attention: PagedAttentionBackend, seqId: number, slots: GpuSlotState): Promise<SequenceSnapshot> {
  refuseSpeculation(attention.inSpeculation(seqId), seqId);
  const meta = storage.meta;
  const rows = exportRows(meta, seqId);
  const state = await readPagedState(attention, seqId, rows);
  // The slot masses take a readback of their own (a small buffer), only when the sequence holds slots.
  const mergeSlots = await slots.exportRows(slotRows(meta.shape, meta.slotOf(seqId), (sl, l, h) => meta.tables.row(sl, l, h)));
  return {
    ...header(meta, attention.nHeads, attention.observationWindow, rows),
    fullBlocks: state.fullWords,
    quantBlocks: state.quantWords,
    stats: state.stats,
    windows: state.windows,
    ...(mergeSlots ? { slots: mergeSlots } : {}),
  };
}

/** Imports a snapshot as a new sequence of the GPU engine (see `PagedKvCache.importSequence`). */
export function importPaged(storage: GpuKvStorage, attention: PagedAttentionBackend, seqId: number, s: SequenceSnapshot, slots: GpuSlotState): void {
  const meta = storage.meta;
  const most = Math.max(0, ...(s.slots?.counts ?? []));
  if (most > GPU_SLOT_CAPACITY) {
    throw new InvalidArgumentError('snapshot', `holds ${most} merge slots per head; the GPU engine holds at most ${GPU_SLOT_CAPACITY} (import it into a CpuKvCache)`);
  }
  const placed = planImport(meta, seqId, s, target(meta, attention.nHeads, attention.observationWindow, storage.maxTokensPerHead), storage, () => undefined);
  attention.clearSlot(placed.slot);
  storage.uploadDirtyRows();
  writePagedState(attention, placed, s.rows, { fullWords: s.fullBlocks, quantWords: s.quantBlocks, stats: s.stats, windows: [...s.windows] });
  slots.importRows(slotRows(meta.shape, placed.slot, (sl, l, h) => meta.tables.row(sl, l, h)), s.slots);
}

/** Exports a sequence of the CPU engine (copies). */
export function exportCpu(storage: CpuKvStorage, attention: CpuAttentionBackend, seqId: number, slots: SlotStateStore): SequenceSnapshot {
  attention.assertNoPendingStep('export a sequence');
  refuseSpeculation(attention.inSpeculation(seqId), seqId);
  const meta = storage.meta;
  const rows = exportRows(meta, seqId);
  const words = (pool: 'full' | 'quant', blocks: readonly number[], layersOf: readonly number[]): Uint32Array => {
    if (blocks.length === 0) return new Uint32Array(0);
    const wpb = storage.layout(pool).wordsPerBlock;
    const out = new Uint32Array(blocks.length * wpb);
    blocks.forEach((block, i) => out.set(storage.poolWords(pool, layersOf[i] ?? 0).subarray(block * wpb, (block + 1) * wpb), i * wpb));
    return out;
  };
  const total = rows.rows.reduce((sum, r) => sum + r.tokenCount, 0);
  const stats = { attnSum: new Float32Array(total), attnSqSum: new Float32Array(total), attnCount: new Float32Array(total) };
  let at = 0;
  const { layers, kvHeads } = meta.shape;
  rows.rows.forEach((r, i) => {
    const view = attention.statsView(meta.rowOf(seqId, Math.floor(i / kvHeads), i % kvHeads), r.tokenCount);
    for (const key of ['attnSum', 'attnSqSum', 'attnCount'] as const) stats[key].set(view[key], at);
    at += r.tokenCount;
  });
  const slot = meta.slotOf(seqId);
  const mergeSlots = slots.exportRows(slotRows(meta.shape, slot, (sl, l, h) => meta.tables.row(sl, l, h)));
  return {
    ...header(meta, attention.nHeads, attention.observationWindow, rows),
    fullBlocks: words('full', rows.fullBlocks, rows.fullLayers),
    quantBlocks: words('quant', rows.quantBlocks, rows.quantLayers),
    stats,
    windows: Array.from({ length: layers }, (_, layer) => attention.exportWindow(slot, layer)),
    ...(mergeSlots ? { slots: mergeSlots } : {}),
  };
}

/** Imports a snapshot as a new sequence of the CPU engine (see `CpuKvCache.importSequence`). */
export function importCpu(storage: CpuKvStorage, attention: CpuAttentionBackend, seqId: number, s: SequenceSnapshot, slots: SlotStateStore): void {
  const meta = storage.meta;
  const placed = planImport(meta, seqId, s, target(meta, attention.nHeads, attention.observationWindow, storage.maxTokensPerHead), storage, () => storage.syncPools());
  attention.clearSlot(placed.slot);
  const { blockSize } = meta.shape;
  // Each block's decoded mirror covers the slots its fullest referencing row fills.
  const filled = { full: new Array<number>(placed.fullBlocks.length).fill(0), quant: new Array<number>(placed.quantBlocks.length).fill(0) };
  for (const row of s.rows) {
    row.entries.forEach((ref, b) => {
      filled[ref.pool][ref.index] = Math.max(filled[ref.pool][ref.index] ?? 0, Math.min(blockSize, row.tokenCount - b * blockSize));
    });
  }
  for (const pool of ['full', 'quant'] as const) {
    const blocks = pool === 'full' ? placed.fullBlocks : placed.quantBlocks;
    const layersOf = pool === 'full' ? placed.fullLayers : placed.quantLayers;
    const source = pool === 'full' ? s.fullBlocks : s.quantBlocks;
    if (blocks.length === 0) continue;
    const wpb = storage.layout(pool).wordsPerBlock;
    blocks.forEach((block, i) => storage.writeBlockWords(pool, layersOf[i] ?? 0, block, source.subarray(i * wpb, (i + 1) * wpb), filled[pool][i] ?? 0));
  }
  const stride = storage.maxTokensPerHead;
  let at = 0;
  s.rows.forEach((r, i) => {
    const row = meta.tables.row(placed.slot, Math.floor(i / meta.shape.kvHeads), i % meta.shape.kvHeads);
    for (const key of ['attnSum', 'attnSqSum', 'attnCount'] as const) attention[key].set(s.stats[key].subarray(at, at + r.tokenCount), row * stride);
    at += r.tokenCount;
  });
  s.windows.forEach((w, layer) => attention.importWindow(placed.slot, layer, w));
  slots.importRows(slotRows(meta.shape, placed.slot, (sl, l, h) => meta.tables.row(sl, l, h)), s.slots);
}
