import { InvalidArgumentError, KvCompactError } from '../errors.js';
import { createStorageBuffer } from '../gpu/buffers.js';
import type { GpuContext } from '../gpu/context.js';
import { CopyRowsKernel } from '../kernels/cache/copy-rows.js';
import { EmbeddingKernel } from '../kernels/model/embedding.js';
import { DispatchCache, type SharedPass } from '../kernels/model/dispatch-cache.js';
import { MatmulKernel, type MatmulKernelOptions } from '../kernels/model/matmul.js';
import { MatvecKernel, type MatvecKernelOptions, type WeightPrecision } from '../kernels/model/matvec.js';
import { RmsNormKernel } from '../kernels/model/rmsnorm.js';
import { RopeKernel } from '../kernels/model/rope.js';
import { SwigluKernel } from '../kernels/model/swiglu.js';
import type { GpuAttentionBackend, KvStep } from '../attention/backend.js';
import { queryDim, type LlamaCheckpoint, type LlamaConfig } from './checkpoint.js';
import { destroyModelWeights, type GpuModelWeights, Projection, uploadModelWeights } from './gpu-weights.js';
import { configRopeFrequencies, RMS_NORM_EPS } from './reference-forward.js';

/**
 * The cos/sin table RopeKernel reads ([positions][headDim/2][2]), for any per-pair frequencies: with llama2.c's
 * frequencies it equals `ropeCosSinTable` value for value; theta and Llama 3 scaling come from the config.
 */
function ropeTable(frequencies: Float32Array, positions: number): Float32Array {
  const half = frequencies.length;
  const table = new Float32Array(positions * half * 2);
  for (let pos = 0; pos < positions; pos++) {
    for (let i = 0; i < half; i++) {
      const angle = Math.fround(pos * (frequencies[i] as number));
      table[(pos * half + i) * 2] = Math.cos(angle);
      table[(pos * half + i) * 2 + 1] = Math.sin(angle);
    }
  }
  return table;
}

/** packF16Rows moved to the kernel layer with the kernels that read its layout; re-exported for callers here. */
export { packF16Rows } from '../kernels/model/matvec.js';

/**
 * Bytes the weights of a model take on the GPU in f32 or f16 (w1 and w3 are one buffer, a shared classifier is
 * the embedding, RMSNorm weights and biases stay f32), for sizing and for the memory figures of docs/hf-models.md.
 *
 * @example
 * ```ts
 * gpuWeightBytes(checkpoint.config, 'f16'); // ≈ 269 MB for SmolLM2-135M
 * ```
 */
export function gpuWeightBytes(config: LlamaConfig, format: 'f32' | 'f16', attentionBias = false): number {
  const { dim, hiddenDim, kvDim, vocabSize, nLayers } = config;
  const qDim = queryDim(config);
  const matrix = (rows: number, cols: number) => (format === 'f32' ? 4 * rows * cols : 4 * rows * Math.ceil(cols / 2));
  const perLayer =
    matrix(qDim, dim) + 2 * matrix(kvDim, dim) + matrix(dim, qDim) + matrix(2 * hiddenDim, dim) + matrix(dim, hiddenDim) +
    4 * 2 * dim + (attentionBias ? 4 * (qDim + 2 * kvDim) : 0);
  // With f16 weights the embedding rows are gathered on the host, so an untied model keeps only its classifier.
  const classifier = config.sharedClassifier || format === 'f16' ? 0 : matrix(vocabSize, dim);
  return matrix(vocabSize, dim) + classifier + 4 * dim + nLayers * perLayer;
}

