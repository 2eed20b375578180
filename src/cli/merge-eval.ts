// `kvcompact merge-eval`: one report from `kvcompact eval --json` reports run side by side (one process per core,
// the sweep split by --policies), printed as eval prints its own. Was bench/merge-eval.ts.
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { InvalidArgumentError, UsageError } from '../errors.js';
import type { EvalReport } from '../eval/evaluate.js';
import { formatEvalTable, renderEvalSvg } from '../eval/report.js';
import { type CommandSpec, type FlagTable, listFlag, parseFlags, printUsage, writableFileFlag } from './flags.js';

const MERGE_EVAL_FLAGS = {
  reports: { type: 'string', value: 'A.json,B.json', help: 'the `kvcompact eval --json` reports to merge (required)' },
  json: { type: 'boolean', help: 'print the merged report as JSON instead of a markdown table' },
  plot: { type: 'string', value: 'FILE.svg', help: 'also draw perplexity against memory ratio there' },
} as const satisfies FlagTable;

/**
 * `kvcompact merge-eval`: its flags and help.
 *
 * @example
 * ```ts
 * process.stdout.write(usageText(MERGE_EVAL_COMMAND));
 * ```
 */
export const MERGE_EVAL_COMMAND: CommandSpec<typeof MERGE_EVAL_FLAGS> = {
  name: 'merge-eval',
  summary: 'merge `eval --json` reports run in parallel into one table (and plot)',
  details: '(the reports must come from the same text, window, windows, block size and sinks)',
  flags: MERGE_EVAL_FLAGS,
};

// Rows scored on different windows are not comparable, and agreement / KL are against each run's own reference.
const SAME_SETTINGS = ['window', 'windows', 'predictions', 'blockSize', 'sinks'] as const;

/**
 * One report holding every row of `reports`, in their order; a row (policy, budget mode, budget, bits) that two
 * reports both ran is kept once, from the first. `settings.seconds` is the sum (the work, not the wall time of
 * parallel runs). Throws InvalidArgumentError when the reports were run with different settings.
 *
 * @example
 * ```ts
 * const merged = mergeEvalReports([left, right]);
 * process.stdout.write(formatEvalTable(merged));
 * ```
 */
export function mergeEvalReports(reports: readonly EvalReport[]): EvalReport {
  const [first] = reports;
  if (!first) throw new InvalidArgumentError('reports', 'nothing to merge; pass at least one report');
  for (const [i, report] of reports.entries()) {
    const differs = SAME_SETTINGS.filter((key) => report.settings[key] !== first.settings[key]);
    if (differs.length > 0) {
      const values = differs.map((key) => `${key} ${report.settings[key]} vs ${first.settings[key]}`).join(', ');
      throw new InvalidArgumentError('reports', `report ${i + 1} was run with other settings than report 1 (${values}); rerun it with the same flags`);
    }
  }
  const seen = new Set<string>();
  const rows = reports
    .flatMap((report) => report.rows)
    .filter((row) => {
      // Merge modes are rows of their own (a report written before merging existed has none: 'none').
      const key = `${row.policy}|${row.budgetMode}|${row.budget}|${row.bits}|${row.merge ?? 'none'}|${row.mergeSlots ?? ''}`;
      if (seen.has(key)) return false;
      seen.add(key);
      return true;
    });
  const seconds = reports.reduce((sum, report) => sum + report.settings.seconds, 0);
  return { rows, settings: { ...first.settings, seconds } };
}

function readReport(path: string): EvalReport {
  const absolute = resolve(path);
  let text: string;
  try {
    if (!statSync(absolute).isFile()) throw new UsageError('--reports', `${absolute} is not a regular file`);
    text = readFileSync(absolute, 'utf8');
  } catch (error) {
    if (error instanceof UsageError) throw error;
    throw new UsageError('--reports', `${absolute} does not exist or cannot be read`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new UsageError('--reports', `${absolute} is not JSON; pass the output of \`kvcompact eval --json\``);
  }
  const report = parsed as Partial<EvalReport> | null;
  if (!report || !Array.isArray(report.rows) || typeof report.settings !== 'object' || report.settings === null) {
    throw new UsageError('--reports', `${absolute} is not an eval report (no rows and settings); pass the output of \`kvcompact eval --json\``);
  }
  return report as EvalReport;
}

/**
 * `kvcompact merge-eval --reports A.json,B.json [--json] [--plot FILE.svg]`: prints the merged table (or JSON).
 *
 * @example
 * ```ts
 * process.exitCode = await mergeEvalCommand(['--reports', 'a.json,b.json', '--plot', 'docs/eval-ppl-vs-ratio.svg']);
 * ```
 */
export async function mergeEvalCommand(argv: string[]): Promise<number> {
  const values = parseFlags(MERGE_EVAL_COMMAND, argv);
  if (values === 'help') return printUsage(MERGE_EVAL_COMMAND);
  if (values.reports === undefined) throw new UsageError('--reports', 'is required: the `kvcompact eval --json` files to merge');
  if (values.plot !== undefined && !values.plot.endsWith('.svg')) {
    throw new UsageError('--plot', `expects a FILE.svg path; got "${values.plot}"`);
  }
  const plotPath = values.plot === undefined ? undefined : writableFileFlag('--plot', values.plot);
  const merged = mergeEvalReports(listFlag('--reports', values.reports, []).map(readReport));
  process.stdout.write(values.json ? `${JSON.stringify(merged, null, 2)}\n` : formatEvalTable(merged));
  if (plotPath !== undefined) {
    writeFileSync(plotPath, renderEvalSvg(merged));
    process.stderr.write(`kvcompact merge-eval: plot written to ${plotPath}\n`);
  }
  return 0;
}
