import { PagedKvCache } from '../engine/paged-kv-cache.js';
import type { FullFormat, Bits } from '../format/layout.js';
import { BUDGET_MODES, type BudgetMode } from '../compress/budgets.js';
import { decodeSchedule, type DecodeSchedule } from '../compress/decode-schedule.js';
import type { CompressionReport, MergeMode } from '../compress/options.js';
import { policyNames } from '../compress/registry.js';
import { InvalidArgumentError, KvCompactError, UnknownPolicyError } from '../errors.js';
import { AgreementAccumulator, PerplexityAccumulator } from '../eval/metrics.js';
import type { GpuContext } from '../gpu/context.js';
import { cacheOptionsForModel } from '../model/cache-options.js';
import { parseCheckpoint, type LlamaCheckpoint, type LlamaConfig } from '../model/checkpoint.js';
import { GpuLlama } from '../model/gpu-llama.js';
import { createSampler } from '../model/sampling.js';
import { Tokenizer, type TextTokenizer } from '../model/tokenizer.js';
import { normalizeStream, streamTokenIds, streamTokens, type ContextStream } from '../store/context-stream.js';
import { agreementOf, headBlocks, keptPerHead } from './cache-views.js';
import { CacheSwitch } from './cache-switch.js';
import { cacheStateSettings } from './context-replay.js';
import { startGeneration, type GenerationStart } from './generation-start.js';
import { ResidentStates, type ResidentStatesOptions, type ContextReuse } from './context-reuse.js';
import type { GenerateResult, GenerationMemory, GenerationPolicy, GenerationReport, HeadBlocks, RunningQuality, StepSnapshot } from './generation-types.js';
import { HeatReader } from './heat.js';
import type { SpeculateOptions } from './speculative-decoder.js';
import { generateSpeculatively } from './speculative-generation.js';

// The result types live beside the class; importers keep one path.
export type * from './generation-types.js';


/**
 * Options of {@link Generator.generate}.
 *
 * @example
 * ```ts
 * const options: GenerateOptions = { prompt: 'Once upon a time', steps: 200, policy: 'snapkv', budgetMode: 'adakv', budget: 64, bits: 4 };
 * ```
 */