/** Per-chunk scratch, sized for `capacity` tokens and grown on demand. */
interface Activations {
  readonly capacity: number;
  readonly tokens: GPUBuffer;
  readonly positions: GPUBuffer;
  /** Residual stream [n][dim]. */
  readonly x: GPUBuffer;
  /** Normalised input of the next matmul [n][dim]. */
  readonly xb: GPUBuffer;
  readonly q: GPUBuffer;
  readonly k: GPUBuffer;
  readonly v: GPUBuffer;
  /** Attention output [n][nHeads · headSize]. */
  readonly att: GPUBuffer;
  /** One row each of q, k, v and att: what a batched step hands the attention backend per sequence. */
  readonly q1: GPUBuffer;
  readonly k1: GPUBuffer;
  readonly v1: GPUBuffer;
  readonly att1: GPUBuffer;
  /** Gate and up projections [n][2 · hidden]. */
  readonly gateUp: GPUBuffer;
  readonly hidden: GPUBuffer;
  /** Last row of the residual stream and its norm, when only the last token's logits are wanted. */
  readonly lastX: GPUBuffer;
  readonly lastXb: GPUBuffer;
  /** A column of ones [capacity][1], the input of the bias matmuls. */
  readonly ones: GPUBuffer;
  readonly logits: GPUBuffer;
  readonly staging: GPUBuffer;
}

/**
 * Options of the {@link GpuLlama} constructor.
 *
 * @example
 * ```ts
 * new GpuLlama(gpu, checkpoint, cache, { weights: 'f32', matmul: { strategy: 'tiled' } });
 * ```
 */
export interface GpuLlamaOptions {
  /**
   * Precision of the weight matrices on the GPU (default f16: half the bytes per decode step; on stories260K its
   * logits stay within 2e-2 of f32 and the 257-token greedy reference is reproduced, see test/gpu-model-f16.test.ts).
   * RMSNorm weights and biases stay f32; activations and accumulation are f32 either way.
   */
  readonly weights?: WeightPrecision;
  /** Matmul strategy and tiles of the f32 weights (default: picked from the adapter, see MatmulStrategy). */
  readonly matmul?: MatmulKernelOptions;
  /** The f16 path (native shader-f16 or packed) and tuning of the matrix-vector kernel. */
  readonly matvec?: MatvecKernelOptions;
  /**
   * Split weight matrices by rows where one buffer would pass this many bytes (default and maximum: the device's
   * maxBufferSize / maxStorageBufferBindingSize). Tests set it small to exercise the split path.
   */
  readonly maxBindingBytes?: number;
  /**
   * Batched steps attend all their sequences in one dispatch where the backend offers encodeLayerBatch (default
   * true); false attends sequence by sequence through one-row buffers, as before (the bench's baseline).
   */
  readonly batchedAttention?: boolean;
}

/**
 * Options of {@link GpuLlama.forward}.
 *
 * @example
 * ```ts
 * const logits = await model.forward(seq, prompt, { allLogits: true }); // [prompt.length][vocab]
 * ```
 */
export interface GpuForwardOptions {
  /** Return logits of every token of the chunk ([n][vocab], row-major) instead of the last one's only. */
  readonly allLogits?: boolean;
}

/**
 * The Llama forward pass (llama2.c checkpoints and Hugging Face Llama/Qwen2/Mistral, see loadHfModel) on the GPU:
 * embedding, RMSNorm, matmuls, RoPE and SwiGLU in WGSL, attention through a {@link GpuAttentionBackend} (the paged
 * KV cache). {@link GpuLlama.forward} runs a chunk of n tokens of one sequence (prefill and decode are the same
 * path); {@link GpuLlama.forwardBatch} runs one decode token of each of several sequences, the matmuls as
 * [batch × dim] products and attention in one dispatch per layer over all the batch's sequences (where the backend
 * offers GpuAttentionBackend.encodeLayerBatch). Each call is one submit and one readback. Weights are uploaded once, in f16 by default
 * (see GpuLlamaOptions.weights), split by rows where a matrix passes the binding limit.
 * Calls must not overlap: the chunk scratch buffers are shared.
 *
 * @example
 * ```ts
 * const model = new GpuLlama(gpu, parseCheckpoint(bytes), cache);
 * let logits = await model.forward(seq, [1]);            // BOS at position 0
 * logits = await model.forward(seq, [argmax(logits)]);   // next token
 * model.destroy();
 * ```
 */
