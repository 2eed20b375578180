// Decode attention, kvcompact's side and the reference: one data set per context (values exact in f16, so the
// f16 and f32 caches hold the same numbers and every engine computes the same thing), kvcompact's paged and
// flash-decode kernels over it, and the TS reference. Browser-safe: the page runs it in Chromium next to
// onnxruntime-web (./ort.ts), and the CLI in Node for the same kernels on Dawn. A device that binds fewer storage
// buffers per stage than a kernel needs gets a skip with the reason.
import { InvalidArgumentError, KvCompactError } from '../../errors.js';
import { decodeAttention } from '../../attention/reference-attention.js';
import { encodeBlock } from '../../format/block-codec.js';
import { roundToF16 } from '../../format/f16.js';
import { blockLayout, encodeBlockRef, type FullFormat } from '../../format/layout.js';
import { createStorageBuffer, readBuffer } from '../../gpu/buffers.js';
import type { GpuContext } from '../../gpu/context.js';
import { FLASH_DECODE_STORAGE_BUFFERS, FlashDecodeKernel } from '../../kernels/cache/flash-decode.js';
import { PagedAttentionKernel, type PagedCacheBindings } from '../../kernels/cache/paged-attention.js';
import { FLASH_BENCH_SHAPES } from '../cases/flash-decode.js';
import { randomFloats } from '../fixture.js';
import { median } from '../stats.js';
import {
  DECODE_PEER_SHAPE as S,
  DECODE_TOLERANCE,
  decodeCase,
  type DecodeEngine,
  type DecodePeerCheck,
  type DecodePeerRow,
  type DecodePeerSkip,
} from './decode-contract.js';

/**
 * One context's inputs: q for the new token, K/V of every token (the last is the new token's), per KV head.
 *
 * @example
 * ```ts
 * const data = decodeData(1024); data.keys[0].length; // 1024 × 128
 * ```
 */
export interface DecodeData {
  readonly context: number;
  /** f32 [nHeads][headDim] */
  readonly q: Float32Array;
  /** Per KV head: [context][headDim], values exactly representable in f16. */
  readonly keys: readonly Float32Array[];
  readonly values: readonly Float32Array[];
}

/** Deterministic data for `context` tokens (a multiple of the block size, at least 2 blocks). */
export function decodeData(context: number): DecodeData {
  if (!Number.isInteger(context) || context < 2 * S.blockSize || context % S.blockSize !== 0) {
    throw new InvalidArgumentError('context', `must be a multiple of ${S.blockSize}, at least ${2 * S.blockSize}; got ${context}`);
  }
  const perHead = context * S.headDim;
  const f16 = (seed: number) => randomFloats(perHead, seed).map((x) => roundToF16(x * 2));
  return {
    context,
    q: randomFloats(S.nHeads * S.headDim, context + 1),
    keys: Array.from({ length: S.kvHeads }, (_, kv) => f16(context * 16 + kv)),
    values: Array.from({ length: S.kvHeads }, (_, kv) => f16(context * 16 + 8 + kv)),
  };
}

/** The reference output, f32 [nHeads][headDim]. */
export function referenceDecode(data: DecodeData): Float32Array {
  return decodeAttention({ q: data.q, keys: data.keys, values: data.values, nHeads: S.nHeads, kvHeads: S.kvHeads, headDim: S.headDim }).out;
}

/**
 * Compares an engine's output with the reference's.
 *
 * @example
 * ```ts
 * checks.push(checkDecode('kvcompact-flash-decode', 'decode/f16/1K', 'node', out, ref));
 * ```
 */
export function checkDecode(
  engine: DecodeEngine,
  name: string,
  host: 'chromium' | 'node',
  got: Float32Array,
  ref: Float32Array,
): DecodePeerCheck {
  let maxAbsError = got.length === ref.length ? 0 : Infinity;
  for (let i = 0; i < ref.length; i++) maxAbsError = Math.max(maxAbsError, Math.abs((got[i] ?? NaN) - (ref[i] ?? 0)));
  if (Number.isNaN(maxAbsError)) maxAbsError = Infinity;
  return { engine, case: name, host, maxAbsError, pass: maxAbsError <= DECODE_TOLERANCE, tolerance: `max |Δ| ≤ ${DECODE_TOLERANCE}` };
}

