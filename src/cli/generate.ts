import type { Bits } from '../format/layout.js';
import { Generator, type GenerateOptions, type GenerationReport, type GeneratorOptions } from '../app/generator.js';
import type { SpeculateOptions } from '../app/speculative-decoder.js';
import { BUDGET_MODES, type BudgetMode } from '../compress/budgets.js';
import { GPU_MERGE_MODES } from '../compress/options.js';
import { policyNames } from '../compress/registry.js';
import { UsageError } from '../errors.js';
import {
  ADAPTER_FLAG,
  adapterFlag,
  choiceFlag,
  type CommandSpec,
  type FlagTable,
  type FlagValues,
  integerFlag,
  numberFlag,
  parseFlags,
  printUsage,
} from './flags.js';
import { openCliGpu } from './gpu.js';
import { chatPrompt, loadCliModel, MODEL_FLAGS } from './model-flag.js';
import { GPU_TIER_STATES, splitGpuTier, STORE_FLAGS, storeFromFlags } from './store-flags.js';

/**
 * The speculative decoding flags `generate`, `demo` and `cag` share.
 *
 * @example
 * ```ts
 * const speculate = speculateFlags({ speculate: 'ngram', 'num-speculative': '6' });
 * ```
 */
export const SPECULATE_FLAGS = {
  speculate: { type: 'string', value: 'ngram', help: 'speculative decoding by prompt lookup: drafts verified in one pass (greedy output unchanged)' },
  'num-speculative': { type: 'string', value: 'K', help: 'with --speculate: the most draft tokens per pass (default 10)' },
  'lookup-max': { type: 'string', value: 'N', help: 'with --speculate: longest n-gram looked up (default 3)' },
  'lookup-min': { type: 'string', value: 'N', help: 'with --speculate: shortest n-gram looked up (default 1)' },
  'fixed-speculative': { type: 'boolean', help: 'with --speculate: always draft --num-speculative, not what measured acceptance and pass cost favour' },
  'verify-cost': { type: 'string', value: 'C', help: 'with --speculate: cost of one more verified token in one-token passes (≈0 on a real GPU; default measured)' },
} as const satisfies FlagTable;

/**
 * The flags `generate` and `demo` share (their defaults differ: see each command's help).
 *
 * @example
 * ```ts
 * const values: FlagValues<typeof GENERATION_FLAGS> = { policy: 'h2o', budget: '16' };
 * ```
 */
export const GENERATION_FLAGS = {
  prompt: { type: 'string', value: 'TEXT', help: 'text to continue (an empty string lets the model start)' },
  steps: { type: 'string', value: 'N', help: 'tokens to generate' },
  policy: { type: 'string', value: 'P', help: 'eviction policy, or full for no compression' },
  budget: { type: 'string', value: 'B', help: 'tokens kept per KV head on average' },
  bits: { type: 'string', value: '16|8|4|2', help: 'bits of the cache blocks older than the recent window' },
  'budget-mode': { type: 'string', value: 'M', help: `budget split: ${BUDGET_MODES.join(', ')}` },
  merge: { type: 'string', value: 'M', help: `what evicted tokens become: ${GPU_MERGE_MODES.join(', ')} (default none)` },
  compare: { type: 'boolean', help: 'also run a full cache: top-1 agreement, perplexity, KL' },
  ...SPECULATE_FLAGS,
  temperature: { type: 'string', value: 'T', help: 'sampling temperature, 0 = greedy (default 0)' },
  'top-p': { type: 'string', value: 'P', help: 'nucleus sampling mass in (0, 1] (default 0.9)' },
  seed: { type: 'string', value: 'S', help: 'random seed (default 42)' },
  ...MODEL_FLAGS,
  chat: { type: 'boolean', help: "HF models: the prompt as the user's turn of the model's chat template; stops at EOS" },
  json: { type: 'boolean', help: 'print { text, tokens, report } as JSON' },
  adapter: ADAPTER_FLAG,
} as const satisfies FlagTable;

/**
 * Parsed values of {@link GENERATION_FLAGS}.
 *
 * @example
 * ```ts
 * const { generator } = await openGenerator(values, options);
 * ```
 */
export type GenerationFlagValues = FlagValues<typeof GENERATION_FLAGS>;

/** The defaults a command gives the generation flags, for its help text and for what is not given. */
type GenerationDefaults = Omit<GenerateOptions, 'onToken' | 'onStep' | 'signal'>;

/**
 * The help of a generation command: {@link GENERATION_FLAGS} with this command's defaults appended.
 *
 * @example
 * ```ts
 * const DEMO_COMMAND = generationCommand('demo', 'a story with a compressed cache', DEMO_DEFAULTS);
 * ```
 */
