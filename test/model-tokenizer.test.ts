import { describe, expect, it } from 'vitest';
import { ModelFormatError } from '../src/errors.js';
import { BOS_ID, EOS_ID, Tokenizer } from '../src/model/tokenizer.js';
import { sharedBytes, sharedText } from './model-helpers.js';

const tokBytes = sharedBytes('models/tok512.bin');
const tok = Tokenizer.parse(tokBytes, 512);

/** A line-by-line port of llama2.c run.c encode() (O(n²) merge scan, byte-string pieces). */
function runCEncode(t: Tokenizer, text: string, bos: boolean, eos: boolean): number[] {
  const str = (id: number): string => String.fromCharCode(...t.pieces[id]!);
  const vocab = Array.from({ length: t.vocabSize }, (_, i) => str(i));
  const lookup = (s: string): number => vocab.indexOf(s);
  const bytes = new TextEncoder().encode(text);
  const tokens: number[] = [];
  if (bos) tokens.push(1);
  if (bytes.length > 0) tokens.push(lookup(' '));
  let buf: number[] = [];
  for (let c = 0; c < bytes.length; c++) {
    if ((bytes[c]! & 0xc0) !== 0x80) buf = [];
    buf.push(bytes[c]!);
    if (c + 1 < bytes.length && (bytes[c + 1]! & 0xc0) === 0x80 && buf.length < 4) continue;
    const id = lookup(String.fromCharCode(...buf));
    if (id !== -1) tokens.push(id);
    else for (const b of buf) tokens.push(b + 3);
    buf = [];
  }
  for (;;) {
    let bestScore = -1e10;
    let bestId = -1;
    let bestIdx = -1;
    for (let i = 0; i < tokens.length - 1; i++) {
      const id = lookup(vocab[tokens[i]!]! + vocab[tokens[i + 1]!]!);
      if (id !== -1 && t.scores[id]! > bestScore) {
        bestScore = t.scores[id]!;
        bestId = id;
        bestIdx = i;
      }
    }
    if (bestIdx === -1) break;
    tokens.splice(bestIdx, 2, bestId);
  }
  if (eos) tokens.push(2);
  return tokens;
}

describe('Tokenizer', () => {
  it('parses tok512.bin', () => {
    expect(tok.vocabSize).toBe(512);
    expect(tok.maxTokenLength).toBe(7);
    expect(new TextDecoder().decode(tok.pieces[BOS_ID])).toBe('\n<s>\n');
    expect(new TextDecoder().decode(tok.pieces[EOS_ID])).toBe('\n</s>\n');
    expect(new TextDecoder().decode(tok.pieces[3])).toBe('<0x00>');
    expect(Tokenizer.parse(tokBytes).vocabSize).toBe(512);
    expect(tok.lookupPiece(' the')).toBe(265);
  });

  it('encodes known strings', () => {
    expect(tok.encode('')).toEqual([]);
    expect(tok.encode('', { bos: true, eos: true })).toEqual([1, 2]);
    expect(tok.encode('Once upon a time', { bos: true })).toEqual([1, 403, 407, 261, 378]);
    expect(tok.encode('Lily.', { bos: false, eos: true })).toEqual([317, 426, 2]);
    // Characters outside the vocabulary fall back to their UTF-8 bytes (id = byte + 3).
    expect(tok.encode('é')).toEqual([tok.lookupPiece(' '), tok.lookupPiece('é')]);
    expect(tok.encode('日')).toEqual([tok.lookupPiece(' '), 0xe6 + 3, 0x97 + 3, 0xa5 + 3]);
  });

  it('matches a direct port of run.c encode()', () => {
    const samples = [
      'Once upon a time, there was a little girl named Lily.',
      'Hello   world!!\n\tTabs, "quotes" & numbers 12345.',
      'café naïve 日本語 😀 \u0301 mixed',
      ' leading and trailing spaces ',
      'aaaaaaaaaaaaaaaaaaaaaaaaaaaa bbbbbbbbbb the the the',
      sharedText('data/tinystories_dev.txt').slice(0, 1500),
    ];
    for (const s of samples) {
      for (const [bos, eos] of [[true, false], [false, true]] as const) {
        expect(tok.encode(s, { bos, eos })).toEqual(runCEncode(tok, s, bos, eos));
      }
    }
  });

  it('round-trips text through encode and decodeAll', () => {
    const samples = ['Once upon a time', 'café 😀 日本', 'a\nb\n\nc', sharedText('data/tinystories_dev.txt').slice(0, 3000)];
    for (const s of samples) {
      expect(tok.decodeAll(tok.encode(s, { bos: true, eos: true }))).toBe(s);
      // Without BOS the dummy-prefix space stays.
      expect(tok.decodeAll(tok.encode(s))).toBe(` ${s}`);
    }
  });

  it('decodes like run.c: leading space stripped after BOS, byte tokens as raw bytes', () => {
    const the = tok.lookupPiece(' the');
    expect(tok.decode(BOS_ID, the)).toBe('the');
    expect(tok.decode(5, the)).toBe(' the');
    expect(Array.from(tok.decodeBytes(5, 0x0a + 3))).toEqual([0x0a]);
    expect(tok.decode(1, 0x41 + 3)).toBe('A');
    expect(tok.decodeAll([0xf0 + 3, 0x9f + 3, 0x98 + 3, 0x80 + 3])).toBe('😀');
    expect(() => tok.decode(1, 512)).toThrow(/token/);
  });

  it('rejects bad files with ModelFormatError', () => {
    const cases: Array<[Uint8Array, RegExp, number?]> = [
      [tokBytes.subarray(0, 2), /max_token_length truncated/],
      [tokBytes.subarray(0, tokBytes.length - 3), /truncated in token 511/, 512],
      [tokBytes.subarray(0, tokBytes.length - 3), /truncated in token 511/],
      [tokBytes, /oversized/, 500],
      [tokBytes, /truncated in token 512/, 513],
    ];
    const badMax = tokBytes.slice();
    new DataView(badMax.buffer).setInt32(0, 0, true);
    cases.push([badMax, /max_token_length = 0/]);
    const badLen = tokBytes.slice();
    new DataView(badLen.buffer).setInt32(8, 99, true); // token 0 length
    cases.push([badLen, /token 0 length = 99/]);
    for (const [bytes, msg, vocab] of cases) {
      expect(() => Tokenizer.parse(bytes, vocab)).toThrow(ModelFormatError);
      expect(() => Tokenizer.parse(bytes, vocab)).toThrow(msg);
    }
  });
});
