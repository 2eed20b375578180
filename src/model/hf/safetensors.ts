import { HfModelError, UnsupportedDtypeError } from '../../errors.js';
import { f16BitsToF32 } from '../../format/f16.js';

/**
 * Random access to the bytes of one file, so a reader can take a header and then one tensor at a time without
 * holding the whole file (a Node file handle, a browser `File`/`Blob`, or bytes already in memory).
 *
 * @example
 * ```ts
 * const source: ByteSource = { name: file.name, byteLength: file.size,
 *   read: async (offset, length) => new Uint8Array(await file.slice(offset, offset + length).arrayBuffer()) };
 * ```
 */
export interface ByteSource {
  /** The file's name, used in error messages. */
  readonly name: string;
  readonly byteLength: number;
  /** Exactly `length` bytes from `offset` (the caller keeps offset + length ≤ byteLength). */
  read(offset: number, length: number): Promise<Uint8Array>;
}

/**
 * A {@link ByteSource} over bytes in memory (reads are views, not copies).
 *
 * @example
 * ```ts
 * const file = await openSafetensors(bytesSource('model.safetensors', bytes));
 * ```
 */
export function bytesSource(name: string, bytes: Uint8Array): ByteSource {
  return {
    name,
    byteLength: bytes.byteLength,
    read: async (offset, length) => bytes.subarray(offset, offset + length),
  };
}

/** Every dtype of the safetensors format with its size in bytes; only F32, F16 and BF16 can be read as f32. */
const DTYPE_BYTES: Readonly<Record<string, number>> = {
  BOOL: 1, U8: 1, I8: 1, F8_E5M2: 1, F8_E4M3: 1, I16: 2, U16: 2, F16: 2, BF16: 2, I32: 4, U32: 4, F32: 4,
  F64: 8, I64: 8, U64: 8,
};

/**
 * The dtypes {@link SafetensorsFile.readF32} converts.
 *
 * @example
 * ```ts
 * const ok = (READABLE_DTYPES as readonly string[]).includes(info.dtype);
 * ```
 */
export const READABLE_DTYPES = ['F32', 'F16', 'BF16'] as const;

/**
 * A dtype {@link SafetensorsFile.readF32} converts.
 */
export type ReadableDtype = (typeof READABLE_DTYPES)[number];

/**
 * One tensor of a safetensors header, with absolute byte offsets into the file.
 *
 * @example
 * ```ts
 * const { dtype, shape, begin, end } = file.tensor('model.norm.weight');
 * ```
 */
export interface SafetensorsTensorInfo {
  readonly name: string;
  readonly dtype: string;
  readonly shape: readonly number[];
  /** Absolute offset of the first byte in the file (8 + header length + data_offsets[0]). */
  readonly begin: number;
  /** Absolute offset one past the last byte. */
  readonly end: number;
}

/**
 * The largest header the reference implementation accepts (100 MB); larger claims are corrupt files.
 *
 * @example
 * ```ts
 * if (headerLength > MAX_SAFETENSORS_HEADER_BYTES) throw new Error('corrupt');
 * ```
 */
export const MAX_SAFETENSORS_HEADER_BYTES = 100_000_000;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Parses and validates a safetensors header as strictly as the reference implementation: an 8-byte
 * little-endian length, a UTF-8 JSON object, for every tensor a known dtype, a shape of non-negative integers and
 * `data_offsets` whose span is exactly shape × dtype size, the tensors laid back to back from offset 0 with no
 * gap or overlap, and the last one ending exactly at the end of the file. Anything else is an
 * {@link HfModelError} naming the file and the field. `prefix` is the first 8 bytes, `header` the JSON bytes.
 *
 * @example
 * ```ts
 * const tensors = parseSafetensorsHeader('model.safetensors', bytes.subarray(8, 8 + n), bytes.byteLength);
 * ```
 */
