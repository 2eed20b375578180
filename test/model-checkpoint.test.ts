import { describe, expect, it } from 'vitest';
import { ModelFormatError } from '../src/errors.js';
import {
  checkpointByteLength,
  configFromHeader,
  layerWeights,
  parseCheckpoint,
  serializeCheckpoint,
} from '../src/model/checkpoint.js';
import { ReferenceLlama } from '../src/model/reference-forward.js';
import { randomModel, sharedBytes } from './model-helpers.js';

const model = sharedBytes('models/stories260K.bin');

function withHeader(bytes: Uint8Array, field: number, value: number): Uint8Array {
  const copy = bytes.slice();
  new DataView(copy.buffer).setInt32(field * 4, value, true);
  return copy;
}

function expectFormatError(fn: () => unknown, ...parts: (string | RegExp)[]): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(ModelFormatError);
  const msg = (err as Error).message;
  for (const p of parts) expect(msg).toMatch(p);
}

describe('parseCheckpoint', () => {
  it('reads stories260K', () => {
    const { config, weights } = parseCheckpoint(model);
    expect(config).toEqual({
      dim: 64, hiddenDim: 172, nLayers: 5, nHeads: 8, nKvHeads: 4, vocabSize: 512, seqLen: 512,
      headSize: 8, kvDim: 32, sharedClassifier: true,
    });
    expect(checkpointByteLength(config)).toBe(1_056_540);
    expect(weights.wcls).toBe(weights.tokenEmbedding);
    expect(weights.wk.length).toBe(5 * 32 * 64);
    expect(weights.w2.length).toBe(5 * 64 * 172);
    expect(weights.rmsFinalWeight.length).toBe(64);
    // First float after the header is the first embedding value.
    expect(weights.tokenEmbedding[0]).toBe(new DataView(model.buffer, model.byteOffset).getFloat32(28, true));
    expect(layerWeights(config, weights, 4).w3.length).toBe(172 * 64);
  });

  it('accepts an ArrayBuffer and a misaligned Uint8Array alike', () => {
    const buf = new Uint8Array(model.length + 1);
    buf.set(model, 1);
    const a = parseCheckpoint(model.slice().buffer);
    const b = parseCheckpoint(buf.subarray(1));
    expect(b.weights.w2).not.toBe(a.weights.w2);
    let mismatches = 0;
    a.weights.w2.forEach((v, i) => { if (b.weights.w2[i] !== v) mismatches++; });
    expect(mismatches).toBe(0);
    expect(b.weights.w2.length).toBe(a.weights.w2.length);
  });

  it('round-trips a separate classifier with GQA through serializeCheckpoint', () => {
    const m = randomModel({ sharedClassifier: false, nHeads: 4, nKvHeads: 1 });
    const bytes = serializeCheckpoint(m.config, m.weights);
    expect(new DataView(bytes.buffer).getInt32(20, true)).toBe(-40);
    const back = parseCheckpoint(bytes);
    expect(back.config).toEqual(m.config);
    expect(back.weights.wcls).not.toBe(back.weights.tokenEmbedding);
    expect(back.weights.wcls).toEqual(m.weights.wcls);
    expect(back.weights.wk.length).toBe(2 * 4 * 16);
    // The separate classifier is what the forward pass uses.
    const logits = new ReferenceLlama(back).forward(3, 0);
    const shared = new ReferenceLlama({ config: { ...back.config, sharedClassifier: true }, weights: { ...back.weights, wcls: back.weights.tokenEmbedding } }).forward(3, 0);
    expect(logits).not.toEqual(shared);
  });

  it('rejects a truncated file naming the tensor and both sizes', () => {
    expectFormatError(() => parseCheckpoint(model.subarray(0, 1000)), /tokenEmbedding/, /1056540 bytes/, /1000 bytes/);
    expectFormatError(() => parseCheckpoint(model.subarray(0, model.length - 4)), /freqCisImag/, /1056540/, /1056536/);
    expectFormatError(() => parseCheckpoint(model.subarray(0, 10)), /header/, /28 bytes/, /10 bytes/);
    const m = randomModel({ sharedClassifier: false });
    const bytes = serializeCheckpoint(m.config, m.weights);
    expectFormatError(() => parseCheckpoint(bytes.subarray(0, bytes.length - 8)), /wcls/, new RegExp(`${bytes.length} bytes`));
  });

  it('rejects an oversized file', () => {
    const big = new Uint8Array(model.length + 12);
    big.set(model);
    expectFormatError(() => parseCheckpoint(big), /oversized/, /12 bytes after/, /1056540 bytes/, /1056552 bytes/);
    // A separate-classifier header on a shared-classifier file lacks exactly the classifier.
    expectFormatError(() => parseCheckpoint(withHeader(model, 5, -512)), /wcls/);
  });

  it('rejects inconsistent headers naming the field', () => {
    expectFormatError(() => parseCheckpoint(withHeader(model, 3, 7)), /dim = 64/, /n_heads = 7/);
    expectFormatError(() => parseCheckpoint(withHeader(model, 4, 3)), /n_heads = 8/, /n_kv_heads = 3/);
    expectFormatError(() => parseCheckpoint(withHeader(model, 0, 0)), /dim = 0/);
    expectFormatError(() => parseCheckpoint(withHeader(model, 2, -5)), /n_layers = -5/);
    expectFormatError(() => parseCheckpoint(withHeader(model, 6, 0)), /seq_len = 0/);
    expectFormatError(() => parseCheckpoint(withHeader(model, 1, 173)), /truncated|oversized/, /1056540/);
    expectFormatError(() => configFromHeader([12, 8, 1, 4, 4, 10, 4]), /head_size/);
    expectFormatError(() => parseCheckpoint(withHeader(model, 0, 0x7fffffff)));
  });
});
