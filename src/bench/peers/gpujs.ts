// gpu.js (WebGL2) versions of SnapKV scoring and KIVI quantization, written the way a gpu.js user would: one
// kernel per step, intermediates kept on the GPU as textures (`pipeline: true`), the last kernels returning
// arrays. gpu.js is loaded by a <script> tag (dist/gpu-browser.min.js sets `window.GPU`); the interfaces below
// type only the part of its API used here, which keeps its own typings (and their `any`s) out of strict mode.
// Kernel bodies are JavaScript that gpu.js parses and transpiles to GLSL: non-null assertions (`!`) vanish in
// the bundle, and every division in them is by a power of two so float index arithmetic stays exact.

/**
 * A gpu.js pipeline texture.
 *
 * @example
 * ```ts
 * const values = (kernel(input) as GpuJsTexture).toArray();
 * ```
 */
export interface GpuJsTexture {
  toArray(): unknown;
  delete(): void;
}

/**
 * A compiled gpu.js kernel: call it with arrays or textures.
 *
 * @example
 * ```ts
 * const out = kernel(texture) as Float32Array[];
 * ```
 */
export interface GpuJsKernel {
  (...args: unknown[]): unknown;
  destroy(removeCanvasReferences?: boolean): void;
  /** The backend kernel instance (e.g. WebGL2Kernel), set once the kernel has run. */
  readonly kernel?: { readonly constructor: { readonly name: string } };
}

/** The kernel settings used here. */
interface GpuJsKernelSettings {
  readonly output: readonly number[];
  readonly constants?: KernelConstants;
  readonly pipeline?: boolean;
  readonly precision?: 'single';
  readonly tactic?: 'precision';
  readonly loopMaxIterations?: number;
}

/**
 * A gpu.js instance.
 */
export interface GpuJs {
  readonly mode: string;
  createKernel(kernel: (this: KernelThis, ...args: never[]) => number, settings: GpuJsKernelSettings): GpuJsKernel;
  addNativeFunction(
    name: string,
    source: string,
    settings?: { returnType?: string; argumentTypes?: Record<string, string> },
  ): GpuJs;
  destroy(): Promise<void> | void;
}

/**
 * The global the browser build defines.
 *
 * @example
 * ```ts
 * const global = (window as unknown as { GPU: GpuJsGlobal }).GPU;
 * ```
 */
export interface GpuJsGlobal {
  readonly GPU: new (settings: { mode: 'webgl2' }) => GpuJs;
}

/**
 * Constants baked into the kernels (gpu.js compiles them in, as kvcompact does with its WGSL constants).
 *
 * @example
 * ```ts
 * createGpuJsScorer(gpu, { n: 1024, nHeads: 32, kvHeads: 8, group: 4, headDim: 128, window: 32, ... });
 * ```
 */
export interface KernelConstants {
  readonly n: number;
  readonly nHeads: number;
  readonly kvHeads: number;
  readonly group: number;
  readonly headDim: number;
  readonly window: number;
  readonly scale: number;
  readonly radius: number;
  readonly kernelSize: number;
  readonly sinks: number;
  readonly recentStart: number;
  readonly quantGroup: number;
  /** kvHeads · n: token rows of the dense K/V. */
  readonly tokenRows: number;
  readonly levels: number;
  /** Codes per output float (16 bits of it: exact in f32). */
  readonly codesPerFloat: number;
  readonly codeBase: number;
}

/** `this` inside a gpu.js kernel. */
interface KernelThis {
  readonly thread: { readonly x: number; readonly y: number; readonly z: number };
  readonly constants: KernelConstants;
}

/** A 1-D input (Float32Array or texture) as a kernel indexes it. */
interface Arr1 {
  readonly [i: number]: number;
}
/** A 2-D input, `a[y][x]`. */
interface Arr2 {
  readonly [y: number]: Arr1;
}

// ---- SnapKV scoring -------------------------------------------------------------------------------------------

/** logits[j·nHeads + h][t] = q·k × scale, or −∞ (−FLT_MAX in gpu.js) where token t is after query j. */
function logitsKernel(this: KernelThis, q: Arr1, k: Arr1, kpos: Arr1, qpos: Arr1): number {
  const t = this.thread.x;
  const row = this.thread.y;
  const j = Math.floor(row / this.constants.nHeads);
  const h = row - j * this.constants.nHeads;
  const kv = Math.floor(h / this.constants.group);
  if (kpos[kv * this.constants.n + t]! > qpos[j]!) {
    return -Infinity;
  }
  const qBase = row * this.constants.headDim;
  const kBase = (kv * this.constants.n + t) * this.constants.headDim;
  let dot = 0;
  for (let d = 0; d < this.constants.headDim; d++) {
    dot += q[qBase + d]! * k[kBase + d]!;
  }
  return dot * this.constants.scale;
}

