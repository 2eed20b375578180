import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { NoAdapterError } from '../errors.js';
import { GpuContext } from '../gpu/context.js';
import type { LimitCaps } from '../gpu/adapter-report.js';
import { parseChoice } from './choice.js';
import { type DawnPolling, dawnPolling, parseDawnPolling, setDawnPolling } from './dawn-polling.js';

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
  /** Told once which adapter was chosen and why, e.g. to print it on stderr. */
  readonly onAdapterChosen?: (why: string) => void;
  /** Upper bounds on the device limits (default: the adapter's maxima), e.g. Chrome's 10 storage buffers per stage. */
  readonly limits?: LimitCaps;
  /**
   * How the process waits for the GPU (process-wide; see {@link DawnPolling}); overrides env
   * `KVCOMPACT_DAWN_POLLING` (default 'auto': paced on a software adapter, Dawn's spinning on a real GPU).
   */
  readonly polling?: DawnPolling;
}

/**
 * The adapter choices, in the order usage texts list them.
 *
 * @example
 * ```ts
 * ADAPTER_CHOICES.includes(flag as AdapterChoice);
 * ```
 */
export const ADAPTER_CHOICES: readonly AdapterChoice[] = ['auto', 'hardware', 'software'];

/**
 * Checks an adapter choice given as text; `source` names where it came from in the error. Empty or missing means
 * 'auto'.
 *
 * @example
 * ```ts
 * parseAdapterChoice(process.env.KVCOMPACT_ADAPTER, 'KVCOMPACT_ADAPTER'); // 'auto' when unset
 * parseAdapterChoice('gpu', '--adapter'); // throws InvalidArgumentError: --adapter: must be auto, hardware or software; got "gpu"
 * ```
 */
export function parseAdapterChoice(value: string | undefined, source: string): AdapterChoice {
  return parseChoice(value, source, ADAPTER_CHOICES, 'auto');
}

/**
 * The directories where the Linux Vulkan loader looks for driver manifests (ICD files), in its search order.
 *
 * @example
 * ```ts
 * vulkanIcdDirectories({}); // ['~/.config/vulkan/icd.d', '/etc/xdg/vulkan/icd.d', ..., '/usr/share/vulkan/icd.d']
 * ```
 */
export function vulkanIcdDirectories(env: Readonly<Record<string, string | undefined>> = process.env): string[] {
  const home = homedir();
  const configHome = env.XDG_CONFIG_HOME || join(home, '.config');
  const configDirs = (env.XDG_CONFIG_DIRS || '/etc/xdg').split(':').filter((d) => d !== '');
  const dataHome = env.XDG_DATA_HOME || join(home, '.local', 'share');
  const dataDirs = (env.XDG_DATA_DIRS || '/usr/local/share:/usr/share').split(':').filter((d) => d !== '');
  const roots = [configHome, ...configDirs, '/usr/local/etc', '/etc', dataHome, ...dataDirs];
  return [...new Set(roots.map((root) => join(root, 'vulkan', 'icd.d')))];
}

// CPU implementations of Vulkan: their manifests do not mean a GPU is present.
const SOFTWARE_ICD = /swiftshader|lvp|lavapipe|llvmpipe/i;

/**
 * The Vulkan driver manifests that may belong to a real GPU (every manifest but SwiftShader's and Mesa's
 * lavapipe) in `directories`, plus those named by `VK_ADD_DRIVER_FILES`. Empty means a hardware probe can only
 * fail, and the Vulkan loader would print "Found no drivers!" while trying.
 *
 * @example
 * ```ts
 * if (hardwareIcdManifests().length === 0) console.error('no GPU driver installed');
 * ```
 */
export function hardwareIcdManifests(
  directories: readonly string[] = vulkanIcdDirectories(),
  env: Readonly<Record<string, string | undefined>> = process.env,
): string[] {
  const manifests = (env.VK_ADD_DRIVER_FILES ?? '').split(':').filter((path) => path !== '' && existsSync(path));
  for (const dir of directories) {
    let names: string[];
    try {
      names = readdirSync(dir).filter((name) => name.endsWith('.json'));
    } catch {
      continue;
    }
    for (const name of names) {
      const path = join(dir, name);
      if (SOFTWARE_ICD.test(name) || SOFTWARE_ICD.test(icdLibrary(path))) continue;
      manifests.push(path);
    }
  }
  return manifests;
}

