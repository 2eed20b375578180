import { LimitExceededError } from '../errors.js';
import { createStorageBuffer } from '../gpu/buffers.js';
import type { GpuContext } from '../gpu/context.js';
import type { SharedPass } from '../kernels/model/dispatch-cache.js';
import { MatmulKernel } from '../kernels/model/matmul.js';
import { MatvecKernel, type MatvecWeight, uploadMatvecWeight, type WeightPrecision } from '../kernels/model/matvec.js';
import { layerWeights, queryDim, type LlamaCheckpoint } from './checkpoint.js';

/**
 * A weight matrix [rows][cols] on the GPU: one f32 buffer for the (tiled or direct) MatmulKernel, or a
 * MatvecWeight (f16, or f32 split by rows across buffers where one would pass the binding limit).
 */
export type GpuMatrix =
  | { readonly kind: 'f32'; readonly name: string; readonly buffer: GPUBuffer; readonly rows: number; readonly cols: number }
  | { readonly kind: 'matvec'; readonly weight: MatvecWeight };

/** One layer's weights on the GPU. q/k/v stay separate so each lands in the buffer attention reads. */
export interface GpuLayerWeights {
  readonly rmsAtt: GPUBuffer;
  readonly wq: GpuMatrix;
  readonly wk: GpuMatrix;
  readonly wv: GpuMatrix;
  readonly wo: GpuMatrix;
  readonly rmsFfn: GPUBuffer;
  /** [2 · hidden][dim]: w1 rows then w3 rows, so gate and up are one matmul. */
  readonly w13: GpuMatrix;
  readonly w2: GpuMatrix;
  /** q/k/v biases as [width][1] f32 matrices, added by a 1-wide accumulate matmul against a column of ones (Qwen2). */
  readonly bias?: { readonly q: GPUBuffer; readonly k: GPUBuffer; readonly v: GPUBuffer };
}

/**
 * All weights of a model on the GPU. The token embedding is gathered on the GPU from an f32 table where it is one
 * buffer; with f16 weights, or a table split across buffers, rows are gathered on the host from `hostEmbedding`
 * (a copy, so the checkpoint may go) and uploaded per step: n × dim floats, against vocab × dim f32 on the GPU.
 */
export interface GpuModelWeights {
  readonly precision: WeightPrecision;
  readonly tokenEmbedding: GPUBuffer | null;
  readonly hostEmbedding: Float32Array | null;
  readonly rmsFinal: GPUBuffer;
  readonly classifier: GpuMatrix;
  readonly layers: readonly GpuLayerWeights[];
}

/** The binding limit weights are split at: the device's, or a smaller one asked for (tests force splits). */
export function weightBindingLimit(gpu: GpuContext, maxBindingBytes?: number): number {
  const device = Math.min(gpu.limits.maxBufferSize, gpu.limits.maxStorageBufferBindingSize);
  return Math.min(device, maxBindingBytes ?? device);
}

/**
 * Throws {@link LimitExceededError} naming the first weight matrix one of whose rows alone passes `limit` (rows
 * are the unit of splitting), before any buffer is created.
 */
function checkRowLimits(checkpoint: LlamaCheckpoint, precision: WeightPrecision, limit: number, maxBindingBytes?: number): void {
  const { dim, hiddenDim, kvDim, vocabSize } = checkpoint.config;
  const qDim = queryDim(checkpoint.config);
  const tensors: Array<[string, number, number]> = [
    ['token_embedding', vocabSize, dim],
    ['wq', qDim, dim],
    ['wk', kvDim, dim],
    ['wo', dim, qDim],
    ['w13', 2 * hiddenDim, dim],
    ['w2', dim, hiddenDim],
  ];
  if (!checkpoint.config.sharedClassifier) tensors.push(['wcls', vocabSize, dim]);
  for (const [name, rows, cols] of tensors) {
    const rowBytes = 4 * (precision === 'f16' ? Math.ceil(cols / 2) : cols);
    if (rowBytes > limit) {
      throw new LimitExceededError(
        maxBindingBytes !== undefined && maxBindingBytes <= limit ? 'maxBindingBytes' : 'maxStorageBufferBindingSize',
        rowBytes,
        limit,
        `one row of weight tensor ${name} [${rows}, ${cols}] (${precision}, ${rowBytes} bytes) does not fit one storage binding; ` +
          'weights are split by rows, so use an adapter with a larger limit',
      );
    }
  }
}

function uploadMatrix(
  gpu: GpuContext,
  name: string,
  data: Float32Array,
  rows: number,
  cols: number,
  precision: WeightPrecision,
  limit: number,
): GpuMatrix {
  if (precision === 'f32' && rows * cols * 4 <= limit) {
    return { kind: 'f32', name, buffer: createStorageBuffer(gpu, `llama:${name}`, data), rows, cols };
  }
  return { kind: 'matvec', weight: uploadMatvecWeight(gpu, name, data, rows, cols, precision, limit) };
}

/** Every GPU buffer of a matrix. */
export function matrixBuffers(m: GpuMatrix): GPUBuffer[] {
  return m.kind === 'f32' ? [m.buffer] : m.weight.parts.map((p) => p.buffer);
}