/** Row maximum of the logits. */
function rowMaxKernel(this: KernelThis, logits: Arr2): number {
  let m = -Infinity;
  for (let t = 0; t < this.constants.n; t++) {
    m = Math.max(m, logits[this.thread.x]![t]!);
  }
  return m;
}

/** 1 / Σ exp(logit − max) of a row. */
function rowInvSumKernel(this: KernelThis, logits: Arr2, rowMax: Arr1): number {
  const m = rowMax[this.thread.x]!;
  let s = 0;
  for (let t = 0; t < this.constants.n; t++) {
    s += Math.exp(logits[this.thread.x]![t]! - m);
  }
  return 1 / s;
}

/** Mean probability of token t over the window queries and the KV head's query heads. */
function meanKernel(this: KernelThis, logits: Arr2, rowMax: Arr1, rowInv: Arr1): number {
  const t = this.thread.x;
  const kv = this.thread.y;
  let acc = 0;
  for (let j = 0; j < this.constants.window; j++) {
    for (let g = 0; g < this.constants.group; g++) {
      const row = j * this.constants.nHeads + kv * this.constants.group + g;
      acc += Math.exp(logits[row]![t]! - rowMax[row]!) * rowInv[row]!;
    }
  }
  return acc / (this.constants.window * this.constants.group);
}

/** Average pooling with 'same' zero padding (divides by the full kernel), then sinks and recent → +∞ (FLT_MAX). */
function poolKernel(this: KernelThis, mean: Arr2, kpos: Arr1): number {
  const t = this.thread.x;
  const kv = this.thread.y;
  const p = kpos[kv * this.constants.n + t]!;
  if (p < this.constants.sinks || p >= this.constants.recentStart) {
    return Infinity;
  }
  let acc = 0;
  for (let u = 0; u < this.constants.kernelSize; u++) {
    const v = t + u - this.constants.radius;
    if (v >= 0 && v < this.constants.n) {
      acc += mean[kv]![v]!;
    }
  }
  return acc / this.constants.kernelSize;
}

// ---- KIVI quantization ----------------------------------------------------------------------------------------
// Outputs are flat (1-D): gpu.js gives a 1-D output a near-square texture, while a 2-D output [x, y] needs
// y ≤ the texture limit (8192 here), which [words, kvHeads·n] passes only up to 1K tokens.

/**
 * K parameters, flat [2][kvHeads·n/G][headDim], per channel over G tokens: first the scales f16((max − min)/levels),
 * then the zeros f16(min).
 */
function kParamsKernel(this: KernelThis, k: Arr1): number {
  const per = (this.constants.tokenRows / this.constants.quantGroup) * this.constants.headDim;
  // A comparison, not floor(x / per): per need not be a power of two, and GLSL division is not exact.
  let which = 0;
  if (this.thread.x >= per) {
    which = 1;
  }
  const i = this.thread.x - which * per;
  const gr = Math.floor(i / this.constants.headDim);
  const d = i - gr * this.constants.headDim;
  const t0 = gr * this.constants.quantGroup;
  let lo = k[t0 * this.constants.headDim + d]!;
  let hi = lo;
  for (let j = 1; j < this.constants.quantGroup; j++) {
    const x = k[(t0 + j) * this.constants.headDim + d]!;
    lo = Math.min(lo, x);
    hi = Math.max(hi, x);
  }
  if (which === 0) {
    return roundHalf((hi - lo) / this.constants.levels);
  }
  return roundHalf(lo);
}

/** V parameters, flat [2][kvHeads·n][headDim/G], per token over G channels. */
function vParamsKernel(this: KernelThis, v: Arr1): number {
  const per = this.constants.tokenRows * (this.constants.headDim / this.constants.quantGroup);
  let which = 0;
  if (this.thread.x >= per) {
    which = 1;
  }
  // Element i of a half is group (token i / groups, group i % groups); its channels start at i · G.
  const base = (this.thread.x - which * per) * this.constants.quantGroup;
  let lo = v[base]!;
  let hi = lo;
  for (let j = 1; j < this.constants.quantGroup; j++) {
    const x = v[base + j]!;
    lo = Math.min(lo, x);
    hi = Math.max(hi, x);
  }
  if (which === 0) {
    return roundHalf((hi - lo) / this.constants.levels);
  }
  return roundHalf(lo);
}

