import type { Bits } from '../format/layout.js';
/**
 * Quality against memory of KV-cache compression, engine-agnostic and browser-safe: every next token of the
 * evaluation text is scored while the cache is compressed at decode time, so it never holds more than the budget.
 *
 * Decode-time schedule (one sequence per window, reset between windows): the one of
 * src/compress/decode-schedule.ts, run by a DecodeCompressor, with the row's policy, budget mode and bits. For a
 * budget B and block size b it compresses, before the token that would take the cache past B per head (per head
 * for `uniform`; adaptive modes move tokens between heads, the total stays ≤ layers × kvHeads × B), down to
 * T = B − min(b, ⌊B/4⌋), keeping 4 attention sinks (⌊B/4⌋ below B = 16) and a recent window
 * R = min(32, ⌊B/4⌋, T − sinks) (SnapKV's observation window max(1, R)); with bits < 16 it also quantizes every block older than R (R = 32 for `full`
 * rows) once b tokens have come since the last compression. Policy `full` never evicts (the baseline row); its
 * bits still apply.
 *
 * Metrics per row (src/eval/metrics.ts), over every prediction of every window: `ppl` = exp(mean NLL), `top1` =
 * argmax equals the next token, `agreeWithFull` = argmax equals the full cache's argmax, `klToFull` = mean
 * KL(P_full ‖ P_row) in nats (the full cache = policy `full` at 16 bits), `bytesPerToken` = Σ over steps of the bytes of the blocks the
 * sequence holds / Σ over steps of the tokens of context (so a time average weighted by context length),
 * `ratio` = the f16 baseline per token (layers × kvHeads × 2 × headDim × 2 B) / bytesPerToken, and `ratioAtEnd`
 * = the same ratio at the last step of each window (the whole window in context), averaged over windows.
 */
import type { BudgetMode } from '../compress/budgets.js';
import { DecodeCompressor, type CompressibleCache } from '../compress/decode-compression.js';
import { decodeSchedule, type DecodeSchedule } from '../compress/decode-schedule.js';
import { DEFAULT_SINKS } from '../compress/policy.js';
import { DEFAULT_MERGE_SLOTS, IMPLEMENTED_MERGE_MODES, type CompressionReport, type CompressOptions, type MergeMode } from '../compress/options.js';
import { policyNames } from '../compress/registry.js';
import { InvalidArgumentError, UnknownPolicyError } from '../errors.js';
import type { LlamaCheckpoint } from '../model/checkpoint.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import { prepareEvalWindows } from './eval-text.js';
import { AgreementAccumulator, PerplexityAccumulator } from './metrics.js';

/**
 * A model plus compressible KV cache holding ONE sequence, as {@link evaluate} drives it. The CPU engine
 * (src/eval/cpu-engine.ts) runs ReferenceLlama on a CpuKvCache; a GPU engine (GpuLlama on a PagedKvCache with the
 * GPU compressor) plugs in through src/eval/gpu-engine.ts.
 *
 * @example
 * ```ts
 * const engine: EvalEngine = await factory({ checkpoint, bits: 4, blockSize: 16, maxTokens: 512, observationWindow: 32 });
 * engine.reset();
 * const logits = await engine.forward(1, 0);
 * ```
 */
export interface EvalEngine {
  /** Empties the cache: the next forward is position 0 of a new sequence. */
  reset(): void;
  /** Runs `token` at position `pos` (0, 1, 2, … since the last reset) and returns the logits `[vocab]`. */
  forward(token: number, pos: number): Promise<Float32Array> | Float32Array;
  /** Compresses the sequence (CompressOptions semantics) and reports what it did. */
  compress(options: CompressOptions): Promise<CompressionReport> | CompressionReport;
  /** Tokens (layer, kvHead) of the sequence holds now: what the decode schedule looks at. */
  tokenCount(layer: number, kvHead: number): number;
  /** Bytes of the blocks the sequence holds now. */
  bytes(): number;
  /** Releases what the engine holds (GPU buffers); optional. */
  destroy?(): void | Promise<void>;
}

/**
 * What an engine is built for: one row's storage settings.
 *
 * @example
 * ```ts
 * const config: EvalEngineConfig = { checkpoint, bits: 8, blockSize: 16, maxTokens: 512, observationWindow: 32 };
 * ```
 */