export function generationCommand(name: string, summary: string, defaults: GenerationDefaults): CommandSpec<typeof GENERATION_FLAGS> {
  const shown: Partial<Record<keyof typeof GENERATION_FLAGS, unknown>> = {
    prompt: name === 'generate' ? undefined : JSON.stringify(defaults.prompt),
    steps: defaults.steps,
    policy: defaults.policy ?? 'snapkv',
    budget: defaults.budget ?? 64,
    bits: defaults.bits ?? 16,
    'budget-mode': defaults.budgetMode ?? 'uniform',
    ...(defaults.compareWithFull ? { compare: 'on' } : {}),
  };
  const flags = Object.fromEntries(
    Object.entries(GENERATION_FLAGS).map(([flag, spec]) => {
      const value = shown[flag as keyof typeof GENERATION_FLAGS];
      return [flag, value === undefined ? spec : { ...spec, help: `${spec.help} (default ${String(value)})` }];
    }),
  ) as unknown as typeof GENERATION_FLAGS;
  return { name, summary, flags };
}

/**
 * `kvcompact generate`: its flags and help.
 *
 * @example
 * ```ts
 * process.stdout.write(usageText(GENERATE_COMMAND));
 * ```
 */
const GENERATE_BASE = generationCommand(
  'generate',
  'generate text with a compressed KV cache (--prompt is required; --policy full = no compression)',
  { prompt: '', steps: 64 },
);
export const GENERATE_COMMAND: CommandSpec<typeof GENERATION_FLAGS & typeof STORE_FLAGS> = { ...GENERATE_BASE, flags: { ...GENERATE_BASE.flags, ...STORE_FLAGS } };

/** Flags that mean nothing with --policy full: it keeps every token, unquantized. */
const COMPRESSION_ONLY_FLAGS = ['budget', 'bits', 'budget-mode', 'merge'] as const;

/**
 * Checks the generation flags shared by `generate` and `demo` and fills `defaults` for what is not given.
 * Returns 'help' for `--help`.
 *
 * @example
 * ```ts
 * const parsed = parseGenerationFlags(GENERATE_COMMAND, ['--policy', 'h2o', '--budget', '16'], { prompt: '', steps: 32 });
 * ```
 */
export function parseGenerationFlags<T extends typeof GENERATION_FLAGS>(
  spec: CommandSpec<T>,
  argv: string[],
  defaults: GenerationDefaults,
): { options: GenerateOptions; values: FlagValues<T> & GenerationFlagValues } | 'help' {
  const all = parseFlags(spec, argv);
  if (all === 'help') return 'help';
  // The generation flags of a table that may hold more (generate's --store): read through their own type.
  const values: GenerationFlagValues = all as GenerationFlagValues;
  const policy = choiceFlag('--policy', values.policy, ['full', ...policyNames()], defaults.policy ?? 'snapkv');
  if (policy === 'full') {
    const given = COMPRESSION_ONLY_FLAGS.find((flag) => values[flag] !== undefined && !(flag === 'bits' && values.bits === '16'));
    if (given !== undefined) {
      throw new UsageError(
        `--${given}`,
        `means nothing with --policy full, which keeps every token in f16; drop --${given} or pick an eviction policy (${policyNames().join(', ')})`,
      );
    }
  }
  const bits = Number(choiceFlag('--bits', values.bits, ['16', '8', '4', '2'], String(defaults.bits ?? 16)));
  const topP = numberFlag('--top-p', values['top-p'], defaults.topP ?? 0.9, { max: 1 });
  if (topP <= 0) throw new UsageError('--top-p', `must be in (0, 1]; got ${topP}`);
  const options: GenerateOptions = {
    ...defaults,
    prompt: values.prompt ?? defaults.prompt,
    steps: integerFlag('--steps', values.steps, defaults.steps, { min: 1 }),
    policy,
    budget: integerFlag('--budget', values.budget, defaults.budget ?? 64, { min: 1 }),
    // A full cache is f16 whatever a command's default bits are.
    bits: (policy === 'full' ? 16 : bits) as Bits,
    budgetMode: choiceFlag('--budget-mode', values['budget-mode'], BUDGET_MODES, defaults.budgetMode ?? 'uniform') as BudgetMode,
    merge: choiceFlag('--merge', values.merge, GPU_MERGE_MODES, defaults.merge ?? 'none'),
    temperature: numberFlag('--temperature', values.temperature, defaults.temperature ?? 0, { min: 0 }),
    topP,
    seed: integerFlag('--seed', values.seed, defaults.seed ?? 42),
    compareWithFull: values.compare ?? defaults.compareWithFull ?? false,
  };
  adapterFlag(values.adapter);
  const speculate = speculateFlags(values);
  if (speculate && options.compareWithFull) {
    throw new UsageError('--speculate', '--compare decodes a second, full cache token by token; drop one of them');
  }
  return { options: speculate ? { ...options, speculate } : options, values: all as FlagValues<T> & GenerationFlagValues };
}