export interface GenerateOptions {
  /** Text after BOS (may be empty: the model then starts a story of its own). */
  readonly prompt: string;
  /** Tokens to generate. */
  readonly steps: number;
  /** Default 'snapkv'. */
  readonly policy?: GenerationPolicy;
  /** How the budget is split between heads and layers (default 'uniform'). */
  readonly budgetMode?: BudgetMode;
  /** Average tokens kept per KV head (default 64); ignored by policy 'full'. */
  readonly budget?: number;
  /** Default 16 (no quantization). */
  readonly bits?: Bits;
  /** What evicted tokens become (default 'none'; see MergeMode in src/compress/options.ts). */
  readonly merge?: MergeMode;
  /** 0 (default) is greedy. */
  readonly temperature?: number;
  /** Nucleus mass when sampling (default 0.9). */
  readonly topP?: number;
  /** Sampler seed (default 42). */
  readonly seed?: number;
  /**
   * Attention sinks always kept (default min(4, ⌊budget/4⌋), the decode schedule's: src/compress/decode-schedule.ts).
   */
  readonly sinks?: number;
  /**
   * Recent tokens always kept, at full precision (default min(32, ⌊budget/4⌋, budget − slack − sinks), the decode
   * schedule's; before it was min(32, ⌊budget/2⌋)). sinks + recent must fit in budget − slack.
   */
  readonly recent?: number;
  /**
   * Compress this far below the budget, so compression runs once per `slack` tokens (default
   * max(1, min(blockSize, ⌊budget/4⌋)), the decode schedule's).
   */
  readonly slack?: number;
  /** Stop early at the end of a text: the tokenizer's `stopIds` (llama2.c: BOS, a new story, as run.c; HF: EOS) (default false). */
  readonly stopAtBos?: boolean;
  /** Also run the same prompt with a full cache side by side and report agreement (roughly 2–3× the work). */
  readonly compareWithFull?: boolean;
  /** Include attention heat of the kept tokens in each step snapshot (costs readbacks). */
  readonly heat?: boolean;
  /** Called with each generated token and its text. */
  readonly onToken?: (token: number, piece: string) => void;
  /** Called after each step with the state of the cache; awaited, so a page can draw between steps. */
  readonly onStep?: (snapshot: StepSnapshot) => void | Promise<void>;
  /** Stops generation early (the result covers the tokens generated so far). */
  readonly signal?: AbortSignal;
  /**
   * Prompt-lookup speculative decoding (src/app/speculative-decoder.ts): drafts from the text so far, verified in
   * one forward pass, the cache rolled back past rejected drafts. Greedy output is token-identical to one-token
   * decoding, compressed caches included; sampled output has the same distribution (other random numbers). Not
   * with compareWithFull.
   */
  readonly speculate?: SpeculateOptions;
  /**
   * A history to continue: a previous result's `context` (the next turn of a chat) or {@link Generator.contextOf}
   * (a knowledge text). It is replayed as it was built (prefill in one pass, decode token by token under the
   * decode schedule, compress explicitly) before the prompt, which is then encoded without BOS and prefilled.
   * With a `store`, the longest saved state of the history and prompt is restored instead of recomputed. Not with
   * compareWithFull (speculate goes on from a restored state too).
   */
  readonly continueFrom?: ContextStream;
  /**
   * Saved compressed states to reuse: looked up before the prefill (only the rest is computed), saved after the
   * prompt's prefill, at the end of each segment of `continueFrom` it computes, and at the end. Not with
   * compareWithFull.
   */
  readonly store?: ContextReuse;
}

/**
 * Options of {@link Generator.create}.
 *
 * @example
 * ```ts
 * Generator.create(gpu, checkpoint, tokenizer, { fullFormat: 'f32' });
 * ```
 */
export interface GeneratorOptions {
  /** Format new tokens land in (default 'f16', the baseline ratios are measured against). */
  readonly fullFormat?: FullFormat;
  /** Longest prompt + generation (default the model's seq_len). */
  readonly maxTokens?: number;
  /** Tokens per block (default 16). */
  readonly blockSize?: number;
  /** Sequence slots kept for GPU-resident saved states ({@link Generator.residentStates}; default 0). */
  readonly residentStates?: number;
}

/** Sequence ids of GPU-resident saved states start here (after the ids of a generation). */
const RESIDENT_FIRST_ID = 16;

interface Resolved {
  readonly policy: GenerationPolicy;
  readonly budgetMode: BudgetMode;
  readonly budget: number;
  readonly bits: Bits;
  /** Null for policy 'full' (never compresses). */
  readonly schedule: DecodeSchedule | null;
}

/**
 * The options of {@link Generator.generate} that decide its decode schedule.
 *
 * @example
 * ```ts
 * generator.decodeScheduleFor({ policy: 'h2o', budget: 64, bits: 4 }); // target 48, sinks 4, recent 16
 * ```
 */
export type GenerationScheduleOptions = Pick<GenerateOptions, 'policy' | 'budgetMode' | 'budget' | 'bits' | 'merge' | 'sinks' | 'recent' | 'slack'>;

/** Sequence ids inside a generation: C compressed, F full free-running, T full teacher-forced on C's tokens. */
const SEQ_COMPRESSED = 1;
const SEQ_FULL = 2;
const SEQ_TEACHER = 3;