export function parseSafetensorsHeader(
  fileName: string,
  header: Uint8Array,
  fileLength: number,
): { tensors: Map<string, SafetensorsTensorInfo>; metadata: Record<string, string> } {
  const dataStart = 8 + header.byteLength;
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(header));
  } catch (err) {
    throw new HfModelError(fileName, 'header', `is not UTF-8 JSON (${(err as Error).message}); the file is corrupt or not safetensors`);
  }
  if (!isRecord(json)) throw new HfModelError(fileName, 'header', 'must be a JSON object of tensors');
  const metadata: Record<string, string> = {};
  const tensors = new Map<string, SafetensorsTensorInfo>();
  for (const [name, entry] of Object.entries(json)) {
    if (name === '__metadata__') {
      if (!isRecord(entry)) throw new HfModelError(fileName, '__metadata__', 'must be an object of strings');
      for (const [k, v] of Object.entries(entry)) {
        if (typeof v !== 'string') throw new HfModelError(fileName, `__metadata__.${k}`, 'must be a string');
        metadata[k] = v;
      }
      continue;
    }
    if (!isRecord(entry)) throw new HfModelError(fileName, name, 'must be an object with dtype, shape and data_offsets');
    const { dtype, shape, data_offsets: offsets } = entry;
    if (typeof dtype !== 'string' || DTYPE_BYTES[dtype] === undefined) {
      throw new HfModelError(fileName, `${name}.dtype`, `${JSON.stringify(dtype)} is not a safetensors dtype`);
    }
    if (!Array.isArray(shape) || !shape.every((d): d is number => Number.isSafeInteger(d) && d >= 0)) {
      throw new HfModelError(fileName, `${name}.shape`, `${JSON.stringify(shape)} must be an array of non-negative integers`);
    }
    if (
      !Array.isArray(offsets) ||
      offsets.length !== 2 ||
      !offsets.every((o): o is number => Number.isSafeInteger(o) && o >= 0) ||
      (offsets[0] as number) > (offsets[1] as number)
    ) {
      throw new HfModelError(fileName, `${name}.data_offsets`, `${JSON.stringify(offsets)} must be [begin, end] with 0 ≤ begin ≤ end`);
    }
    const [begin, end] = offsets as [number, number];
    const elements = shape.reduce((a, d) => a * d, 1);
    const span = elements * (DTYPE_BYTES[dtype] as number);
    if (!Number.isSafeInteger(span) || span !== end - begin) {
      throw new HfModelError(
        fileName,
        `${name}.data_offsets`,
        `span ${end - begin} bytes does not match shape ${JSON.stringify(shape)} × ${dtype} = ${span} bytes`,
      );
    }
    if (dataStart + end > fileLength) {
      throw new HfModelError(
        fileName,
        `${name}.data_offsets`,
        `[${begin}, ${end}] ends at byte ${dataStart + end}, past the end of the file (${fileLength} bytes): truncated download?`,
      );
    }
    tensors.set(name, { name, dtype, shape, begin: dataStart + begin, end: dataStart + end });
  }
  // Back to back from 0: an overlap would alias two tensors, a gap or tail hide bytes nobody declared.
  const sorted = [...tensors.values()].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = dataStart;
  for (const t of sorted) {
    if (t.begin !== cursor) {
      throw new HfModelError(
        fileName,
        `${t.name}.data_offsets`,
        t.begin < cursor
          ? `overlaps the previous tensor (begins at ${t.begin - dataStart}, previous ends at ${cursor - dataStart})`
          : `leaves a gap of ${t.begin - cursor} bytes before it (tensors must be contiguous)`,
      );
    }
    cursor = t.end;
  }
  if (cursor !== fileLength) {
    throw new HfModelError(
      fileName,
      'data_offsets',
      `tensors end at byte ${cursor} but the file has ${fileLength} bytes (${fileLength - cursor} undeclared trailing bytes)`,
    );
  }
  return { tensors, metadata };
}

const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * Converts raw little-endian F32/F16/BF16 bytes to f32 (a copy, so the source bytes can be dropped).
 *
 * @example
 * ```ts
 * decodeToF32('BF16', Uint8Array.of(0x80, 0x3f)); // Float32Array [1]
 * ```
 */
export function decodeToF32(dtype: ReadableDtype, bytes: Uint8Array): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (dtype === 'F32') {
    if (littleEndian) return new Float32Array(bytes.slice().buffer);
    const out = new Float32Array(bytes.byteLength / 4);
    for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(4 * i, true);
    return out;
  }
  const out = new Float32Array(bytes.byteLength / 2);
  if (dtype === 'BF16') {
    // bf16 is the top half of an f32: widening is exact.
    const bits = new Uint32Array(out.buffer);
    if (littleEndian && bytes.byteOffset % 2 === 0) {
      const halves = new Uint16Array(bytes.buffer, bytes.byteOffset, out.length);
      for (let i = 0; i < out.length; i++) bits[i] = (halves[i] as number) << 16;
    } else {
      for (let i = 0; i < out.length; i++) bits[i] = view.getUint16(2 * i, true) << 16;
    }
    return out;
  }
  for (let i = 0; i < out.length; i++) out[i] = f16BitsToF32(view.getUint16(2 * i, true));
  return out;
}

/**
 * An opened safetensors file: the validated header in memory, tensors read on demand one at a time.
 *
 * @example
 * ```ts
 * const file = await openSafetensors(source);
 * const norm = await file.readF32('model.norm.weight');
 * ```
 */
