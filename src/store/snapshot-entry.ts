import { InvalidArgumentError, SnapshotMismatchError, StoreEntryError } from '../errors.js';
import { QUANT_POOL_BIT, type FullFormat, type QuantFormat } from '../format/layout.js';
import type { SnapshotRow } from '../cache/sequence-export.js';
import { checkSnapshot, EMPTY_WINDOW_POSITION, type SequenceSnapshot, type SnapshotWindow } from '../engine/sequence-snapshot.js';
import { canonicalJson, type JsonValue } from './canonical.js';
import type { StoreEntry } from './entry-format.js';

/**
 * The meaning of a sequence snapshot's sections in a store entry (the entry's `layoutVersion`). All words are u32
 * or f32 in the platform's byte order (little-endian on every engine kvcompact runs on):
 *
 * - `rows`: per (layer, kv head) row: tokenCount, intactFrom, n, then n entries (QUANT_POOL_BIT | index);
 * - `full`, `quant`: the words of the snapshot's full and quantized blocks;
 * - `stats`: attnSum, then attnSqSum, then attnCount, each Σ tokenCount f32;
 * - `window`: per layer: valid, end, then for each of the `valid` filled ring slots in slot order its position
 *   and its query [nHeads][headDim] (f32): empty slots take no bytes, so a short prompt's window costs what it holds;
 * - `slots` (optional, only when the sequence holds merge slots): one u32 count per row, then the rows' slot
 *   masses as f64 (two words each), rows in order;
 * - `app` (optional): the caller's state, canonical UTF-8 JSON.
 *
 * The header's `shape` holds every number: the cache shape, nHeads, observationWindow, fullBits, quantBits (0:
 * none), groupSize, sequenceLength and the block counts.
 */
export const SNAPSHOT_LAYOUT_VERSION = 2;

const SECTIONS = ['rows', 'full', 'quant', 'stats', 'window'] as const;
const STAT_KEYS = ['attnSum', 'attnSqSum', 'attnCount'] as const;

/** What {@link snapshotToEntry} puts beside the snapshot. */
export interface SnapshotEntryOptions {
  /** The model's fingerprint (see src/store/keys.ts). */
  readonly fingerprint: string;
  /** The cache-state settings the entry was built under (compared as canonical JSON by readers). */
  readonly settings: JsonValue;
  /** Tokens of the stream the entry covers. */
  readonly tokenCount: number;
  /** The caller's own state (e.g. the generator's decode-schedule counters), carried in the `app` section. */
  readonly appState?: JsonValue;
  /**
   * Keep the observation window (default true). A policy that never reads it (`policyRequirements(p).window`
   * false: h2o, kvcompress, knorm, streaming…) continues exactly without it, and on a small model it is most of the
   * entry (stories260K: 40 KiB of 73 KiB); a restored sequence then starts with an empty window.
   */
  readonly window?: boolean;
}

function bytesOf(array: Uint32Array | Float32Array): Uint8Array {
  return new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
}

const FULL_BITS: Record<FullFormat, number> = { f32: 32, f16: 16 };
const QUANT_BITS: Record<QuantFormat, number> = { int8: 8, int4: 4, int2: 2 };

/**
 * A snapshot as a store entry (sections as raw bytes, numbers in the header's shape); encode it with
 * `encodeStoreEntry`.
 *
 * @throws SnapshotMismatchError when the snapshot is not self-consistent (see `checkSnapshot`).
 * @example
 * ```ts
 * const entry = snapshotToEntry(await cache.exportSequence(seq), { fingerprint, settings, tokenCount: 96, appState: decode.counters() });
 * const bytes = await encodeStoreEntry(entry);
 * ```
 */
