import type { CompressionReport } from '../compress/options.js';
import type { DecodeCompressor } from '../compress/decode-compression.js';
import type { CpuKvCache } from '../engine/cpu-kv-cache.js';
import { InvalidArgumentError } from '../errors.js';
import { AdaptiveDraftLength, PromptLookup, type PromptLookupOptions } from '../model/prompt-lookup.js';
import type { ReferenceLlama } from '../model/reference-forward.js';
import { verifyDrafts } from '../model/speculative-sampling.js';
import { BOS_ID } from '../model/tokenizer.js';
import { mulberry32 } from '../random.js';

/**
 * Speculative decoding settings: prompt lookup (the only drafter) and whether the draft length adapts.
 *
 * @example
 * ```ts
 * const speculate: SpeculateOptions = { method: 'ngram', numSpeculative: 10, lookupMax: 3, lookupMin: 1 };
 * ```
 */
export interface SpeculateOptions extends PromptLookupOptions {
  readonly method: 'ngram';
  /**
   * Choose each pass's draft length from the measured acceptance and pass cost (default true, see
   * AdaptiveDraftLength); false always drafts up to numSpeculative.
   */
  readonly adaptive?: boolean;
  /**
   * With the adaptive length: the cost of one more verified token in one-token passes, where it is known (≈ 0 on a
   * real GPU, where a short verification costs about one decode step); by default it is measured from the passes.
   */
  readonly verifyCost?: number;
}

/**
 * What speculation did: passes include the prefill, so plain decoding of n tokens is n passes.
 *
 * @example
 * ```ts
 * console.log(`${report.tokensPerPass.toFixed(2)} tokens per pass, ${(report.acceptanceRate * 100).toFixed(0)} % of drafts kept`);
 * ```
 */
export interface SpeculativeReport {
  readonly forwardPasses: number;
  readonly drafted: number;
  readonly accepted: number;
  /** accepted / drafted (0 when nothing was drafted). */
  readonly acceptanceRate: number;
  /** Generated tokens / forwardPasses. */
  readonly tokensPerPass: number;
}

/**
 * The model and cache of one sequence as speculative decoding drives them.
 *
 * @example
 * ```ts
 * const target: SpeculationTarget = cpuSpeculationTarget(model, cache, 0);
 * ```
 */
export interface SpeculationTarget {
  /** Tokens in the cache (the position of the next one). */
  length(): number;
  /** Runs `tokens` at the next positions; the logits after each token, or only after the last one. */
  forward(tokens: readonly number[], allLogits: boolean): Promise<Float32Array[]>;
  /** The cache's `beginSpeculation` for this sequence. */
  beginSpeculation(): void;
  /** The cache's `truncate` for this sequence. */
  truncate(length: number): Promise<void>;
}

/** One verification pass, for displays. */
export interface SpeculativePass {
  /** The tokens the pass emitted: accepted drafts, then the model's own (only the model's own when nothing was drafted). */
  readonly tokens: readonly number[];
  readonly drafted: number;
  readonly accepted: number;
  /** The compression that ran before the pass, if one did. */
  readonly compression: CompressionReport | null;
}

/**
 * Inputs of {@link speculativeDecode}.
 *
 * @example
 * ```ts
 * await speculativeDecode(target, { promptTokens, steps: 128, speculate: { method: 'ngram' }, sampling: { temperature: 0 } });
 * ```
 */
export interface SpeculativeDecodeOptions {
  /**
   * BOS and the prompt's ids, prefilled in one pass; with `started`, every id already in the cache (history and
   * prompt), where drafts are looked up.
   */
  readonly promptTokens: readonly number[];
  /**
   * The logits after `promptTokens` when the caller put them in the cache (a restored or replayed state, with the
   * decode compressor already past them): no prefill pass runs, and the pass that computed them counts as the first.
   */
  readonly started?: { readonly logits: Float32Array };
  /** Tokens to generate. */
  readonly steps: number;
  readonly speculate: SpeculateOptions;
  readonly sampling: { readonly temperature: number; readonly topP?: number; readonly seed?: number };
  /** Decode-time compression of the sequence `seqId` (null: never compresses). */
  readonly decode?: { readonly compressor: DecodeCompressor; readonly seqId: number } | null;
  readonly stopAtBos?: boolean;
  /** With `stopAtBos`: the ids that stop (the tokenizer's `stopIds`; default [BOS_ID], llama2.c's). */
  readonly stopIds?: readonly number[];
  readonly signal?: AbortSignal;
  /** Called after each pass; awaited. */
  readonly onPass?: (pass: SpeculativePass) => void | Promise<void>;
}

/**
 * Prompt-lookup speculative decoding: prefill, then per pass draft up to k tokens from the text so far, verify
 * them with the last token in ONE forward pass inside a cache speculation, keep the longest accepted prefix and
 * the model's own next token, and truncate the cache to what was kept. Greedy output is token-identical to
 * one-token decoding (same logits, same compressions: drafts never span a point where the decode schedule
 * compresses, see `DecodeCompressor.quietSteps`); sampled output has the same distribution (see
 * {@link verifyDrafts}). Returns the generated ids and the report.
 *
 * @example
 * ```ts
 * const { tokens, report } = await speculativeDecode(cpuSpeculationTarget(model, cache, 0), {
 *   promptTokens, steps: 128, speculate: { method: 'ngram' }, sampling: { temperature: 0 },
 * });
 * ```
 */