export class GpuLlama {
  readonly config: LlamaConfig;
  /** Precision of the weight matrices on the GPU. */
  readonly weightPrecision: WeightPrecision;
  private readonly embedding: EmbeddingKernel;
  private readonly rmsnorm: RmsNormKernel;
  private readonly projection: Projection;
  private readonly rope: RopeKernel;
  private readonly swiglu: SwigluKernel;
  /** Row copies inside the forward's pass (one-row buffers of per-sequence attention, the last row's logits). */
  private readonly copyRows: CopyRowsKernel;
  private readonly weights: GpuModelWeights;
  private ropeTable: GPUBuffer;
  private ropeRows: number;
  private readonly ropeFrequencies: Float32Array;
  private activations: Activations | null = null;
  private readonly dispatches: DispatchCache;
  private busy = false;
  private destroyed = false;
  private readonly batchedAttention: boolean;

  constructor(
    private readonly gpu: GpuContext,
    checkpoint: LlamaCheckpoint,
    private readonly backend: GpuAttentionBackend,
    options: GpuLlamaOptions = {},
  ) {
    const { config } = checkpoint;
    this.config = config;
    this.weightPrecision = options.weights ?? 'f16';
    this.batchedAttention = options.batchedAttention ?? true;
    this.embedding = new EmbeddingKernel(gpu);
    this.rmsnorm = new RmsNormKernel(gpu, { eps: config.rmsNormEps ?? RMS_NORM_EPS });
    this.projection = new Projection(new MatmulKernel(gpu, options.matmul), new MatvecKernel(gpu, options.matvec));
    this.rope = new RopeKernel(gpu, { nHeads: config.nHeads, kvHeads: config.nKvHeads, headDim: config.headSize });
    this.swiglu = new SwigluKernel(gpu);
    this.copyRows = new CopyRowsKernel(gpu);
    this.dispatches = new DispatchCache(gpu);
    this.weights = uploadModelWeights(gpu, checkpoint, this.weightPrecision, options.maxBindingBytes);
    this.ropeRows = config.seqLen;
    this.ropeFrequencies = configRopeFrequencies(config);
    this.ropeTable = createStorageBuffer(gpu, 'llama:rope', ropeTable(this.ropeFrequencies, this.ropeRows));
  }

  /** The number of buffers each weight matrix is split into, by name (1 where it fits one binding). */
  get weightParts(): ReadonlyMap<string, number> {
    const parts = new Map<string, number>();
    const add = (m: GpuModelWeights['classifier']) => parts.set(m.kind === 'f32' ? m.name : m.weight.name, m.kind === 'f32' ? 1 : m.weight.parts.length);
    add(this.weights.classifier);
    for (const lw of this.weights.layers) for (const m of [lw.wq, lw.wk, lw.wv, lw.wo, lw.w13, lw.w2]) add(m);
    return parts;
  }

  /**
   * Runs `tokens` (a chunk of sequence `seqId`, at the positions the backend assigns) and returns the logits of
   * the last token [vocab], or with `allLogits` of every token [n][vocab].
   */
  async forward(seqId: number, tokens: readonly number[], options: GpuForwardOptions = {}): Promise<Float32Array> {
    this.checkUsable();
    const n = tokens.length;
    if (n === 0) throw new InvalidArgumentError('tokens', 'a chunk needs at least one token');
    this.checkTokens(tokens, 'tokens');
    this.busy = true;
    try {
      const step = this.backend.beginStep(seqId, n);
      if (step.positions.length !== n) {
        throw new InvalidArgumentError('positions', `backend returned ${step.positions.length} positions for ${n} tokens`);
      }
      return await this.run(tokens, [step], options.allLogits ?? false, false);
    } finally {
      this.busy = false;
    }
  }