/** Runs `body` warmup + runs times and returns the timed runs' ms. */
export async function sample(warmup: number, runs: number, body: () => Promise<number> | number): Promise<number[]> {
  for (let i = 0; i < warmup; i++) await body();
  const out: number[] = [];
  for (let i = 0; i < runs; i++) out.push(await body());
  return out;
}

/** A measured row before ratios. */
export type DecodeMeasured = Omit<DecodePeerRow, 'ratio'>;

/** kvcompact's attention over one context held as `format` blocks: the paged and flash kernels, ready to time. */
interface KvcompactDecode {
  /** Encodes, submits, waits; ms to onSubmittedWorkDone. */
  time(kernel: 'paged' | 'flash'): Promise<number>;
  /** One run's output. */
  output(kernel: 'paged' | 'flash'): Promise<Float32Array>;
  destroy(): void;
}

function kvcompactDecode(gpu: GpuContext, data: DecodeData, format: FullFormat, withFlash: boolean): KvcompactDecode {
  const { context } = data;
  const full = blockLayout(format, { headDim: S.headDim, blockSize: S.blockSize });
  const blocks = context / S.blockSize;
  const words = new Uint32Array((1 + S.kvHeads * blocks) * full.wordsPerBlock);
  const table = new Uint32Array(S.kvHeads * blocks);
  const width = S.blockSize * S.headDim;
  for (let kv = 0; kv < S.kvHeads; kv++) {
    for (let b = 0; b < blocks; b++) {
      // Physical blocks interleave the heads so a kernel cannot profit from one head's blocks being contiguous.
      const index = 1 + b * S.kvHeads + kv;
      const at = b * width;
      const positions = Uint32Array.from({ length: S.blockSize }, (_, t) => b * S.blockSize + t);
      const block = encodeBlock(full, data.keys[kv]!.subarray(at, at + width), data.values[kv]!.subarray(at, at + width), positions, S.blockSize);
      words.set(block, index * full.wordsPerBlock);
      table[kv * blocks + b] = encodeBlockRef('full', index);
    }
  }
  const cache: PagedCacheBindings = {
    blockTable: createStorageBuffer(gpu, 'peers-decode:table', table),
    contextLens: createStorageBuffer(gpu, 'peers-decode:ctx', new Uint32Array(S.kvHeads).fill(context)),
    fullPool: createStorageBuffer(gpu, 'peers-decode:full', words),
    quantPool: createStorageBuffer(gpu, 'peers-decode:quant', 4),
    seqSlots: 1,
    maxBlocksPerHead: blocks,
  };
  const queries = createStorageBuffer(gpu, 'peers-decode:q', data.q);
  const querySlots = createStorageBuffer(gpu, 'peers-decode:q-slot', new Uint32Array([0]));
  // The new token is the last cached one; it sees every token, itself included.
  const queryPositions = createStorageBuffer(gpu, 'peers-decode:q-pos', new Uint32Array([context - 1]));
  const out = createStorageBuffer(gpu, 'peers-decode:out', S.nHeads * S.headDim * 4);
  const probs = createStorageBuffer(gpu, 'peers-decode:probs', S.nHeads * context * 4);
  const paged = new PagedAttentionKernel(gpu, { nHeads: S.nHeads, kvHeads: S.kvHeads, full, quant: null });
  const software = gpu.adapter.isFallbackAdapter || gpu.adapter.architecture === 'swiftshader';
  const flash = withFlash
    ? new FlashDecodeKernel(gpu, {
        nHeads: S.nHeads,
        kvHeads: S.kvHeads,
        full,
        quant: null,
        ...(software ? FLASH_BENCH_SHAPES.software : FLASH_BENCH_SHAPES.hardware),
      })
    : null;
  const run = async (kernel: 'paged' | 'flash'): Promise<number> => {
    const t0 = performance.now();
    const encoder = gpu.device.createCommandEncoder({ label: `peers-decode:${kernel}` });
    const common = { cache, layer: 0, numQueries: 1, queries, querySlots, queryPositions, out };
    if (kernel === 'paged') paged.encode(encoder, { ...common, probs, probsStride: context });
    else if (flash) flash.encode(encoder, { ...common, maxContext: context });
    else throw new KvCompactError('bench peers: flash-decode was not built for this device');
    gpu.submit([encoder.finish()]);
    await gpu.device.queue.onSubmittedWorkDone();
    return performance.now() - t0;
  };
  return {
    time: run,
    async output(kernel) {
      await gpu.withErrorScope(() => run(kernel));
      return new Float32Array(await readBuffer(gpu, out));
    },
    destroy() {
      flash?.destroy();
      for (const b of [cache.blockTable, cache.contextLens, cache.fullPool, cache.quantPool, queries, querySlots, queryPositions, out, probs]) {
        b.destroy();
      }
    },
  };
}

