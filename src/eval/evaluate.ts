/**
 * Quality against memory of KV-cache compression, engine-agnostic and browser-safe: every next token of the
 * evaluation text is scored while the cache is compressed at decode time, so it never holds more than the budget.
 *
 * Decode-time schedule (one sequence per window, reset between windows), for a row with budget B:
 * - before each token is appended, if the average tokens held per KV head would pass B, the engine compresses
 *   down to T = B − min(blockSize, ⌊B/4⌋) with the row's policy, budget mode and bits. It so runs once per block
 *   of tokens and the cache never holds more than B per head on average (per head for `uniform`; adaptive modes
 *   move tokens between heads, the total stays ≤ layers × kvHeads × B).
 * - protected tokens: 4 attention sinks and a recent window R = min(32, ⌊B/4⌋, T − 4), so the policy chooses most
 *   of what is kept and the protected set always fits in T (a protected set larger than T would make top-k drop
 *   the NEWEST tokens); SnapKV's
 *   observation window is max(1, R) queries, as SnapKV protects its whole window.
 * - bits < 16: every block older than the recent window is quantized (KIVI residual R; R = 32 for `full` rows),
 *   by a quantize-only compression every blockSize tokens and by every evicting compression.
 * - policy `full`: no eviction (the baseline row); its bits still apply.
 *
 * Metrics per row, over every prediction of every window: `ppl` = exp(mean NLL), `top1` = argmax equals the next
 * token, `agreeWithFull` = argmax equals the full cache's argmax, `klToFull` = mean KL(P_full ‖ P_row) in nats
 * (the full cache = policy `full` at 16 bits), `bytesPerToken` = Σ over steps of the bytes of the blocks the
 * sequence holds / Σ over steps of the tokens of context (so a time average weighted by context length),
 * `ratio` = the f16 baseline per token (layers × kvHeads × 2 × headDim × 2 B) / bytesPerToken, and `ratioAtEnd`
 * = the same ratio at the last step of each window (the whole window in context), averaged over windows.
 */
import type { BudgetMode } from '../compress/budgets.js';
import type { CompressBits, CompressionReport, CompressOptions } from '../compress/options.js';
import { policyNames } from '../compress/registry.js';
import { InvalidArgumentError, UnknownPolicyError } from '../errors.js';
import type { LlamaCheckpoint } from '../model/checkpoint.js';
import { prepareEvalWindows } from '../model/eval-text.js';
import { argmax, klDivergence, logSumExp } from '../model/sampling.js';
import type { Tokenizer } from '../model/tokenizer.js';

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
  readonly bits: CompressBits;
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
  readonly bits?: CompressBits;
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
  readonly bits: CompressBits;
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
  readonly tokenizer: Tokenizer;
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
  /** Attention sinks (default 4). */
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
 * Protected tokens and targets of a row with budget B (see the module doc).
 *
 * @example
 * ```ts
 * decodeSchedule(64, 16, 4); // { target: 48, recent: 16, window: 16 }
 * ```
 */
export function decodeSchedule(budget: number, blockSize: number, sinks: number): { target: number; recent: number; window: number } {
  // Compress a block (or a quarter of a small budget) below the budget, and protect a recent window of a quarter
  // of it: the policy then chooses most of what is kept, instead of sinks and recency choosing it for it.
  const target = budget - Math.min(blockSize, Math.floor(budget / 4));
  const recent = Math.max(0, Math.min(32, Math.floor(budget / 4), target - sinks));
  return { target, recent, window: Math.max(1, recent) };
}

/** One row, resolved. */
interface RowPlan {
  readonly policy: string;
  readonly budgetMode: BudgetMode | null;
  readonly budget: number | null;
  readonly bits: CompressBits;
}

