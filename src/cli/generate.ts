import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { Generator, type GenerateOptions, type GenerationBits, type GenerationReport } from '../app/generator.js';
import type { BudgetMode } from '../compress/budgets.js';
import { InvalidArgumentError } from '../errors.js';
import { type AdapterChoice, createNodeGpu } from '../node/gpu.js';
import { resolveModelFiles } from '../node/model-files.js';

/**
 * The `generate` lines of the CLI usage text.
 *
 * @example
 * ```ts
 * const usage = `commands:\n${GENERATE_USAGE}\n`;
 * ```
 */
export const GENERATE_USAGE = `  generate --prompt TEXT [--steps N] [--policy P] [--budget B] [--bits 16|8|4|2]
           [--budget-mode uniform|adakv|pyramid|global] [--compare] [--temperature T] [--top-p P] [--seed S]
           [--model M --tokenizer T] [--json]
                           generate text with a compressed KV cache (--compare: also run a full cache and
                           report top-1 agreement and perplexity); --policy full = no compression`;

/** Options the `generate` and `demo` commands share. */
const GENERATION_FLAGS = {
  model: { type: 'string' },
  tokenizer: { type: 'string' },
  prompt: { type: 'string' },
  steps: { type: 'string' },
  policy: { type: 'string' },
  budget: { type: 'string' },
  bits: { type: 'string' },
  'budget-mode': { type: 'string' },
  temperature: { type: 'string' },
  'top-p': { type: 'string' },
  seed: { type: 'string' },
  compare: { type: 'boolean' },
  json: { type: 'boolean' },
  adapter: { type: 'string' },
} as const;

type FlagValues = { [K in keyof typeof GENERATION_FLAGS]?: (typeof GENERATION_FLAGS)[K]['type'] extends 'boolean' ? boolean : string };

function numberFlag(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError(`--${name}`, `expects a number; got "${value}"`);
  return n;
}

/**
 * Parses the generation flags shared by `generate` and `demo`, with `defaults` for what is not given.
 *
 * @example
 * ```ts
 * const { options } = parseGenerationFlags(['--policy', 'h2o', '--budget', '16'], { prompt: '', steps: 32 });
 * ```
 */
export function parseGenerationFlags(
  argv: string[],
  defaults: Omit<GenerateOptions, 'onToken' | 'onStep' | 'signal'>,
): { options: GenerateOptions; values: FlagValues } {
  const { values } = parseArgs({ args: argv, options: GENERATION_FLAGS, strict: true }) as { values: FlagValues };
  const bits = numberFlag('bits', values.bits, defaults.bits ?? 16);
  if (![16, 8, 4, 2].includes(bits)) throw new InvalidArgumentError('--bits', `must be 16, 8, 4 or 2; got ${bits}`);
  const options: GenerateOptions = {
    ...defaults,
    prompt: values.prompt ?? defaults.prompt,
    steps: numberFlag('steps', values.steps, defaults.steps),
    policy: values.policy ?? defaults.policy ?? 'snapkv',
    budget: numberFlag('budget', values.budget, defaults.budget ?? 64),
    bits: bits as GenerationBits,
    budgetMode: (values['budget-mode'] ?? defaults.budgetMode ?? 'uniform') as BudgetMode,
    temperature: numberFlag('temperature', values.temperature, defaults.temperature ?? 0),
    topP: numberFlag('top-p', values['top-p'], defaults.topP ?? 0.9),
    seed: numberFlag('seed', values.seed, defaults.seed ?? 42),
    compareWithFull: values.compare ?? defaults.compareWithFull ?? false,
  };
  return { options, values };
}

/**
 * Loads the model named by the flags (or found by resolveModelFiles), says on stderr where the files came from,
 * and opens a GPU. The caller destroys both.
 *
 * @example
 * ```ts
 * const { generator, destroy } = await openGenerator(values);
 * ```
 */
export async function openGenerator(values: FlagValues): Promise<{ generator: Generator; destroy: () => Promise<void> }> {
  const files = await resolveModelFiles({
    ...(values.model !== undefined ? { model: values.model } : {}),
    ...(values.tokenizer !== undefined ? { tokenizer: values.tokenizer } : {}),
  });
  process.stderr.write(`${files.message}\n`);
  const adapter = values.adapter as AdapterChoice | undefined;
  if (adapter !== undefined && !['auto', 'hardware', 'software'].includes(adapter)) {
    throw new InvalidArgumentError('--adapter', `must be auto, hardware or software; got "${adapter}"`);
  }
  const gpu = await createNodeGpu(adapter ? { adapter } : {});
  try {
    const generator = Generator.fromBytes(gpu, await readFile(files.modelPath), await readFile(files.tokenizerPath));
    return {
      generator,
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
    `compressions: ${report.compressions}${report.lastCompression ? ` (last kept ${(report.lastCompression.attentionMassKept * 100).toFixed(1)} % of the recent queries' attention, ${report.lastCompression.milliseconds.toFixed(0)} ms)` : ''}`,
    'tokens kept per KV head at the end:',
    `          ${report.keptPerHead[0]?.map((_, h) => `head ${h}`.padStart(7)).join('') ?? ''}`,
    ...report.keptPerHead.map((heads, l) => `  layer ${l} ${heads.map((n) => String(n).padStart(7)).join('')}`),
    `speed: ${report.tokensPerSecond.toFixed(1)} tokens/s`,
  ];
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
  const { options, values } = parseGenerationFlags(argv, { prompt: '', steps: 64 });
  if (values.prompt === undefined) throw new InvalidArgumentError('--prompt', 'is required (an empty string lets the model start)');
  const { generator, destroy } = await openGenerator(values);
  try {
    const stream = !values.json && process.stdout.isTTY;
    if (stream) process.stdout.write(options.prompt);
    const result = await generator.generate({
      ...options,
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
    await destroy();
  }
}
