import type { Bits } from '../format/layout.js';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BUDGET_MODES, type BudgetMode } from '../compress/budgets.js';
import { DEFAULT_MERGE_SLOTS, IMPLEMENTED_MERGE_MODES, type MergeMode } from '../compress/options.js';
import { policyNames } from '../compress/registry.js';
import { UsageError } from '../errors.js';
import { cpuEngineFactory } from '../eval/cpu-engine.js';
import { evaluate, sweepRows, type EvalEngineFactory } from '../eval/evaluate.js';
import { formatEvalTable, renderEvalSvg } from '../eval/report.js';
import {
  ADAPTER_FLAG,
  adapterFlag,
  choiceFlag,
  choicesFlag,
  type CommandSpec,
  type FlagTable,
  integerFlag,
  integersFlag,
  parseFlags,
  printUsage,
  writableFileFlag,
} from './flags.js';
import { openCliGpu } from './gpu.js';
import { loadCliModel, MODEL_FLAGS } from './model-flag.js';
import { ProgressReporter } from './progress.js';

const EVAL_FLAGS = {
  ...MODEL_FLAGS,
  text: { type: 'string', value: 'FILE', help: 'evaluation text (default ../shared/data/tinystories_dev.txt)' },
  window: { type: 'string', value: 'N', help: "tokens per window, BOS included (default 512; at most the model's context)" },
  windows: { type: 'string', value: 'N', help: 'windows scored (default 8)' },
  policies: { type: 'string', value: 'P,P', help: 'full and/or eviction policies (default: all)' },
  budgets: { type: 'string', value: 'B,B', help: 'tokens kept per KV head, each below --window (default 32,64,128)' },
  bits: { type: 'string', value: 'b,b', help: 'cache bits: 32, 16, 8, 4, 2 (default 16,8,4,2)' },
  'budget-mode': { type: 'string', value: 'M,M', help: 'budget split: uniform, adakv, pyramid, global (default uniform,adakv)' },
  merge: { type: 'string', value: 'M,M', help: `what evicted tokens become, one row each: ${IMPLEMENTED_MERGE_MODES.join(', ')} (default none)` },
  'merge-slots': { type: 'string', value: 'N', help: `slot tokens per head of the --merge slots rows, part of the budget (default ${DEFAULT_MERGE_SLOTS})` },
  'block-size': { type: 'string', value: 'N', help: 'tokens per cache block (default 16); every budget must exceed it' },
  engine: { type: 'string', value: 'cpu|gpu', help: 'where the model runs (default cpu)' },
  adapter: { ...ADAPTER_FLAG, help: `${ADAPTER_FLAG.help} (--engine gpu only)` },
  json: { type: 'boolean', help: 'print the report as JSON instead of a markdown table' },
  plot: { type: 'string', value: 'FILE.svg', help: 'also draw perplexity against memory ratio there' },
} as const satisfies FlagTable;

/**
 * `kvcompact eval`: its flags and help.
 *
 * @example
 * ```ts
 * process.stdout.write(usageText(EVAL_COMMAND));
 * ```
 */
export const EVAL_COMMAND: CommandSpec<typeof EVAL_FLAGS> = {
  name: 'eval',
  summary: 'perplexity / agreement / KL against memory, compressing the cache at decode time',
  details: '(defaults: the full sweep of every policy on stories260K and tinystories_dev.txt; progress on stderr)',
  flags: EVAL_FLAGS,
};

const DEFAULT_TEXT = 'tinystories_dev.txt';
const BITS: readonly Bits[] = [32, 16, 8, 4, 2];

/** Walks up from this module to the directory holding package.json (dist/cli.js and src/cli/ both work). */
function packageRoot(): string | undefined {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) return undefined;
    dir = up;
  }
}

function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/** The evaluation text: --text, else ../shared/data/tinystories_dev.txt beside the working directory or the package. */
function resolveText(explicit: string | undefined): string {
  if (explicit !== undefined) {
    const path = resolve(explicit);
    if (!isFile(path)) {
      const problem = existsSync(path) ? 'is not a regular file (a directory?); pass a UTF-8 text file' : 'does not exist';
      throw new UsageError('--text', `${path} ${problem}`);
    }
    return path;
  }
  const roots = [process.cwd(), packageRoot()].filter((r): r is string => r !== undefined);
  for (const root of roots) {
    const path = resolve(root, '..', 'shared', 'data', DEFAULT_TEXT);
    if (isFile(path)) return path;
  }
  throw new UsageError('--text', `${DEFAULT_TEXT} not found in ../shared/data beside ${roots.join(' or ')}; pass --text FILE`);
}

/**
 * `kvcompact eval`: the quality-against-memory sweep of src/eval/evaluate.ts. Prints a markdown table (progress on
 * stderr), or the report as JSON with `--json`; `--plot FILE.svg` also draws perplexity against memory ratio.
 *
 * @example
 * ```ts
 * process.exitCode = await evalCommand(['--policies', 'full,snapkv', '--budgets', '64', '--bits', '16,4', '--windows', '2']);
 * ```
 */
