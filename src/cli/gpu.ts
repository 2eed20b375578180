import type { GpuContext } from '../gpu/context.js';
import { type AdapterChoice, createNodeGpu } from '../node/gpu.js';

/**
 * Opens the GPU a command asked for and says once on stderr which adapter was chosen and why (stdout stays
 * clean for `--json`).
 *
 * @example
 * ```ts
 * const gpu = await openCliGpu(adapterFlag(values.adapter));
 * ```
 */
export function openCliGpu(adapter: AdapterChoice): Promise<GpuContext> {
  return createNodeGpu({ adapter, onAdapterChosen: (why) => void process.stderr.write(`kvcompact: ${why}\n`) });
}
