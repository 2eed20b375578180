import type { DecodeCompressor } from '../compress/decode-compression.js';
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
 * Where a speculative generation starts: the history and prompt already in the cache (see `startGeneration`),
 * their ids (drafts are looked up in all of them), the logits after them and the decode compressor past them.
 */
export interface SpeculativeStart {
  readonly contextTokens: readonly number[];
  readonly logits: Float32Array;
  readonly decode: DecodeCompressor | null;
  /** Awaited once the first token is out (where the generator saves the prompt's state). */
  readonly afterFirstToken?: () => Promise<void>;
}

/**
 * `Generator.generate` with `speculate`: {@link speculativeDecode} on the GPU model and paged cache, from a started
 * generation, with the generator's decode schedule, token callbacks and step snapshots (one per emitted token; a
 * pass's compression shows on its first token). Returns the text, the ids, the speculation report and when the
 * first token was out (ms after the call).
 *
 * @example
 * ```ts
 * const { text, tokens, speculative } = await generateSpeculatively(run, { contextTokens, logits, decode }, options, { method: 'ngram' });
 * ```
 */
export async function generateSpeculatively<Memory, Blocks>(
  run: SpeculativeRun<Memory, Blocks>,
  start: SpeculativeStart,
  options: SpeculativeGenerationOptions<Memory, Blocks>,
  speculate: SpeculateOptions,
): Promise<{ text: string; tokens: number[]; speculative: SpeculativeReport; firstTokenMs: number }> {
  const { cache, model, tokenizer, seqId, view } = run;
  const { decode, contextTokens } = start;
  const called = performance.now();
  let firstTokenMs = 0;
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
  let prev = contextTokens[contextTokens.length - 1] ?? tokenizer.bosId ?? -1;
  const { tokens, report } = await speculativeDecode(target, {
    promptTokens: contextTokens,
    started: { logits: start.logits },
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
      if (passes === 1) {
        firstTokenMs = performance.now() - called;
        await start.afterFirstToken?.();
      }
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
  return { text, tokens, speculative: report, firstTokenMs };
}
