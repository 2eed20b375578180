/**
 * The binary container of one saved cache entry. All integers little-endian:
 *
 *   [0, 8)          magic "KVCSTORE"
 *   [8, 12)         container version (u32) = {@link STORE_ENTRY_VERSION}
 *   [12, 16)        header length H in bytes (u32)
 *   [16, 24)        total length T of the entry in bytes (u64, < 2⁵³)
 *   [24, 24 + H)    header: UTF-8 JSON {@link StoreEntryHeader}
 *   zero padding to a multiple of 8, then the payload: each section at its offset (relative to the payload, a
 *                   multiple of 8, in header order, each starting at the 8-aligned end of the one before), zero
 *                   padding between
 *   [T − 32, T)     SHA-256 of [0, T − 32)
 *
 * The reader is strict: exactly one layout is valid for a given header, so any other byte sequence is refused
 * with a typed {@link StoreEntryError} (a miss), never a crash and never data. No field is evaluated as code.
 *
 * Why SHA-256 and not CRC32: WebCrypto computes it natively (about as fast as a table CRC32 in JS on megabyte
 * entries, and no code of ours to get wrong), and it misses a corruption with probability 2⁻²⁵⁶, not 2⁻³²: a store that
 * reads millions of entries from disks and shared servers over its life would let a CRC32 pass one bad entry in
 * about four billion, and "never wrong data" is the promise. It is an integrity check, not a signature: whoever
 * can write the store can write a valid checksum (authenticity is the tenant salt's and the tier's business).
 */
import { StoreEntryError, InvalidArgumentError } from '../errors.js';
import { canonicalJson, sha256, type JsonValue } from './canonical.js';

/** Version of the container (this file's byte layout). */
export const STORE_ENTRY_VERSION = 1;

const MAGIC = new TextEncoder().encode('KVCSTORE');
const PREFIX_BYTES = 24;
const CHECKSUM_BYTES = 32;
const ALIGN = 8;

/** A section of the header's table: where a named payload lies, relative to the start of the payload. */
export interface StoreSectionRecord {
  readonly name: string;
  readonly offset: number;
  readonly length: number;
}

/** The JSON header, as written. */
export interface StoreEntryHeader {
  /** Version of the meaning of the sections (the paged-state layout); the container does not interpret it. */
  readonly layoutVersion: number;
  /** Cache shape (layers, kvHeads, headDim, blockSize, …): integer counts. */
  readonly shape: { readonly [name: string]: number };
  readonly settings: JsonValue;
  readonly fingerprint: string;
  /** Tokens of the stream the entry covers. */
  readonly tokenCount: number;
  readonly sections: readonly StoreSectionRecord[];
}

/** One entry: the header's fields and the sections' bytes, by name in order. */
export interface StoreEntry extends Omit<StoreEntryHeader, 'sections'> {
  readonly sections: ReadonlyMap<string, Uint8Array>;
}

/** What the reader checks beyond the container itself; a field left out is not checked. */
export interface StoreEntryExpectation {
  readonly layoutVersion?: number;
  readonly fingerprint?: string;
  readonly shape?: { readonly [name: string]: number };
  /** Compared as canonical JSON. */
  readonly settings?: JsonValue;
  readonly tokenCount?: number;
  /** Sections that must be present. */
  readonly sections?: readonly string[];
}

const align = (n: number): number => Math.ceil(n / ALIGN) * ALIGN;

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function isShape(value: unknown): value is { [name: string]: number } {
  return typeof value === 'object' && value !== null && !Array.isArray(value) && Object.values(value).every(isCount);
}

function checkEntry(entry: StoreEntry): void {
  if (!isCount(entry.layoutVersion)) throw new InvalidArgumentError('layoutVersion', `must be an integer ≥ 0; got ${entry.layoutVersion}`);
  if (!isCount(entry.tokenCount)) throw new InvalidArgumentError('tokenCount', `must be an integer ≥ 0; got ${entry.tokenCount}`);
  if (!isShape(entry.shape)) throw new InvalidArgumentError('shape', 'must be an object of integers ≥ 0');
  if (entry.fingerprint === '') throw new InvalidArgumentError('fingerprint', 'must not be empty');
  for (const name of entry.sections.keys()) {
    if (name === '') throw new InvalidArgumentError('sections', 'a section name must not be empty');
  }
}