/**
 * Generates text with a compressed KV cache on the GPU: one model (llama2.c checkpoint) in a {@link GpuLlama},
 * paged caches (one per quantization width, made on first use), decode-time compression by the one decode
 * schedule (src/compress/decode-schedule.ts, the schedule `evaluate` measures) whenever a head would go past the
 * budget, and optionally a full-cache run side by side to measure what compression costs (src/eval/metrics.ts).
 * Browser-safe: the demo page and the CLI both drive it.
 *
 * @example
 * ```ts
 * const generator = Generator.fromBytes(gpu, modelBytes, tokenizerBytes);
 * const { text, report } = await generator.generate({
 *   prompt: 'Once upon a time', steps: 200, policy: 'snapkv', budgetMode: 'adakv', budget: 64, bits: 4,
 *   compareWithFull: true,
 * });
 * console.log(text, report.ratio, report.quality?.agreement);
 * generator.destroy();
 * ```
 */
export class Generator {
  readonly config: LlamaConfig;
  readonly maxTokens: number;
  private readonly backend: CacheSwitch;
  private readonly model: GpuLlama;
  private readonly caches = new Map<Bits, PagedKvCache>();
  private busy = false;
  private destroyed = false;

  private constructor(
    readonly gpu: GpuContext,
    readonly checkpoint: LlamaCheckpoint,
    readonly tokenizer: TextTokenizer,
    private readonly options: GeneratorOptions,
  ) {
    this.config = checkpoint.config;
    this.maxTokens = options.maxTokens ?? checkpoint.config.seqLen;
    if (!Number.isInteger(this.maxTokens) || this.maxTokens < 2) {
      throw new InvalidArgumentError('maxTokens', `must be an integer ≥ 2; got ${this.maxTokens}`);
    }
    if (tokenizer.vocabSize !== checkpoint.config.vocabSize) {
      throw new InvalidArgumentError(
        'tokenizer',
        `has ${tokenizer.vocabSize} tokens but the checkpoint's vocabulary is ${checkpoint.config.vocabSize}: use the tokenizer the model was trained with`,
      );
    }
    this.backend = new CacheSwitch(this.cacheFor(16));
    this.model = new GpuLlama(gpu, checkpoint, this.backend);
  }

  /** A generator for a parsed checkpoint and its tokenizer. */
  static create(gpu: GpuContext, checkpoint: LlamaCheckpoint, tokenizer: TextTokenizer, options: GeneratorOptions = {}): Generator {
    return new Generator(gpu, checkpoint, tokenizer, options);
  }

  /** Parses a llama2.c checkpoint and tokenizer (ModelFormatError on bad files) and creates a generator. */
  static fromBytes(
    gpu: GpuContext,
    model: ArrayBuffer | Uint8Array,
    tokenizer: ArrayBuffer | Uint8Array,
    options: GeneratorOptions = {},
  ): Generator {
    const checkpoint = parseCheckpoint(model);
    return new Generator(gpu, checkpoint, Tokenizer.parse(tokenizer, checkpoint.config.vocabSize), options);
  }

  /** The cache used for `bits` (made on first use: a cache's quantized pool has one bit width). */
  cacheFor(bits: Bits): PagedKvCache {
    let cache = this.caches.get(bits);
    if (!cache) {
      cache = PagedKvCache.create(
        this.gpu,
        cacheOptionsForModel(this.config, {
          bits,
          fullFormat: this.options.fullFormat ?? 'f16',
          blockSize: this.options.blockSize ?? 16,
          // The compressed run, the full-cache run and its teacher-forced fork live side by side.
          seqSlots: 3 + (this.options.residentStates ?? 0),
          maxTokensPerHead: this.maxTokens,
        }),
      );
      this.caches.set(bits, cache);
    }
    return cache;
  }