/**
 * The speculation flags as SpeculateOptions, or null without --speculate (the tuning flags then mean nothing).
 *
 * @example
 * ```ts
 * speculateFlags({ speculate: 'ngram' }); // { method: 'ngram', numSpeculative: 10, lookupMax: 3, lookupMin: 1 }
 * ```
 */
export function speculateFlags(values: FlagValues<typeof SPECULATE_FLAGS>): SpeculateOptions | null {
  const tuning = (['num-speculative', 'lookup-max', 'lookup-min', 'fixed-speculative', 'verify-cost'] as const).find((flag) => values[flag] !== undefined);
  if (values.speculate === undefined) {
    if (tuning !== undefined) throw new UsageError(`--${tuning}`, 'tunes --speculate; add --speculate ngram or drop it');
    return null;
  }
  choiceFlag('--speculate', values.speculate, ['ngram'], 'ngram');
  const lookupMin = integerFlag('--lookup-min', values['lookup-min'], 1, { min: 1 });
  const lookupMax = integerFlag('--lookup-max', values['lookup-max'], Math.max(3, lookupMin), { min: 1 });
  if (lookupMax < lookupMin) throw new UsageError('--lookup-max', `must be at least --lookup-min (${lookupMin}); got ${lookupMax}`);
  const numSpeculative = integerFlag('--num-speculative', values['num-speculative'], 10, { min: 1 });
  if (values['fixed-speculative'] && values['verify-cost'] !== undefined) throw new UsageError('--verify-cost', 'tunes the adaptive draft length; drop it or --fixed-speculative');
  const verifyCost = values['verify-cost'] === undefined ? undefined : numberFlag('--verify-cost', values['verify-cost'], 0, { min: 0 });
  return {
    method: 'ngram', numSpeculative, lookupMax, lookupMin,
    ...(values['fixed-speculative'] ? { adaptive: false } : {}),
    ...(verifyCost !== undefined ? { verifyCost } : {}),
  };
}

/**
 * Loads the model named by `--model` (a llama2.c file, a HF folder or `hf:ORG/NAME`; see loadCliModel), says on
 * stderr which format it is and where the files came from, applies `--chat`, checks that the prompt and steps fit
 * the model's context, and only then opens a GPU. `options` is what to generate with (the chat prompt, stopping
 * at EOS, under `--chat`). The caller destroys both.
 *
 * @example
 * ```ts
 * const { generator, options: run, destroy } = await openGenerator(values, options);
 * ```
 */
export async function openGenerator(
  values: GenerationFlagValues,
  options: GenerateOptions,
  generatorOptions: GeneratorOptions = {},
): Promise<{ generator: Generator; modelPath: string; format: string; options: GenerateOptions; destroy: () => Promise<void> }> {
  const model = await loadCliModel(values);
  const { checkpoint, tokenizer } = model;
  const run: GenerateOptions = values.chat === true ? { ...options, prompt: chatPrompt(tokenizer, options.prompt), stopAtBos: true } : options;
  const { seqLen } = checkpoint.config;
  const promptTokens = tokenizer.encode(run.prompt, { bos: true }).length;
  if (promptTokens + options.steps - 1 > seqLen) {
    const room = Math.max(0, seqLen - promptTokens + 1);
    throw new UsageError(
      '--steps',
      `the prompt (${promptTokens} tokens with BOS) plus ${options.steps} steps is past the model's context of ${seqLen} tokens; pass --steps ${room} or less, or a shorter prompt`,
    );
  }
  const gpu = await openCliGpu(adapterFlag(values.adapter));
  try {
    const generator = Generator.create(gpu, checkpoint, tokenizer, generatorOptions);
    return {
      generator,
      modelPath: model.modelPath,
      format: model.format,
      options: run,
      destroy: async () => {
        generator.destroy();
        await gpu.destroy();
      },
    };
  } catch (error) {
    await gpu.destroy();
    throw error;
  }
}

function kib(bytes: number): string {
  return `${(bytes / 1024).toFixed(1)} KiB`;
}

/**
 * The human-readable memory and quality report of a generation.
 *
 * @example
 * ```ts
 * process.stdout.write(formatGenerationReport(result.report));
 * ```
 */
