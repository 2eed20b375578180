/**
 * The hook where the GPU evaluation engine plugs in: GpuLlama (src/model/gpu-llama.ts) on a PagedKvCache with the
 * GPU compressor, behind the same {@link EvalEngine} contract as the CPU engine (one sequence; reset, forward,
 * compress, bytes). Until that runner is wired here, {@link gpuEngineFactory} returns null and the CLI says so.
 */
import type { GpuContext } from '../gpu/context.js';
import type { EvalEngineFactory } from './evaluate.js';

/**
 * False until the GPU runner is wired into {@link gpuEngineFactory}: lets the CLI say so without opening a device.
 *
 * @example
 * ```ts
 * if (!GPU_EVAL_ENGINE_READY) console.error('kvcompact eval: the GPU engine is not available yet');
 * ```
 */
export const GPU_EVAL_ENGINE_READY: boolean = false;

/**
 * The GPU engine factory for a device, or null while no GPU runner is wired in.
 *
 * To wire it: build `GpuLlama` and a `PagedKvCache` (fullFormat f16, quantBits = config.bits when < 16,
 * seqSlots 1, maxTokensPerHead = config.maxTokens, observationWindow = config.observationWindow) and a
 * `GpuCompressor`; `forward` runs one token and reads back its logits, `compress` calls the compressor on the
 * sequence, `bytes` returns `cache.sequenceBytes(seq).bytes`, `destroy` frees the buffers.
 *
 * @example
 * ```ts
 * const factory = await gpuEngineFactory(gpu);
 * if (factory === null) console.error('the GPU engine is not available yet');
 * ```
 */
export async function gpuEngineFactory(_gpu: GpuContext): Promise<EvalEngineFactory | null> {
  return null;
}
