import { existsSync } from 'node:fs';
import { create, globals } from 'webgpu';
import { NoAdapterError } from '../errors.js';
import { GpuContext } from '../gpu/context.js';

/**
 * Which adapter to use: a real GPU, SwiftShader on the CPU, or the first that works (real first).
 *
 * @example
 * ```ts
 * const choice: AdapterChoice = process.env.CI ? 'software' : 'auto';
 * const gpu = await createNodeGpu({ adapter: choice });
 * ```
 */
export type AdapterChoice = 'auto' | 'hardware' | 'software';

/**
 * Options of {@link createNodeGpu}.
 *
 * @example
 * ```ts
 * const options: NodeGpuOptions = { adapter: 'software', swiftshaderIcd: '/opt/swiftshader/vk_swiftshader_icd.json' };
 * const gpu = await createNodeGpu(options);
 * ```
 */
export interface NodeGpuOptions {
  /** Overrides env `KVCOMPACT_ADAPTER` (default 'auto'). */
  readonly adapter?: AdapterChoice;
  /** Path of SwiftShader's Vulkan ICD file; default env `KVCOMPACT_SWIFTSHADER_ICD` or Debian chromium's. */
  readonly swiftshaderIcd?: string;
}

/**
 * Where Debian's chromium package puts SwiftShader's Vulkan ICD.
 *
 * @example
 * ```ts
 * const icd = SWIFTSHADER_ICD_CANDIDATES.find((path) => existsSync(path)); // undefined without chromium
 * ```
 */
export const SWIFTSHADER_ICD_CANDIDATES = [
  '/usr/lib/chromium/vk_swiftshader_icd.json',
  '/usr/lib/chromium-browser/vk_swiftshader_icd.json',
  '/usr/lib64/chromium-browser/vk_swiftshader_icd.json',
] as const;

// Every Dawn instance we ever create stays referenced for the life of the process: one that is garbage-collected
// while a device from it has work in flight crashes Dawn (../shared/docs/webgpu-runtime.md).
const dawnInstances: GPU[] = [];

function dawnInstance(): GPU {
  Object.assign(globalThis, globals);
  const gpu = create([]);
  dawnInstances.push(gpu);
  return gpu;
}

function parseChoice(value: string | undefined): AdapterChoice {
  if (value === undefined || value === '' || value === 'auto') return 'auto';
  if (value === 'hardware' || value === 'software') return value;
  throw new NoAdapterError(`KVCOMPACT_ADAPTER must be auto, hardware or software; got "${value}"`);
}

function findSwiftshaderIcd(explicit?: string): string | undefined {
  const candidates = [explicit, process.env.KVCOMPACT_SWIFTSHADER_ICD, ...SWIFTSHADER_ICD_CANDIDATES];
  return candidates.find((path): path is string => typeof path === 'string' && path !== '' && existsSync(path));
}

const INSTALL_HINT =
  'run `npm run setup` (as root on Debian/Ubuntu it installs chromium + libvulkan1 for the SwiftShader ' +
  'software adapter), or install your GPU vendor\'s Vulkan driver';

/**
 * Creates a GPU context in Node through Dawn (npm `webgpu`). Picks a real GPU when one exists, SwiftShader
 * otherwise, or what `adapter` / `KVCOMPACT_ADAPTER` says. The Dawn instance stays alive with the context.
 *
 * @example
 * ```ts
 * import { createNodeGpu } from 'kvcompact/node';
 * const gpu = await createNodeGpu();          // or { adapter: 'software' }
 * console.log(gpu.adapter.description);
 * await gpu.destroy();
 * ```
 */
export async function createNodeGpu(options: NodeGpuOptions = {}): Promise<GpuContext> {
  process.env.XDG_RUNTIME_DIR ??= '/tmp';
  const choice = options.adapter ?? parseChoice(process.env.KVCOMPACT_ADAPTER);
  if (choice !== 'software' && (choice === 'hardware' || !process.env.VK_ICD_FILENAMES)) {
    const gpu = dawnInstance();
    const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
    if (adapter && !(adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean }).isFallbackAdapter) {
      return GpuContext.fromGpu(gpu, { keepAlive: gpu });
    }
    if (choice === 'hardware') {
      throw new NoAdapterError(`no hardware GPU adapter found through Vulkan; ${INSTALL_HINT}`);
    }
  }
  if (choice === 'software' || !process.env.VK_ICD_FILENAMES) {
    const icd = findSwiftshaderIcd(options.swiftshaderIcd);
    if (!icd) {
      throw new NoAdapterError(
        `no WebGPU adapter: no GPU driver and no SwiftShader ICD (looked in ${SWIFTSHADER_ICD_CANDIDATES.join(', ')}); ${INSTALL_HINT}`,
      );
    }
    process.env.VK_ICD_FILENAMES = icd;
  }
  const gpu = dawnInstance();
  try {
    return await GpuContext.fromGpu(gpu, { keepAlive: gpu });
  } catch (error) {
    if (error instanceof NoAdapterError) {
      throw new NoAdapterError(
        `no WebGPU adapter with VK_ICD_FILENAMES=${process.env.VK_ICD_FILENAMES ?? ''} (is libvulkan1 installed?); ${INSTALL_HINT}`,
      );
    }
    throw error;
  }
}