  /**
   * Encodes the prompt after BOS, prefills it in one chunk, then decodes `steps` tokens one by one, compressing the
   * cache before any step that would take it past the budget. See {@link GenerateOptions}.
   */
  async generate(options: GenerateOptions): Promise<GenerateResult> {
    if (this.destroyed) throw new KvCompactError('this Generator was destroyed; create a new one');
    if (this.busy) throw new KvCompactError('Generator.generate calls must not overlap: await the previous one');
    const opts = this.resolve(options);
    const history = options.continueFrom ?? [];
    // A continuation goes on after the history: BOS is already in it.
    const promptTokens = this.tokenizer.encode(options.prompt, { bos: options.continueFrom === undefined });
    const steps = options.steps;
    if (!Number.isInteger(steps) || steps < 1) throw new InvalidArgumentError('steps', `must be a positive integer; got ${steps}`);
    if (promptTokens.length === 0) {
      throw new InvalidArgumentError(
        'prompt',
        options.continueFrom === undefined
          ? 'must not be empty for a model without a BOS token: the first token is sampled after the prompt'
          : 'must not be empty when continuing a history (continueFrom): its tokens are what the first token is sampled after',
      );
    }
    const historyTokens = streamTokens(normalizeStream(history));
    if (historyTokens + promptTokens.length + steps - 1 > this.maxTokens) {
      throw new InvalidArgumentError(
        'steps',
        options.continueFrom === undefined
          ? `the prompt (${promptTokens.length} tokens with BOS) plus ${steps} steps exceeds the ${this.maxTokens} tokens this generator holds`
          : `the history (${historyTokens} tokens) and prompt (${promptTokens.length} tokens) plus ${steps} steps exceeds the ${this.maxTokens} tokens this generator holds`,
      );
    }
    if (options.compareWithFull === true && options.speculate) {
      throw new InvalidArgumentError('speculate', 'compareWithFull decodes a second cache token by token beside this one; use one or the other');
    }
    const reuse = options.continueFrom !== undefined ? 'continueFrom' : options.store !== undefined ? 'store' : null;
    if (reuse !== null && options.compareWithFull === true) {
      throw new InvalidArgumentError(reuse, 'goes on from a compressed state alone: not with compareWithFull');
    }
    this.busy = true;
    const cache = this.cacheFor(opts.bits);
    this.backend.use(cache);
    const compare = options.compareWithFull === true;
    const used = [SEQ_COMPRESSED, ...(compare ? [SEQ_FULL] : [])];
    for (const id of used) cache.addSequence(id);
    let teacher = false;
    try {
      if (options.speculate) return await this.runSpeculative(cache, opts, options, options.speculate, promptTokens);
      return await this.run(cache, opts, options, promptTokens, compare, () => {
        cache.fork(SEQ_FULL, SEQ_TEACHER);
        teacher = true;
      });
    } finally {
      // Whatever happened, requests waiting for what this one computes go on (single flight, see StoreStates).
      options.store?.finish?.({ cache, seqId: SEQ_COMPRESSED, decode: null, settings: this.stateSettings(opts) });
      for (const id of used) cache.freeSequence(id);
      if (teacher) cache.freeSequence(SEQ_TEACHER);
      this.busy = false;
    }
  }

