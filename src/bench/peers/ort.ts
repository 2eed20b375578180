// onnxruntime-web as kvcompact's decode-attention peer: the one-node GroupQueryAttention model of ./onnx-model.ts
// on ORT's WebGPU execution provider (inputs and outputs as GPU buffers on ORT's device, CPU fallback disabled so
// that a session either runs its node on WebGPU or fails) and on its WebAssembly provider, labelled as such. The
// page passes the module it loaded (dist/ort.webgpu.min.mjs, served from node_modules); the unit test passes the
// Node build (wasm only). Browser-safe.
import type * as Ort from 'onnxruntime-web';
import { KvCompactError } from '../../errors.js';
import { f16BitsToF32, f32ToF16Bits } from '../../format/f16.js';
import { median } from '../stats.js';
import { DECODE_PEER_SHAPE as S, decodeCase, type DecodeKv, type DecodePeerCheck, type DecodePeerSkip } from './decode-contract.js';
import { checkDecode, type DecodeData, type DecodeMeasured, sample } from './decode.js';
import { gqaModel } from './onnx-model.js';

/** The onnxruntime-web module (the browser bundle or the Node build: the same API). */
export type OrtModule = typeof Ort;

/** Host-side inputs of one decode step, in GroupQueryAttention's layouts. */
interface GqaFeedsData {
  readonly query: Float32Array;
  readonly key: Float32Array;
  readonly value: Float32Array;
  /** [1, kvHeads, context − 1, headDim] (BNSH): every token but the new one. */
  readonly pastKey: Float32Array;
  readonly pastValue: Float32Array;
  readonly past: number;
}

/**
 * Splits a context into GroupQueryAttention's inputs: the last token is the new one (key/value inputs), the
 * others the past KV. Same numbers as kvcompact's cache of `context` tokens.
 *
 * @example
 * ```ts
 * const feeds = gqaFeedsData(decodeData(1024)); feeds.past; // 1023
 * ```
 */
export function gqaFeedsData(data: DecodeData): GqaFeedsData {
  const D = S.headDim;
  const past = data.context - 1;
  const pastKey = new Float32Array(S.kvHeads * past * D);
  const pastValue = new Float32Array(S.kvHeads * past * D);
  const key = new Float32Array(S.kvHeads * D);
  const value = new Float32Array(S.kvHeads * D);
  for (let kv = 0; kv < S.kvHeads; kv++) {
    pastKey.set(data.keys[kv]!.subarray(0, past * D), kv * past * D);
    pastValue.set(data.values[kv]!.subarray(0, past * D), kv * past * D);
    key.set(data.keys[kv]!.subarray(past * D), kv * D);
    value.set(data.values[kv]!.subarray(past * D), kv * D);
  }
  return { query: data.q, key, value, pastKey, pastValue, past };
}

type FloatTensorData = Float32Array | Uint16Array;

function asDtype(values: Float32Array, kv: DecodeKv): FloatTensorData {
  return kv === 'f32' ? values : Uint16Array.from(values, (x) => f32ToF16Bits(x));
}

function toF32(data: unknown): Float32Array {
  if (data instanceof Float32Array) return data;
  if (data instanceof Uint16Array) return Float32Array.from(data, (h) => f16BitsToF32(h));
  throw new KvCompactError(`onnxruntime-web returned ${Object.prototype.toString.call(data)}, not float data`);
}

function dims(d: GqaFeedsData): Record<'query' | 'key' | 'value' | 'pastKey' | 'pastValue', number[]> {
  return {
    query: [1, 1, S.nHeads * S.headDim],
    key: [1, 1, S.kvHeads * S.headDim],
    value: [1, 1, S.kvHeads * S.headDim],
    pastKey: [1, S.kvHeads, d.past, S.headDim],
    pastValue: [1, S.kvHeads, d.past, S.headDim],
  };
}

function lengthFeeds(ort: OrtModule, d: GqaFeedsData): Record<string, Ort.Tensor> {
  return {
    seqlens_k: new ort.Tensor('int32', new Int32Array([d.past]), [1]),
    total_sequence_length: new ort.Tensor('int32', new Int32Array([d.past + 1]), []),
  };
}

/** A session, its model's storage format, and how its inputs are fed. */
interface OrtDecodeSession {
  readonly session: Ort.InferenceSession;
  readonly kv: DecodeKv;
}

