import type { GpuContext } from '../../gpu/context.js';
import { foldDispatch } from '../../gpu/dispatch.js';
import { encodeDispatch } from '../../gpu/kernel.js';

let nextId = 1;
const ids = new WeakMap<object, number>();

/** A process-wide id of a GPU object (buffer, pipeline), for cache keys. */
export function objectId(o: object): number {
  let id = ids.get(o);
  if (id === undefined) {
    id = nextId++;
    ids.set(o, id);
  }
  return id;
}

function hex(bytes: ArrayBuffer): string {
  return Array.from(new Uint32Array(bytes), (w) => w.toString(16)).join('.');
}

/**
 * Uniform buffers and bind groups kept across calls, keyed by pipeline, uniform bytes and bound buffers: a decode
 * step that repeats the previous one's dispatches creates no GPU objects. Entries past `maxEntries` (prefill
 * chunks of many sizes) fall back to per-call uniforms. {@link DispatchCache.clear} once a bound buffer goes.
 *
 * @example
 * ```ts
 * const cache = new DispatchCache(gpu);
 * cache.dispatch(pass, pipeline, params.pack({ rows: 1 }), [x, w, out], 4);
 * ```
 */
export class DispatchCache {
  private readonly entries = new Map<string, { uniforms: GPUBuffer; bindGroup: GPUBindGroup; count: readonly [number, number, number] }>();

  constructor(
    private readonly gpu: GpuContext,
    private readonly maxEntries = 8192,
  ) {}

  /** Entries held. */
  get size(): number {
    return this.entries.size;
  }

  /** Records one dispatch of `pipeline` with a uniform buffer of `uniformBytes` at binding 0 and `buffers` after it. */
  dispatch(pass: GPUComputePassEncoder, pipeline: GPUComputePipeline, uniformBytes: ArrayBuffer, buffers: readonly GPUBuffer[], workgroups: number): void {
    const key = `${objectId(pipeline)}|${hex(uniformBytes)}|${buffers.map(objectId).join(',')}|${workgroups}`;
    let entry = this.entries.get(key);
    if (!entry && this.entries.size >= this.maxEntries) {
      encodeDispatch(this.gpu, pass, pipeline, [this.gpu.uniformBuffer(`${pipeline.label}:params`, uniformBytes), ...buffers], workgroups);
      return;
    }
    if (!entry) {
      const uniforms = this.gpu.device.createBuffer({
        label: `${pipeline.label}:params (cached)`,
        size: uniformBytes.byteLength,
        usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      });
      this.gpu.device.queue.writeBuffer(uniforms, 0, uniformBytes);
      const bindGroup = this.gpu.device.createBindGroup({
        label: pipeline.label,
        layout: pipeline.getBindGroupLayout(0),
        entries: [uniforms, ...buffers].map((buffer, binding) => ({ binding, resource: { buffer } })),
      });
      entry = { uniforms, bindGroup, count: foldDispatch(workgroups, this.gpu.maxWorkgroupsPerDimension) };
      this.entries.set(key, entry);
    }
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, entry.bindGroup);
    pass.dispatchWorkgroups(entry.count[0], entry.count[1], entry.count[2]);
  }

  /** Drops every entry (destroying its uniform buffer). Call between submits, never while a pass is recording. */
  clear(): void {
    for (const e of this.entries.values()) e.uniforms.destroy();
    this.entries.clear();
  }
}

/**
 * Where a kernel records into a compute pass its caller keeps open (one pass per stretch of a forward), with
 * uniforms and bind groups from `cache`.
 */
export interface SharedPass {
  readonly pass: GPUComputePassEncoder;
  readonly cache: DispatchCache;
}

/**
 * One kernel dispatch: into `shared` when given, else in a pass of its own with a per-call uniform buffer.
 *
 * @example
 * ```ts
 * dispatchKernel(gpu, encoder, pipeline, params.pack({ rows }), [x, weight, out], rows, shared);
 * ```
 */
export function dispatchKernel(
  gpu: GpuContext,
  encoder: GPUCommandEncoder,
  pipeline: GPUComputePipeline,
  uniformBytes: ArrayBuffer,
  buffers: readonly GPUBuffer[],
  workgroups: number,
  shared?: SharedPass,
): void {
  if (shared) {
    shared.cache.dispatch(shared.pass, pipeline, uniformBytes, buffers, workgroups);
    return;
  }
  const pass = encoder.beginComputePass({ label: pipeline.label });
  encodeDispatch(gpu, pass, pipeline, [gpu.uniformBuffer(`${pipeline.label}:params`, uniformBytes), ...buffers], workgroups);
  pass.end();
}