/** K codes, flat [kvHeads·n][headDim/P]: P consecutive channels' codes in one float, code p at bit bits·p. */
function kCodesKernel(this: KernelThis, k: Arr1, kParams: Arr1): number {
  const words = this.constants.headDim / this.constants.codesPerFloat;
  const tr = Math.floor(this.thread.x / words);
  const w = this.thread.x - tr * words;
  const half = (this.constants.tokenRows / this.constants.quantGroup) * this.constants.headDim;
  const gr = Math.floor(tr / this.constants.quantGroup);
  let acc = 0;
  let weight = 1;
  for (let p = 0; p < this.constants.codesPerFloat; p++) {
    const d = w * this.constants.codesPerFloat + p;
    const s = kParams[gr * this.constants.headDim + d]!;
    const z = kParams[half + gr * this.constants.headDim + d]!;
    let code = 0;
    if (s !== 0) {
      const x = k[tr * this.constants.headDim + d]!;
      code = Math.min(Math.max(Math.floor((x - z) / s + 0.5), 0), this.constants.levels);
    }
    acc += code * weight;
    weight *= this.constants.codeBase;
  }
  return acc;
}

/** V codes, flat [kvHeads·n][headDim/P]. */
function vCodesKernel(this: KernelThis, v: Arr1, vParams: Arr1): number {
  const words = this.constants.headDim / this.constants.codesPerFloat;
  const groups = this.constants.headDim / this.constants.quantGroup;
  const tr = Math.floor(this.thread.x / words);
  const w = this.thread.x - tr * words;
  const half = this.constants.tokenRows * groups;
  let acc = 0;
  let weight = 1;
  for (let p = 0; p < this.constants.codesPerFloat; p++) {
    const d = w * this.constants.codesPerFloat + p;
    const g = Math.floor(d / this.constants.quantGroup);
    const s = vParams[tr * groups + g]!;
    const z = vParams[half + tr * groups + g]!;
    let code = 0;
    if (s !== 0) {
      const x = v[tr * this.constants.headDim + d]!;
      code = Math.min(Math.max(Math.floor((x - z) / s + 0.5), 0), this.constants.levels);
    }
    acc += code * weight;
    weight *= this.constants.codeBase;
  }
  return acc;
}

// Declared for TypeScript only: gpu.js resolves the call to the GLSL native function registered below.
declare function roundHalf(x: number): number;

/** GLSL ES 3.00 has f16 rounding built in; gpu.js's JS subset does not, so it comes in as a native function. */
const ROUND_HALF_GLSL = 'float roundHalf(float x) { return unpackHalf2x16(packHalf2x16(vec2(x, 0.0))).x; }';

/**
 * Creates the gpu.js instance on WebGL2 (never its WebGPU or CPU backends) with the f16 rounding helper.
 *
 * @example
 * ```ts
 * const gpu = createGpuJs((window as unknown as { GPU: GpuJsGlobal }).GPU);
 * ```
 */
export function createGpuJs(global: GpuJsGlobal): GpuJs {
  const gpu = new global.GPU({ mode: 'webgl2' });
  gpu.addNativeFunction('roundHalf', ROUND_HALF_GLSL, { returnType: 'Float', argumentTypes: { x: 'Float' } });
  return gpu;
}

const SETTINGS = { precision: 'single', tactic: 'precision' } as const;

/** Uploads an array once into a texture (an identity kernel with `pipeline: true`), as gpu.js users keep data resident. */
function identityKernel(this: KernelThis, a: Arr1): number {
  return a[this.thread.x]!;
}

/**
 * A resident copy of `data` on the GPU, and the kernel that owns its texture.
 *
 * @example
 * ```ts
 * const keys = upload(gpu, new Float32Array(1024));
 * ```
 */
export function upload(gpu: GpuJs, data: Float32Array): { texture: GpuJsTexture; kernel: GpuJsKernel } {
  const kernel = gpu.createKernel(identityKernel, { ...SETTINGS, output: [data.length], pipeline: true });
  return { texture: kernel(data) as GpuJsTexture, kernel };
}

