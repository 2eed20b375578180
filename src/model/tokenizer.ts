import { InvalidArgumentError, ModelFormatError } from '../errors.js';

/**
 * Token id of the beginning-of-sequence marker in llama2.c tokenizers.
 *
 * @example
 * ```ts
 * const ids = [BOS_ID, ...tokenizer.encode(prompt)];
 * ```
 */
export const BOS_ID = 1;
/**
 * Token id of the end-of-sequence marker in llama2.c tokenizers.
 *
 * @example
 * ```ts
 * if (next === EOS_ID) break;
 * ```
 */
export const EOS_ID = 2;

/**
 * Options of {@link Tokenizer.encode}.
 *
 * @example
 * ```ts
 * tokenizer.encode('Hi', { bos: true, eos: false });
 * ```
 */
export interface EncodeOptions {
  /** Prepend BOS (id 1). Default false. */
  readonly bos?: boolean;
  /** Append EOS (id 2). Default false. */
  readonly eos?: boolean;
}

/**
 * What the engine needs of a tokenizer, met by the llama2.c {@link Tokenizer} and by the Hugging Face
 * `HfTokenizer` (src/model/hf/tokenizer.ts), so evaluation and generation can take either.
 *
 * @example
 * ```ts
 * function promptIds(tokenizer: TextTokenizer, text: string): number[] { return tokenizer.encode(text, { bos: true }); }
 * ```
 */
export interface TextTokenizer {
  readonly vocabSize: number;
  /** Id `encode(text, { bos: true })` prepends (llama2.c: 1), undefined when the model has none. */
  readonly bosId: number | undefined;
  /** Ids the model ends a text with (llama2.c: [2]; HF: config.json `eos_token_id`). */
  readonly eosIds: readonly number[];
  /**
   * Ids after which a generation asked to stop at the end of a text (`stopAtBos`) stops: llama2.c stories
   * models emit BOS between stories (run.c stops there), so [1]; HF models end with EOS, so their `eosIds`.
   */
  readonly stopIds: readonly number[];
  encode(text: string, options?: EncodeOptions): number[];
  /** Text of `token` as printed after `prev`. */
  decode(prev: number, token: number): string;
  decodeAll(ids: readonly number[] | Int32Array): string;
}

const BYTE_PIECE = /^<0x([0-9A-Fa-f]{2})>$/;

/** Each byte as one UTF-16 unit, so concatenating keys concatenates byte strings (what run.c's sprintf does). */
function binaryKey(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i] ?? 0);
  return s;
}

/** Min-heap entry of a candidate merge: (score desc, left position asc) decides, as run.c's left-to-right scan. */
interface Candidate {
  score: number;
  left: number;
  leftId: number;
  rightId: number;
  merged: number;
}

function better(a: Candidate, b: Candidate): boolean {
  return a.score > b.score || (a.score === b.score && a.left < b.left);
}

class CandidateHeap {
  private readonly items: Candidate[] = [];
  get size(): number {
    return this.items.length;
  }
  push(c: Candidate): void {
    const a = this.items;
    a.push(c);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      const pi = a[p] as Candidate;
      if (!better(c, pi)) break;
      a[i] = pi;
      i = p;
    }
    a[i] = c;
  }
  pop(): Candidate | undefined {
    const a = this.items;
    const top = a[0];
    const last = a.pop();
    if (a.length === 0 || last === undefined) return top;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= a.length) break;
      const r = l + 1;
      let c = l;
      if (r < a.length && better(a[r] as Candidate, a[l] as Candidate)) c = r;
      const ci = a[c] as Candidate;
      if (!better(ci, last)) break;
      a[i] = ci;
      i = c;
    }
    a[i] = last;
    return top;
  }
}

/**
 * A llama2.c (sentencepiece-exported) BPE tokenizer: parsing of `tokenizer.bin`/`tok512.bin`, encoding and
 * decoding with exactly the results of llama2.c `run.c`.
 *
 * @example
 * ```ts
 * const tok = Tokenizer.parse(readFileSync('../shared/models/tok512.bin'), 512);
 * const ids = tok.encode('Once upon a time', { bos: true });
 * tok.decodeAll(ids); // 'Once upon a time'
 * ```
 */
export class Tokenizer implements TextTokenizer {
  /** The longest token in bytes, from the file header. */
  readonly maxTokenLength: number;
  /** Merge scores, one per token. */
  readonly scores: Float32Array;
  /** Raw bytes of each token's piece. */
  readonly pieces: readonly Uint8Array[];
  private readonly lookup = new Map<string, number>();
  private readonly keys: string[];
  /** Raw byte of `<0xNN>` pieces, -1 for other tokens. */
  private readonly byteOf: Int16Array;
  /** {@link BOS_ID}: llama2.c tokenizers fix it. */
  readonly bosId: number = BOS_ID;
  /** [{@link EOS_ID}]. */
  readonly eosIds: readonly number[] = [EOS_ID];
  /** [{@link BOS_ID}]: llama2.c models write BOS where a story ends (run.c stops there). */
  readonly stopIds: readonly number[] = [BOS_ID];

