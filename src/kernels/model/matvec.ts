import matvecColumnBody from '../../../shaders/matvec_column.wgsl';
import matvecLoadF16 from '../../../shaders/matvec_load_f16.wgsl';
import matvecLoadF16Packed from '../../../shaders/matvec_load_f16_packed.wgsl';
import matvecLoadF32 from '../../../shaders/matvec_load_f32.wgsl';
import matvecWgBody from '../../../shaders/matvec_wg.wgsl';
import { InvalidArgumentError, LimitExceededError } from '../../errors.js';
import { F16_MAX, pack2x16float, roundToF16 } from '../../format/f16.js';
import type { GpuContext } from '../../gpu/context.js';
import { kernelPipeline, type KernelSpec } from '../../gpu/kernel.js';
import { foldDispatch } from '../../gpu/dispatch.js';
import { UniformLayout } from '../../gpu/uniforms.js';
import { objectId, type SharedPass } from './dispatch-cache.js';
import { requirePositive, requireStorage } from './model-checks.js';

const MATVEC_PARAMS = new UniformLayout('MatvecParams', [
  { name: 'rows', type: 'u32' },
  { name: 'in_dim', type: 'u32' },
  { name: 'out_dim', type: 'u32' },
  { name: 'out_stride', type: 'u32' },
  { name: 'out_offset', type: 'u32' },
  { name: 'row_words', type: 'u32' },
]);

/**
 * Precision of a weight on the GPU: `f32` as in the checkpoint, or `f16` (half the bytes a decode step reads).
 *
 * @example
 * ```ts
 * new GpuLlama(gpu, checkpoint, cache, { weights: 'f32' });
 * ```
 */
export type WeightPrecision = 'f32' | 'f16';

/**
 * How the f16 weights are read: `native` (`array<vec2<f16>>`, needs the device feature `shader-f16`) or `packed`
 * (u32 words through unpack2x16float, any device). The bytes are the same.
 *
 * @example
 * ```ts
 * new MatvecKernel(gpu).f16Path; // 'packed' on SwiftShader, which lacks shader-f16
 * ```
 */
export type F16Path = 'native' | 'packed';

/**
 * A row-major f32 matrix [rows][cols] as f16 pairs in u32 words, the f16 weight layout on the GPU: each row is
 * ⌈cols/2⌉ words, word j = pack2x16float(w[2j], w[2j+1]) (the odd last column paired with 0), so the kernel reads
 * two weights per word and every row starts on a word. With shader-f16 the same bytes are an `array<vec2<f16>>`.
 * A weight past the f16 range (±65504) is an {@link InvalidArgumentError} naming the tensor and the element, not
 * a silent ∞.
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
 * The TS reference of the matvec kernels: out[r][offset + c] (+)= Σ_k x[r][k] · w[c][k] in double, with the weights
 * rounded to f16 first when `precision` is f16 (what the GPU multiplies by), into an [rows][outStride] array.
 *
 * @example
 * ```ts
 * const want = matvecReference(x, w, { rows: 1, inDim: 64, outDim: 172, precision: 'f16' });
 * ```
 */
export function matvecReference(
  x: Float32Array,
  w: Float32Array,
  shape: { rows: number; inDim: number; outDim: number; precision: WeightPrecision; outStride?: number; outOffset?: number },
  out?: Float32Array,
): Float32Array {
  const { rows, inDim, outDim, precision } = shape;
  const stride = shape.outStride ?? outDim;
  const offset = shape.outOffset ?? 0;
  const result = out ?? new Float32Array(rows * stride);
  const weight = precision === 'f16' ? w.map(roundToF16) : w;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < outDim; c++) {
      let acc = 0;
      for (let k = 0; k < inDim; k++) acc += (x[r * inDim + k] as number) * (weight[c * inDim + k] as number);
      const o = r * stride + offset + c;
      result[o] = (result[o] as number) + acc;
    }
  }
  return result;
}

/** One buffer of a weight: rows row0..row0+rows−1 of the whole [outDim][inDim] matrix. */
export interface MatvecWeightPart {
  readonly buffer: GPUBuffer;
  readonly row0: number;
  readonly rows: number;
}

/**
 * A weight matrix [outDim][inDim] on the GPU in one precision, its rows split across buffers where one would pass
 * the binding limit (each part is one dispatch writing its column range of the output).
 */