  private async run(
    cache: PagedKvCache,
    opts: Resolved,
    options: GenerateOptions,
    promptTokens: number[],
    compare: boolean,
    forkTeacher: () => void,
  ): Promise<GenerateResult> {
    const started = performance.now();
    let ttftMs = 0;
    const sampler = { temperature: options.temperature ?? 0, topP: options.topP ?? 0.9, seed: options.seed ?? 42 };
    const sample = createSampler(sampler);
    // Same seed: the free-running full cache draws the same random numbers, so the texts match until the logits differ.
    const sampleFull = createSampler(sampler);
    const compressing = opts.schedule !== null;
    const heatReader = options.heat ? new HeatReader() : null;
    const start = await this.start(cache, opts, options, promptTokens);
    const { stream } = start;
    const { decode } = start;
    let logits = start.logits;
    // Before the texts diverge the free-running full sequence has the compressed run's context: it is the teacher.
    let fullLogits = compare ? await this.model.forward(SEQ_FULL, promptTokens) : null;
    let teacherLogits = fullLogits;
    const tokens: number[] = [];
    const fullTokens: number[] = [];
    let text = '';
    let fullText = '';
    let prev = promptTokens[promptTokens.length - 1] ?? this.tokenizer.bosId ?? -1;
    let fullPrev = prev;
    let divergedAt: number | null = null;
    let divergedAtChar: number | null = null;
    // Perplexity of the generated tokens under the compressed cache and under the teacher (full cache, same text).
    const perplexityCompressed = new PerplexityAccumulator();
    const perplexityFull = new PerplexityAccumulator();
    const agreement = new AgreementAccumulator();

    for (let step = 0; step < options.steps; step++) {
      const token = sample(logits);
      if (step === 0) {
        ttftMs = performance.now() - started;
        // The prompt's end: the state the next request with this prompt (or a longer one) starts from.
        await start.save(stream);
      }
      const piece = this.tokenizer.decode(prev, token);
      tokens.push(token);
      text += piece;
      options.onToken?.(token, piece);
      perplexityCompressed.add(logits, token);
      let quality: RunningQuality | undefined;
      if (fullLogits && teacherLogits) {
        const fullToken = sampleFull(fullLogits);
        fullTokens.push(fullToken);
        fullText += this.tokenizer.decode(fullPrev, fullToken);
        fullPrev = fullToken;
        agreement.add(teacherLogits, logits);
        perplexityFull.add(teacherLogits, token);
        if (divergedAt === null && fullToken !== token) {
          divergedAt = step;
          divergedAtChar = text.length - piece.length;
          // From here the full-cache text goes its own way; a fork keeps a full cache on the compressed run's text.
          if (step + 1 < options.steps) forkTeacher();
        }
        const { agreement: share, agreed, compared } = agreement.result();
        quality = {
          agreement: share,
          agreed,
          compared,
          divergedAt,
          divergedAtChar,
          fullTokens: [...fullTokens],
          fullText,
        };
      }
      prev = token;
      const last = step + 1 >= options.steps || (options.stopAtBos === true && this.tokenizer.stopIds.includes(token)) || options.signal?.aborted === true;
      let compression: CompressionReport | null = null;
      if (!last) {
        compression = decode ? await decode.beforeStep(SEQ_COMPRESSED, 1) : null;
        if (compression) heatReader?.invalidate();
        logits = await this.model.forward(SEQ_COMPRESSED, [token]);
        if (fullLogits) {
          const fullToken = fullTokens[fullTokens.length - 1] ?? token;
          fullLogits = await this.model.forward(SEQ_FULL, [fullToken]);
          teacherLogits = divergedAt === null ? fullLogits : await this.model.forward(SEQ_TEACHER, [token]);
        }
      }
      if (options.onStep) {
        const heat = heatReader ? await heatReader.read(cache, SEQ_COMPRESSED) : undefined;
        await options.onStep({
          step,
          token,
          piece,
          text,
          memory: this.memory(cache),
          keptPerHead: this.keptPerHead(cache),
          blocks: this.blocks(cache),
          compression,
          ...(quality ? { quality } : {}),
          ...(heat ? { heat } : {}),
        });
      }
      if (last) break;
    }

    // The last sampled token is not in the cache: it would be forwarded by the next step.
    const context = normalizeStream([...stream, { kind: 'decode', tokens: tokens.slice(0, -1) }]);
    await start.save(context);
    const storeReport = start.storeReport();
    const memory = this.memory(cache);
    const milliseconds = performance.now() - started;
    const n = tokens.length;
    const report: GenerationReport = {
      policy: opts.policy,
      budgetMode: opts.budgetMode,
      budget: compressing ? opts.budget : null,
      bits: opts.bits,
      promptTokens: promptTokens.length,
      generatedTokens: n,
      cachedTokens: memory.tokens,
      bytesFull: memory.bytesFull,
      bytesCompressed: memory.bytesCompressed,
      ratio: memory.ratio,
      keptPerHead: this.keptPerHead(cache),
      compressions: decode?.reports.length ?? 0,
      lastCompression: decode?.reports[decode.reports.length - 1] ?? null,
      milliseconds,
      tokensPerSecond: (n * 1000) / Math.max(1, milliseconds),
      ttftMs,
      ...(storeReport ? { store: storeReport } : {}),
      ...(compare
        ? {
            quality: {
              ...agreementOf(agreement),
              divergedAt,
              divergedAtChar,
              fullTokens,
              fullText,
              perplexityCompressed: perplexityCompressed.result().perplexity,
              perplexityFull: perplexityFull.result().perplexity,
            },
          }
        : {}),
    };
    return { text, tokens, promptTokens, report, context };
  }