  /**
   * One decode token of each of `seqIds` (distinct sequences, at the positions the backend assigns) in one
   * forward and one submit: the projections run as [batch × dim] products (each weight read once per 8 rows by
   * the matvec kernel), attention as one dispatch per layer over every sequence, each at its own context length
   * (per sequence where the backend cannot, see GpuLlamaOptions.batchedAttention). Returns each sequence's logits [vocab], in order.
   * If the backend cannot reserve a slot for a later sequence (OutOfBlocksError), the earlier ones keep the slot
   * they reserved, with no K/V written: truncate them (PagedKvCache.truncate) or free them before going on.
   *
   * @example
   * ```ts
   * const [a, b] = await model.forwardBatch([1, 2], [tokA, tokB]);
   * ```
   */
  async forwardBatch(seqIds: readonly number[], tokens: readonly number[]): Promise<Float32Array[]> {
    this.checkUsable();
    if (seqIds.length === 0 || seqIds.length !== tokens.length) {
      throw new InvalidArgumentError('tokens', `a batch needs one token per sequence; got ${tokens.length} tokens for ${seqIds.length} sequences`);
    }
    if (new Set(seqIds).size !== seqIds.length) {
      throw new InvalidArgumentError('seqIds', 'a batch holds one token per sequence; run several tokens of one sequence with forward()');
    }
    this.checkTokens(tokens, 'tokens');
    this.busy = true;
    try {
      const steps: KvStep[] = [];
      try {
        for (const seqId of seqIds) steps.push(this.backend.beginStep(seqId, 1));
      } catch (error) {
        // Release what the begun steps hold; their reserved slots stay (the backend has no undo of beginStep).
        for (const step of steps) this.backend.endStep(step);
        throw error;
      }
      const logits = await this.run(tokens, steps, true, this.batchedAttention);
      const { vocabSize } = this.config;
      return steps.map((_, b) => logits.slice(b * vocabSize, (b + 1) * vocabSize));
    } finally {
      this.busy = false;
    }
  }

  private checkUsable(): void {
    if (this.destroyed) throw new KvCompactError('this GpuLlama was destroyed; create a new one');
    if (this.busy) {
      throw new KvCompactError('GpuLlama.forward calls must not overlap (they share scratch buffers): await each call');
    }
  }

  private checkTokens(tokens: readonly number[], field: string): void {
    const { vocabSize } = this.config;
    tokens.forEach((t, i) => {
      if (!Number.isInteger(t) || t < 0 || t >= vocabSize) {
        throw new InvalidArgumentError(`${field}[${i}]`, `id ${t} is outside the vocabulary (0..${vocabSize - 1})`);
      }
    });
  }

  /** Encodes, submits and reads back one forward over `tokens`, whose rows belong to `steps` in order. */
  private async run(tokens: readonly number[], steps: readonly KvStep[], allLogits: boolean, batched: boolean): Promise<Float32Array> {
    const { vocabSize, dim } = this.config;
    const n = tokens.length;
    const act = this.scratch(n);
    const positions = new Uint32Array(n);
    let at = 0;
    for (const step of steps) {
      positions.set(step.positions, at);
      at += step.positions.length;
    }
    let maxPos = 0;
    for (const p of positions) maxPos = Math.max(maxPos, p);
    this.ensureRope(maxPos + 1);
    const queue = this.gpu.device.queue;
    const host = this.weights.hostEmbedding;
    if (host) {
      const rows = new Float32Array(n * dim);
      tokens.forEach((t, i) => rows.set(host.subarray(t * dim, (t + 1) * dim), i * dim));
      queue.writeBuffer(act.x, 0, rows);
    } else {
      queue.writeBuffer(act.tokens, 0, Uint32Array.from(tokens));
    }
    queue.writeBuffer(act.positions, 0, positions);
    const encoder = this.gpu.device.createCommandEncoder({ label: 'llama:forward' });
    const logitRows = this.encodeForward(encoder, act, n, steps, allLogits, batched);
    const bytes = logitRows * vocabSize * 4;
    encoder.copyBufferToBuffer(act.logits, 0, act.staging, 0, bytes);
    this.gpu.submit([encoder.finish()]);
    for (const step of steps) this.backend.endStep(step);
    await act.staging.mapAsync(GPUMapMode.READ, 0, bytes);
    try {
      return new Float32Array(act.staging.getMappedRange(0, bytes).slice(0));
    } finally {
      act.staging.unmap();
    }
  }

