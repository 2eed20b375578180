import type { DecodeSchedule } from '../compress/decode-schedule.js';
import { DecodeCompressor } from '../compress/decode-compression.js';
import type { CompressionReport } from '../compress/options.js';
import type { PagedKvCache } from '../engine/paged-kv-cache.js';
import type { GpuLlama } from '../model/gpu-llama.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import { HeatReader, type HeatSnapshot } from './heat.js';
import { speculativeDecode, type SpeculateOptions, type SpeculationTarget, type SpeculativeReport } from './speculative-decoder.js';

/**
 * What the Generator lends a speculative generation: its model, the cache and sequence, and views of the cache
 * for step snapshots (typed structurally here so this module does not import generator.ts, which imports it).
 */
export interface SpeculativeRun<Memory, Blocks> {
  readonly cache: PagedKvCache;
  readonly model: GpuLlama;
  readonly tokenizer: TextTokenizer;
  readonly seqId: number;
  readonly view: { memory(): Memory; keptPerHead(): number[][]; blocks(): Blocks };
}

/** The generate() options a speculative generation reads. */
export interface SpeculativeGenerationOptions<Memory, Blocks> {
  readonly steps: number;
  readonly temperature?: number;
  readonly topP?: number;
  readonly seed?: number;
  readonly stopAtBos?: boolean;
  readonly heat?: boolean;
  readonly signal?: AbortSignal;
  readonly onToken?: (token: number, piece: string) => void;
  readonly onStep?: (snapshot: {
    step: number;
    token: number;
    piece: string;
    text: string;
    memory: Memory;
    keptPerHead: number[][];
    blocks: Blocks;
    compression: CompressionReport | null;
    heat?: HeatSnapshot;
    drafted: boolean;
    forwardPasses: number;
  }) => void | Promise<void>;
}

/**
 * `Generator.generate` with `speculate`: {@link speculativeDecode} on the GPU model and paged cache, with the
 * generator's decode schedule, token callbacks and step snapshots (one per emitted token; a pass's compression
 * shows on its first token). Returns the text, the ids, the speculation report and the decode compressor.
 *
 * @example
 * ```ts
 * const { text, tokens, speculative } = await generateSpeculatively(run, schedule, options, { method: 'ngram' }, promptTokens);
 * ```
 */
export async function generateSpeculatively<Memory, Blocks>(
  run: SpeculativeRun<Memory, Blocks>,
  schedule: DecodeSchedule | null,
  options: SpeculativeGenerationOptions<Memory, Blocks>,
  speculate: SpeculateOptions,
  promptTokens: number[],
): Promise<{ text: string; tokens: number[]; speculative: SpeculativeReport; decode: DecodeCompressor | null }> {
  const { cache, model, tokenizer, seqId, view } = run;
  const decode = schedule ? new DecodeCompressor(cache, schedule) : null;
  const heatReader = options.heat ? new HeatReader() : null;
  const vocabSize = model.config.vocabSize;
  const target: SpeculationTarget = {
    length: () => cache.sequenceLength(seqId),
    forward: async (tokens, allLogits) => {
      const logits = await model.forward(seqId, tokens, { allLogits });
      return Array.from({ length: logits.length / vocabSize }, (_, i) => logits.subarray(i * vocabSize, (i + 1) * vocabSize));
    },
    beginSpeculation: () => cache.beginSpeculation(seqId),
    truncate: (length) => cache.truncate(seqId, length),
  };
  let text = '';
  let step = 0;
  let passes = 0;
  let prev = promptTokens[promptTokens.length - 1] ?? tokenizer.bosId ?? -1;
  const { tokens, report } = await speculativeDecode(target, {
    promptTokens,
    steps: options.steps,
    speculate,
    sampling: { temperature: options.temperature ?? 0, topP: options.topP ?? 0.9, seed: options.seed ?? 42 },
    decode: decode ? { compressor: decode, seqId } : null,
    ...(options.stopAtBos !== undefined ? { stopAtBos: options.stopAtBos, stopIds: tokenizer.stopIds } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
    onPass: async (pass) => {
      // A rollback removes positions the heat reader would otherwise extend on the host.
      if (pass.compression || pass.drafted > 0) heatReader?.invalidate();
      passes++;
      for (const [i, token] of pass.tokens.entries()) {
        const piece = tokenizer.decode(prev, token);
        prev = token;
        text += piece;
        options.onToken?.(token, piece);
        if (options.onStep) {
          const heat = heatReader ? await heatReader.read(cache, seqId) : undefined;
          await options.onStep({
            step: step,
            token,
            piece,
            text,
            memory: view.memory(),
            keptPerHead: view.keptPerHead(),
            blocks: view.blocks(),
            compression: i === 0 ? pass.compression : null,
            ...(heat ? { heat } : {}),
            drafted: i < pass.accepted,
            forwardPasses: passes,
          });
        }
        step++;
      }
    },
  });
  return { text, tokens, speculative: report, decode };
}