  /** The history and prompt in the cache of SEQ_COMPRESSED, restored from the store where it holds them. */
  private start(cache: PagedKvCache, opts: Resolved, options: GenerateOptions, promptTokens: number[]): Promise<GenerationStart> {
    const stream = normalizeStream([...(options.continueFrom ?? []), { kind: 'prefill', tokens: promptTokens }]);
    const { store } = options;
    return startGeneration({
      model: this.model, cache, seqId: SEQ_COMPRESSED, schedule: opts.schedule, stream, settings: this.stateSettings(opts), ...(store ? { store } : {}),
    });
  }

  private async runSpeculative(cache: PagedKvCache, opts: Resolved, options: GenerateOptions, speculate: SpeculateOptions, promptTokens: number[]): Promise<GenerateResult> {
    const started = performance.now();
    const start = await this.start(cache, opts, options, promptTokens);
    const { stream } = start;
    const view = { memory: () => this.memory(cache), keptPerHead: () => this.keptPerHead(cache), blocks: () => this.blocks(cache) };
    const run = { cache, model: this.model, tokenizer: this.tokenizer, seqId: SEQ_COMPRESSED, view };
    const { decode } = start;
    // Drafts come from the history too: a question over a knowledge text quotes it.
    const contextTokens = streamTokenIds(stream);
    const replayedMs = performance.now() - started;
    const { text, tokens, speculative, firstTokenMs } = await generateSpeculatively(
      run,
      { contextTokens, logits: start.logits, decode, afterFirstToken: () => start.save(stream) },
      options,
      speculate,
    );
    // Speculation leaves the state one-token decoding would (same tokens, same compressions): a later request may
    // go on from it.
    const context = normalizeStream([...stream, { kind: 'decode', tokens: tokens.slice(0, -1) }]);
    await start.save(context);
    const storeReport = start.storeReport();
    const memory = this.memory(cache);
    const milliseconds = performance.now() - started;
    const report: GenerationReport = {
      policy: opts.policy, budgetMode: opts.budgetMode, budget: opts.schedule ? opts.budget : null, bits: opts.bits,
      promptTokens: promptTokens.length, generatedTokens: tokens.length, cachedTokens: memory.tokens,
      bytesFull: memory.bytesFull, bytesCompressed: memory.bytesCompressed, ratio: memory.ratio, keptPerHead: this.keptPerHead(cache),
      compressions: decode?.reports.length ?? 0, lastCompression: decode?.reports[decode.reports.length - 1] ?? null,
      milliseconds, tokensPerSecond: (tokens.length * 1000) / Math.max(1, milliseconds),
      ttftMs: replayedMs + firstTokenMs,
      speculative, ...(storeReport ? { store: storeReport } : {}),
    };
    return { text, tokens, promptTokens, report, context };
  }

  /**
   * The history of a text prefilled after BOS and, with `compress`, compressed to the budget of the generation that
   * continues it (cache-augmented generation: the knowledge is computed once, each question goes on from it).
   *
   * @example
   * ```ts
   * const knowledge = generator.contextOf(document, { compress: true });
   * const { text } = await generator.generate({ prompt: question, steps: 32, continueFrom: knowledge, budget: 64 });
   * ```
   */
  contextOf(text: string, options: { readonly compress?: boolean } = {}): ContextStream {
    const tokens = this.tokenizer.encode(text, { bos: true });
    return options.compress === true ? [{ kind: 'prefill', tokens }, { kind: 'compress' }] : [{ kind: 'prefill', tokens }];
  }

