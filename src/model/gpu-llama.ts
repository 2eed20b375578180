import { InvalidArgumentError, KvCompactError, LimitExceededError } from '../errors.js';
import { F16_MAX, pack2x16float } from '../format/f16.js';
import { createStorageBuffer } from '../gpu/buffers.js';
import type { GpuContext } from '../gpu/context.js';
import { EmbeddingKernel } from '../kernels/model/embedding.js';
import { MatmulKernel, type MatmulKernelOptions } from '../kernels/model/matmul.js';
import { RmsNormKernel } from '../kernels/model/rmsnorm.js';
import { RopeKernel } from '../kernels/model/rope.js';
import { SwigluKernel } from '../kernels/model/swiglu.js';
import type { GpuAttentionBackend } from '../attention/backend.js';
import { layerWeights, queryDim, type LlamaCheckpoint, type LlamaConfig } from './checkpoint.js';
import { configRopeFrequencies, RMS_NORM_EPS } from './reference-forward.js';

/** One layer's weights on the GPU. q/k/v stay separate so each lands in the buffer attention reads. */
interface GpuLayerWeights {
  readonly rmsAtt: GPUBuffer;
  readonly wq: GPUBuffer;
  readonly wk: GPUBuffer;
  readonly wv: GPUBuffer;
  readonly wo: GPUBuffer;
  readonly rmsFfn: GPUBuffer;
  /** [2 · hidden][dim]: w1 rows then w3 rows, so gate and up are one matmul. */
  readonly w13: GPUBuffer;
  readonly w2: GPUBuffer;
  /** q/k/v biases as [width][1] matrices, added by a 1-wide accumulate matmul against a column of ones (Qwen2). */
  readonly bias?: { readonly q: GPUBuffer; readonly k: GPUBuffer; readonly v: GPUBuffer };
}

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

/**
 * Throws {@link LimitExceededError} naming the first weight tensor whose buffer would pass maxBufferSize or
 * maxStorageBufferBindingSize, before any buffer is created.
 */
function checkWeightSizes(limits: GPUSupportedLimits, config: LlamaConfig): void {
  const { dim, hiddenDim, kvDim, vocabSize } = config;
  const qDim = queryDim(config);
  const tensors: Array<[string, string, number]> = [
    ['token_embedding', `[${vocabSize}, ${dim}]`, vocabSize * dim],
    ['wq', `[${qDim}, ${dim}]`, qDim * dim],
    ['wk', `[${kvDim}, ${dim}]`, kvDim * dim],
    ['wo', `[${dim}, ${qDim}]`, dim * qDim],
    ['w13', `[${2 * hiddenDim}, ${dim}]`, 2 * hiddenDim * dim],
    ['w2', `[${dim}, ${hiddenDim}]`, dim * hiddenDim],
  ];
  if (!config.sharedClassifier) tensors.push(['wcls', `[${vocabSize}, ${dim}]`, vocabSize * dim]);
  const limit = Math.min(limits.maxBufferSize, limits.maxStorageBufferBindingSize);
  const which = limits.maxBufferSize < limits.maxStorageBufferBindingSize ? 'maxBufferSize' : 'maxStorageBufferBindingSize';
  for (const [name, shape, floats] of tensors) {
    const bytes = 4 * floats;
    if (bytes > limit) {
      throw new LimitExceededError(
        which,
        bytes,
        limit,
        `weight tensor ${name} ${shape} (f32, ${bytes} bytes) does not fit one storage binding on this adapter; ` +
          'use an adapter with a larger limit or a smaller model (split weight buffers are not implemented)',
      );
    }
  }
}

/**
 * A row-major f32 matrix [rows][cols] as f16 pairs in u32 words, the upload layout for f16 weights where the
 * device lacks `shader-f16` (SwiftShader): each row is ⌈cols/2⌉ words, word j = pack2x16float(w[2j], w[2j+1])
 * (the odd last column paired with 0), so a matrix-vector kernel reads two weights per word and every row starts
 * on a word. With shader-f16 the same bytes are an `array<f16>` of rows padded to an even width. A weight past
 * the f16 range (±65504) is an {@link InvalidArgumentError} naming the tensor and the element, not a silent ∞.
 *
 * @example
 * ```ts
 * const words = packF16Rows(lw.wq, queryDim(config), config.dim, 'wq'); // half the bytes of lw.wq
 * ```
 */
