/**
 * Compute pipelines per device, keyed by everything that changes their source. Creating a pipeline costs ~0.2 s on
 * SwiftShader, so each distinct source is compiled once per device.
 *
 * @example
 * ```ts
 * const pipeline = gpu.pipelines.get(`copy|${constantsKey(constants)}`, () => ({ label: 'copy', code }));
 * ```
 */
export class PipelineCache {
  private readonly pipelines = new Map<string, GPUComputePipeline>();

  constructor(private readonly device: GPUDevice) {}

  /** The pipeline for `key`, created from `describe()` on first use. */
  get(key: string, describe: () => { label: string; code: string; entryPoint?: string }): GPUComputePipeline {
    const cached = this.pipelines.get(key);
    if (cached) return cached;
    const { label, code, entryPoint } = describe();
    const module = this.device.createShaderModule({ label: `${label}.wgsl`, code });
    const pipeline = this.device.createComputePipeline({
      label,
      layout: 'auto',
      compute: entryPoint ? { module, entryPoint } : { module },
    });
    this.pipelines.set(key, pipeline);
    return pipeline;
  }

  /** How many pipelines are cached. */
  get size(): number {
    return this.pipelines.size;
  }

  /** Forgets every pipeline (they have no destroy(); the device frees them). */
  clear(): void {
    this.pipelines.clear();
  }
}
