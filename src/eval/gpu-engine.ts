/**
 * The GPU evaluation engine: GpuLlama (src/model/gpu-llama.ts) whose every attention step reads a PagedKvCache,
 * compressed on the GPU, behind the same {@link EvalEngine} contract as the CPU engine (one sequence; reset,
 * forward, compress, bytes).
 */
import { PagedKvCache } from '../engine/paged-kv-cache.js';
import type { CompressOptions, CompressionReport } from '../compress/options.js';
import type { GpuContext } from '../gpu/context.js';
import { cacheOptionsForModel } from '../model/cache-options.js';
import { GpuLlama } from '../model/gpu-llama.js';
import type { EvalEngine, EvalEngineConfig, EvalEngineFactory } from './evaluate.js';

const SEQUENCE = 0;

/**
 * One row's engine on the GPU: a cache in the row's storage format (f16 blocks, plus a quantized pool when
 * bits < 16; f32 blocks for bits 32), the model's weights uploaded once per row.
 *
 * @example
 * ```ts
 * const engine = new GpuEvalEngine(gpu, { checkpoint, bits: 4, blockSize: 16, maxTokens: 512, observationWindow: 32 });
 * engine.reset();
 * const logits = await engine.forward(1, 0);
 * ```
 */
export class GpuEvalEngine implements EvalEngine {
  private readonly cache: PagedKvCache;
  private readonly model: GpuLlama;

  constructor(gpu: GpuContext, config: EvalEngineConfig) {
    this.cache = PagedKvCache.create(
      gpu,
      cacheOptionsForModel(config.checkpoint.config, {
        bits: config.bits,
        blockSize: config.blockSize,
        seqSlots: 1,
        maxTokensPerHead: config.maxTokens,
        observationWindow: config.observationWindow,
      }),
    );
    // f32 weights: evaluation compares policies against the CPU engine row by row (same eviction decisions), and
    // f16 weights move attention scores enough to flip a few of them (bytes per token 497.57 vs 497.70 at 96).
    this.model = new GpuLlama(gpu, config.checkpoint, this.cache, { weights: 'f32' });
  }

  reset(): void {
    if (this.cache.meta.hasSequence(SEQUENCE)) this.cache.freeSequence(SEQUENCE);
    this.cache.addSequence(SEQUENCE);
  }

  forward(token: number, _pos: number): Promise<Float32Array> {
    return this.model.forward(SEQUENCE, [token]);
  }

  async compress(options: CompressOptions): Promise<CompressionReport> {
    return await this.cache.compress(SEQUENCE, options);
  }

  tokenCount(layer: number, kvHead: number): number {
    return this.cache.tokenCount(SEQUENCE, layer, kvHead);
  }

  bytes(): number {
    // The merge slots' masses beside the blocks count, as on the CPU engine.
    return this.cache.sequenceBytes(SEQUENCE).bytes + this.cache.slotStateBytes(SEQUENCE);
  }

  destroy(): void {
    this.model.destroy();
    this.cache.destroy();
  }
}

/**
 * The GPU engine factory for a device.
 *
 * @example
 * ```ts
 * const report = await evaluate({ ..., engine: await gpuEngineFactory(gpu) });
 * ```
 */
export async function gpuEngineFactory(gpu: GpuContext): Promise<EvalEngineFactory> {
  return (config) => new GpuEvalEngine(gpu, config);
}
