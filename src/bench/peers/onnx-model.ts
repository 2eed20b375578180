// A one-node ONNX model, written at bench time: com.microsoft GroupQueryAttention with a past KV, the decode step
// onnxruntime-web runs as kvcompact's decode-attention peer. No onnx/protobuf package: the ModelProto fields used
// here are few, and a 60-line writer of the protobuf wire format keeps the bench free of a build step and of a
// dependency that is only ever asked to write one message. Browser-safe (the page builds the model it runs).
import { InvalidArgumentError } from '../../errors.js';

/** Protobuf wire types (https://protobuf.dev/programming-guides/encoding/). */
const VARINT = 0;
const LEN = 2;
const I32 = 5;

/**
 * A protobuf message being written: fields in call order, nested messages as their finished bytes.
 *
 * @example
 * ```ts
 * const dim = new ProtoWriter().int(1, 128).finish(); // TensorShapeProto.Dimension { dim_value: 128 }
 * ```
 */
export class ProtoWriter {
  private readonly bytes: number[] = [];

  private varint(value: number): void {
    // Values here are non-negative and below 2^53 (tags, lengths, dims, enums); ≥ 2^31 must not use `>>>`.
    if (!Number.isSafeInteger(value) || value < 0) throw new InvalidArgumentError('varint', `only 0 ≤ value < 2^53; got ${value}`);
    let v = value;
    while (v >= 0x80) {
      this.bytes.push((v % 0x80) | 0x80);
      v = Math.floor(v / 0x80);
    }
    this.bytes.push(v);
  }

  private tag(field: number, wire: number): void {
    this.varint(field * 8 + wire);
  }

  /** An int32/int64/enum field (non-negative values only). */
  int(field: number, value: number): this {
    this.tag(field, VARINT);
    this.varint(value);
    return this;
  }

  /** A float field (fixed 32 bits, little-endian). */
  float(field: number, value: number): this {
    this.tag(field, I32);
    const word = new Uint8Array(new Float32Array([value]).buffer);
    this.bytes.push(...word);
    return this;
  }

  /** A bytes field, or an embedded message's finished bytes. */
  raw(field: number, value: Uint8Array): this {
    this.tag(field, LEN);
    this.varint(value.length);
    for (const byte of value) this.bytes.push(byte);
    return this;
  }

  /** A string field (UTF-8). */
  string(field: number, value: string): this {
    return this.raw(field, new TextEncoder().encode(value));
  }

  /** An embedded message. */
  message(field: number, build: (writer: ProtoWriter) => unknown): this {
    const inner = new ProtoWriter();
    build(inner);
    return this.raw(field, inner.finish());
  }

  finish(): Uint8Array {
    return Uint8Array.from(this.bytes);
  }
}

/** onnx.TensorProto.DataType values used here. */
const ELEM_TYPE = { float32: 1, int32: 6, float16: 10 } as const;
/** onnx.AttributeProto.AttributeType values used here. */
const ATTR_FLOAT = 1;
const ATTR_INT = 2;

/** A dimension: a number, or a symbolic name (dim_param) left to the feeds. */
type Dim = number | string;

function valueInfo(w: ProtoWriter, field: number, name: string, elem: number, dims: readonly Dim[]): void {
  w.message(field, (v) =>
    v.string(1, name).message(2, (type) =>
      type.message(1, (tensor) =>
        tensor.int(1, elem).message(2, (shape) => {
          for (const d of dims) shape.message(1, (dim) => (typeof d === 'number' ? dim.int(1, d) : dim.string(2, d)));
        }),
      ),
    ),
  );
}

/**
 * The attention node's shape. Sequence dimensions are symbolic (`past_sequence_length`, `total_sequence_length`),
 * so one model serves every context; batch 1, one new token (decode).
 *
 * @example
 * ```ts
 * const spec: GqaModelSpec = { nHeads: 32, kvHeads: 8, headDim: 128, dtype: 'float32' };
 * ```
 */