export function packF16Rows(data: Float32Array, rows: number, cols: number, tensor: string): Uint32Array {
  if (data.length !== rows * cols) {
    throw new InvalidArgumentError(tensor, `has ${data.length} values, expected rows ${rows} × cols ${cols}`);
  }
  const wordsPerRow = Math.ceil(cols / 2);
  const out = new Uint32Array(rows * wordsPerRow);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < wordsPerRow; j++) {
      const c = 2 * j;
      const a = data[r * cols + c] as number;
      const b = c + 1 < cols ? (data[r * cols + c + 1] as number) : 0;
      if (!(Math.abs(a) <= F16_MAX) || !(Math.abs(b) <= F16_MAX)) {
        const bad = !(Math.abs(a) <= F16_MAX) ? c : c + 1;
        throw new InvalidArgumentError(
          tensor,
          `element [${r}, ${bad}] = ${data[r * cols + bad]} is outside the f16 range (±${F16_MAX}); keep this tensor in f32`,
        );
      }
      out[r * wordsPerRow + j] = pack2x16float(a, b);
    }
  }
  return out;
}

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
  const classifier = config.sharedClassifier ? 0 : matrix(vocabSize, dim);
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
 * new GpuLlama(gpu, checkpoint, cache, { matmul: { strategy: 'tiled' } });
 * ```
 */
export interface GpuLlamaOptions {
  /** Matmul strategy and tiles (default: picked from the adapter, see MatmulStrategy). */
  readonly matmul?: MatmulKernelOptions;
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
 * The Llama forward pass (llama2.c checkpoints and Hugging Face Llama/Qwen2/Mistral, see loadHfModel) on the GPU: embedding, RMSNorm, matmuls, RoPE and SwiGLU in WGSL, attention through a
 * {@link GpuAttentionBackend} (the paged KV cache). Runs a chunk of n tokens of one sequence per call (prefill
 * and decode are the same path) in one submit, and reads the logits back. Weights are uploaded once.
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
  private readonly embedding: EmbeddingKernel;
  private readonly rmsnorm: RmsNormKernel;
  private readonly matmul: MatmulKernel;
  private readonly rope: RopeKernel;
  private readonly swiglu: SwigluKernel;
  private readonly tokenEmbedding: GPUBuffer;
  private readonly rmsFinal: GPUBuffer;
  private readonly wcls: GPUBuffer;
  private readonly layers: GpuLayerWeights[];
  private ropeTable: GPUBuffer;
  private ropeRows: number;
  private readonly ropeFrequencies: Float32Array;
  private activations: Activations | null = null;
  private busy = false;
  private destroyed = false;

  constructor(
    private readonly gpu: GpuContext,
    checkpoint: LlamaCheckpoint,
    private readonly backend: GpuAttentionBackend,
    options: GpuLlamaOptions = {},
  ) {
    const { config, weights } = checkpoint;
    this.config = config;
    checkWeightSizes(gpu.limits, config);
    this.embedding = new EmbeddingKernel(gpu);
    this.rmsnorm = new RmsNormKernel(gpu, { eps: config.rmsNormEps ?? RMS_NORM_EPS });
    this.matmul = new MatmulKernel(gpu, options.matmul);
    this.rope = new RopeKernel(gpu, { nHeads: config.nHeads, kvHeads: config.nKvHeads, headDim: config.headSize });
    this.swiglu = new SwigluKernel(gpu);
    this.tokenEmbedding = createStorageBuffer(gpu, 'llama:token_embedding', weights.tokenEmbedding);
    this.rmsFinal = createStorageBuffer(gpu, 'llama:rms_final', weights.rmsFinalWeight);
    this.wcls = config.sharedClassifier ? this.tokenEmbedding : createStorageBuffer(gpu, 'llama:wcls', weights.wcls);
    this.layers = Array.from({ length: config.nLayers }, (_, l) => {
      const lw = layerWeights(config, weights, l);
      const w13 = new Float32Array(2 * config.hiddenDim * config.dim);
      w13.set(lw.w1, 0);
      w13.set(lw.w3, lw.w1.length);
      const upload = (name: string, data: Float32Array) => createStorageBuffer(gpu, `llama:${l}:${name}`, data);
      const bias =
        lw.bq && lw.bk && lw.bv ? { bias: { q: upload('bq', lw.bq), k: upload('bk', lw.bk), v: upload('bv', lw.bv) } } : {};
      return {
        ...bias,
        rmsAtt: upload('rms_att', lw.rmsAttWeight),
        wq: upload('wq', lw.wq),
        wk: upload('wk', lw.wk),
        wv: upload('wv', lw.wv),
        wo: upload('wo', lw.wo),
        rmsFfn: upload('rms_ffn', lw.rmsFfnWeight),
        w13: upload('w13', w13),
        w2: upload('w2', lw.w2),
      };
    });
    this.ropeRows = config.seqLen;
    this.ropeFrequencies = configRopeFrequencies(config);
    this.ropeTable = createStorageBuffer(gpu, 'llama:rope', ropeTable(this.ropeFrequencies, this.ropeRows));
  }

  /**
   * Runs `tokens` (a chunk of sequence `seqId`, at the positions the backend assigns) and returns the logits of
   * the last token [vocab], or with `allLogits` of every token [n][vocab].
   */
  async forward(seqId: number, tokens: readonly number[], options: GpuForwardOptions = {}): Promise<Float32Array> {
    if (this.destroyed) throw new KvCompactError('this GpuLlama was destroyed; create a new one');
    if (this.busy) {
      throw new KvCompactError('GpuLlama.forward calls must not overlap (they share scratch buffers): await each call');
    }
    const { vocabSize } = this.config;
    const n = tokens.length;
    if (n === 0) throw new InvalidArgumentError('tokens', 'a chunk needs at least one token');
    tokens.forEach((t, i) => {
      if (!Number.isInteger(t) || t < 0 || t >= vocabSize) {
        throw new InvalidArgumentError(`tokens[${i}]`, `id ${t} is outside the vocabulary (0..${vocabSize - 1})`);
      }
    });
    this.busy = true;
    try {
      const act = this.scratch(n);
      const step = this.backend.beginStep(seqId, n);
      if (step.positions.length !== n) {
        throw new InvalidArgumentError('positions', `backend returned ${step.positions.length} positions for ${n} tokens`);
      }
      let maxPos = 0;
      for (const p of step.positions) maxPos = Math.max(maxPos, p);
      this.ensureRope(maxPos + 1);
      const queue = this.gpu.device.queue;
      queue.writeBuffer(act.tokens, 0, Uint32Array.from(tokens));
      queue.writeBuffer(act.positions, 0, Uint32Array.from(step.positions));
      const encoder = this.gpu.device.createCommandEncoder({ label: 'llama:forward' });
      const logitRows = this.encodeForward(encoder, act, n, step, options.allLogits ?? false);
      const bytes = logitRows * vocabSize * 4;
      encoder.copyBufferToBuffer(act.logits, 0, act.staging, 0, bytes);
      this.gpu.submit([encoder.finish()]);
      this.backend.endStep(step);
      await act.staging.mapAsync(GPUMapMode.READ, 0, bytes);
      try {
        return new Float32Array(act.staging.getMappedRange(0, bytes).slice(0));
      } finally {
        act.staging.unmap();
      }
    } finally {
      this.busy = false;
    }
  }

  private encodeForward(
    encoder: GPUCommandEncoder,
    act: Activations,
    n: number,
    step: ReturnType<GpuAttentionBackend['beginStep']>,
    allLogits: boolean,
  ): number {
    const { dim, hiddenDim, kvDim, vocabSize } = this.config;
    const qDim = queryDim(this.config);
    this.embedding.encode(encoder, { numTokens: n, dim, tokens: act.tokens, table: this.tokenEmbedding, out: act.x });
    this.layers.forEach((lw, layer) => {
      this.rmsnorm.encode(encoder, { rows: n, dim, x: act.x, weight: lw.rmsAtt, out: act.xb });
      this.matmul.encode(encoder, { rows: n, inDim: dim, outDim: qDim, x: act.xb, w: lw.wq, out: act.q });
      this.matmul.encode(encoder, { rows: n, inDim: dim, outDim: kvDim, x: act.xb, w: lw.wk, out: act.k });
      this.matmul.encode(encoder, { rows: n, inDim: dim, outDim: kvDim, x: act.xb, w: lw.wv, out: act.v });
      if (lw.bias) {
        const add = (w: GPUBuffer, out: GPUBuffer, outDim: number) =>
          this.matmul.encode(encoder, { rows: n, inDim: 1, outDim, x: act.ones, w, out, accumulate: true });
        add(lw.bias.q, act.q, qDim);
        add(lw.bias.k, act.k, kvDim);
        add(lw.bias.v, act.v, kvDim);
      }
      this.rope.encode(encoder, {
        numTokens: n,
        positions: act.positions,
        table: this.ropeTable,
        tableRows: this.ropeRows,
        q: act.q,
        k: act.k,
      });
      this.backend.encodeLayer(encoder, step, layer, { keys: act.k, values: act.v, queries: act.q, out: act.att });
      this.matmul.encode(encoder, { rows: n, inDim: qDim, outDim: dim, x: act.att, w: lw.wo, out: act.x, accumulate: true });
      this.rmsnorm.encode(encoder, { rows: n, dim, x: act.x, weight: lw.rmsFfn, out: act.xb });
      this.matmul.encode(encoder, { rows: n, inDim: dim, outDim: 2 * hiddenDim, x: act.xb, w: lw.w13, out: act.gateUp });
      this.swiglu.encode(encoder, { rows: n, width: hiddenDim, gateUp: act.gateUp, out: act.hidden });
      this.matmul.encode(encoder, { rows: n, inDim: hiddenDim, outDim: dim, x: act.hidden, w: lw.w2, out: act.x, accumulate: true });
    });
    // Only the rows whose logits are returned go through the classifier (vocab × dim per row).
    let rows = n;
    let source = act.x;
    let normed = act.xb;
    if (!allLogits) {
      encoder.copyBufferToBuffer(act.x, (n - 1) * dim * 4, act.lastX, 0, dim * 4);
      rows = 1;
      source = act.lastX;
      normed = act.lastXb;
    }
    this.rmsnorm.encode(encoder, { rows, dim, x: source, weight: this.rmsFinal, out: normed });
    this.matmul.encode(encoder, { rows, inDim: dim, outDim: vocabSize, x: normed, w: this.wcls, out: act.logits });
    return rows;
  }

  /** The RoPE table covers positions 0..rows−1; positions past seq_len (after compression) grow it. */
  private ensureRope(rows: number): void {
    if (rows <= this.ropeRows) return;
    let next = this.ropeRows;
    while (next < rows) next *= 2;
    this.ropeTable.destroy();
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
    for (const buffer of [act.tokens, act.positions, act.x, act.xb, act.q, act.k, act.v, act.att, act.gateUp, act.hidden, act.lastX, act.lastXb, act.ones, act.logits, act.staging]) {
      buffer.destroy();
    }
    this.activations = null;
  }

  /** Releases the weights and scratch buffers (not the backend). Wait for pending forwards first. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.destroyActivations();
    const buffers = new Set<GPUBuffer>([this.tokenEmbedding, this.rmsFinal, this.wcls, this.ropeTable]);
    for (const { bias, ...lw } of this.layers) {
      for (const b of Object.values(lw) as GPUBuffer[]) buffers.add(b);
      if (bias) for (const b of [bias.q, bias.k, bias.v]) buffers.add(b);
    }
    for (const b of buffers) b.destroy();
  }
}