/**
 * Creates a session of the GQA model on `ep`. On 'webgpu' the CPU fallback is disabled, so creation fails unless
 * ORT places the node on its WebGPU provider; outputs stay on the GPU.
 */
export async function createOrtDecodeSession(ort: OrtModule, ep: 'webgpu' | 'wasm', kv: DecodeKv): Promise<OrtDecodeSession> {
  const model = gqaModel({ nHeads: S.nHeads, kvHeads: S.kvHeads, headDim: S.headDim, dtype: kv === 'f32' ? 'float32' : 'float16' });
  const session = await ort.InferenceSession.create(model, {
    executionProviders: [ep],
    graphOptimizationLevel: 'all',
    ...(ep === 'webgpu'
      ? { preferredOutputLocation: 'gpu-buffer' as const, extra: { session: { disable_cpu_ep_fallback: '1' } } }
      : {}),
  });
  return { session, kv };
}

/** Runs of one session over one context: time() is one decode step; output() the step's result on the host. */
interface OrtDecodeRunner {
  time(): Promise<number>;
  output(): Promise<Float32Array>;
  destroy(): void;
}

/**
 * How the WebGPU runner holds the KV cache. 'shared': past_key/past_value have room for the whole context and are
 * also given as the present_key/present_value outputs (ORT's past-present shared buffer, as onnxruntime-genai
 * runs decode): the node appends the new token in place and reads the cache once. 'concat': a past of context − 1
 * tokens and fresh present outputs, which the node fills by copying the past and the new token before attending.
 */
export type OrtKvMode = 'shared' | 'concat';