export interface GqaModelSpec {
  readonly nHeads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  /** Element type of query, key, value, the past/present KV and the output. */
  readonly dtype: 'float32' | 'float16';
  /** Logit scale; default 1/√headDim (GroupQueryAttention's own default, written out so that both agree). */
  readonly scale?: number;
}

/** The model's input names, in GroupQueryAttention's input order. */
export const GQA_INPUTS = ['query', 'key', 'value', 'past_key', 'past_value', 'seqlens_k', 'total_sequence_length'] as const;
/** The model's output names. */
export const GQA_OUTPUTS = ['output', 'present_key', 'present_value'] as const;

/**
 * The ModelProto bytes of one com.microsoft GroupQueryAttention node (opset ai.onnx 17, com.microsoft 1):
 * query [1, 1, nHeads·headDim], key/value [1, 1, kvHeads·headDim] (the new token), past_key/past_value
 * [1, kvHeads, past_sequence_length, headDim] (BNSH), seqlens_k int32 [1] (= total − 1), total_sequence_length
 * int32 scalar; outputs output [1, 1, nHeads·headDim] and present_key/present_value
 * [1, kvHeads, total_sequence_length, headDim]. No rotary (q and k come rotated, as kvcompact's do).
 *
 * @example
 * ```ts
 * const bytes = gqaModel({ nHeads: 32, kvHeads: 8, headDim: 128, dtype: 'float32' });
 * const session = await ort.InferenceSession.create(bytes, { executionProviders: ['webgpu'] });
 * ```
 */
export function gqaModel(spec: GqaModelSpec): Uint8Array {
  const { nHeads, kvHeads, headDim } = spec;
  if (![nHeads, kvHeads, headDim].every((n) => Number.isInteger(n) && n > 0) || nHeads % kvHeads !== 0) {
    throw new InvalidArgumentError('gqaModel', `${nHeads} query heads over ${kvHeads} KV heads × ${headDim}: need positive integers, nHeads a multiple of kvHeads`);
  }
  const elem = ELEM_TYPE[spec.dtype];
  const scale = spec.scale ?? 1 / Math.sqrt(headDim);
  const graph = (g: ProtoWriter) => {
    g.message(1, (node) => {
      for (const input of GQA_INPUTS) node.string(1, input);
      for (const output of GQA_OUTPUTS) node.string(2, output);
      node.string(3, 'attention').string(4, 'GroupQueryAttention');
      node.message(5, (a) => a.string(1, 'num_heads').int(3, nHeads).int(20, ATTR_INT));
      node.message(5, (a) => a.string(1, 'kv_num_heads').int(3, kvHeads).int(20, ATTR_INT));
      node.message(5, (a) => a.string(1, 'scale').float(2, scale).int(20, ATTR_FLOAT));
      node.string(7, 'com.microsoft');
    });
    g.string(2, 'kvcompact-peer-gqa-decode');
    const past = [1, kvHeads, 'past_sequence_length', headDim];
    valueInfo(g, 11, 'query', elem, [1, 1, nHeads * headDim]);
    valueInfo(g, 11, 'key', elem, [1, 1, kvHeads * headDim]);
    valueInfo(g, 11, 'value', elem, [1, 1, kvHeads * headDim]);
    valueInfo(g, 11, 'past_key', elem, past);
    valueInfo(g, 11, 'past_value', elem, past);
    valueInfo(g, 11, 'seqlens_k', ELEM_TYPE.int32, [1]);
    valueInfo(g, 11, 'total_sequence_length', ELEM_TYPE.int32, []);
    const present = [1, kvHeads, 'total_sequence_length', headDim];
    valueInfo(g, 12, 'output', elem, [1, 1, nHeads * headDim]);
    valueInfo(g, 12, 'present_key', elem, present);
    valueInfo(g, 12, 'present_value', elem, present);
  };
  return new ProtoWriter()
    .int(1, 8) // ir_version 8 (ONNX 1.10+): opsets below are all it needs
    .string(2, 'kvcompact')
    .message(8, (o) => o.string(1, '').int(2, 17))
    .message(8, (o) => o.string(1, 'com.microsoft').int(2, 1))
    .message(7, graph)
    .finish();
}