function icdLibrary(manifest: string): string {
  try {
    const parsed = JSON.parse(readFileSync(manifest, 'utf8')) as { ICD?: { library_path?: unknown } };
    return typeof parsed.ICD?.library_path === 'string' ? parsed.ICD.library_path : '';
  } catch {
    return '';
  }
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

// Loaded on first use, so that importing this module (the CLI's --help, the adapter checks) never needs Dawn.
async function dawnInstance(): Promise<GPU> {
  let webgpu: typeof import('webgpu');
  try {
    webgpu = await import('webgpu');
  } catch (error) {
    const reason = error instanceof Error ? error.message.split('\n')[0] : String(error);
    throw new NoAdapterError(`the npm package webgpu (Dawn) does not load here: ${reason}; reinstall the dependencies (npm ci) or run npm run setup`);
  }
  Object.assign(globalThis, webgpu.globals);
  const gpu = webgpu.create([]);
  dawnInstances.push(gpu);
  return gpu;
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
 * otherwise, or what `adapter` / `KVCOMPACT_ADAPTER` says. On Linux with no GPU driver installed it goes straight
 * to SwiftShader, so the Vulkan loader never warns about missing drivers. `onAdapterChosen` is told the choice and
 * its reason. The Dawn instance stays alive with the context.
 *
 * @example
 * ```ts
 * import { createNodeGpu } from 'kvcompact/node';
 * const gpu = await createNodeGpu({ onAdapterChosen: (why) => console.error(why) }); // or { adapter: 'software' }
 * console.log(gpu.adapter.description);
 * await gpu.destroy();
 * ```
 */
export async function createNodeGpu(options: NodeGpuOptions = {}): Promise<GpuContext> {
  process.env.XDG_RUNTIME_DIR ??= '/tmp';
  const polling =
    options.polling === undefined
      ? parseDawnPolling(process.env.KVCOMPACT_DAWN_POLLING, 'KVCOMPACT_DAWN_POLLING')
      : parseDawnPolling(options.polling, 'polling');
  const choice =
    options.adapter === undefined
      ? parseAdapterChoice(process.env.KVCOMPACT_ADAPTER, 'KVCOMPACT_ADAPTER')
      : parseAdapterChoice(options.adapter, 'adapter');
  const told = (gpu: GpuContext, why: string): GpuContext => {
    const { vendor, architecture, isFallbackAdapter } = gpu.adapter;
    // 'auto' never takes pacing away: another context of this process may be a software one.
    if (polling === 'paced' || (polling === 'auto' && isFallbackAdapter)) setDawnPolling('paced');
    else if (polling === 'spin') setDawnPolling('spin');
    const waits = dawnPolling() === 'paced' ? '; GPU waits paced (KVCOMPACT_DAWN_POLLING=spin: Dawn spins)' : '';
    options.onAdapterChosen?.(
      `adapter ${vendor || 'unknown'} / ${architecture || 'unknown'}${isFallbackAdapter ? ' (software)' : ''}: ${why}${waits}`,
    );
    return gpu;
  };
  const icdFromEnv = process.env.VK_ICD_FILENAMES || process.env.VK_DRIVER_FILES;
  let why = '';
  if (choice === 'hardware' || (choice === 'auto' && !icdFromEnv)) {
    // Elsewhere Dawn reaches GPUs through D3D12 or Metal, which print nothing when there is none.
    const drivers = process.platform === 'linux' ? hardwareIcdManifests() : null;
    if (drivers?.length === 0 && choice === 'hardware') {
      throw new NoAdapterError(`no hardware GPU adapter: no Vulkan GPU driver is installed (no driver manifest in ${vulkanIcdDirectories().join(', ')}); ${INSTALL_HINT}`);
    }
    if (drivers?.length === 0) {
      why = 'no Vulkan GPU driver is installed (no driver manifest in the Vulkan icd.d directories)';
    } else {
      const gpu = await dawnInstance();
      const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
      if (adapter && !(adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean }).isFallbackAdapter) {
        const source = choice === 'hardware' ? 'hardware was asked for' : 'a Vulkan GPU driver offered one';
        return told(await GpuContext.fromGpu(gpu, { keepAlive: gpu, ...(options.limits ? { limits: options.limits } : {}) }), `a hardware GPU, as ${source}`);
      }
      if (choice === 'hardware') {
        throw new NoAdapterError(`no hardware GPU adapter found through Vulkan; ${INSTALL_HINT}`);
      }
      why = `the installed GPU drivers offered no hardware adapter${drivers ? ` (${drivers.join(', ')})` : ''}`;
    }
  } else if (choice === 'software') {
    why = 'software was asked for (--adapter software / KVCOMPACT_ADAPTER=software)';
  }
  if (choice === 'software' || !icdFromEnv) {
    const icd = findSwiftshaderIcd(options.swiftshaderIcd);
    if (!icd) {
      throw new NoAdapterError(
        `no WebGPU adapter: no GPU driver and no SwiftShader ICD (looked in ${SWIFTSHADER_ICD_CANDIDATES.join(', ')}); ${INSTALL_HINT}`,
      );
    }
    process.env.VK_ICD_FILENAMES = icd;
    // Newer Vulkan loaders read VK_DRIVER_FILES before VK_ICD_FILENAMES.
    if (process.env.VK_DRIVER_FILES) process.env.VK_DRIVER_FILES = icd;
    why = `SwiftShader (${icd}), as ${why}`;
  } else {
    why = `the Vulkan driver that VK_ICD_FILENAMES / VK_DRIVER_FILES names (${icdFromEnv})`;
  }
  const gpu = await dawnInstance();
  try {
    return told(await GpuContext.fromGpu(gpu, { keepAlive: gpu, ...(options.limits ? { limits: options.limits } : {}) }), why);
  } catch (error) {
    if (error instanceof NoAdapterError) {
      throw new NoAdapterError(
        `no WebGPU adapter with VK_ICD_FILENAMES=${process.env.VK_ICD_FILENAMES ?? ''} (is libvulkan1 installed?); ${INSTALL_HINT}`,
      );
    }
    throw error;
  }
}