async function webgpuRunner(ort: OrtModule, s: OrtDecodeSession, d: GqaFeedsData, mode: OrtKvMode): Promise<OrtDecodeRunner> {
  const device = await ort.env.webgpu.device;
  const buffers: GPUBuffer[] = [];
  const shapes = dims(d);
  if (mode === 'shared') {
    // Room for the new token at the end of each head's rows; the node writes it there on every run.
    const room = (past: Float32Array) => {
      const out = new Float32Array(S.kvHeads * (d.past + 1) * S.headDim);
      for (let kv = 0; kv < S.kvHeads; kv++) {
        out.set(past.subarray(kv * d.past * S.headDim, (kv + 1) * d.past * S.headDim), kv * (d.past + 1) * S.headDim);
      }
      return out;
    };
    d = { ...d, pastKey: room(d.pastKey), pastValue: room(d.pastValue) };
    shapes.pastKey = [1, S.kvHeads, d.past + 1, S.headDim];
    shapes.pastValue = [1, S.kvHeads, d.past + 1, S.headDim];
  }
  const dataType = s.kv === 'f32' ? 'float32' : 'float16';
  const resident = (name: keyof typeof shapes, values: Float32Array): Ort.Tensor => {
    const host = asDtype(values, s.kv);
    const buffer = device.createBuffer({
      label: `peers-ort:${name}`,
      // ORT reads inputs as whole 16-byte words: round the size up.
      size: Math.ceil(host.byteLength / 16) * 16,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
    device.queue.writeBuffer(buffer, 0, host.buffer, host.byteOffset, host.byteLength);
    buffers.push(buffer);
    return ort.Tensor.fromGpuBuffer(buffer, { dataType, dims: shapes[name] });
  };
  const feeds: Record<string, Ort.Tensor> = {
    query: resident('query', d.query),
    key: resident('key', d.key),
    value: resident('value', d.value),
    past_key: resident('pastKey', d.pastKey),
    past_value: resident('pastValue', d.pastValue),
    ...lengthFeeds(ort, d),
  };
  await device.queue.onSubmittedWorkDone();
  // Shared: the present outputs are the past inputs' buffers; `output: null` asks ORT to allocate the output.
  const fetches = mode === 'shared' ? { output: null, present_key: feeds.past_key!, present_value: feeds.past_value! } : undefined;
  const step = async (): Promise<Ort.InferenceSession.OnnxValueMapType> =>
    fetches ? s.session.run(feeds, fetches) : s.session.run(feeds);
  const release = (result: Ort.InferenceSession.OnnxValueMapType) => {
    for (const [name, tensor] of Object.entries(result)) if (!fetches || name === 'output') tensor.dispose();
  };
  return {
    async time() {
      const t0 = performance.now();
      const result = await step();
      await device.queue.onSubmittedWorkDone();
      const ms = performance.now() - t0;
      release(result);
      return ms;
    },
    async output() {
      const result = await step();
      const out = result.output;
      if (!out) throw new KvCompactError('onnxruntime-web: the session returned no "output"');
      if (out.location !== 'gpu-buffer') throw new KvCompactError(`onnxruntime-web webgpu: output is on "${out.location}", not the GPU`);
      const values = toF32(await out.getData());
      release(result);
      if (mode === 'shared') await expectAppendedInPlace(device, feeds.past_key!.gpuBuffer, d, s.kv);
      return values;
    },
    destroy() {
      for (const b of buffers) b.destroy();
    },
  };
}

/**
 * Shared mode is only fair if ORT really wrote into the past buffer: the last row of KV head 0 must now hold the
 * new token's key (it was zero before the first run). Otherwise ORT would have allocated a present of its own.
 */
async function expectAppendedInPlace(device: GPUDevice, pastKey: GPUBuffer, d: GqaFeedsData, kv: DecodeKv): Promise<void> {
  const bytesPer = kv === 'f32' ? 4 : 2;
  const bytes = S.headDim * bytesPer;
  const staging = device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const encoder = device.createCommandEncoder();
  encoder.copyBufferToBuffer(pastKey, d.past * bytes, staging, 0, bytes);
  device.queue.submit([encoder.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  const raw = staging.getMappedRange().slice(0);
  staging.destroy();
  const row = toF32(kv === 'f32' ? new Float32Array(raw) : new Uint16Array(raw));
  const want = d.key.subarray(0, S.headDim);
  if (!row.every((x, i) => x === want[i])) {
    throw new KvCompactError('onnxruntime-web webgpu: present_key was not written into the shared past buffer');
  }
}

function wasmRunner(ort: OrtModule, s: OrtDecodeSession, d: GqaFeedsData): OrtDecodeRunner {
  const shapes = dims(d);
  const dataType = s.kv === 'f32' ? 'float32' : 'float16';
  const tensor = (name: keyof typeof shapes, values: Float32Array) => new ort.Tensor(dataType, asDtype(values, s.kv), shapes[name]);
  const feeds: Record<string, Ort.Tensor> = {
    query: tensor('query', d.query),
    key: tensor('key', d.key),
    value: tensor('value', d.value),
    past_key: tensor('pastKey', d.pastKey),
    past_value: tensor('pastValue', d.pastValue),
    ...lengthFeeds(ort, d),
  };
  return {
    async time() {
      const t0 = performance.now();
      await s.session.run(feeds);
      return performance.now() - t0;
    },
    async output() {
      const result = await s.session.run(feeds);
      if (!result.output) throw new KvCompactError('onnxruntime-web: the session returned no "output"');
      return toF32(result.output.data);
    },
    destroy() {},
  };
}

/**
 * onnxruntime-web's row and check for one context on one session (skipped with the error's text when the
 * session's provider fails on this input).
 *
 * @example
 * ```ts
 * const r = await runOrtDecode(ort, session, 'webgpu', data, ref, { warmup: 1, runs: 5, adapter: 'google · swiftshader' });
 * ```
 */
export async function runOrtDecode(
  ort: OrtModule,
  s: OrtDecodeSession,
  ep: 'webgpu' | 'wasm',
  data: DecodeData,
  ref: Float32Array,
  options: { warmup: number; runs: number; adapter: string; host: 'chromium' | 'node'; kvMode?: OrtKvMode },
): Promise<{ rows: DecodeMeasured[]; checks: DecodePeerCheck[]; skipped: DecodePeerSkip[] }> {
  const mode = options.kvMode ?? 'shared';
  const engine = ep === 'wasm' ? 'onnxruntime-web-wasm' : mode === 'shared' ? 'onnxruntime-web-webgpu' : 'onnxruntime-web-webgpu-concat';
  const name = decodeCase(s.kv, data.context);
  const d = gqaFeedsData(data);
  const runner = ep === 'webgpu' ? await webgpuRunner(ort, s, d, mode) : wasmRunner(ort, s, d);
  try {
    const check = checkDecode(engine, name, options.host, await runner.output(), ref);
    const samples = await sample(options.warmup, options.runs, () => runner.time());
    const rows: DecodeMeasured[] =
      samples.length > 0 ? [{ engine, case: name, ms: median(samples), samples, host: options.host, adapter: options.adapter, ep }] : [];
    return { rows, checks: [check], skipped: [] };
  } finally {
    runner.destroy();
  }
}
