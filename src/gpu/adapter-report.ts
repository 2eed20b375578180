/**
 * What the adapter says about itself, as `kvcompact info` prints it.
 *
 * @example
 * ```ts
 * const report: AdapterReport = describeAdapter(adapter);
 * if (report.isFallbackAdapter) console.warn(`software adapter: ${report.description}`);
 * ```
 */
export interface AdapterReport {
  readonly vendor: string;
  readonly architecture: string;
  readonly description: string;
  readonly isFallbackAdapter: boolean;
}

/**
 * Reads an adapter's identity. SwiftShader reports itself as vendor "google", architecture "swiftshader".
 *
 * @example
 * ```ts
 * const report = describeAdapter(adapter); // { vendor: 'nvidia', architecture: 'hopper', ... }
 * ```
 */
export function describeAdapter(adapter: GPUAdapter): AdapterReport {
  const info = adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
  const legacy = (adapter as GPUAdapter & { isFallbackAdapter?: boolean }).isFallbackAdapter;
  const vendor = info.vendor ?? '';
  const architecture = info.architecture ?? '';
  return {
    vendor,
    architecture,
    description: info.description ?? '',
    isFallbackAdapter:
      info.isFallbackAdapter ?? legacy ?? (vendor === 'google' && architecture === 'swiftshader'),
  };
}

/**
 * Limits the kernels ask for: the adapter's maximum of each.
 *
 * @example
 * ```ts
 * for (const name of NEGOTIATED_LIMITS) console.log(name, gpu.limits[name]);
 * ```
 */
export const NEGOTIATED_LIMITS = [
  'maxStorageBufferBindingSize',
  'maxBufferSize',
  'maxStorageBuffersPerShaderStage',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupsPerDimension',
  'maxUniformBufferBindingSize',
] as const;

/**
 * Upper bounds on the negotiated limits, e.g. `{ maxStorageBuffersPerShaderStage: 10 }` to run in Node what
 * Chrome would allow (tests use it to keep the kernels within a browser's limits).
 *
 * @example
 * ```ts
 * const caps: LimitCaps = { maxStorageBuffersPerShaderStage: 10 };
 * ```
 */
export type LimitCaps = Partial<Record<(typeof NEGOTIATED_LIMITS)[number], number>>;

/**
 * Optional features we use when the adapter has them.
 *
 * @example
 * ```ts
 * const missing = WANTED_FEATURES.filter((feature) => !adapter.features.has(feature)); // e.g. ['subgroups']
 * ```
 */
export const WANTED_FEATURES = ['timestamp-query', 'subgroups', 'shader-f16'] as const;

/**
 * Builds the device descriptor: every negotiated limit at the adapter's maximum, every wanted feature present.
 *
 * @example
 * ```ts
 * const device = await adapter.requestDevice(deviceDescriptorFor(adapter, 'kvcompact'));
 * ```
 */
export function deviceDescriptorFor(adapter: GPUAdapter, label: string, caps: LimitCaps = {}): GPUDeviceDescriptor {
  const requiredLimits: Record<string, number> = {};
  for (const name of NEGOTIATED_LIMITS) {
    const value = (adapter.limits as unknown as Record<string, number | undefined>)[name];
    const cap = caps[name];
    if (typeof value === 'number') requiredLimits[name] = cap === undefined ? value : Math.min(value, cap);
  }
  const requiredFeatures = WANTED_FEATURES.filter((feature) => adapter.features.has(feature)) as GPUFeatureName[];
  return { label, requiredLimits, requiredFeatures };
}