export interface MatvecWeight {
  readonly name: string;
  readonly precision: WeightPrecision;
  readonly outDim: number;
  readonly inDim: number;
  /** u32 words (f16: pairs) per row. */
  readonly rowWords: number;
  readonly parts: readonly MatvecWeightPart[];
}

/**
 * Uploads `data` ([outDim][inDim], row-major f32) as a {@link MatvecWeight}: in f16 through packF16Rows, split
 * into as few parts as `maxBindingBytes` allows (default: the smaller of maxBufferSize and
 * maxStorageBufferBindingSize). A single row past the limit is a {@link LimitExceededError} naming the tensor.
 *
 * @example
 * ```ts
 * const wcls = uploadMatvecWeight(gpu, 'wcls', weights.wcls, vocab, dim, 'f16');
 * ```
 */
export function uploadMatvecWeight(
  gpu: GpuContext,
  name: string,
  data: Float32Array,
  outDim: number,
  inDim: number,
  precision: WeightPrecision,
  maxBindingBytes?: number,
): MatvecWeight {
  requirePositive(`${name}.outDim`, outDim);
  requirePositive(`${name}.inDim`, inDim);
  if (data.length !== outDim * inDim) {
    throw new InvalidArgumentError(name, `has ${data.length} values, expected ${outDim} × ${inDim}`);
  }
  const rowWords = precision === 'f16' ? Math.ceil(inDim / 2) : inDim;
  const deviceLimit = Math.min(gpu.limits.maxBufferSize, gpu.limits.maxStorageBufferBindingSize);
  const limit = Math.min(deviceLimit, maxBindingBytes ?? deviceLimit);
  const rowBytes = rowWords * 4;
  if (rowBytes > limit) {
    throw new LimitExceededError(
      maxBindingBytes !== undefined && maxBindingBytes < deviceLimit ? 'maxBindingBytes' : 'maxStorageBufferBindingSize',
      rowBytes,
      limit,
      `one row of weight tensor ${name} [${outDim}, ${inDim}] (${precision}) does not fit one storage binding; rows are the unit of splitting`,
    );
  }
  const rowsPerPart = Math.min(outDim, Math.floor(limit / rowBytes));
  const parts: MatvecWeightPart[] = [];
  for (let row0 = 0; row0 < outDim; row0 += rowsPerPart) {
    const rows = Math.min(rowsPerPart, outDim - row0);
    const slice = data.subarray(row0 * inDim, (row0 + rows) * inDim);
    const contents = precision === 'f16' ? packF16Rows(slice, rows, inDim, name) : slice;
    const label = parts.length === 0 && row0 + rows >= outDim ? `llama:${name}` : `llama:${name}:rows ${row0}..${row0 + rows - 1}`;
    const size = Math.max(4, contents.byteLength);
    const buffer = gpu.device.createBuffer({
      label,
      size,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
      mappedAtCreation: true,
    });
    new Uint8Array(buffer.getMappedRange()).set(new Uint8Array(contents.buffer, contents.byteOffset, contents.byteLength));
    buffer.unmap();
    parts.push({ buffer, row0, rows });
  }
  return { name, precision, outDim, inDim, rowWords, parts };
}

/**
 * One product of {@link MatvecKernel}: out[r][outOffset + c] (+)= x[r] · w[c] over every part of `w`.
 */
export interface MatvecRun {
  readonly rows: number;
  /** f32 [rows][w.inDim]. */
  readonly x: GPUBuffer;
  readonly w: MatvecWeight;
  /** f32 [rows][outStride]; must differ from `x`. */
  readonly out: GPUBuffer;
  /** Floats per output row (default w.outDim). */
  readonly outStride?: number;
  /** First output column written (default 0). */
  readonly outOffset?: number;
  readonly accumulate?: boolean;
}

/** A recorded dispatch: pipeline, bind group (over a uniform buffer it owns) and workgroup count. */
interface PreparedDispatch {
  readonly pipeline: GPUComputePipeline;
  readonly bindGroup: GPUBindGroup;
  readonly uniforms: GPUBuffer;
  readonly count: readonly [number, number, number];
}

/**
 * How the work is split: `column` is one barrier-free thread per output column (shaders/matvec_column.wgsl; fastest on SwiftShader, whose barriers are slow); `workgroup` is one workgroup per column whose threads
 * read the row together, coalesced, and reduce in workgroup memory (shaders/matvec_wg.wgsl; for real GPUs).
 *
 * @example
 * ```ts
 * new MatvecKernel(gpu, { strategy: 'workgroup' });
 * ```
 */