function resolveRow(spec: EvalRowSpec, blockSize: number, window: number, sinks: number): RowPlan {
  const bits = spec.bits ?? 16;
  if (![32, 16, 8, 4, 2].includes(bits)) throw new InvalidArgumentError('bits', `must be 32, 16, 8, 4 or 2; got ${String(bits)}`);
  if (spec.policy === 'full') return { policy: 'full', budgetMode: null, budget: null, bits };
  if (!policyNames().includes(spec.policy)) throw new UnknownPolicyError(spec.policy, ['full', ...policyNames()]);
  const budget = spec.budget ?? null;
  if (budget === null || !Number.isInteger(budget) || budget <= blockSize) {
    throw new InvalidArgumentError(
      'budget',
      `policy ${spec.policy} needs an integer budget above the block size ${blockSize}; got ${String(budget)}`,
    );
  }
  if (budget >= window) throw new InvalidArgumentError('budget', `${budget} is not below the window of ${window} tokens: nothing to evict`);
  if (decodeSchedule(budget, blockSize, sinks).target <= sinks) {
    throw new InvalidArgumentError('budget', `${budget} leaves no room beyond the ${sinks} sinks once compressed to budget − ${blockSize}`);
  }
  return { policy: spec.policy, budgetMode: spec.budgetMode ?? 'uniform', budget, bits };
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
  const sinks = options.sinks ?? 4;
  if (!Number.isInteger(blockSize) || blockSize <= 0) throw new InvalidArgumentError('blockSize', `must be a positive integer; got ${blockSize}`);
  const plans = options.rows.map((row) => resolveRow(row, blockSize, window, sinks));
  const windows = prepareEvalWindows(options.text, options.tokenizer, { window, windows: windowCount });
  const predictions = windows.reduce((a, w) => a + w.length - 1, 0);
  const referencePlan: RowPlan = { policy: 'full', budgetMode: null, budget: null, bits: 16 };
  const referenceIndex = plans.findIndex((p) => p.policy === 'full' && p.bits === 16);
  const total = (plans.length + (referenceIndex < 0 ? 1 : 0)) * windows.length;
  let done = 0;
  const progress = (row: number, label: string): void => {
    done++;
    options.onProgress?.({ done, total, label, row, rows: plans.length });
  };
  const context = { options, windows, window, blockSize, sinks };
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
    settings: { window, windows: windows.length, predictions, blockSize, sinks, seconds: (performance.now() - started) / 1000 },
  };
}

/**
 * A short label of a row: "snapkv adakv B=64 int4", "full f16".
 *
 * @example
 * ```ts
 * rowLabel({ policy: 'h2o', budgetMode: 'uniform', budget: 32, bits: 8 }); // 'h2o uniform B=32 int8'
 * ```
 */
export function rowLabel(row: { policy: string; budgetMode?: BudgetMode | null; budget?: number | null; bits?: CompressBits }): string {
  const bits = row.bits ?? 16;
  const storage = bits >= 16 ? `f${bits}` : `int${bits}`;
  if (row.policy === 'full' || row.budget === null || row.budget === undefined) return `${row.policy} ${storage}`;
  return `${row.policy} ${row.budgetMode ?? 'uniform'} B=${row.budget} ${storage}`;
}

