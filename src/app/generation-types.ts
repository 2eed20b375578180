import type { BudgetMode } from '../compress/budgets.js';
import type { CompressionReport } from '../compress/options.js';
import type { CacheMemoryReport } from '../engine/paged-kv-cache.js';
import type { Bits } from '../format/layout.js';
import type { ContextStream } from '../store/context-stream.js';
import type { HeatSnapshot } from './heat.js';
import type { SpeculativeReport } from './speculative-decoder.js';

// The result types of Generator.generate (src/app/generator.ts re-exports them): apart from the class so that each
// file stays one concept.

/**
 * The cache policy of a generation: a registered scoring policy (snapkv, h2o, tova, ...) or 'full' (no
 * compression, every token kept at full precision).
 *
 * @example
 * ```ts
 * const policy: GenerationPolicy = 'full';
 * ```
 */
export type GenerationPolicy = 'full' | (string & {});

/**
 * Memory of the generating sequence at one moment.
 *
 * @example
 * ```ts
 * console.log(`${memory.ratio.toFixed(2)}× smaller than f16`);
 * ```
 */
export interface GenerationMemory {
  /** Tokens appended so far (prompt + generated, minus the last sampled one, which is not cached yet). */
  readonly tokens: number;
  /** An f16 cache of every token: the baseline. */
  readonly bytesFull: number;
  /** Bytes of the blocks the sequence holds. */
  readonly bytesCompressed: number;
  /** bytesFull / bytesCompressed. */
  readonly ratio: number;
  /** Both pools, all sequences (the full-cache comparison included). */
  readonly pool: CacheMemoryReport;
}

/**
 * The blocks one (layer, KV head) holds.
 *
 * @example
 * ```ts
 * const head: HeadBlocks = { quant: 1, full: 2, tokens: 40 };
 * ```
 */
export interface HeadBlocks {
  readonly quant: number;
  readonly full: number;
  readonly tokens: number;
}

/**
 * Running agreement between the compressed cache and a full cache fed the same tokens.
 *
 * @example
 * ```ts
 * if (q.divergedAt !== null) console.log(`texts diverge at generated token ${q.divergedAt}`);
 * ```
 */
export interface RunningQuality {
  /** Share of steps where the full cache's top-1 equals the compressed cache's top-1, on the same context. */
  readonly agreement: number;
  readonly agreed: number;
  readonly compared: number;
  /** Index (in generated tokens) of the first token where the free-running full-cache text differs; null if none. */
  readonly divergedAt: number | null;
  /** Offset in the generated text where that token starts (both texts are equal before it); null if none. */
  readonly divergedAtChar: number | null;
  /** What the full cache generates on its own. */
  readonly fullTokens: number[];
  readonly fullText: string;
}

/**
 * Quality of the compressed run against the full cache, at the end.
 *
 * @example
 * ```ts
 * console.log(`top-1 agreement ${(q.agreement * 100).toFixed(1)} %, ppl ${q.perplexityCompressed} vs ${q.perplexityFull}`);
 * ```
 */
export interface GenerationQuality extends RunningQuality {
  /** Perplexity of the generated tokens under the compressed cache (the model's own logits as it generated). */
  readonly perplexityCompressed: number;
  /** Perplexity of the same tokens under a full cache given the same context. */
  readonly perplexityFull: number;
  /** Mean KL(full ‖ compressed) of the next-token distributions, nats. */
  readonly meanKl: number;
}

/**
 * What a generation did to the cache, measured, and (with compareWithFull) how much it cost in quality.
 *
 * @example
 * ```ts
 * const { report } = await generator.generate({ prompt: '', steps: 64, policy: 'h2o', budget: 16, bits: 4 });
 * console.log(report.ratio, report.keptPerHead);
 * ```
 */