export type MatvecStrategy = 'column' | 'workgroup';

/**
 * Tuning of {@link MatvecKernel}.
 *
 * @example
 * ```ts
 * new MatvecKernel(gpu, { f16Path: 'packed' });
 * ```
 */
export interface MatvecKernelOptions {
  /** Default: `native` where the device has shader-f16, else `packed`. Asking for `native` without it throws. */
  readonly f16Path?: F16Path;
  /** Default: `column` on a software (fallback) adapter, `workgroup` otherwise. */
  readonly strategy?: MatvecStrategy;
  /** Threads per workgroup (default 64; a power of two for the workgroup strategy's reduction). */
  readonly workgroupSize?: number;
  /** Rows each thread accumulates at once (default 8: a batch of 8 decode tokens reads each weight once). */
  readonly rowBlock?: number;
  /** Runs with at most this many rows keep their uniforms and bind groups across calls (default 64). */
  readonly cacheRowsUpTo?: number;
}

/**
 * Matrix × weightᵀ for the model's decode and prefill projections with f32 or f16 weights, split weights
 * included: one barrier-free thread per output column and block of rows (shaders/matvec_column.wgsl; the weight
 * format is a library, shaders/matvec_load_*.wgsl). Decode-sized runs (≤ cacheRowsUpTo rows) keep their uniform buffers and bind groups across
 * calls, so a decode step creates none; call {@link MatvecKernel.clearCache} when a bound buffer is destroyed.
 *
 * @example
 * ```ts
 * const matvec = new MatvecKernel(gpu);
 * const pass = encoder.beginComputePass();
 * matvec.encodeInPass(pass, { rows: 1, x, w: wq, out: q });
 * pass.end();
 * ```
 */
export class MatvecKernel {
  readonly f16Path: F16Path;
  readonly strategy: MatvecStrategy;
  private readonly workgroupSize: number;
  private readonly rowBlock: number;
  private readonly cacheRowsUpTo: number;
  private readonly prepared = new Map<string, PreparedDispatch[]>();

  constructor(
    private readonly gpu: GpuContext,
    options: MatvecKernelOptions = {},
  ) {
    const hasF16 = gpu.has('shader-f16');
    if (options.f16Path === 'native' && !hasF16) {
      throw new InvalidArgumentError('f16Path', `'native' needs the device feature shader-f16, which ${gpu.adapter.description || 'this adapter'} lacks; use 'packed'`);
    }
    this.f16Path = options.f16Path ?? (hasF16 ? 'native' : 'packed');
    this.strategy = options.strategy ?? (gpu.adapter.isFallbackAdapter ? 'column' : 'workgroup');
    this.workgroupSize = options.workgroupSize ?? 64;
    this.rowBlock = options.rowBlock ?? 8;
    if (this.strategy === 'workgroup' && !Number.isInteger(Math.log2(this.workgroupSize))) {
      throw new InvalidArgumentError('workgroupSize', `the workgroup strategy reduces in a tree: a power of two, got ${this.workgroupSize}`);
    }
    const shared = this.workgroupSize * this.rowBlock * 4;
    if (this.strategy === 'workgroup' && shared > gpu.limits.maxComputeWorkgroupStorageSize) {
      throw new InvalidArgumentError('rowBlock', `${shared} B of workgroup memory > maxComputeWorkgroupStorageSize ${gpu.limits.maxComputeWorkgroupStorageSize}`);
    }
    this.cacheRowsUpTo = options.cacheRowsUpTo ?? 64;
    requirePositive('workgroupSize', this.workgroupSize);
    requirePositive('rowBlock', this.rowBlock);
  }

  /** The kernel spec for one weight precision and accumulate mode. */
  specFor(precision: WeightPrecision, accumulate: boolean): KernelSpec {
    const constants = {
      WORKGROUP_SIZE: { type: 'u32', value: this.workgroupSize },
      ROW_BLOCK: { type: 'u32', value: this.rowBlock },
      ACCUMULATE: { type: 'bool', value: accumulate },
    } as const;
    // One body per work split; the weight format is a library (binding 2, weight_pair / weight_last).
    const native = precision === 'f16' && this.f16Path === 'native';
    const library = precision === 'f32' ? matvecLoadF32 : native ? matvecLoadF16 : matvecLoadF16Packed;
    const format = precision === 'f32' ? 'f32' : native ? 'f16' : 'f16_packed';
    const [name, body] = this.strategy === 'workgroup' ? [`matvec_wg_${format}`, matvecWgBody] : [`matvec_${format}`, matvecColumnBody];
    return { name, body, constants, uniforms: [MATVEC_PARAMS], libraries: [library], ...(native ? { enables: ['f16'] } : {}) };
  }

