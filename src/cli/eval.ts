import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { BUDGET_MODES, type BudgetMode } from '../compress/budgets.js';
import type { CompressBits } from '../compress/options.js';
import { policyNames } from '../compress/registry.js';
import { InvalidArgumentError } from '../errors.js';
import { cpuEngineFactory } from '../eval/cpu-engine.js';
import { evaluate, sweepRows, type EvalEngineFactory, type EvalProgress } from '../eval/evaluate.js';
import { formatEvalTable, renderEvalSvg } from '../eval/report.js';
import { loadModelFiles } from '../node/model-files.js';

/**
 * The `eval` lines of the CLI usage text.
 *
 * @example
 * ```ts
 * process.stdout.write(`usage:\n${EVAL_USAGE}\n`);
 * ```
 */
export const EVAL_USAGE = `  eval [--model M] [--tokenizer T] [--text FILE] [--window 512] [--windows 8]
       [--policies full,snapkv,...] [--budgets 32,64,128] [--bits 16,8,4,2] [--budget-mode uniform,adakv]
       [--engine cpu|gpu] [--json] [--plot FILE.svg]
                           perplexity / agreement / KL against memory, compressing at decode time
                           (defaults: the full sweep of every policy on stories260K and tinystories_dev.txt)`;

const DEFAULT_TEXT = 'tinystories_dev.txt';

function list(flag: string, value: string | undefined, fallback: readonly string[]): string[] {
  if (value === undefined) return [...fallback];
  const items = value.split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  if (items.length === 0) throw new InvalidArgumentError(flag, 'expects a comma-separated list');
  return items;
}

function integers(flag: string, value: string | undefined, fallback: readonly number[]): number[] {
  return list(flag, value, fallback.map(String)).map((s) => {
    const n = Number(s);
    if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError(flag, `"${s}" is not a positive integer`);
    return n;
  });
}

function positive(flag: string, value: string | undefined, fallback: number): number {
  return integers(flag, value, [fallback])[0] ?? fallback;
}

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
    if (!isFile(path)) throw new InvalidArgumentError('--text', `file ${path} does not exist`);
    return path;
  }
  const roots = [process.cwd(), packageRoot()].filter((r): r is string => r !== undefined);
  for (const root of roots) {
    const path = resolve(root, '..', 'shared', 'data', DEFAULT_TEXT);
    if (isFile(path)) return path;
  }
  throw new InvalidArgumentError('--text', `${DEFAULT_TEXT} not found in ../shared/data beside ${roots.join(' or ')}; pass --text FILE`);
}

function progressBar(stream: NodeJS.WriteStream): (p: EvalProgress) => void {
  const started = Date.now();
  return ({ done, total, label }) => {
    const width = 24;
    const filled = Math.round((done / total) * width);
    const elapsed = (Date.now() - started) / 1000;
    const eta = done > 0 ? (elapsed / done) * (total - done) : 0;
    const line = `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${done}/${total} ${elapsed.toFixed(0)}s (eta ${eta.toFixed(0)}s) ${label}`;
    // A terminal gets one line redrawn in place; a log file gets one line per window.
    if (stream.isTTY) {
      const columns = stream.columns || 100;
      stream.write(`\r${line.slice(0, columns - 1).padEnd(columns - 1)}${done === total ? '\n' : ''}`);
    } else {
      stream.write(`${line}\n`);
    }
  };
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
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      tokenizer: { type: 'string' },
      text: { type: 'string' },
      window: { type: 'string' },
      windows: { type: 'string' },
      policies: { type: 'string' },
      budgets: { type: 'string' },
      bits: { type: 'string' },
      'budget-mode': { type: 'string' },
      engine: { type: 'string' },
      json: { type: 'boolean' },
      plot: { type: 'string' },
    },
    strict: true,
  });
  const known = ['full', ...policyNames()];
  const policies = list('--policies', values.policies, known);
  const unknown = policies.filter((p) => !known.includes(p));
  if (unknown.length > 0) throw new InvalidArgumentError('--policies', `unknown ${unknown.join(', ')}; known: ${known.join(', ')}`);
  const bits = integers('--bits', values.bits, [16, 8, 4, 2]);
  const badBits = bits.filter((b) => ![32, 16, 8, 4, 2].includes(b));
  if (badBits.length > 0) throw new InvalidArgumentError('--bits', `must be among 32, 16, 8, 4, 2; got ${badBits.join(', ')}`);
  const budgetModes = list('--budget-mode', values['budget-mode'], ['uniform', 'adakv']);
  const badModes = budgetModes.filter((m) => !(BUDGET_MODES as readonly string[]).includes(m));
  if (badModes.length > 0) throw new InvalidArgumentError('--budget-mode', `unknown ${badModes.join(', ')}; known: ${BUDGET_MODES.join(', ')}`);
  if (values.plot !== undefined && !values.plot.endsWith('.svg')) {
    throw new InvalidArgumentError('--plot', `expects a FILE.svg path; got "${values.plot}"`);
  }
  const engineName = values.engine ?? 'cpu';
  let engine: EvalEngineFactory;
  if (engineName === 'cpu') {
    engine = cpuEngineFactory;
  } else if (engineName === 'gpu') {
    const { createNodeGpu } = await import('../node/gpu.js');
    const { gpuEngineFactory } = await import('../eval/gpu-engine.js');
    engine = await gpuEngineFactory(await createNodeGpu());
  } else {
    throw new InvalidArgumentError('--engine', `must be cpu or gpu; got "${engineName}"`);
  }
  const rows = sweepRows({
    policies,
    budgets: integers('--budgets', values.budgets, [32, 64, 128]),
    bits: bits as CompressBits[],
    budgetModes: budgetModes as BudgetMode[],
  });
  const { checkpoint, tokenizer, files } = await loadModelFiles({
    ...(values.model !== undefined ? { model: values.model } : {}),
    ...(values.tokenizer !== undefined ? { tokenizer: values.tokenizer } : {}),
  });
  const textPath = resolveText(values.text);
  process.stderr.write(`${files.message}\ntext: ${textPath}\n${rows.length} rows on the ${engineName} engine\n`);
  const report = await evaluate({
    checkpoint,
    tokenizer,
    text: readFileSync(textPath, 'utf8'),
    window: positive('--window', values.window, 512),
    windows: positive('--windows', values.windows, 8),
    rows,
    engine,
    onProgress: progressBar(process.stderr),
  });
  process.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : formatEvalTable(report));
  if (values.plot !== undefined) {
    writeFileSync(values.plot, renderEvalSvg(report));
    process.stderr.write(`kvcompact eval: plot written to ${values.plot}\n`);
  }
  return 0;
}