export async function evalCommand(argv: string[]): Promise<number> {
  const values = parseFlags(EVAL_COMMAND, argv);
  if (values === 'help') return printUsage(EVAL_COMMAND);
  // Every flag and path is checked here, before the model is read or any row runs.
  const known = ['full', ...policyNames()];
  const policies = choicesFlag('--policies', values.policies, known, known);
  const bits = integersFlag('--bits', values.bits, [16, 8, 4, 2]);
  const badBits = bits.filter((b) => !(BITS as readonly number[]).includes(b));
  if (badBits.length > 0) throw new UsageError('--bits', `must be among ${BITS.join(', ')}; got ${badBits.join(', ')}`);
  const budgetModes = choicesFlag('--budget-mode', values['budget-mode'], BUDGET_MODES, ['uniform', 'adakv']);
  const budgets = integersFlag('--budgets', values.budgets, [32, 64, 128]);
  const merges = choicesFlag('--merge', values.merge, IMPLEMENTED_MERGE_MODES, ['none']) as MergeMode[];
  if (values['merge-slots'] !== undefined && !merges.includes('slots')) {
    throw new UsageError('--merge-slots', 'applies to --merge slots rows only; add slots to --merge or drop it');
  }
  const mergeSlots = integerFlag('--merge-slots', values['merge-slots'], DEFAULT_MERGE_SLOTS, { min: 1 });
  const blockSize = integerFlag('--block-size', values['block-size'], 16, { min: 1 });
  const smallBudgets = budgets.filter((b) => b <= blockSize);
  if (policies.some((p) => p !== 'full') && smallBudgets.length > 0) {
    throw new UsageError('--budgets', `${smallBudgets.join(', ')} not above --block-size ${blockSize}; pass a smaller --block-size or larger budgets`);
  }
  if (policies.every((p) => p === 'full')) {
    for (const flag of ['budgets', 'budget-mode', 'merge'] as const) {
      if (values[flag] !== undefined) {
        throw new UsageError(`--${flag}`, 'means nothing with --policies full (the full cache evicts nothing); drop it or add an eviction policy');
      }
    }
  }
  const window = integerFlag('--window', values.window, 512, { min: 2 });
  const windows = integerFlag('--windows', values.windows, 8, { min: 1 });
  const tooBig = budgets.filter((b) => b >= window);
  if (policies.some((p) => p !== 'full') && tooBig.length > 0) {
    throw new UsageError('--budgets', `${tooBig.join(', ')} not below --window ${window}: nothing would be evicted; pass smaller budgets`);
  }
  const engineName = choiceFlag('--engine', values.engine, ['cpu', 'gpu'] as const, 'cpu');
  if (engineName === 'cpu' && values.adapter !== undefined) {
    throw new UsageError('--adapter', 'applies to --engine gpu only (the cpu engine uses no adapter)');
  }
  const adapter = engineName === 'gpu' ? adapterFlag(values.adapter) : 'auto';
  if (values.plot !== undefined && !values.plot.endsWith('.svg')) {
    throw new UsageError('--plot', `expects a FILE.svg path; got "${values.plot}"`);
  }
  const plotPath = values.plot === undefined ? undefined : writableFileFlag('--plot', values.plot);
  const textPath = resolveText(values.text);
  const { checkpoint, tokenizer, modelPath } = await loadCliModel(values);
  const { seqLen } = checkpoint.config;
  if (window > seqLen) {
    throw new UsageError('--window', `${window} tokens is past the model's context of ${seqLen} tokens (seq_len of ${modelPath}); pass --window ${seqLen} or less`);
  }
  const rows = sweepRows({ policies, budgets, bits: bits as Bits[], budgetModes: budgetModes as BudgetMode[], merges, mergeSlots });
  process.stderr.write(`text: ${textPath}\n${rows.length} rows on the ${engineName} engine\n`);
  let engine: EvalEngineFactory = cpuEngineFactory;
  if (engineName === 'gpu') {
    const { gpuEngineFactory } = await import('../eval/gpu-engine.js');
    engine = await gpuEngineFactory(await openCliGpu(adapter));
  }
  const progress = new ProgressReporter(process.stderr, 'kvcompact eval');
  const report = await evaluate({
    checkpoint,
    tokenizer,
    text: readFileSync(textPath, 'utf8'),
    window,
    windows,
    rows,
    engine,
    blockSize,
    onProgress: ({ done, total, label }) => progress.update(done, total, label),
  });
  progress.finish(`${rows.length} row${rows.length === 1 ? '' : 's'} × ${windows} window${windows === 1 ? '' : 's'} of ${window} tokens`);
  process.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : formatEvalTable(report));
  if (plotPath !== undefined) {
    writeFileSync(plotPath, renderEvalSvg(report));
    process.stderr.write(`kvcompact eval: plot written to ${plotPath}\n`);
  }
  return 0;
}