  /** Records the product into an open compute pass (one dispatch per part of the weight). */
  encodeInPass(pass: GPUComputePassEncoder, run: MatvecRun): void {
    for (const d of this.dispatches(run)) {
      pass.setPipeline(d.pipeline);
      pass.setBindGroup(0, d.bindGroup);
      pass.dispatchWorkgroups(d.count[0], d.count[1], d.count[2]);
    }
  }

  /** Records the product into `encoder` in a pass of its own. */
  encode(encoder: GPUCommandEncoder, run: MatvecRun, shared?: SharedPass): void {
    if (shared) {
      this.encodeInPass(shared.pass, run);
      return;
    }
    const pass = encoder.beginComputePass({ label: `matvec:${run.w.name}` });
    this.encodeInPass(pass, run);
    pass.end();
  }

  /** Forgets the cached bind groups (and destroys their uniform buffers): call when a bound buffer goes. */
  clearCache(): void {
    for (const list of this.prepared.values()) for (const d of list) d.uniforms.destroy();
    this.prepared.clear();
  }

  private dispatches(run: MatvecRun): PreparedDispatch[] {
    const { rows, w } = run;
    const stride = run.outStride ?? w.outDim;
    const offset = run.outOffset ?? 0;
    const accumulate = run.accumulate ?? false;
    requirePositive('rows', rows);
    if (run.out === run.x) throw new InvalidArgumentError('out', 'matvec output must be a different buffer from its input');
    if (offset + w.outDim > stride) {
      throw new InvalidArgumentError('outOffset', `columns ${offset}..${offset + w.outDim - 1} pass the output stride ${stride}`);
    }
    const cache = rows <= this.cacheRowsUpTo;
    const key = cache
      ? `${objectId(run.x)}/${objectId(run.out)}/${w.parts.map((p) => objectId(p.buffer)).join(',')}/${rows}/${stride}/${offset}/${accumulate}`
      : '';
    const hit = cache ? this.prepared.get(key) : undefined;
    if (hit) return hit;
    requireStorage('x', run.x, rows * w.inDim * 4);
    requireStorage('out', run.out, rows * stride * 4);
    const pipeline = kernelPipeline(this.gpu, this.specFor(w.precision, accumulate));
    const list = w.parts.map((part): PreparedDispatch => {
      requireStorage(`${w.name} rows ${part.row0}..`, part.buffer, part.rows * w.rowWords * 4);
      const bytes = MATVEC_PARAMS.pack({
        rows,
        in_dim: w.inDim,
        out_dim: part.rows,
        out_stride: stride,
        out_offset: offset + part.row0,
        row_words: w.rowWords,
      });
      const uniforms = cache
        ? this.gpu.device.createBuffer({ label: `matvec:${w.name}:params`, size: bytes.byteLength, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST })
        : this.gpu.uniformBuffer(`matvec:${w.name}:params`, bytes);
      if (cache) this.gpu.device.queue.writeBuffer(uniforms, 0, bytes);
      const bindGroup = this.gpu.device.createBindGroup({
        label: `matvec:${w.name}`,
        layout: pipeline.getBindGroupLayout(0),
        entries: [uniforms, run.x, part.buffer, run.out].map((buffer, binding) => ({ binding, resource: { buffer } })),
      });
      const blocks = part.rows * Math.ceil(rows / this.rowBlock);
      const workgroups = this.strategy === 'workgroup' ? blocks : Math.ceil(blocks / this.workgroupSize);
      return { pipeline, bindGroup, uniforms, count: foldDispatch(workgroups, this.gpu.maxWorkgroupsPerDimension) };
    });
    if (cache) this.prepared.set(key, list);
    return list;
  }
}

/** Destroys the buffers of a weight. */
export function destroyMatvecWeight(w: MatvecWeight): void {
  for (const part of w.parts) part.buffer.destroy();
}