export function formatGenerationReport(report: GenerationReport): string {
  const setting =
    report.policy === 'full'
      ? 'full cache (no compression)'
      : `${report.policy}, ${report.budgetMode} budgets, ${report.budget} tokens per KV head on average, ${report.bits === 16 ? 'f16' : `${report.bits}-bit`} storage`;
  const lines = [
    `setting: ${setting}`,
    `tokens: ${report.promptTokens} prompt (with BOS) + ${report.generatedTokens} generated; ${report.cachedTokens} cached positions`,
    `memory: ${kib(report.bytesCompressed)} held vs ${kib(report.bytesFull)} for an f16 cache of every token: ${report.ratio.toFixed(2)}× smaller`,
    `compressions: ${report.compressions}${report.lastCompression ? ` (last ${lastCompressionText(report.lastCompression)})` : ''}`,
    'tokens kept per KV head at the end:',
    `          ${report.keptPerHead[0]?.map((_, h) => `head ${h}`.padStart(7)).join('') ?? ''}`,
    ...report.keptPerHead.map((heads, l) => `  layer ${l} ${heads.map((n) => String(n).padStart(7)).join('')}`),
    `speed: ${report.tokensPerSecond.toFixed(1)} tokens/s`,
  ];
  const st = report.store;
  if (st) {
    lines.push(
      `store: ${st.hit ? `hit, ${st.hitTokens} of ${st.promptTokens} prompt tokens restored in ${st.restoreMs.toFixed(1)} ms` : 'miss'}; ${st.prefillTokens} tokens prefilled; ${st.saved} states saved`,
    );
  }
  const s = report.speculative;
  if (s) {
    lines.push(
      `speculation: ${s.forwardPasses} forward passes for ${report.generatedTokens} tokens (${s.tokensPerPass.toFixed(2)} tokens per pass); ${s.accepted} of ${s.drafted} drafts accepted (${(s.acceptanceRate * 100).toFixed(1)} %)`,
    );
  }
  const q = report.quality;
  if (q) {
    lines.push(
      'quality against a full cache fed the same tokens:',
      `  top-1 agreement: ${(q.agreement * 100).toFixed(1)} % (${q.agreed} of ${q.compared} next-token choices)`,
      `  perplexity of the generated text: ${q.perplexityCompressed.toFixed(3)} compressed, ${q.perplexityFull.toFixed(3)} full cache`,
      `  mean KL(full ‖ compressed): ${q.meanKl.toFixed(4)} nats`,
      q.divergedAt === null
        ? '  the full cache generates the same text'
        : `  the full cache's own text diverges at generated token ${q.divergedAt}`,
    );
  }
  return `${lines.join('\n')}\n`;
}

/**
 * `kvcompact generate`: one generation with the given cache setting; prints the text and the report, or
 * `{ text, tokens, report }` as JSON with `--json`.
 *
 * @example
 * ```ts
 * process.exitCode = await generateCommand(['--prompt', 'Lily', '--steps', '32', '--policy', 'h2o', '--budget', '16', '--json']);
 * ```
 */
export async function generateCommand(argv: string[]): Promise<number> {
  const parsed = parseGenerationFlags(GENERATE_COMMAND, argv, { prompt: '', steps: 64 });
  if (parsed === 'help') return printUsage(GENERATE_COMMAND);
  const { values } = parsed;
  if (values.prompt === undefined) throw new UsageError('--prompt', 'is required (an empty string lets the model start)');
  if (values.store !== undefined && parsed.options.compareWithFull) {
    throw new UsageError('--store', 'goes on from a saved compressed state alone; drop --compare or --store');
  }
  const loaded = await openGenerator(values, parsed.options, splitGpuTier(values.store).gpu ? { residentStates: GPU_TIER_STATES } : {});
  const { generator, modelPath, destroy } = loaded;
  const options = loaded.options;
  let opened: Awaited<ReturnType<typeof storeFromFlags>> = null;
  try {
    opened = await storeFromFlags(values, modelPath, generator);
    const store = opened?.store;
    const stream = !values.json && process.stdout.isTTY;
    if (stream) process.stdout.write(options.prompt);
    const result = await generator.generate({
      ...options,
      ...(store ? { store } : {}),
      ...(stream ? { onToken: (_token: number, piece: string) => void process.stdout.write(piece) } : {}),
    });
    if (values.json) {
      const { text, tokens, report } = result;
      process.stdout.write(`${JSON.stringify({ text, tokens, report }, null, 2)}\n`);
    } else {
      process.stdout.write(`${stream ? '' : `${options.prompt}${result.text}`}\n\n${formatGenerationReport(result.report)}`);
    }
    return 0;
  } finally {
    await opened?.entries?.close();
    await destroy();
  }
}

/** The last compression's time, and the attention mass it kept where it measured it (an opt-in). */
function lastCompressionText(last: { readonly attentionMassKept: number; readonly milliseconds: number }): string {
  const mass = Number.isNaN(last.attentionMassKept) ? '' : `kept ${(last.attentionMassKept * 100).toFixed(1)} % of the recent queries' attention, `;
  return `${mass}${last.milliseconds.toFixed(0)} ms`;
}