export interface EvalEngineConfig {
  readonly checkpoint: LlamaCheckpoint;
  /** 32: f32 blocks; 16: f16 blocks; 8/4/2: f16 blocks plus a quantized pool of these bits. */
  readonly bits: Bits;
  readonly blockSize: number;
  /** The most tokens one head holds (the window length). */
  readonly maxTokens: number;
  /** Queries kept for SnapKV/TOVA. */
  readonly observationWindow: number;
}

/**
 * Builds an engine per row (rows differ in bits, so in pools).
 *
 * @example
 * ```ts
 * const factory: EvalEngineFactory = (config) => new CpuEvalEngine(config);
 * ```
 */
export type EvalEngineFactory = (config: EvalEngineConfig) => EvalEngine | Promise<EvalEngine>;

/**
 * One configuration to evaluate. `policy: 'full'` never evicts (budget and budgetMode are ignored).
 *
 * @example
 * ```ts
 * const rows: EvalRowSpec[] = [{ policy: 'full', bits: 16 }, { policy: 'snapkv', budget: 64, budgetMode: 'adakv', bits: 4 }];
 * ```
 */
export interface EvalRowSpec {
  readonly policy: string;
  /** Default 'uniform'. */
  readonly budgetMode?: BudgetMode;
  /** Average tokens per KV head the cache may hold (required unless policy is 'full'); must exceed blockSize. */
  readonly budget?: number | null;
  /** Default 16. */
  readonly bits?: Bits;
  /** What evicted tokens become (default 'none'; ignored by `full`, which evicts nothing). */
  readonly merge?: MergeMode;
  /** Slot tokens per head under merge 'slots' (default DEFAULT_MERGE_SLOTS; part of the budget). */
  readonly mergeSlots?: number;
}

/**
 * One evaluated row (see the module doc for every metric's definition).
 *
 * @example
 * ```ts
 * const { ppl, ratio } = report.rows[0];
 * ```
 */
export interface EvalRow {
  readonly policy: string;
  readonly budgetMode: BudgetMode | null;
  readonly budget: number | null;
  readonly bits: Bits;
  /** What evicted tokens became ('none' for `full` rows; absent in reports written before merging existed). */
  readonly merge?: MergeMode;
  /** Slot tokens per head, on merge 'slots' rows only. */
  readonly mergeSlots?: number;
  readonly ppl: number;
  readonly top1: number;
  readonly agreeWithFull: number;
  readonly klToFull: number;
  readonly bytesPerToken: number;
  readonly ratio: number;
  readonly ratioAtEnd: number;
  /** Compressions run per window, on average. */
  readonly compressions: number;
  readonly seconds: number;
}

/**
 * Progress of {@link evaluate}, reported once per window of each row.
 *
 * @example
 * ```ts
 * const onProgress = (p: EvalProgress) => console.error(`${p.done}/${p.total} ${p.label}`);
 * ```
 */
export interface EvalProgress {
  /** Windows evaluated so far, over all rows (the reference run included). */
  readonly done: number;
  readonly total: number;
  readonly label: string;
  readonly row: number;
  readonly rows: number;
}

/**
 * Inputs of {@link evaluate}.
 *
 * @example
 * ```ts
 * await evaluate({ checkpoint, tokenizer, text, rows, engine: cpuEngineFactory });
 * ```
 */
export interface EvaluateOptions {
  readonly checkpoint: LlamaCheckpoint;
  readonly tokenizer: TextTokenizer;
  readonly text: string;
  /** Tokens per window, BOS included (default 512). */
  readonly window?: number;
  /** Windows (default 8). */
  readonly windows?: number;
  readonly rows: readonly EvalRowSpec[];
  readonly engine: EvalEngineFactory;
  readonly onProgress?: (progress: EvalProgress) => void;
  /** Tokens per block (default 16). */
  readonly blockSize?: number;
  /** Attention sinks (default 4; min(4, ⌊B/4⌋) for a budget B below 16). */
  readonly sinks?: number;
}

/**
 * The result of {@link evaluate}: one row per spec, in order, plus the settings that produced them.
 *
 * @example
 * ```ts
 * const { rows, settings } = await evaluate(options);
 * ```
 */
export interface EvalReport {
  readonly rows: EvalRow[];
  readonly settings: {
    readonly window: number;
    readonly windows: number;
    readonly predictions: number;
    readonly blockSize: number;
    readonly sinks: number;
    readonly seconds: number;
  };
}