  /**
   * Records the forward into one compute pass where the backend records into it (GpuAttentionBackend.recordsIntoPass:
   * the paged cache), else one pass for each stretch between attention calls, which then open their own. The
   * model's kernels dispatch from the cache, so a repeated decode step creates no uniform buffers or bind groups
   * for them.
   */
  private encodeForward(encoder: GPUCommandEncoder, act: Activations, n: number, steps: readonly KvStep[], allLogits: boolean, batched: boolean): number {
    const { dim, hiddenDim, kvDim } = this.config;
    const qDim = queryDim(this.config);
    const w = this.weights;
    const project = this.projection;
    let shared: SharedPass = { pass: encoder.beginComputePass({ label: 'llama:forward' }), cache: this.dispatches };
    const outside = (record: () => void) => {
      shared.pass.end();
      record();
      shared = { pass: encoder.beginComputePass({ label: 'llama:forward' }), cache: this.dispatches };
    };
    // Attention records into the forward's pass, or for a backend that opens its own passes, between two of ours.
    const attend = (record: (pass: GPUComputePassEncoder | undefined) => void): void => {
      if (this.backend.recordsIntoPass) record(shared.pass);
      else outside(() => record(undefined));
    };
    const copy = (src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, words: number, pass: GPUComputePassEncoder | undefined): void =>
      this.copyRows.encodeRange(encoder, { src, srcOffset, dst, dstOffset, words, ...(pass ? { pass } : {}) });
    if (w.tokenEmbedding) this.embedding.encode(encoder, { numTokens: n, dim, tokens: act.tokens, table: w.tokenEmbedding, out: act.x }, shared);
    w.layers.forEach((lw, layer) => {
      this.rmsnorm.encode(encoder, { rows: n, dim, x: act.x, weight: lw.rmsAtt, out: act.xb }, shared);
      project.encode(encoder, { rows: n, x: act.xb, w: lw.wq, out: act.q }, shared);
      project.encode(encoder, { rows: n, x: act.xb, w: lw.wk, out: act.k }, shared);
      project.encode(encoder, { rows: n, x: act.xb, w: lw.wv, out: act.v }, shared);
      if (lw.bias) {
        const add = (b: GPUBuffer, out: GPUBuffer, outDim: number) =>
          project.matmul.encode(encoder, { rows: n, inDim: 1, outDim, x: act.ones, w: b, out, accumulate: true }, shared);
        add(lw.bias.q, act.q, qDim);
        add(lw.bias.k, act.k, kvDim);
        add(lw.bias.v, act.v, kvDim);
      }
      this.rope.encode(encoder, { numTokens: n, positions: act.positions, table: this.ropeTable, tableRows: this.ropeRows, q: act.q, k: act.k }, shared);
      attend((pass) => {
        const inPass = pass ? { pass } : {};
        const io = { keys: act.k, values: act.v, queries: act.q, out: act.att, ...inPass };
        if (batched && this.backend.encodeLayerBatch?.(encoder, steps, layer, io)) return;
        if (steps.length === 1 && steps[0]) {
          this.backend.encodeLayer(encoder, steps[0], layer, io);
          return;
        }
        // Per sequence: the backend attends one sequence's rows at offset 0, so each row goes through one-row
        // buffers (dispatches run in order, so the buffers are reused from sequence to sequence).
        steps.forEach((step, b) => {
          copy(act.q, b * qDim, act.q1, 0, qDim, pass);
          copy(act.k, b * kvDim, act.k1, 0, kvDim, pass);
          copy(act.v, b * kvDim, act.v1, 0, kvDim, pass);
          this.backend.encodeLayer(encoder, step, layer, { keys: act.k1, values: act.v1, queries: act.q1, out: act.att1, ...inPass });
          copy(act.att1, 0, act.att, b * qDim, qDim, pass);
        });
      });
      project.encode(encoder, { rows: n, x: act.att, w: lw.wo, out: act.x, accumulate: true }, shared);
      this.rmsnorm.encode(encoder, { rows: n, dim, x: act.x, weight: lw.rmsFfn, out: act.xb }, shared);
      project.encode(encoder, { rows: n, x: act.xb, w: lw.w13, out: act.gateUp }, shared);
      this.swiglu.encode(encoder, { rows: n, width: hiddenDim, gateUp: act.gateUp, out: act.hidden }, shared);
      project.encode(encoder, { rows: n, x: act.hidden, w: lw.w2, out: act.x, accumulate: true }, shared);
    });
    // Only the rows whose logits are returned go through the classifier (vocab × dim per row).
    let rows = n;
    let source = act.x;
    let normed = act.xb;
    if (!allLogits) {
      copy(act.x, (n - 1) * dim, act.lastX, 0, dim, shared.pass);
      rows = 1;
      source = act.lastX;
      normed = act.lastXb;
    }
    this.rmsnorm.encode(encoder, { rows, dim, x: source, weight: w.rmsFinal, out: normed }, shared);
    project.encode(encoder, { rows, x: normed, w: w.classifier, out: act.logits }, shared);
    shared.pass.end();
    return rows;
  }