interface RowContext {
  readonly options: EvaluateOptions;
  readonly windows: readonly Int32Array[];
  readonly window: number;
  readonly blockSize: number;
  readonly sinks: number;
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
  const heads = nLayers * nKvHeads;
  const baselinePerToken = heads * 2 * headSize * 2;
  const schedule = plan.budget === null ? null : decodeSchedule(plan.budget, ctx.blockSize, ctx.sinks);
  const recent = schedule?.recent ?? 32;
  const quantize = plan.bits < 16;
  const engine = await ctx.options.engine({
    checkpoint,
    bits: plan.bits,
    blockSize: ctx.blockSize,
    maxTokens: ctx.window,
    observationWindow: 32,
  });
  let nll = 0;
  let hits = 0;
  let agree = 0;
  let kl = 0;
  let count = 0;
  let bytesSum = 0;
  let contextSum = 0;
  let endRatioSum = 0;
  let compressions = 0;
  let step = 0;
  try {
    for (let w = 0; w < ctx.windows.length; w++) {
      const ids = ctx.windows[w] as Int32Array;
      engine.reset();
      // Tokens held, summed over heads (every append adds one per head; a compression reports the new counts).
      let held = 0;
      let sinceCompress = 0;
      for (let pos = 0; pos + 1 < ids.length; pos++) {
        if (schedule !== null && plan.budget !== null && held + heads > Math.floor(heads * plan.budget)) {
          const report = await engine.compress({
            policy: plan.policy,
            budget: schedule.target,
            budgets: plan.budgetMode ?? 'uniform',
            bits: plan.bits,
            sinks: ctx.sinks,
            recent,
            window: schedule.window,
          });
          held = report.keptPerLayer.reduce((a, b) => a + b, 0);
          sinceCompress = 0;
          compressions++;
        } else if (quantize && sinceCompress >= ctx.blockSize) {
          await engine.compress({ policy: 'streaming', bits: plan.bits, sinks: ctx.sinks, recent });
          sinceCompress = 0;
          compressions++;
        }
        const logits = await engine.forward(ids[pos] as number, pos);
        held += heads;
        sinceCompress++;
        const target = ids[pos + 1] as number;
        nll += logSumExp(logits) - (logits[target] as number);
        const top = argmax(logits);
        if (top === target) hits++;
        if (recordLogits) recordLogits.push(Float32Array.from(logits));
        if (reference) {
          const full = reference.logits[step];
          if (!full) throw new InvalidArgumentError('reference', 'the reference run scored fewer steps than this row');
          if (argmax(full) === top) agree++;
          kl += klDivergence(full, logits);
        } else {
          agree++;
        }
        const bytes = engine.bytes();
        bytesSum += bytes;
        contextSum += pos + 1;
        if (pos + 2 === ids.length) endRatioSum += bytes > 0 ? (baselinePerToken * (pos + 1)) / bytes : Infinity;
        count++;
        step++;
      }
      onWindow(w);
    }
  } finally {
    await engine.destroy?.();
  }
  const bytesPerToken = contextSum > 0 ? bytesSum / contextSum : 0;
  return {
    policy: plan.policy,
    budgetMode: plan.budgetMode,
    budget: plan.budget,
    bits: plan.bits,
    ppl: Math.exp(nll / count),
    top1: hits / count,
    agreeWithFull: agree / count,
    klToFull: kl / count,
    bytesPerToken,
    ratio: bytesPerToken > 0 ? baselinePerToken / bytesPerToken : Infinity,
    ratioAtEnd: endRatioSum / ctx.windows.length,
    compressions: compressions / ctx.windows.length,
    seconds: (performance.now() - started) / 1000,
  };
}

/**
 * The rows of a sweep: `full` once per bits (no budget), every other policy × budget × bits × budget mode.
 *
 * @example
 * ```ts
 * sweepRows({ policies: ['full', 'h2o'], budgets: [64], bits: [16, 4], budgetModes: ['uniform'] }).length; // 2 + 2
 * ```
 */
export function sweepRows(sweep: {
  readonly policies: readonly string[];
  readonly budgets: readonly number[];
  readonly bits: readonly CompressBits[];
  readonly budgetModes: readonly BudgetMode[];
}): EvalRowSpec[] {
  const rows: EvalRowSpec[] = [];
  for (const policy of sweep.policies) {
    if (policy === 'full') {
      for (const bits of sweep.bits) rows.push({ policy, bits });
      continue;
    }
    for (const budget of sweep.budgets) {
      for (const bits of sweep.bits) {
        for (const budgetMode of sweep.budgetModes) rows.push({ policy, budget, bits, budgetMode });
      }
    }
  }
  return rows;
}