/**
 * The decode schedule of a row: what {@link evaluate} compresses to, when and with which protected tokens (the
 * rule is src/compress/decode-schedule.ts's). `full` rows never evict; with bits < 16 they only quantize.
 *
 * @throws InvalidArgumentError when the schedule rejects the row's budget and sinks.
 * @example
 * ```ts
 * rowSchedule({ policy: 'h2o', budget: 64, bits: 4 }); // target 48, sinks 4, recent 16, window 16
 * ```
 */
export function rowSchedule(row: EvalRowSpec, settings: { readonly blockSize?: number; readonly sinks?: number } = {}): DecodeSchedule {
  const full = row.policy === 'full';
  const bits = row.bits ?? 16;
  return decodeSchedule({
    budget: full ? null : (row.budget ?? null),
    blockSize: settings.blockSize ?? 16,
    ...(settings.sinks !== undefined ? { sinks: settings.sinks } : {}),
    // The sweep does not report the attention-mass diagnostic, and on SnapKV/TOVA it costs a window pass.
    compress: full
      ? { policy: 'streaming', bits, measureMass: false }
      : {
          policy: row.policy,
          budgetMode: row.budgetMode ?? 'uniform',
          bits,
          measureMass: false,
          merge: row.merge ?? 'none',
          ...(row.merge === 'slots' && row.mergeSlots !== undefined ? { mergeSlots: row.mergeSlots } : {}),
        },
  });
}

/** One row, resolved. */
interface RowPlan {
  readonly policy: string;
  readonly budgetMode: BudgetMode | null;
  readonly budget: number | null;
  readonly bits: Bits;
  readonly merge: MergeMode;
  /** Slot tokens per head (merge 'slots'), else undefined. */
  readonly mergeSlots: number | undefined;
  readonly schedule: DecodeSchedule;
}

function resolveRow(spec: EvalRowSpec, blockSize: number, window: number, sinks: number | undefined): RowPlan {
  const bits = spec.bits ?? 16;
  if (![32, 16, 8, 4, 2].includes(bits)) throw new InvalidArgumentError('bits', `must be 32, 16, 8, 4 or 2; got ${String(bits)}`);
  if (spec.policy === 'full') {
    return { policy: 'full', budgetMode: null, budget: null, bits, merge: 'none', mergeSlots: undefined, schedule: rowSchedule({ policy: 'full', bits }, { blockSize, sinks }) };
  }
  if (!policyNames().includes(spec.policy)) throw new UnknownPolicyError(spec.policy, ['full', ...policyNames()]);
  const budget = spec.budget ?? null;
  if (budget === null || !Number.isInteger(budget) || budget <= blockSize) {
    throw new InvalidArgumentError(
      'budget',
      `policy ${spec.policy} needs an integer budget above the block size ${blockSize}; got ${String(budget)}`,
    );
  }
  if (budget >= window) throw new InvalidArgumentError('budget', `${budget} is not below the window of ${window} tokens: nothing to evict`);
  const budgetMode = spec.budgetMode ?? 'uniform';
  const merge = spec.merge ?? 'none';
  if (!(IMPLEMENTED_MERGE_MODES as readonly string[]).includes(merge)) {
    throw new InvalidArgumentError('merge', `must be one of ${IMPLEMENTED_MERGE_MODES.join(', ')}; got ${String(merge)}`);
  }
  const mergeSlots = merge === 'slots' ? (spec.mergeSlots ?? DEFAULT_MERGE_SLOTS) : undefined;
  const schedule = rowSchedule({ policy: spec.policy, budget, budgetMode, bits, merge, ...(mergeSlots !== undefined ? { mergeSlots } : {}) }, { blockSize, sinks });
  return { policy: spec.policy, budgetMode, budget, bits, merge, mergeSlots, schedule };
}

/** The full cache's prediction at each step: its logits' argmax and log-partition, for agreement and KL. */
interface Reference {
  readonly logits: Float32Array[];
}

/**
 * Evaluates every row on the same windows (prepared as ../shared/README.md says). The full cache at 16 bits runs
 * first as the reference of `agreeWithFull` / `klToFull` (reused when it is also a row).
 *
 * @throws InvalidArgumentError / UnknownPolicyError for a bad row before anything runs.
 * @example
 * ```ts
 * const report = await evaluate({
 *   checkpoint, tokenizer, text, window: 512, windows: 8, engine: cpuEngineFactory,
 *   rows: [{ policy: 'full', bits: 16 }, { policy: 'h2o', budget: 64, budgetMode: 'uniform', bits: 16 }],
 * });
 * console.table(report.rows);
 * ```
 */
