// Merges `kvcompact eval --json` reports run in parallel (e.g. one process per core, split by --policies) into
// one report, and prints its markdown table and writes its SVG plot.
//   npx esbuild bench/merge-eval.ts --bundle --platform=node --format=esm --outfile=dist/merge-eval.mjs
//   node dist/merge-eval.mjs a.json b.json --plot docs/eval-ppl-vs-ratio.svg > table.md
import { readFileSync, writeFileSync } from 'node:fs';
import type { EvalReport } from '../src/eval/evaluate.js';
import { formatEvalTable, renderEvalSvg } from '../src/eval/report.js';

const args = process.argv.slice(2);
const plotAt = args.indexOf('--plot');
const plot = plotAt >= 0 ? args[plotAt + 1] : undefined;
const files = args.filter((arg, i) => arg !== '--plot' && i !== plotAt + 1);
const reports = files.map((file) => JSON.parse(readFileSync(file, 'utf8')) as EvalReport);
const first = reports[0];
if (!first) throw new Error('usage: merge-eval a.json b.json [--plot out.svg]');
const seen = new Set<string>();
const rows = reports
  .flatMap((report) => report.rows)
  .filter((row) => {
    const key = `${row.policy}|${row.budgetMode}|${row.budget}|${row.bits}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
const merged: EvalReport = { ...first, rows };
process.stdout.write(`${formatEvalTable(merged)}\n`);
if (plot) writeFileSync(plot, renderEvalSvg(merged));