export interface GenerationReport {
  readonly policy: GenerationPolicy;
  readonly budgetMode: BudgetMode;
  /** Average tokens per KV head allowed (null for 'full'). */
  readonly budget: number | null;
  readonly bits: Bits;
  readonly promptTokens: number;
  readonly generatedTokens: number;
  /** Tokens in the cache's positions (prompt + generated − 1: the last token is sampled, never appended). */
  readonly cachedTokens: number;
  /** An f16 cache of all cached tokens. */
  readonly bytesFull: number;
  /** Bytes of the blocks the sequence holds at the end. */
  readonly bytesCompressed: number;
  /** bytesFull / bytesCompressed. */
  readonly ratio: number;
  /** Tokens each [layer][kvHead] holds at the end. */
  readonly keptPerHead: number[][];
  /** How many times the cache was compressed. */
  readonly compressions: number;
  /** The last compression's report (null if none ran). */
  readonly lastCompression: CompressionReport | null;
  readonly milliseconds: number;
  readonly tokensPerSecond: number;
  /** Milliseconds from the call to the first sampled token (restore and prefill included); absent with speculate. */
  readonly ttftMs?: number;
  /** What the `store` option saved work: present only with a store. */
  readonly store?: GenerationStoreReport;
  /** With compareWithFull. */
  readonly quality?: GenerationQuality;
  /** With speculate: passes (prefill included), drafts verified and kept. */
  readonly speculative?: SpeculativeReport;
}

/**
 * State after one generated token, for live displays.
 *
 * @example
 * ```ts
 * onStep: (s) => gauge.textContent = `${s.memory.ratio.toFixed(2)}×`
 * ```
 */
export interface StepSnapshot {
  /** Index of the generated token (0-based). */
  readonly step: number;
  readonly token: number;
  readonly piece: string;
  /** Generated text so far. */
  readonly text: string;
  readonly memory: GenerationMemory;
  /** Tokens each [layer][kvHead] holds. */
  readonly keptPerHead: number[][];
  /** Blocks each [layer][kvHead] holds. */
  readonly blocks: HeadBlocks[][];
  /** Report of the compression that ran before this step's token was appended, if one did. */
  readonly compression: CompressionReport | null;
  /** With compareWithFull. */
  readonly quality?: RunningQuality;
  /** With heat: attention of kept tokens, per layer and head. */
  readonly heat?: HeatSnapshot;
  /** With speculate: the token was drafted by prompt lookup and accepted by the verifying pass (not decoded alone). */
  readonly drafted?: boolean;
  /** With speculate: forward passes run so far, the prompt's prefill included (plain decoding of n tokens takes n). */
  readonly forwardPasses?: number;
}

/**
 * What {@link Generator.generate} returns.
 *
 * @example
 * ```ts
 * const { text, tokens, report } = await generator.generate({ prompt: 'Lily', steps: 32 });
 * ```
 */
export interface GenerateResult {
  /** The generated text (without the prompt). */
  readonly text: string;
  /** Generated token ids (without BOS and prompt). */
  readonly tokens: number[];
  /** BOS and the prompt's ids. */
  readonly promptTokens: number[];
  readonly report: GenerationReport;
  /**
   * What the compressed sequence's cache holds at the end, as the operations that built it: the history
   * (`continueFrom`), the prompt's prefill, the decode of the generated tokens it forwarded (all but the last
   * sampled one). Pass it as `continueFrom` to go on (the next turn of a chat).
   */
  readonly context: ContextStream;
}

/**
 * What a generation's `store` saved: `prefillTokens` is what it computed, `hitTokens` what it restored.
 *
 * @example
 * ```ts
 * if (report.store?.hit) console.log(`${report.store.hitTokens} of ${report.store.promptTokens} tokens restored`);
 * ```
 */
export interface GenerationStoreReport {
  readonly hit: boolean;
  /** Tokens of the history and prompt the restored state covers (0 on a miss). */
  readonly hitTokens: number;
  /** Tokens of the history and prompt (BOS included). */
  readonly promptTokens: number;
  /** Tokens actually computed before the first token: promptTokens − hitTokens. */
  readonly prefillTokens: number;
  readonly restoreMs: number;
  /** States saved (segment ends of the history it computed, the prompt's end, the end). */
  readonly saved: number;
}