export async function evaluate(options: EvaluateOptions): Promise<EvalReport> {
  const started = performance.now();
  const window = options.window ?? 512;
  const windowCount = options.windows ?? 8;
  const blockSize = options.blockSize ?? 16;
  if (!Number.isInteger(blockSize) || blockSize <= 0) throw new InvalidArgumentError('blockSize', `must be a positive integer; got ${blockSize}`);
  const plans = options.rows.map((row) => resolveRow(row, blockSize, window, options.sinks));
  const windows = prepareEvalWindows(options.text, options.tokenizer, { window, windows: windowCount });
  const predictions = windows.reduce((a, w) => a + w.length - 1, 0);
  const referencePlan = resolveRow({ policy: 'full', bits: 16 }, blockSize, window, options.sinks);
  const referenceIndex = plans.findIndex((p) => p.policy === 'full' && p.bits === 16);
  const total = (plans.length + (referenceIndex < 0 ? 1 : 0)) * windows.length;
  let done = 0;
  const progress = (row: number, label: string): void => {
    done++;
    options.onProgress?.({ done, total, label, row, rows: plans.length });
  };
  const context = { options, windows, window, blockSize };
  const referenceLogits: Float32Array[] = [];
  const referenceRow = await runRow(context, referencePlan, null, referenceLogits, (w) =>
    progress(referenceIndex, `full 16-bit reference, window ${w + 1}/${windows.length}`),
  );
  const reference: Reference = { logits: referenceLogits };
  const rows: EvalRow[] = [];
  for (let i = 0; i < plans.length; i++) {
    const plan = plans[i] as RowPlan;
    if (i === referenceIndex) {
      rows.push(referenceRow);
      continue;
    }
    rows.push(await runRow(context, plan, reference, null, (w) => progress(i, `${rowLabel(plan)}, window ${w + 1}/${windows.length}`)));
  }
  return {
    rows,
    settings: {
      window,
      windows: windows.length,
      predictions,
      blockSize,
      sinks: options.sinks ?? DEFAULT_SINKS,
      seconds: (performance.now() - started) / 1000,
    },
  };
}

/**
 * A short label of a row: "snapkv adakv B=64 int4", "h2o uniform B=32 f16 merge=nearest", "full f16".
 *
 * @example
 * ```ts
 * rowLabel({ policy: 'h2o', budgetMode: 'uniform', budget: 32, bits: 8 }); // 'h2o uniform B=32 int8'
 * ```
 */
export function rowLabel(row: { policy: string; budgetMode?: BudgetMode | null; budget?: number | null; bits?: Bits; merge?: MergeMode; mergeSlots?: number }): string {
  const bits = row.bits ?? 16;
  const storage = bits >= 16 ? `f${bits}` : `int${bits}`;
  if (row.policy === 'full' || row.budget === null || row.budget === undefined) return `${row.policy} ${storage}`;
  const merge = row.merge === undefined || row.merge === 'none' ? '' : ` merge=${row.merge}${row.merge === 'slots' && row.mergeSlots !== undefined ? `(${row.mergeSlots})` : ''}`;
  return `${row.policy} ${row.budgetMode ?? 'uniform'} B=${row.budget} ${storage}${merge}`;
}

interface RowContext {
  readonly options: EvaluateOptions;
  readonly windows: readonly Int32Array[];
  readonly window: number;
  readonly blockSize: number;
}

/** The sequence an engine drives, seen as the cache a DecodeCompressor runs the schedule on. */
const SEQ = 0;

function engineAsCache(engine: EvalEngine, shape: CompressibleCache['shape']): CompressibleCache {
  return {
    shape,
    tokenCount: (_seq, layer, kvHead) => engine.tokenCount(layer, kvHead),
    compress: (_seq, options) => engine.compress(options),
  };
}