  /** The RoPE table covers positions 0..rows−1; positions past seq_len (after compression) grow it. */
  private ensureRope(rows: number): void {
    if (rows <= this.ropeRows) return;
    let next = this.ropeRows;
    while (next < rows) next *= 2;
    this.ropeTable.destroy();
    // Cached bind groups name the old table.
    this.dispatches.clear();
    this.ropeRows = next;
    this.ropeTable = createStorageBuffer(this.gpu, 'llama:rope', ropeTable(this.ropeFrequencies, next));
  }

  /** Scratch for n tokens; the previous forward has completed (its readback was awaited), so old buffers can go. */
  private scratch(n: number): Activations {
    if (this.activations && this.activations.capacity >= n) return this.activations;
    this.destroyActivations();
    const { dim, hiddenDim, kvDim, vocabSize, nHeads, headSize } = this.config;
    const capacity = Math.max(n, 1 << Math.ceil(Math.log2(Math.max(1, n))));
    const f32 = (name: string, floats: number) => createStorageBuffer(this.gpu, `llama:${name}`, floats * 4);
    this.activations = {
      capacity,
      tokens: f32('tokens', capacity),
      positions: f32('positions', capacity),
      x: f32('x', capacity * dim),
      xb: f32('xb', capacity * dim),
      q: f32('q', capacity * nHeads * headSize),
      k: f32('k', capacity * kvDim),
      v: f32('v', capacity * kvDim),
      att: f32('att', capacity * nHeads * headSize),
      q1: f32('q1', nHeads * headSize),
      k1: f32('k1', kvDim),
      v1: f32('v1', kvDim),
      att1: f32('att1', nHeads * headSize),
      gateUp: f32('gate_up', capacity * 2 * hiddenDim),
      hidden: f32('hidden', capacity * hiddenDim),
      lastX: f32('last_x', dim),
      lastXb: f32('last_xb', dim),
      ones: createStorageBuffer(this.gpu, 'llama:ones', new Float32Array(capacity).fill(1)),
      logits: f32('logits', capacity * vocabSize),
      staging: this.gpu.device.createBuffer({
        label: 'llama:logits:readback',
        size: capacity * vocabSize * 4,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      }),
    };
    return this.activations;
  }

  private destroyActivations(): void {
    const act = this.activations;
    if (!act) return;
    // The matvec kernel's cached bind groups name these buffers.
    this.projection.matvec.clearCache();
    this.dispatches.clear();
    for (const [key, value] of Object.entries(act)) if (key !== 'capacity') (value as GPUBuffer).destroy();
    this.activations = null;
  }

  /** Releases the weights and scratch buffers (not the backend). Wait for pending forwards first. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.destroyActivations();
    this.projection.matvec.clearCache();
    this.dispatches.clear();
    this.copyRows.destroy();
    this.ropeTable.destroy();
    destroyModelWeights(this.weights);
  }
}