  /**
   * A GPU-resident store of saved states in this generator's caches: a save and a hit are forks (zero copy). Needs
   * {@link GeneratorOptions.residentStates} slots.
   *
   * @throws InvalidArgumentError when the generator keeps no slots for saved states.
   */
  residentStates(namespace: Omit<ResidentStatesOptions, 'seqIds'>): ResidentStates {
    const slots = this.options.residentStates ?? 0;
    if (slots < 1) throw new InvalidArgumentError('residentStates', 'is 0: create the Generator with residentStates ≥ 1 to keep saved states on the GPU');
    return new ResidentStates({ ...namespace, seqIds: Array.from({ length: slots }, (_, i) => RESIDENT_FIRST_ID + i) });
  }

  /** The namespace settings of a generation: what changes the state of its compressed cache. */
  private stateSettings(opts: Resolved): ReturnType<typeof cacheStateSettings> {
    return cacheStateSettings(opts, { fullFormat: this.options.fullFormat ?? 'f16' });
  }

  /**
   * The decode schedule a {@link generate} call with these options runs (null for policy 'full'): the one of
   * src/compress/decode-schedule.ts, for this generator's block size.
   *
   * @throws InvalidArgumentError / UnknownPolicyError for options {@link generate} rejects.
   */
  decodeScheduleFor(options: GenerationScheduleOptions): DecodeSchedule | null {
    return this.resolve(options).schedule;
  }

  private resolve(options: GenerationScheduleOptions): Resolved {
    const policy = options.policy ?? 'snapkv';
    if (policy !== 'full' && !policyNames().includes(policy)) throw new UnknownPolicyError(policy, ['full', ...policyNames()]);
    const budgetMode = options.budgetMode ?? 'uniform';
    if (!BUDGET_MODES.includes(budgetMode)) {
      throw new InvalidArgumentError('budgetMode', `must be one of ${BUDGET_MODES.join(', ')}; got ${String(budgetMode)}`);
    }
    // 'full' never compresses, so never quantizes: its cache needs no quantized pool.
    const bits = policy === 'full' ? 16 : (options.bits ?? 16);
    if (![16, 8, 4, 2].includes(bits)) throw new InvalidArgumentError('bits', `must be 16, 8, 4 or 2; got ${String(bits)}`);
    const budget = options.budget ?? 64;
    if (!Number.isInteger(budget) || budget < 2) {
      throw new InvalidArgumentError('budget', `must be an integer ≥ 2 tokens per KV head; got ${budget}`);
    }
    const schedule =
      policy === 'full'
        ? null
        : decodeSchedule({
            budget,
            blockSize: this.options.blockSize ?? 16,
            ...(options.slack !== undefined ? { slack: options.slack } : {}),
            ...(options.sinks !== undefined ? { sinks: options.sinks } : {}),
            ...(options.recent !== undefined ? { recent: options.recent } : {}),
            compress: { policy, budgetMode, bits, ...(options.merge !== undefined ? { merge: options.merge } : {}) },
          });
    return { policy, budgetMode, budget, bits, schedule };
  }

  private memory(cache: PagedKvCache): GenerationMemory {
    const { bytes, baselineF16, tokens } = cache.sequenceBytes(SEQ_COMPRESSED);
    return {
      tokens,
      bytesFull: baselineF16,
      bytesCompressed: bytes,
      ratio: bytes > 0 ? baselineF16 / bytes : 1,
      pool: cache.memory(),
    };
  }

  private keptPerHead(cache: PagedKvCache): number[][] {
    return keptPerHead(cache, SEQ_COMPRESSED);
  }

  private blocks(cache: PagedKvCache): HeadBlocks[][] {
    return headBlocks(cache, SEQ_COMPRESSED);
  }

  /** Releases the model's weights and every cache. Wait for generate() to finish first. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.model.destroy();
    for (const cache of this.caches.values()) cache.destroy();
    this.caches.clear();
  }
}