async function runRow(
  ctx: RowContext,
  plan: RowPlan,
  reference: Reference | null,
  recordLogits: Float32Array[] | null,
  onWindow: (w: number) => void,
): Promise<EvalRow> {
  const started = performance.now();
  const { checkpoint } = ctx.options;
  const { nLayers, nKvHeads, headSize } = checkpoint.config;
  const baselinePerToken = nLayers * nKvHeads * 2 * headSize * 2;
  const engine = await ctx.options.engine({
    checkpoint,
    bits: plan.bits,
    blockSize: ctx.blockSize,
    maxTokens: ctx.window,
    observationWindow: 32,
  });
  const cache = engineAsCache(engine, { layers: nLayers, kvHeads: nKvHeads, blockSize: ctx.blockSize });
  const perplexity = new PerplexityAccumulator();
  const agreement = new AgreementAccumulator();
  let bytesSum = 0;
  let contextSum = 0;
  let endRatioSum = 0;
  let compressions = 0;
  let step = 0;
  try {
    for (let w = 0; w < ctx.windows.length; w++) {
      const ids = ctx.windows[w] as Int32Array;
      engine.reset();
      // A new sequence: a new driver of the row's schedule.
      const decode = new DecodeCompressor(cache, plan.schedule);
      for (let pos = 0; pos + 1 < ids.length; pos++) {
        if ((await decode.beforeStep(SEQ, 1)) !== null) compressions++;
        const logits = await engine.forward(ids[pos] as number, pos);
        perplexity.add(logits, ids[pos + 1] as number);
        if (recordLogits) recordLogits.push(Float32Array.from(logits));
        if (reference) {
          const full = reference.logits[step];
          if (!full) throw new InvalidArgumentError('reference', 'the reference run scored fewer steps than this row');
          agreement.add(full, logits);
        }
        const bytes = engine.bytes();
        bytesSum += bytes;
        contextSum += pos + 1;
        if (pos + 2 === ids.length) endRatioSum += bytes > 0 ? (baselinePerToken * (pos + 1)) / bytes : Infinity;
        step++;
      }
      onWindow(w);
    }
  } finally {
    await engine.destroy?.();
  }
  const { perplexity: ppl, top1 } = perplexity.result();
  // The reference row is its own reference: full agreement, no divergence.
  const compared = reference ? agreement.result() : { agreement: 1, meanKl: 0 };
  const bytesPerToken = contextSum > 0 ? bytesSum / contextSum : 0;
  return {
    policy: plan.policy,
    budgetMode: plan.budgetMode,
    budget: plan.budget,
    bits: plan.bits,
    merge: plan.merge,
    ...(plan.mergeSlots !== undefined ? { mergeSlots: plan.mergeSlots } : {}),
    ppl,
    top1,
    agreeWithFull: compared.agreement,
    klToFull: compared.meanKl,
    bytesPerToken,
    ratio: bytesPerToken > 0 ? baselinePerToken / bytesPerToken : Infinity,
    ratioAtEnd: endRatioSum / ctx.windows.length,
    compressions: compressions / ctx.windows.length,
    seconds: (performance.now() - started) / 1000,
  };
}

/**
 * The rows of a sweep: `full` once per bits (no budget), every other policy × budget × bits × budget mode × merge
 * mode (default just 'none').
 *
 * @example
 * ```ts
 * sweepRows({ policies: ['full', 'h2o'], budgets: [64], bits: [16, 4], budgetModes: ['uniform'] }).length; // 2 + 2
 * ```
 */
export function sweepRows(sweep: {
  readonly policies: readonly string[];
  readonly budgets: readonly number[];
  readonly bits: readonly Bits[];
  readonly budgetModes: readonly BudgetMode[];
  readonly merges?: readonly MergeMode[];
  /** Slot tokens per head of the merge 'slots' rows (default DEFAULT_MERGE_SLOTS). */
  readonly mergeSlots?: number;
}): EvalRowSpec[] {
  const rows: EvalRowSpec[] = [];
  const merges = sweep.merges ?? ['none'];
  for (const policy of sweep.policies) {
    if (policy === 'full') {
      for (const bits of sweep.bits) rows.push({ policy, bits });
      continue;
    }
    for (const budget of sweep.budgets) {
      for (const bits of sweep.bits) {
        for (const budgetMode of sweep.budgetModes) {
          for (const merge of merges) {
            const slots = merge === 'slots' && sweep.mergeSlots !== undefined ? { mergeSlots: sweep.mergeSlots } : {};
            rows.push({ policy, budget, bits, budgetMode, ...(merge === 'none' ? {} : { merge }), ...slots });
          }
        }
      }
    }
  }
  return rows;
}
