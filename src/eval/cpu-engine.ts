/**
 * The CPU evaluation engine: {@link ReferenceLlama} with its attention on a {@link CpuKvCache}. Exact fp32 model
 * arithmetic; the cache stores f16 (or f32 at bits 32) blocks and quantizes with the reference codec.
 */
import type { CompressionReport, CompressOptions } from '../compress/options.js';
import { CpuKvCache } from '../engine/cpu-kv-cache.js';
import { cacheOptionsForModel } from '../model/cache-options.js';
import { ReferenceLlama } from '../model/reference-forward.js';
import type { EvalEngine, EvalEngineConfig, EvalEngineFactory } from './evaluate.js';

/** The one sequence an engine drives. */
const SEQ = 0;

/**
 * An {@link EvalEngine} on the CPU. `cache` is public so tests can look inside.
 *
 * @example
 * ```ts
 * const engine = new CpuEvalEngine({ checkpoint, bits: 4, blockSize: 16, maxTokens: 512, observationWindow: 32 });
 * engine.reset();
 * const logits = engine.forward(1, 0);
 * ```
 */
export class CpuEvalEngine implements EvalEngine {
  readonly cache: CpuKvCache;
  readonly model: ReferenceLlama;

  constructor(config: EvalEngineConfig) {
    this.cache = CpuKvCache.create(
      cacheOptionsForModel(config.checkpoint.config, {
        bits: config.bits,
        blockSize: config.blockSize,
        seqSlots: 1,
        maxTokensPerHead: config.maxTokens,
        observationWindow: config.observationWindow,
      }),
    );
    this.cache.addSequence(SEQ);
    this.model = new ReferenceLlama(config.checkpoint, { attention: this.cache.attentionHook(SEQ) });
  }

  reset(): void {
    this.cache.freeSequence(SEQ);
    this.cache.addSequence(SEQ);
  }

  forward(token: number, pos: number): Float32Array {
    return this.model.forward(token, pos);
  }

  compress(options: CompressOptions): Promise<CompressionReport> {
    // The attention-mass diagnostic costs as much as scoring and the sweep does not report it.
    return this.cache.compress(SEQ, { ...options, measureMass: false });
  }

  tokenCount(layer: number, kvHead: number): number {
    return this.cache.tokenCount(SEQ, layer, kvHead);
  }

  bytes(): number {
    // Merge slots are tokens in blocks (counted there); their masses are held beside them.
    return this.cache.sequenceBytes(SEQ).bytes + this.cache.slotStateBytes(SEQ);
  }
}

/**
 * The factory {@link evaluate} takes for the CPU engine.
 *
 * @example
 * ```ts
 * await evaluate({ checkpoint, tokenizer, text, rows, engine: cpuEngineFactory });
 * ```
 */
export const cpuEngineFactory: EvalEngineFactory = (config) => new CpuEvalEngine(config);
