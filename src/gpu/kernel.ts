import { InvalidArgumentError } from '../errors.js';
import commonSource from '../../shaders/common.wgsl';
import type { GpuContext } from './context.js';
import { foldDispatch, type WorkgroupCount } from './dispatch.js';
import { constantsKey, wgslPrelude, type WgslConstants } from './prelude.js';
import type { UniformLayout } from './uniforms.js';

/**
 * A WGSL function that a kernel body calls and its caller supplies, e.g. a scoring policy's per-token score.
 * The body's shader file documents the signature; `source` declares `fn NAME(` and may add helpers of its own.
 */
export interface WgslFunction {
  readonly name: string;
  readonly source: string;
}

/**
 * The cached part of a kernel: which WGSL body, compiled with which constants and uniform structs.
 */
export interface KernelSpec {
  /** Kernel name, also the label of its GPU objects. */
  readonly name: string;
  /** The WGSL body from shaders/NAME.wgsl. */
  readonly body: string;
  /** Compile-time constants; every one is part of the pipeline cache key. */
  readonly constants: WgslConstants;
  /** Uniform structs declared in the prelude. */
  readonly uniforms: readonly UniformLayout[];
  readonly entryPoint?: string;
  /** WGSL helper libraries (not kernels) placed between the prelude and the body, e.g. shaders/kv_read.wgsl. */
  readonly libraries?: readonly string[];
  /** Functions the body calls but does not define, placed after the libraries; their sources are part of the cache key. */
  readonly functions?: readonly WgslFunction[];
  /**
   * WGSL extensions the body needs (e.g. `f16`), emitted as `enable NAME;` before the prelude, since WGSL wants
   * directives ahead of every declaration. The caller checks the device feature first (gpu.has('shader-f16')).
   */
  readonly enables?: readonly string[];
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;

function checkFunction(kernel: string, fn: WgslFunction): string {
  if (!IDENTIFIER.test(fn.name)) {
    throw new InvalidArgumentError('functions', `${kernel}: "${fn.name}" is not a WGSL identifier`);
  }
  if (!new RegExp(`\\bfn\\s+${fn.name}\\s*\\(`).test(fn.source)) {
    throw new InvalidArgumentError('functions', `${kernel}: the source given for ${fn.name} must declare "fn ${fn.name}(...)"`);
  }
  return fn.source;
}

/**
 * The full WGSL source of a kernel: generated prelude, shared helpers, then the body.
 *
 * @example
 * ```ts
 * const code = kernelSource({ name: 'copy', body, constants, uniforms: [params] });
 * ```
 */
export function kernelSource(spec: KernelSpec): string {
  const functions = (spec.functions ?? []).map((fn) => checkFunction(spec.name, fn));
  const enables = (spec.enables ?? []).map((name) => {
    if (!IDENTIFIER.test(name)) throw new InvalidArgumentError('enables', `${spec.name}: "${name}" is not a WGSL extension name`);
    return `enable ${name};\n`;
  });
  return [...enables, wgslPrelude(spec.constants, ...spec.uniforms), commonSource, ...(spec.libraries ?? []), ...functions, spec.body].join('\n');
}

/**
 * A short id per distinct shader text, bodies and libraries alike (the set is small: static shader files and a
 * few generated variants). Map lookups hash the text, which is cheaper than putting it in the key.
 */
const textIds = new Map<string, number>();

function textId(text: string): number {
  let id = textIds.get(text);
  if (id === undefined) {
    id = textIds.size;
    textIds.set(text, id);
  }
  return id;
}

function librariesKey(libraries: readonly string[]): string {
  return libraries.map(textId).join(',');
}

/**
 * The compiled pipeline of a kernel, cached per device by name, entry point, constants and the text of its libraries
 * and functions (two kernels of one name that include different libraries get different pipelines).
 *
 * @example
 * ```ts
 * const pipeline = kernelPipeline(gpu, spec); // compiled once, then served from gpu.pipelines
 * encodeDispatch(gpu, pass, pipeline, [uniforms, src, dst], Math.ceil(words / 256));
 * ```
 */
export function kernelPipeline(gpu: GpuContext, spec: KernelSpec): GPUComputePipeline {
  const structs = spec.uniforms.map((u) => u.wgsl()).join('|');
  const functions = (spec.functions ?? []).map((fn) => `${fn.name}=${fn.source}`).join('|');
  // The body is in the key: two specs that share a name and constants but not a body must not share a pipeline.
  const key = `${spec.name}#${textId(spec.body)}#${spec.entryPoint ?? 'main'}#${constantsKey(spec.constants)}#${structs}#${librariesKey(spec.libraries ?? [])}#${functions}#${(spec.enables ?? []).join(',')}`;
  return gpu.pipelines.get(key, () => ({
    label: spec.name,
    code: kernelSource(spec),
    ...(spec.entryPoint ? { entryPoint: spec.entryPoint } : {}),
  }));
}

/**
 * One bind-group entry: a whole buffer, or a range of it.
 *
 * @example
 * ```ts
 * const bindings: Binding[] = [uniforms, { buffer: pool, offset: 256, size: 4096 }];
 * ```
 */
export type Binding = GPUBuffer | { readonly buffer: GPUBuffer; readonly offset?: number; readonly size?: number };

function isBuffer(binding: Binding): binding is GPUBuffer {
  return 'mapState' in binding;
}

/**
 * Records one dispatch of `pipeline` with buffers bound at bindings 0..n−1 of group 0, folding a 1-D workgroup
 * count past maxComputeWorkgroupsPerDimension. Returns the folded count. A `null` entry leaves its binding out:
 * a kernel variant that never uses a binding has none in its 'auto' layout, so binding a buffer there fails.
 *
 * @example
 * ```ts
 * encodeDispatch(gpu, pass, pipeline, [uniforms, src, dst], Math.ceil(words / 256));
 * ```
 */
export function encodeDispatch(
  gpu: GpuContext,
  pass: GPUComputePassEncoder,
  pipeline: GPUComputePipeline,
  bindings: readonly (Binding | null)[],
  workgroups: number,
): WorkgroupCount {
  if (workgroups <= 0) {
    throw new InvalidArgumentError('workgroups', `${pipeline.label}: zero-length dispatch (${workgroups} workgroups)`);
  }
  const bindGroup = gpu.device.createBindGroup({
    label: pipeline.label,
    layout: pipeline.getBindGroupLayout(0),
    entries: bindings.flatMap((binding, index) =>
      binding === null ? [] : [{ binding: index, resource: isBuffer(binding) ? { buffer: binding } : binding }],
    ),
  });
  const count = foldDispatch(workgroups, gpu.maxWorkgroupsPerDimension);
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, bindGroup);
  pass.dispatchWorkgroups(count[0], count[1], count[2]);
  return count;
}

/**
 * Records `record` into `into`, a compute pass the caller keeps open (a model forward records all its kernels into
 * one pass), or without it into a pass of its own on `encoder`, timed by `timestampWrites` where given. A pass the
 * caller opened is timed by its opener, so the two cannot be combined.
 *
 * @example
 * ```ts
 * recordPass(encoder, 'copy', run.pass, undefined, (pass) => encodeDispatch(gpu, pass, pipeline, bindings, groups));
 * ```
 */
export function recordPass(
  encoder: GPUCommandEncoder,
  label: string,
  into: GPUComputePassEncoder | undefined,
  timestampWrites: GPUComputePassTimestampWrites | undefined,
  record: (pass: GPUComputePassEncoder) => void,
): void {
  if (into) {
    if (timestampWrites) throw new InvalidArgumentError('timestampWrites', `${label}: time the caller's open pass where it is begun, not per kernel`);
    record(into);
    return;
  }
  const pass = encoder.beginComputePass(timestampWrites ? { label, timestampWrites } : { label });
  record(pass);
  pass.end();
}