export function snapshotToEntry(snapshot: SequenceSnapshot, options: SnapshotEntryOptions): StoreEntry {
  checkSnapshot(snapshot);
  const rowWords: number[] = [];
  for (const row of snapshot.rows) {
    rowWords.push(row.tokenCount, row.intactFrom, row.entries.length);
    for (const ref of row.entries) rowWords.push((ref.pool === 'quant' ? QUANT_POOL_BIT : 0) + ref.index);
  }
  const statsTotal = snapshot.stats.attnSum.length;
  const stats = new Float32Array(statsTotal * 3);
  STAT_KEYS.forEach((key, i) => stats.set(snapshot.stats[key], i * statsTotal));
  const w = snapshot.observationWindow;
  const rowValues = snapshot.nHeads * snapshot.shape.headDim;
  const keepWindow = options.window ?? true;
  const windowWords: number[] = [];
  for (const win of snapshot.windows) {
    if (!keepWindow) {
      windowWords.push(0, 0);
      continue;
    }
    windowWords.push(win.valid, win.end);
    const queryWords = new Uint32Array(win.queries.buffer, win.queries.byteOffset, win.queries.length);
    win.positions.forEach((p, j) => {
      if (p === EMPTY_WINDOW_POSITION) return;
      windowWords.push(p);
      for (const word of queryWords.subarray(j * rowValues, (j + 1) * rowValues)) windowWords.push(word);
    });
  }
  const window = Uint32Array.from(windowWords);
  const sections = new Map<string, Uint8Array>([
    ['rows', bytesOf(Uint32Array.from(rowWords))],
    ['full', bytesOf(snapshot.fullBlocks)],
    ['quant', bytesOf(snapshot.quantBlocks)],
    ['stats', bytesOf(stats)],
    ['window', bytesOf(window)],
  ]);
  if (snapshot.slots) {
    const { counts, mass } = snapshot.slots;
    const slotWords = new Uint32Array(counts.length + 2 * mass.length);
    slotWords.set(counts);
    new Uint8Array(slotWords.buffer).set(new Uint8Array(mass.buffer, mass.byteOffset, mass.byteLength), counts.length * 4);
    sections.set('slots', bytesOf(slotWords));
  }
  if (options.appState !== undefined) sections.set('app', new TextEncoder().encode(canonicalJson(options.appState, 'appState')));
  const { layers, kvHeads, headDim, blockSize } = snapshot.shape;
  const fullWords = snapshot.fullBlocks.length;
  return {
    layoutVersion: SNAPSHOT_LAYOUT_VERSION,
    shape: {
      layers,
      kvHeads,
      headDim,
      blockSize,
      nHeads: snapshot.nHeads,
      observationWindow: w,
      fullBits: FULL_BITS[snapshot.fullFormat],
      quantBits: snapshot.quantFormat === null ? 0 : QUANT_BITS[snapshot.quantFormat],
      groupSize: snapshot.groupSize,
      sequenceLength: snapshot.sequenceLength,
      rows: snapshot.rows.length,
      fullWords,
      quantWords: snapshot.quantBlocks.length,
    },
    settings: options.settings,
    fingerprint: options.fingerprint,
    tokenCount: options.tokenCount,
    sections,
  };
}

function refuse(detail: string): never {
  throw new StoreEntryError('snapshot', detail);
}

function words(entry: StoreEntry, name: string, expectedWords?: number): Uint32Array {
  const bytes = entry.sections.get(name);
  if (bytes === undefined) throw new StoreEntryError('section', `section "${name}" is missing`);
  if (bytes.length % 4 !== 0) refuse(`section "${name}" holds ${bytes.length} bytes, not whole words`);
  const out = new Uint32Array(bytes.length / 4);
  new Uint8Array(out.buffer).set(bytes);
  if (expectedWords !== undefined && out.length !== expectedWords) refuse(`section "${name}" holds ${out.length} words; the header says ${expectedWords}`);
  return out;
}

function count(shape: StoreEntry['shape'], key: string): number {
  const value = shape[key];
  if (value === undefined) refuse(`the header's shape lacks "${key}"`);
  return value;
}

/**
 * Reads a snapshot back from a decoded store entry, re-validating every section length and block index.
 *
 * @throws StoreEntryError (`layout`, `section` or `snapshot`) on anything inconsistent, never another error.
 * @example
 * ```ts
 * const { snapshot, appState } = entryToSnapshot(await decodeStoreEntry(bytes, { fingerprint, settings }));
 * await cache.importSequence(seq, snapshot);
 * ```
 */