export async function speculativeDecode(
  target: SpeculationTarget,
  options: SpeculativeDecodeOptions,
): Promise<{ tokens: number[]; report: SpeculativeReport }> {
  const { promptTokens, steps, speculate } = options;
  if (speculate.method !== 'ngram') throw new InvalidArgumentError('speculate', `the only method is 'ngram'; got ${String(speculate.method)}`);
  if (!Number.isInteger(steps) || steps < 1) throw new InvalidArgumentError('steps', `must be a positive integer; got ${steps}`);
  if (promptTokens.length === 0) throw new InvalidArgumentError('promptTokens', 'need at least BOS');
  const lookup = new PromptLookup(speculate);
  const { numSpeculative } = lookup.options;
  const draftLength = speculate.adaptive === false ? null : new AdaptiveDraftLength(numSpeculative, undefined, speculate.verifyCost);
  const sampling = { temperature: options.sampling.temperature, topP: options.sampling.topP ?? 0.9 };
  const rng = mulberry32(options.sampling.seed ?? 42);
  const decode = options.decode ?? null;
  const tokens: number[] = [];
  let passes = 0;
  let drafted = 0;
  let accepted = 0;
  const stopIds = options.stopAtBos === true ? (options.stopIds ?? [BOS_ID]) : [];
  const stopped = (): boolean =>
    tokens.length >= steps || stopIds.includes(tokens[tokens.length - 1] ?? -1) || options.signal?.aborted === true;
  /** Emits a pass's tokens, cut at the step limit and at BOS; returns how many were emitted. */
  const emit = (out: readonly number[]): number[] => {
    const kept: number[] = [];
    for (const token of out) {
      if (tokens.length >= steps) break;
      tokens.push(token);
      kept.push(token);
      if (stopIds.includes(token)) break;
    }
    lookup.push(kept);
    return kept;
  };

  lookup.push(promptTokens);
  let prefill: Float32Array[];
  if (options.started) {
    prefill = [options.started.logits];
  } else {
    prefill = await target.forward(promptTokens, false);
    decode?.compressor.prefilled(promptTokens.length);
  }
  passes++;
  const first = emit(verifyDrafts(prefill, [], sampling, rng).tokens);
  await options.onPass?.({ tokens: first, drafted: 0, accepted: 0, compression: null });

  while (!stopped()) {
    const last = tokens[tokens.length - 1] as number;
    const compression = decode ? await decode.compressor.beforeStep(decode.seqId, 1) : null;
    let want = Math.min(draftLength ? draftLength.next() : numSpeculative, steps - tokens.length - 1);
    if (decode && want > 0) want = decode.compressor.quietSteps(decode.seqId, want);
    const drafts = want > 0 ? lookup.draft(want) : [];
    const start = target.length();
    const passStarted = performance.now();
    let out: number[];
    let kept: number[];
    if (drafts.length === 0) {
      out = verifyDrafts(await target.forward([last], false), [], sampling, rng).tokens;
      kept = emit(out);
    } else {
      target.beginSpeculation();
      const verification = verifyDrafts(await target.forward([last, ...drafts], true), drafts, sampling, rng);
      out = verification.tokens;
      kept = emit(out);
      // The cache keeps the pass's first token and the drafts that were emitted and are followed by another token.
      const keptDrafts = Math.max(0, kept.length - 1);
      await target.truncate(start + 1 + keptDrafts);
      decode?.compressor.advance(keptDrafts);
      accepted += verification.accepted;
    }
    passes++;
    drafted += drafts.length;
    draftLength?.record(drafts.length, drafts.length === 0 ? 0 : Math.min(drafts.length, out.length - 1), performance.now() - passStarted);
    await options.onPass?.({ tokens: kept, drafted: drafts.length, accepted: drafts.length === 0 ? 0 : out.length - 1, compression });
  }
  const report: SpeculativeReport = {
    forwardPasses: passes,
    drafted,
    accepted,
    acceptanceRate: drafted > 0 ? accepted / drafted : 0,
    tokensPerPass: tokens.length / passes,
  };
  return { tokens, report };
}

/**
 * The {@link SpeculationTarget} of a {@link ReferenceLlama} on a {@link CpuKvCache} sequence (the model's attention
 * hook must be that sequence's): verification runs token by token, which the CPU engine does anyway.
 *
 * @example
 * ```ts
 * const model = new ReferenceLlama(checkpoint, { attention: cache.attentionHook(seq) });
 * const target = cpuSpeculationTarget(model, cache, seq);
 * ```
 */
export function cpuSpeculationTarget(model: ReferenceLlama, cache: CpuKvCache, seqId: number): SpeculationTarget {
  return {
    length: () => cache.sequenceLength(seqId),
    forward: async (tokens, allLogits) => {
      const rows: Float32Array[] = [];
      for (const token of tokens) rows.push(model.forward(token, cache.sequenceLength(seqId)).slice());
      return allLogits ? rows : rows.slice(-1);
    },
    beginSpeculation: () => cache.beginSpeculation(seqId),
    truncate: (length) => cache.truncate(seqId, length),
  };
}
