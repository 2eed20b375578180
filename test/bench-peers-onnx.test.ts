import * as ort from 'onnxruntime-web';
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '../src/errors.js';
import { DECODE_TOLERANCE } from '../src/bench/peers/decode-contract.js';
import { decodeData, referenceDecode } from '../src/bench/peers/decode.js';
import { gqaModel, ProtoWriter } from '../src/bench/peers/onnx-model.js';
import { createOrtDecodeSession, gqaFeedsData, runOrtDecode } from '../src/bench/peers/ort.js';

// The peers bench writes its ONNX model itself (src/bench/peers/onnx-model.ts). Here: the protobuf writer against
// the wire format's documented examples, then the model in onnxruntime-web's Node build (WebAssembly provider):
// it must load and compute the TS reference's decode attention within DECODE_TOLERANCE (1e-4 absolute).
describe('bench peers: the GroupQueryAttention model', () => {
  it('ProtoWriter writes the wire format (protobuf.dev encoding examples)', () => {
    expect([...new ProtoWriter().int(1, 150).finish()]).toEqual([0x08, 0x96, 0x01]);
    expect([...new ProtoWriter().string(2, 'testing').finish()]).toEqual([0x12, 0x07, 0x74, 0x65, 0x73, 0x74, 0x69, 0x6e, 0x67]);
    expect([...new ProtoWriter().message(3, (m) => m.int(1, 150)).finish()]).toEqual([0x1a, 0x03, 0x08, 0x96, 0x01]);
    expect([...new ProtoWriter().float(2, 1).finish()]).toEqual([0x15, 0x00, 0x00, 0x80, 0x3f]);
    expect([...new ProtoWriter().int(1, 2 ** 35).finish()]).toEqual([0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]);
    expect(() => new ProtoWriter().int(1, -1)).toThrow(InvalidArgumentError);
    expect(() => gqaModel({ nHeads: 6, kvHeads: 4, headDim: 8, dtype: 'float32' })).toThrow(/multiple/);
  });

  it('splits a context into past KV (context − 1 tokens, BNSH) and the new token', () => {
    const data = decodeData(64);
    const feeds = gqaFeedsData(data);
    expect(feeds.past).toBe(63);
    // KV head 1, token 5, channel 3 of the past; KV head 7's new token, channel 0.
    expect(feeds.pastKey[(1 * 63 + 5) * 128 + 3]).toBe(data.keys[1]![5 * 128 + 3]);
    expect(feeds.value[7 * 128]).toBe(data.values[7]![63 * 128]);
  });

  for (const context of [64, 1024]) {
    it(`loads in the wasm provider and matches the TS reference at ${context} tokens (32q/8kv/d128)`, async () => {
      ort.env.wasm.numThreads = 1;
      const session = await createOrtDecodeSession(ort, 'wasm', 'f32');
      expect(session.session.inputNames).toEqual(['query', 'key', 'value', 'past_key', 'past_value', 'seqlens_k', 'total_sequence_length']);
      expect(session.session.outputNames).toEqual(['output', 'present_key', 'present_value']);
      const data = decodeData(context);
      const ref = referenceDecode(data);
      const result = await runOrtDecode(ort, session, 'wasm', data, ref, { warmup: 0, runs: 1, adapter: 'cpu', host: 'node' });
      const [check] = result.checks;
      expect(check?.maxAbsError).toBeLessThanOrEqual(DECODE_TOLERANCE);
      expect(check?.pass).toBe(true);
      expect(result.rows[0]?.case).toBe(`decode/f32/${context === 64 ? '64' : '1K'}`);
      await session.session.release();
    }, 30_000);
  }

  it('a wrong reference fails the check (the comparison can fail)', async () => {
    const session = await createOrtDecodeSession(ort, 'wasm', 'f32');
    const data = decodeData(64);
    const ref = referenceDecode(data).map((x) => x + 1e-3);
    const result = await runOrtDecode(ort, session, 'wasm', data, ref, { warmup: 0, runs: 0, adapter: 'cpu', host: 'node' });
    expect(result.checks[0]?.pass).toBe(false);
    expect(result.rows).toEqual([]);
    await session.session.release();
  });
});