/**
 * Serializes an entry (the section bytes are copied into the result).
 *
 * @throws InvalidArgumentError for a negative or fractional count, an empty fingerprint or section name, or
 *   settings JSON cannot hold.
 * @example
 * ```ts
 * const bytes = await encodeStoreEntry({
 *   layoutVersion: 1, shape: { layers: 5, kvHeads: 4, headDim: 8, blockSize: 16 }, settings, fingerprint,
 *   tokenCount: 96, sections: new Map([['lengths', lengths], ['blocks', blockBytes]]),
 * });
 * ```
 */
export async function encodeStoreEntry(entry: StoreEntry): Promise<Uint8Array> {
  checkEntry(entry);
  const records: StoreSectionRecord[] = [];
  let payloadBytes = 0;
  for (const [name, bytes] of entry.sections) {
    const offset = align(payloadBytes);
    records.push({ name, offset, length: bytes.length });
    payloadBytes = offset + bytes.length;
  }
  const header: StoreEntryHeader = {
    layoutVersion: entry.layoutVersion,
    shape: entry.shape,
    settings: entry.settings,
    fingerprint: entry.fingerprint,
    tokenCount: entry.tokenCount,
    sections: records,
  };
  const headerBytes = new TextEncoder().encode(canonicalJson(header, 'header'));
  const payloadStart = align(PREFIX_BYTES + headerBytes.length);
  const total = payloadStart + payloadBytes + CHECKSUM_BYTES;
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  out.set(MAGIC, 0);
  view.setUint32(8, STORE_ENTRY_VERSION, true);
  view.setUint32(12, headerBytes.length, true);
  view.setBigUint64(16, BigInt(total), true);
  out.set(headerBytes, PREFIX_BYTES);
  let i = 0;
  for (const bytes of entry.sections.values()) out.set(bytes, payloadStart + (records[i++] as StoreSectionRecord).offset);
  out.set(await sha256(out.subarray(0, total - CHECKSUM_BYTES)), total - CHECKSUM_BYTES);
  return out;
}

function refuse(reason: ConstructorParameters<typeof StoreEntryError>[0], detail: string): never {
  throw new StoreEntryError(reason, detail);
}