export class SafetensorsFile {
  constructor(
    readonly source: ByteSource,
    readonly tensors: ReadonlyMap<string, SafetensorsTensorInfo>,
    readonly metadata: Readonly<Record<string, string>>,
  ) {}

  get name(): string {
    return this.source.name;
  }

  /**
   * The header entry of `name`, or undefined.
   *
   * @example
   * ```ts
   * file.tensor('lm_head.weight')?.shape; // [vocab, hidden]
   * ```
   */
  tensor(name: string): SafetensorsTensorInfo | undefined {
    return this.tensors.get(name);
  }

  /**
   * Reads one tensor and converts it to f32. Throws {@link UnsupportedDtypeError} for dtypes other than F32, F16
   * and BF16, {@link HfModelError} for a name not in the header.
   *
   * @example
   * ```ts
   * const wq = await file.readF32('model.layers.0.self_attn.q_proj.weight');
   * ```
   */
  async readF32(name: string): Promise<Float32Array> {
    const info = this.tensors.get(name);
    if (!info) throw new HfModelError(this.name, name, 'no such tensor in this file');
    const dtype = requireReadableDtype(this.name, info);
    const bytes = await this.source.read(info.begin, info.end - info.begin);
    if (bytes.byteLength !== info.end - info.begin) {
      throw new HfModelError(this.name, name, `read ${bytes.byteLength} bytes, expected ${info.end - info.begin}: the file changed while loading`);
    }
    return decodeToF32(dtype, bytes);
  }
}

/**
 * The dtype of `info` if it is one {@link SafetensorsFile.readF32} converts, else {@link UnsupportedDtypeError}.
 *
 * @example
 * ```ts
 * requireReadableDtype('model.safetensors', file.tensor('model.norm.weight')!); // 'BF16'
 * ```
 */
export function requireReadableDtype(fileName: string, info: SafetensorsTensorInfo): ReadableDtype {
  if ((READABLE_DTYPES as readonly string[]).includes(info.dtype)) return info.dtype as ReadableDtype;
  throw new UnsupportedDtypeError(fileName, info.name, info.dtype);
}

/**
 * Reads and validates the header of a safetensors file (see {@link parseSafetensorsHeader}); tensors stay
 * unread. A file shorter than its 8-byte length prefix or than the header it announces is an
 * {@link HfModelError}.
 *
 * @example
 * ```ts
 * const file = await openSafetensors(bytesSource('model.safetensors', bytes));
 * [...file.tensors.keys()];
 * ```
 */
export async function openSafetensors(source: ByteSource): Promise<SafetensorsFile> {
  const { name, byteLength } = source;
  if (byteLength < 8) {
    throw new HfModelError(name, 'header length', `file has ${byteLength} bytes, fewer than the 8-byte header length: truncated`);
  }
  const prefix = await source.read(0, 8);
  const view = new DataView(prefix.buffer, prefix.byteOffset, 8);
  const length = Number(view.getBigUint64(0, true));
  if (length < 2 || length > MAX_SAFETENSORS_HEADER_BYTES) {
    throw new HfModelError(name, 'header length', `${length} is not in 2..${MAX_SAFETENSORS_HEADER_BYTES}: not a safetensors file`);
  }
  if (8 + length > byteLength) {
    throw new HfModelError(name, 'header length', `header of ${length} bytes does not fit the ${byteLength}-byte file: truncated`);
  }
  const header = await source.read(8, length);
  if (header[0] !== 0x7b) throw new HfModelError(name, 'header', 'does not start with "{": not a safetensors file');
  const { tensors, metadata } = parseSafetensorsHeader(name, header, byteLength);
  return new SafetensorsFile(source, tensors, metadata);
}

/**
 * Writes a safetensors file (header padded with spaces to 8 bytes, as the reference writer does), for tests
 * and conversions. Tensors are written in the given order.
 *
 * @example
 * ```ts
 * const bytes = writeSafetensors([{ name: 'w', dtype: 'F32', shape: [2], data: new Uint8Array(8) }]);
 * ```
 */
export function writeSafetensors(
  tensors: readonly { name: string; dtype: string; shape: readonly number[]; data: Uint8Array }[],
  metadata?: Record<string, string>,
): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  while ((8 + new TextEncoder().encode(json).byteLength) % 8 !== 0) json += ' ';
  const headerBytes = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + headerBytes.byteLength + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.byteLength), true);
  out.set(headerBytes, 8);
  let o = 8 + headerBytes.byteLength;
  for (const t of tensors) {
    out.set(t.data, o);
    o += t.data.byteLength;
  }
  return out;
}
