import { DeviceLostError, GpuValidationError, KvCompactError, NoAdapterError } from '../errors.js';
import { type AdapterReport, describeAdapter, deviceDescriptorFor, type LimitCaps } from './adapter-report.js';
import { BufferPool } from './buffer-pool.js';
import { PipelineCache } from './pipeline-cache.js';

/**
 * How a context came to own (or not own) its device.
 *
 * @example
 * ```ts
 * const gpu = new GpuContext({ device, adapter: describeAdapter(adapter), ownsDevice: true });
 * ```
 */
export interface GpuContextInit {
  readonly device: GPUDevice;
  readonly adapter: AdapterReport;
  /** Adopted devices belong to the caller: `destroy()` then releases our objects but never the device. */
  readonly ownsDevice: boolean;
  /**
   * Whatever must stay alive as long as the device: in Node the object returned by `webgpu`'s `create()`, which
   * owns the Dawn instance (dropping it while work is in flight crashes Dawn).
   */
  readonly keepAlive?: unknown;
}

/**
 * The one GPU handle every kernel uses: device, negotiated limits and features, adapter report, pipeline cache,
 * buffer pool, submission tracking and device-loss reporting.
 *
 * @example
 * ```ts
 * const gpu = await GpuContext.fromNavigator();       // browser; in Node use createNodeGpu() from kvcompact/node
 * const copy = new CopyKernel(gpu);
 * // ...
 * await gpu.destroy();
 * ```
 */
export class GpuContext {
  readonly device: GPUDevice;
  readonly adapter: AdapterReport;
  readonly ownsDevice: boolean;
  readonly features: ReadonlySet<string>;
  readonly limits: GPUSupportedLimits;
  readonly pipelines: PipelineCache;
  readonly buffers: BufferPool;
  /**
   * The largest workgroup count per dispatch dimension the kernels use: the device limit, lowered only by tests
   * so that folding is exercised at small sizes.
   */
  maxWorkgroupsPerDimension: number;
  /** Resolves with the loss error if the device is lost while we did not destroy it; null after destroy(). */
  readonly lost: Promise<DeviceLostError | null>;
  private keepAlive: unknown;
  private destroyed = false;
  private lostError: DeviceLostError | null = null;
  private submitted = 0;
  private completed = 0;
  /** Per-run buffers (uniforms) recorded since the last submit; destroyed once that submit completes. */
  private transient: GPUBuffer[] = [];

  constructor(init: GpuContextInit) {
    this.device = init.device;
    this.adapter = init.adapter;
    this.ownsDevice = init.ownsDevice;
    this.keepAlive = init.keepAlive;
    this.features = new Set(init.device.features);
    this.limits = init.device.limits;
    this.maxWorkgroupsPerDimension = init.device.limits.maxComputeWorkgroupsPerDimension;
    this.pipelines = new PipelineCache(init.device);
    this.buffers = new BufferPool(this);
    this.lost = init.device.lost.then((info) => {
      if (this.destroyed) return null;
      this.lostError = new DeviceLostError(String(info.reason), info.message || 'no message');
      return this.lostError;
    });
  }

  /**
   * Requests an adapter and device from a `GPU` object (`navigator.gpu` in a browser, `create([])` in Node),
   * asking for the adapter's maximum limits and the optional features the kernels use.
   */
  static async fromGpu(
    gpu: GPU,
    options: { powerPreference?: GPUPowerPreference; forceFallbackAdapter?: boolean; keepAlive?: unknown; limits?: LimitCaps } = {},
  ): Promise<GpuContext> {
    const adapter = await gpu.requestAdapter({
      powerPreference: options.powerPreference ?? 'high-performance',
      forceFallbackAdapter: options.forceFallbackAdapter ?? false,
    });
    if (!adapter) {
      throw new NoAdapterError(
        'no WebGPU adapter. In Chrome enable WebGPU (chrome://flags/#enable-unsafe-webgpu on Linux); in Node ' +
          'install a Vulkan driver, or the software adapter: `apt-get install chromium libvulkan1` and ' +
          'VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json (`npm run setup` does this)',
      );
    }
    const device = await adapter.requestDevice(deviceDescriptorFor(adapter, 'kvcompact', options.limits));
    return new GpuContext({
      device,
      adapter: describeAdapter(adapter),
      ownsDevice: true,
      keepAlive: options.keepAlive ?? gpu,
    });
  }