function parseHeader(bytes: Uint8Array): StoreEntryHeader {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    refuse('header', 'the header is not UTF-8 JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) refuse('header', 'the header is not a JSON object');
  const header = value as Record<string, unknown>;
  if (!isCount(header.layoutVersion)) refuse('header', 'layoutVersion is not an integer ≥ 0');
  if (!isCount(header.tokenCount)) refuse('header', 'tokenCount is not an integer ≥ 0');
  if (!isShape(header.shape)) refuse('header', 'shape is not an object of integers ≥ 0');
  if (typeof header.fingerprint !== 'string' || header.fingerprint === '') refuse('header', 'fingerprint is not a non-empty string');
  if (!('settings' in header)) refuse('header', 'settings are missing');
  try {
    canonicalJson(header.settings); // JSON.parse reads 1e999 as Infinity, which is no JSON value
  } catch {
    refuse('header', 'settings hold a value JSON cannot');
  }
  if (!Array.isArray(header.sections)) refuse('header', 'sections is not an array');
  for (const record of header.sections as unknown[]) {
    const r = record as Record<string, unknown> | null;
    if (typeof r !== 'object' || r === null || typeof r.name !== 'string' || r.name === '' || !isCount(r.offset) || !isCount(r.length)) {
      refuse('header', 'a section record is not { name, offset, length }');
    }
  }
  return header as unknown as StoreEntryHeader;
}

function sameShape(a: { readonly [name: string]: number }, b: { readonly [name: string]: number }): boolean {
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((key) => Object.hasOwn(b, key) && b[key] === a[key]);
}

/**
 * Reads an entry, refusing anything but a valid one that meets `expect`. The sections are copies: the entry stays
 * valid whatever happens to `bytes` later.
 *
 * @throws StoreEntryError with the reason (never any other error, whatever the bytes).
 * @example
 * ```ts
 * const entry = await decodeStoreEntry(bytes, { fingerprint, shape, settings, tokenCount: 96 });
 * const blocks = entry.sections.get('blocks');
 * ```
 */
export async function decodeStoreEntry(bytes: Uint8Array, expect: StoreEntryExpectation = {}): Promise<StoreEntry> {
  if (bytes.length < PREFIX_BYTES + CHECKSUM_BYTES) refuse('length', `${bytes.length} bytes is shorter than any entry`);
  for (let i = 0; i < MAGIC.length; i++) if (bytes[i] !== MAGIC[i]) refuse('magic', 'the bytes do not start with "KVCSTORE"');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const version = view.getUint32(8, true);
  if (version !== STORE_ENTRY_VERSION) refuse('version', `container version ${version}; this build reads ${STORE_ENTRY_VERSION}`);
  const declared = view.getBigUint64(16, true);
  if (declared !== BigInt(bytes.length)) refuse('length', `the entry declares ${declared} bytes; ${bytes.length} were read`);
  const total = bytes.length;
  const checksum = await sha256(bytes.subarray(0, total - CHECKSUM_BYTES));
  for (let i = 0; i < CHECKSUM_BYTES; i++) {
    if (checksum[i] !== bytes[total - CHECKSUM_BYTES + i]) refuse('checksum', 'the SHA-256 of the entry does not match the one it carries');
  }
  const headerLength = view.getUint32(12, true);
  if (PREFIX_BYTES + headerLength > total - CHECKSUM_BYTES) refuse('header', `a header of ${headerLength} bytes does not fit in the entry`);
  const header = parseHeader(bytes.subarray(PREFIX_BYTES, PREFIX_BYTES + headerLength));

  const payloadStart = align(PREFIX_BYTES + headerLength);
  const payloadBytes = total - CHECKSUM_BYTES - payloadStart;
  const sections = new Map<string, Uint8Array>();
  let end = 0;
  for (const record of header.sections) {
    if (sections.has(record.name)) refuse('section', `section "${record.name}" appears twice`);
    if (record.offset !== align(end)) refuse('section', `section "${record.name}" is at ${record.offset}, not where the previous one ends (${align(end)})`);
    end = record.offset + record.length;
    if (end > payloadBytes) refuse('section', `section "${record.name}" ends at ${end}, past the payload's ${payloadBytes} bytes`);
    sections.set(record.name, bytes.slice(payloadStart + record.offset, payloadStart + end));
  }
  if (end !== payloadBytes) refuse('section', `the sections end at ${end}; the payload has ${payloadBytes} bytes`);

  if (expect.layoutVersion !== undefined && header.layoutVersion !== expect.layoutVersion) {
    refuse('layout', `layout version ${header.layoutVersion}; expected ${expect.layoutVersion}`);
  }
  if (expect.fingerprint !== undefined && header.fingerprint !== expect.fingerprint) {
    refuse('fingerprint', `saved for model ${header.fingerprint}; expected ${expect.fingerprint}`);
  }
  if (expect.shape !== undefined && !sameShape(header.shape, expect.shape)) {
    refuse('shape', `shape ${JSON.stringify(header.shape)}; expected ${canonicalJson(expect.shape)}`);
  }
  if (expect.settings !== undefined && canonicalJson(header.settings) !== canonicalJson(expect.settings, 'expect.settings')) {
    refuse('settings', 'saved under other settings than expected');
  }
  if (expect.tokenCount !== undefined && header.tokenCount !== expect.tokenCount) {
    refuse('tokens', `covers ${header.tokenCount} tokens; expected ${expect.tokenCount}`);
  }
  for (const name of expect.sections ?? []) if (!sections.has(name)) refuse('section', `section "${name}" is missing`);
  const { layoutVersion, shape, settings, fingerprint, tokenCount } = header;
  return { layoutVersion, shape, settings, fingerprint, tokenCount, sections };
}