  private constructor(maxTokenLength: number, scores: Float32Array, pieces: Uint8Array[]) {
    this.maxTokenLength = maxTokenLength;
    this.scores = scores;
    this.pieces = pieces;
    this.keys = pieces.map(binaryKey);
    this.byteOf = new Int16Array(pieces.length).fill(-1);
    this.keys.forEach((k, id) => {
      // First id wins on duplicate pieces; run.c's bsearch over a qsorted vocab picks an unspecified one.
      if (!this.lookup.has(k)) this.lookup.set(k, id);
      const m = BYTE_PIECE.exec(k);
      if (m?.[1] !== undefined) this.byteOf[id] = parseInt(m[1], 16);
    });
  }

  /** Number of tokens. */
  get vocabSize(): number {
    return this.pieces.length;
  }

  /**
   * Parses a llama2.c tokenizer file: int32 max_token_length, then per token f32 score, int32 length, bytes.
   * With `vocabSize` (the checkpoint's), the file must hold exactly that many tokens; without it, tokens are read
   * to the end of the file. Bad files throw {@link ModelFormatError}.
   *
   * @example
   * ```ts
   * const tok = Tokenizer.parse(await (await fetch('tok512.bin')).arrayBuffer(), config.vocabSize);
   * ```
   */
  static parse(data: ArrayBuffer | Uint8Array, vocabSize?: number): Tokenizer {
    const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (vocabSize !== undefined && (!Number.isInteger(vocabSize) || vocabSize <= 0)) {
      throw new InvalidArgumentError('vocabSize', `must be a positive integer, got ${vocabSize}`);
    }
    if (bytes.byteLength < 4) {
      throw new ModelFormatError(
        `tokenizer max_token_length truncated: expected 4 bytes, file has ${bytes.byteLength} bytes`,
      );
    }
    const maxTokenLength = view.getInt32(0, true);
    if (maxTokenLength <= 0 || maxTokenLength > 1 << 16) {
      throw new ModelFormatError(`tokenizer max_token_length = ${maxTokenLength} must be in 1..65536; not a llama2.c tokenizer`);
    }
    const scores: number[] = [];
    const pieces: Uint8Array[] = [];
    let offset = 4;
    while (vocabSize === undefined ? offset < bytes.byteLength : pieces.length < vocabSize) {
      const id = pieces.length;
      if (offset + 8 > bytes.byteLength) {
        throw new ModelFormatError(
          `tokenizer truncated in token ${id} score/length: expected ${offset + 8} bytes, file has ${bytes.byteLength} bytes` +
            (vocabSize !== undefined ? ` (vocab_size ${vocabSize}; does the tokenizer belong to this model?)` : ''),
        );
      }
      const score = view.getFloat32(offset, true);
      const len = view.getInt32(offset + 4, true);
      offset += 8;
      if (len < 0 || len > maxTokenLength) {
        throw new ModelFormatError(
          `tokenizer token ${id} length = ${len} must be in 0..max_token_length (${maxTokenLength})`,
        );
      }
      if (!Number.isFinite(score)) {
        throw new ModelFormatError(`tokenizer token ${id} score = ${score} is not finite`);
      }
      if (offset + len > bytes.byteLength) {
        throw new ModelFormatError(
          `tokenizer truncated in token ${id} bytes: expected ${offset + len} bytes, file has ${bytes.byteLength} bytes`,
        );
      }
      pieces.push(bytes.slice(offset, offset + len));
      scores.push(score);
      offset += len;
    }
    if (offset !== bytes.byteLength) {
      throw new ModelFormatError(
        `tokenizer oversized: ${vocabSize} tokens end at ${offset} bytes, file has ${bytes.byteLength} bytes ` +
          '(vocab_size mismatch between checkpoint and tokenizer?)',
      );
    }
    if (pieces.length <= EOS_ID) {
      throw new ModelFormatError(`tokenizer vocab_size = ${pieces.length} is too small to hold BOS/EOS`);
    }
    return new Tokenizer(maxTokenLength, Float32Array.from(scores), pieces);
  }

  /**
   * Id of a piece given as text (UTF-8), or -1.
   *
   * @example
   * ```ts
   * tok.lookupPiece(' '); // the dummy-prefix token
   * ```
   */
  lookupPiece(piece: string): number {
    return this.lookup.get(binaryKey(new TextEncoder().encode(piece))) ?? -1;
  }