  /** Uses `navigator.gpu` (browsers, Deno). Throws NoAdapterError with instructions when WebGPU is missing. */
  static async fromNavigator(options: { powerPreference?: GPUPowerPreference } = {}): Promise<GpuContext> {
    const gpu = (globalThis as { navigator?: { gpu?: GPU } }).navigator?.gpu;
    if (!gpu) {
      throw new NoAdapterError(
        'this browser has no WebGPU (navigator.gpu is undefined): use Chrome or Edge 113+, or Firefox 141+ on ' +
          'Windows; on Linux start Chrome with --enable-unsafe-webgpu; pages must be served over https or localhost',
      );
    }
    return GpuContext.fromGpu(gpu, options);
  }

  /** Adopts a device the caller already has. `destroy()` will release our buffers and never the device. */
  static adopt(device: GPUDevice, adapter?: GPUAdapter): GpuContext {
    const report: AdapterReport = adapter
      ? describeAdapter(adapter)
      : { vendor: 'unknown', architecture: 'unknown', description: 'adopted device', isFallbackAdapter: false };
    return new GpuContext({ device, adapter: report, ownsDevice: false });
  }

  /** True when the device has the optional feature. */
  has(feature: string): boolean {
    return this.features.has(feature);
  }

  /** Throws DeviceLostError if the device was lost, or an error if this context was destroyed. */
  assertUsable(): void {
    if (this.lostError) throw this.lostError;
    if (this.destroyed) throw new KvCompactError('this GpuContext was destroyed; create a new one');
  }

  /** Submits command buffers and returns the submission serial (used to recycle pooled buffers safely). */
  submit(commandBuffers: readonly GPUCommandBuffer[]): number {
    this.assertUsable();
    this.device.queue.submit(commandBuffers);
    const serial = ++this.submitted;
    const transient = this.transient;
    this.transient = [];
    void this.device.queue.onSubmittedWorkDone().then(
      () => {
        this.completed = Math.max(this.completed, serial);
        this.buffers.recycle(this.completed);
        for (const buffer of transient) buffer.destroy();
      },
      () => undefined,
    );
    return serial;
  }

  /**
   * A uniform buffer holding `bytes`, destroyed automatically once the next submit completes: the per-run part of
   * a kernel.
   */
  uniformBuffer(label: string, bytes: ArrayBuffer): GPUBuffer {
    this.assertUsable();
    const buffer = this.device.createBuffer({
      label,
      size: bytes.byteLength,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
    this.device.queue.writeBuffer(buffer, 0, bytes);
    this.transient.push(buffer);
    return buffer;
  }

  /** Serial of the latest submission. */
  get lastSubmitted(): number {
    return this.submitted;
  }

  /** Serial of the latest submission known complete. */
  get lastCompleted(): number {
    return this.completed;
  }

  /** Waits for all submitted work. */
  async idle(): Promise<void> {
    this.assertUsable();
    await this.device.queue.onSubmittedWorkDone();
    // A device lost meanwhile has reported it by now (Dawn resolves `lost` before the queue drains).
    this.assertUsable();
    this.completed = this.submitted;
    this.buffers.recycle(this.completed);
  }

  /**
   * Runs `body` inside validation and out-of-memory error scopes and throws GpuValidationError if WebGPU reported
   * one, so a test sees the real message instead of a later, unrelated failure.
   */
  async withErrorScope<T>(body: () => T | Promise<T>): Promise<T> {
    this.device.pushErrorScope('out-of-memory');
    this.device.pushErrorScope('validation');
    let result: T;
    try {
      result = await body();
    } finally {
      const validation = await this.device.popErrorScope();
      const memory = await this.device.popErrorScope();
      const error = validation ?? memory;
      if (error) throw new GpuValidationError(error.message);
    }
    return result;
  }

  /**
   * Waits for in-flight work, destroys pooled buffers and, when we own it, the device; then drops the Dawn
   * instance reference (in that order, see ../shared/docs/webgpu-runtime.md).
   */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    if (!this.lostError) await this.device.queue.onSubmittedWorkDone();
    this.destroyed = true;
    this.buffers.destroy();
    for (const buffer of this.transient) buffer.destroy();
    this.transient = [];
    this.pipelines.clear();
    if (this.ownsDevice) this.device.destroy();
    this.keepAlive = undefined;
  }

  /** Whether destroy() ran. */
  get isDestroyed(): boolean {
    return this.destroyed;
  }

  /** The object kept alive with the device (exposed for tests that check the Dawn rule). */
  get keptAlive(): unknown {
    return this.keepAlive;
  }
}