/**
 * SnapKV scores per KV head (+∞ = protected), read back as gpu.js returns them.
 *
 * @example
 * ```ts
 * const scores = scorer.run(q, k, kpos, qpos); // [kvHeads] Float32Array(n)
 * ```
 */
export interface GpuJsScorer {
  run(q: GpuJsTexture, k: GpuJsTexture, kpos: GpuJsTexture, qpos: GpuJsTexture): Float32Array[];
  destroy(): void;
}

/**
 * The five SnapKV kernels at one size: logits → row max → row 1/Σ → window mean → pooling + protection.
 *
 * @example
 * ```ts
 * const scorer = createGpuJsScorer(gpu, constants);
 * const scores = scorer.run(q, k, kpos, qpos); // [kvHeads] Float32Array(n)
 * ```
 */
export function createGpuJsScorer(gpu: GpuJs, c: KernelConstants): GpuJsScorer {
  const rows = c.window * c.nHeads;
  const common = { ...SETTINGS, constants: c, loopMaxIterations: Math.max(c.n, c.headDim, 1000) };
  const logits = gpu.createKernel(logitsKernel, { ...common, output: [c.n, rows], pipeline: true });
  const rowMax = gpu.createKernel(rowMaxKernel, { ...common, output: [rows], pipeline: true });
  const rowInv = gpu.createKernel(rowInvSumKernel, { ...common, output: [rows], pipeline: true });
  const mean = gpu.createKernel(meanKernel, { ...common, output: [c.n, c.kvHeads], pipeline: true });
  const pool = gpu.createKernel(poolKernel, { ...common, output: [c.n, c.kvHeads] });
  const kernels = [logits, rowMax, rowInv, mean, pool];
  return {
    run(q, k, kpos, qpos) {
      const l = logits(q, k, kpos, qpos);
      const m = rowMax(l);
      const inv = rowInv(l, m);
      return pool(mean(l, m, inv), kpos) as Float32Array[];
    },
    destroy() {
      for (const kernel of kernels) kernel.destroy();
    },
  };
}

/**
 * KIVI output as gpu.js returns it (flat): parameters [2][groups][…] (scales, then zeros) and packed codes
 * [tokens][headDim/P].
 *
 * @example
 * ```ts
 * const kScale = out.kParams[group * headDim + channel];
 * ```
 */
export interface GpuJsQuantOutput {
  readonly kParams: Float32Array;
  readonly vParams: Float32Array;
  readonly kCodes: Float32Array;
  readonly vCodes: Float32Array;
}

/**
 * KIVI quantization of K and V at one size.
 *
 * @example
 * ```ts
 * const out = quantizer.run(k, v);
 * ```
 */
export interface GpuJsQuantizer {
  run(k: GpuJsTexture, v: GpuJsTexture): GpuJsQuantOutput;
  destroy(): void;
}

/**
 * The four KIVI kernels: K and V group parameters (kept on the GPU), then codes that read them; all four
 * outputs read back.
 *
 * @example
 * ```ts
 * const { kCodes } = createGpuJsQuantizer(gpu, constants).run(k, v);
 * ```
 */
export function createGpuJsQuantizer(gpu: GpuJs, c: KernelConstants): GpuJsQuantizer {
  const tokens = c.kvHeads * c.n;
  const common = { ...SETTINGS, constants: c };
  const kParams = gpu.createKernel(kParamsKernel, {
    ...common,
    output: [2 * (tokens / c.quantGroup) * c.headDim],
    pipeline: true,
  });
  const vParams = gpu.createKernel(vParamsKernel, {
    ...common,
    output: [2 * tokens * (c.headDim / c.quantGroup)],
    pipeline: true,
  });
  const words = [tokens * (c.headDim / c.codesPerFloat)];
  const kCodes = gpu.createKernel(kCodesKernel, { ...common, output: words });
  const vCodes = gpu.createKernel(vCodesKernel, { ...common, output: words });
  const kernels = [kParams, vParams, kCodes, vCodes];
  return {
    run(k, v) {
      const kp = kParams(k) as GpuJsTexture;
      const vp = vParams(v) as GpuJsTexture;
      const kc = kCodes(k, kp) as Float32Array;
      const vc = vCodes(v, vp) as Float32Array;
      return {
        kParams: kp.toArray() as Float32Array,
        vParams: vp.toArray() as Float32Array,
        kCodes: kc,
        vCodes: vc,
      };
    },
    destroy() {
      for (const kernel of kernels) kernel.destroy();
    },
  };
}