  /**
   * Encodes text exactly as llama2.c `run.c` `encode()`: optional BOS, a dummy " " token when the text is
   * non-empty, each UTF-8 character's token (or its bytes' fallback tokens id = byte + 3), then repeated merging
   * of the adjacent pair whose concatenation is a token with the highest score (leftmost on ties).
   * A heap makes the merging O(n log n) instead of run.c's O(n²); the merges chosen are the same.
   *
   * @example
   * ```ts
   * tok.encode('Lily', { bos: true }); // [1, <id of " Lily" or its parts>]
   * ```
   */
  encode(text: string, options: EncodeOptions = {}): number[] {
    const bytes = new TextEncoder().encode(text);
    const ids: number[] = [];
    if (options.bos) ids.push(BOS_ID);
    if (bytes.length > 0) {
      const space = this.lookup.get(' ');
      if (space === undefined) throw new ModelFormatError('tokenizer has no " " token for the dummy prefix');
      ids.push(space);
    }
    // Split into UTF-8 characters like run.c: a start byte plus at most 3 continuation bytes.
    let i = 0;
    while (i < bytes.length) {
      let end = i + 1;
      while (end < bytes.length && ((bytes[end] ?? 0) & 0xc0) === 0x80 && end - i < 4) end++;
      const id = this.lookup.get(binaryKey(bytes.subarray(i, end)));
      if (id !== undefined) ids.push(id);
      else for (let j = i; j < end; j++) ids.push((bytes[j] ?? 0) + 3);
      i = end;
    }
    this.mergeInPlace(ids);
    if (options.eos) ids.push(EOS_ID);
    return ids;
  }

  private mergeInPlace(ids: number[]): void {
    const n = ids.length;
    if (n < 2) return;
    const tok = Int32Array.from(ids);
    const next = new Int32Array(n);
    const prev = new Int32Array(n);
    const alive = new Uint8Array(n).fill(1);
    for (let i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    const heap = new CandidateHeap();
    const consider = (left: number): void => {
      const right = next[left] ?? -1;
      if (right < 0) return;
      const leftId = tok[left] ?? 0;
      const rightId = tok[right] ?? 0;
      const merged = this.lookup.get((this.keys[leftId] ?? '') + (this.keys[rightId] ?? ''));
      if (merged === undefined) return;
      const score = this.scores[merged] ?? 0;
      // run.c starts its best score at -1e10 and needs strictly more.
      if (!(score > -1e10)) return;
      heap.push({ score, left, leftId, rightId, merged });
    };
    for (let i = 0; i + 1 < n; i++) consider(i);
    while (heap.size > 0) {
      const c = heap.pop() as Candidate;
      const right = next[c.left] ?? -1;
      // Stale: a neighbour changed since this candidate was pushed.
      if (!alive[c.left] || right < 0 || tok[c.left] !== c.leftId || tok[right] !== c.rightId) continue;
      tok[c.left] = c.merged;
      alive[right] = 0;
      const after = next[right] ?? -1;
      next[c.left] = after;
      if (after >= 0) prev[after] = c.left;
      const before = prev[c.left] ?? -1;
      if (before >= 0) consider(before);
      consider(c.left);
    }
    ids.length = 0;
    for (let i = 0; i >= 0; i = next[i] ?? -1) ids.push(tok[i] ?? 0);
  }

  /**
   * Raw bytes of `token` as printed after `prev` (llama2.c `decode()`): a leading space is dropped after BOS,
   * `<0xNN>` pieces become the byte NN. May be a partial UTF-8 sequence.
   *
   * @example
   * ```ts
   * new TextDecoder().decode(tok.decodeBytes(1, id));
   * ```
   */
  decodeBytes(prev: number, token: number): Uint8Array {
    const piece = this.pieces[token];
    if (piece === undefined) {
      throw new InvalidArgumentError('token', `id ${token} is outside the vocabulary (0..${this.vocabSize - 1})`);
    }
    const b = this.byteOf[token] ?? -1;
    if (b >= 0) return Uint8Array.of(b);
    if (prev === BOS_ID && piece[0] === 0x20) return piece.subarray(1);
    return piece;
  }

  /**
   * Text of `token` as printed after `prev` (see {@link Tokenizer.decodeBytes}); a lone byte token that is not
   * a whole UTF-8 character decodes to U+FFFD, so use {@link Tokenizer.decodeAll} for whole texts.
   *
   * @example
   * ```ts
   * let text = ''; for (let i = 1; i < ids.length; i++) text += tok.decode(ids[i - 1], ids[i]);
   * ```
   */
  decode(prev: number, token: number): string {
    return new TextDecoder().decode(this.decodeBytes(prev, token));
  }

  /**
   * Proper UTF-8 text of an id list, as llama2.c prints it while generating: BOS and EOS print nothing, each
   * other token is decoded after its predecessor (so a leading space after BOS is dropped), byte tokens are
   * joined before UTF-8 decoding.
   *
   * @example
   * ```ts
   * tok.decodeAll(tok.encode('Hello world', { bos: true })); // 'Hello world'
   * ```
   */
  decodeAll(ids: readonly number[] | Int32Array): string {
    const parts: Uint8Array[] = [];
    let total = 0;
    let prev = -1;
    for (const id of ids) {
      if (id !== BOS_ID && id !== EOS_ID) {
        const b = this.decodeBytes(prev, id);
        parts.push(b);
        total += b.length;
      }
      prev = id;
    }
    const all = new Uint8Array(total);
    let o = 0;
    for (const p of parts) {
      all.set(p, o);
      o += p.length;
    }
    return new TextDecoder().decode(all);
  }
}