export function entryToSnapshot(entry: StoreEntry): { snapshot: SequenceSnapshot; appState: JsonValue | undefined } {
  if (entry.layoutVersion !== SNAPSHOT_LAYOUT_VERSION) {
    throw new StoreEntryError('layout', `layout version ${entry.layoutVersion}; this build reads sequence snapshots of version ${SNAPSHOT_LAYOUT_VERSION}`);
  }
  for (const name of entry.sections.keys()) {
    if (!(SECTIONS as readonly string[]).includes(name) && name !== 'app' && name !== 'slots') throw new StoreEntryError('section', `unknown section "${name}"`);
  }
  const s = entry.shape;
  const [layers, kvHeads, headDim, blockSize, nHeads, w] = ['layers', 'kvHeads', 'headDim', 'blockSize', 'nHeads', 'observationWindow'].map((k) => count(s, k)) as [number, number, number, number, number, number];
  const fullBits = count(s, 'fullBits');
  const quantBits = count(s, 'quantBits');
  const fullFormat = (Object.keys(FULL_BITS) as FullFormat[]).find((f) => FULL_BITS[f] === fullBits);
  if (fullFormat === undefined) refuse(`fullBits ${fullBits} is neither 32 nor 16`);
  const quantFormat = quantBits === 0 ? null : (Object.keys(QUANT_BITS) as QuantFormat[]).find((f) => QUANT_BITS[f] === quantBits);
  if (quantFormat === undefined) refuse(`quantBits ${quantBits} is not 0, 8, 4 or 2`);
  const numRows = count(s, 'rows');
  if (numRows !== layers * kvHeads) refuse(`${numRows} rows; layers × kvHeads is ${layers * kvHeads}`);

  const rowWords = words(entry, 'rows');
  if (numRows * 3 > rowWords.length) refuse(`section "rows" holds ${rowWords.length} words; ${numRows} rows need at least ${numRows * 3}`);
  const rows: SnapshotRow[] = [];
  let at = 0;
  for (let r = 0; r < numRows; r++) {
    if (at + 3 > rowWords.length) refuse(`section "rows" ends inside row ${r}`);
    const tokenCount = rowWords[at] ?? 0;
    const intactFrom = rowWords[at + 1] ?? 0;
    const n = rowWords[at + 2] ?? 0;
    at += 3;
    if (n > rowWords.length - at) refuse(`row ${r} lists ${n} blocks past the end of section "rows"`);
    const entries = Array.from(rowWords.subarray(at, at + n), (word) => ({ pool: word >= QUANT_POOL_BIT ? ('quant' as const) : ('full' as const), index: word % QUANT_POOL_BIT }));
    at += n;
    rows.push({ tokenCount, intactFrom, entries });
  }
  if (at !== rowWords.length) refuse(`section "rows" has ${rowWords.length - at} words after the last row`);

  const statsTotal = rows.reduce((sum, row) => sum + row.tokenCount, 0);
  const stats = new Float32Array(words(entry, 'stats', statsTotal * 3).buffer);
  const rowValues = nHeads * headDim;
  const windowWords = words(entry, 'window');
  let wat = 0;
  const windows: SnapshotWindow[] = Array.from({ length: layers }, (_, layer) => {
    if (wat + 2 > windowWords.length) refuse(`section "window" ends before layer ${layer}`);
    const valid = windowWords[wat] ?? 0;
    const end = windowWords[wat + 1] ?? 0;
    wat += 2;
    if (valid > w) refuse(`layer ${layer}'s window holds ${valid} queries; its capacity is ${w}`);
    if (valid * (1 + rowValues) > windowWords.length - wat) refuse(`layer ${layer}'s window runs past the end of section "window"`);
    const positions = new Uint32Array(w).fill(EMPTY_WINDOW_POSITION);
    const queries = new Float32Array(w * rowValues);
    const queryWords = new Uint32Array(queries.buffer);
    for (let i = 0; i < valid; i++) {
      const p = windowWords[wat] ?? 0;
      const slot = p % w;
      // checkSnapshot below refuses a slot filled twice (fewer filled slots than `valid`) or a position out of range.
      positions[slot] = p;
      queryWords.set(windowWords.subarray(wat + 1, wat + 1 + rowValues), slot * rowValues);
      wat += 1 + rowValues;
    }
    return { valid, end, positions, queries };
  });
  if (wat !== windowWords.length) refuse(`section "window" has ${windowWords.length - wat} words after the last layer`);
  const snapshot: SequenceSnapshot = {
    shape: { layers, kvHeads, headDim, blockSize },
    nHeads,
    observationWindow: w,
    fullFormat,
    quantFormat,
    groupSize: count(s, 'groupSize'),
    sequenceLength: count(s, 'sequenceLength'),
    rows,
    fullBlocks: words(entry, 'full', count(s, 'fullWords')),
    quantBlocks: words(entry, 'quant', count(s, 'quantWords')),
    stats: { attnSum: stats.slice(0, statsTotal), attnSqSum: stats.slice(statsTotal, 2 * statsTotal), attnCount: stats.slice(2 * statsTotal) },
    windows,
    ...(entry.sections.has('slots') ? { slots: slotsOf(words(entry, 'slots'), numRows) } : {}),
  };
  try {
    checkSnapshot(snapshot);
  } catch (error) {
    if (error instanceof SnapshotMismatchError || error instanceof InvalidArgumentError) refuse(error.message);
    throw error;
  }
  let appState: JsonValue | undefined;
  const app = entry.sections.get('app');
  if (app !== undefined) {
    try {
      appState = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(app)) as JsonValue;
      canonicalJson(appState);
    } catch {
      refuse('section "app" is not UTF-8 JSON');
    }
  }
  return { snapshot, appState };
}

/** The `slots` section back: counts (checked by checkSnapshot), then f64 masses, two words each. */
function slotsOf(slotWords: Uint32Array, numRows: number): NonNullable<SequenceSnapshot['slots']> {
  if (slotWords.length < numRows || (slotWords.length - numRows) % 2 !== 0) refuse(`section "slots" holds ${slotWords.length} words; ${numRows} counts and whole f64 masses expected`);
  const counts = slotWords.slice(0, numRows);
  const mass = new Float64Array((slotWords.length - numRows) / 2);
  new Uint8Array(mass.buffer).set(new Uint8Array(slotWords.buffer, numRows * 4));
  return { counts, mass };
}