/** Why flash-decode cannot run on this device, or null. */
export function flashDecodeUnavailable(gpu: GpuContext): string | null {
  const limit = gpu.limits.maxStorageBuffersPerShaderStage;
  return limit < FLASH_DECODE_STORAGE_BUFFERS
    ? `its partial pass binds ${FLASH_DECODE_STORAGE_BUFFERS} storage buffers per stage; this device allows ${limit} ` +
        '(maxStorageBuffersPerShaderStage; Chrome caps it at 10)'
    : null;
}

/** The adapter in one phrase for the rows. */
export function adapterLabel(gpu: GpuContext): string {
  const a = gpu.adapter;
  return [a.vendor, a.architecture, a.description].filter((part) => part).join(' · ') || 'unknown adapter';
}

/**
 * kvcompact's rows and checks for one context and storage format: the paged kernel, flash-decode where the device
 * binds enough storage buffers (else a skip with the reason), each checked against `ref` once before timing.
 *
 * @example
 * ```ts
 * const r = await runKvcompactDecode(gpu, data, 'f16', ref, { host: 'node', warmup: 1, runs: 5 });
 * ```
 */
export async function runKvcompactDecode(
  gpu: GpuContext,
  data: DecodeData,
  format: FullFormat,
  ref: Float32Array,
  options: { host: 'chromium' | 'node'; warmup: number; runs: number; engines?: readonly ('paged' | 'flash')[] },
): Promise<{ rows: DecodeMeasured[]; checks: DecodePeerCheck[]; skipped: DecodePeerSkip[] }> {
  const name = decodeCase(format, data.context);
  const { host } = options;
  const wanted = options.engines ?? ['paged', 'flash'];
  const noFlash = flashDecodeUnavailable(gpu);
  const skipped: DecodePeerSkip[] = [];
  if (wanted.includes('flash') && noFlash) {
    skipped.push({ engine: 'kvcompact-flash-decode', case: name, host, reason: `${noFlash}; its rows come from the Node host` });
  }
  const kernels = wanted.filter((k) => k === 'paged' || !noFlash);
  const kvc = kvcompactDecode(gpu, data, format, kernels.includes('flash'));
  const rows: DecodeMeasured[] = [];
  const checks: DecodePeerCheck[] = [];
  try {
    for (const kernel of kernels) {
      const engine: DecodeEngine = kernel === 'paged' ? 'kvcompact-paged-attention' : 'kvcompact-flash-decode';
      checks.push(checkDecode(engine, name, host, await kvc.output(kernel), ref));
      const samples = await sample(options.warmup, options.runs, () => kvc.time(kernel));
      if (samples.length > 0) rows.push({ engine, case: name, ms: median(samples), samples, host, adapter: adapterLabel(gpu) });
    }
  } finally {
    kvc.destroy();
  }
  return { rows, checks, skipped };
}

/** The TS reference's row for one case (its time does not depend on the storage format: it reads f32 arrays). */
export async function runReferenceDecode(
  data: DecodeData,
  format: FullFormat,
  options: { host: 'chromium' | 'node'; warmup: number; runs: number },
): Promise<DecodeMeasured[]> {
  const samples = await sample(options.warmup, options.runs, () => {
    const t0 = performance.now();
    referenceDecode(data);
    return performance.now() - t0;
  });
  return samples.length > 0
    ? [{ engine: 'ts-reference', case: decodeCase(format, data.context), ms: median(samples), samples, host: options.host, adapter: 'cpu' }]
    : [];
}