/**
 * Uploads a checkpoint's weights in `precision` (RMSNorm weights and biases stay f32), splitting any matrix past
 * `maxBindingBytes` (default: the device limit) by rows.
 *
 * @example
 * ```ts
 * const weights = uploadModelWeights(gpu, checkpoint, 'f16');
 * ```
 */
export function uploadModelWeights(
  gpu: GpuContext,
  checkpoint: LlamaCheckpoint,
  precision: WeightPrecision,
  maxBindingBytes?: number,
): GpuModelWeights {
  const { config, weights } = checkpoint;
  const { dim, hiddenDim, kvDim, vocabSize } = config;
  const qDim = queryDim(config);
  const limit = weightBindingLimit(gpu, maxBindingBytes);
  checkRowLimits(checkpoint, precision, limit, maxBindingBytes);
  const gpuEmbedding = precision === 'f32' && vocabSize * dim * 4 <= limit;
  const tokenEmbedding = gpuEmbedding ? createStorageBuffer(gpu, 'llama:token_embedding', weights.tokenEmbedding) : null;
  const classifier: GpuMatrix =
    config.sharedClassifier && tokenEmbedding
      ? { kind: 'f32', name: 'token_embedding', buffer: tokenEmbedding, rows: vocabSize, cols: dim }
      : uploadMatrix(gpu, config.sharedClassifier ? 'token_embedding' : 'wcls', config.sharedClassifier ? weights.tokenEmbedding : weights.wcls, vocabSize, dim, precision, limit);
  const layers = Array.from({ length: config.nLayers }, (_, l): GpuLayerWeights => {
    const lw = layerWeights(config, weights, l);
    const w13 = new Float32Array(2 * hiddenDim * dim);
    w13.set(lw.w1, 0);
    w13.set(lw.w3, lw.w1.length);
    const matrix = (name: string, data: Float32Array, rows: number, cols: number) =>
      uploadMatrix(gpu, `${l}:${name}`, data, rows, cols, precision, limit);
    const vector = (name: string, data: Float32Array) => createStorageBuffer(gpu, `llama:${l}:${name}`, data);
    const bias = lw.bq && lw.bk && lw.bv ? { bias: { q: vector('bq', lw.bq), k: vector('bk', lw.bk), v: vector('bv', lw.bv) } } : {};
    return {
      ...bias,
      rmsAtt: vector('rms_att', lw.rmsAttWeight),
      wq: matrix('wq', lw.wq, qDim, dim),
      wk: matrix('wk', lw.wk, kvDim, dim),
      wv: matrix('wv', lw.wv, kvDim, dim),
      wo: matrix('wo', lw.wo, dim, qDim),
      rmsFfn: vector('rms_ffn', lw.rmsFfnWeight),
      w13: matrix('w13', w13, 2 * hiddenDim, dim),
      w2: matrix('w2', lw.w2, dim, hiddenDim),
    };
  });
  return {
    precision,
    tokenEmbedding,
    hostEmbedding: tokenEmbedding ? null : weights.tokenEmbedding.slice(),
    rmsFinal: createStorageBuffer(gpu, 'llama:rms_final', weights.rmsFinalWeight),
    classifier,
    layers,
  };
}

/** Destroys every buffer of the weights once (a shared classifier is the embedding buffer). */
export function destroyModelWeights(w: GpuModelWeights): void {
  const buffers = new Set<GPUBuffer>([w.rmsFinal, ...matrixBuffers(w.classifier)]);
  if (w.tokenEmbedding) buffers.add(w.tokenEmbedding);
  for (const lw of w.layers) {
    for (const m of [lw.wq, lw.wk, lw.wv, lw.wo, lw.w13, lw.w2]) for (const b of matrixBuffers(m)) buffers.add(b);
    buffers.add(lw.rmsAtt);
    buffers.add(lw.rmsFfn);
    if (lw.bias) for (const b of [lw.bias.q, lw.bias.k, lw.bias.v]) buffers.add(b);
  }
  for (const b of buffers) b.destroy();
}

/**
 * x · Wᵀ for either kind of {@link GpuMatrix}: f32 single buffers through MatmulKernel (tiled on real GPUs),
 * the rest through MatvecKernel.
 *
 * @example
 * ```ts
 * projection.encode(encoder, { rows: n, x: act.xb, w: lw.wq, out: act.q });
 * ```
 */
export class Projection {
  constructor(
    readonly matmul: MatmulKernel,
    readonly matvec: MatvecKernel,
  ) {}

  encode(encoder: GPUCommandEncoder, run: { rows: number; x: GPUBuffer; w: GpuMatrix; out: GPUBuffer; accumulate?: boolean }, shared?: SharedPass): void {
    const { w } = run;
    const accumulate = run.accumulate ?? false;
    if (w.kind === 'f32') {
      this.matmul.encode(encoder, { rows: run.rows, inDim: w.cols, outDim: w.rows, x: run.x, w: w.buffer, out: run.out, accumulate }, shared);
    } else {
      this.matvec.encode(encoder, { rows: run.rows, x: run.x, w: w.weight, out: run.out, accumulate }, shared);
    }
  }
}
