// Report formats of `kvcompact bench`: markdown, JSON and a hand-written SVG plot (no dependencies, browser-safe).
import type { BenchReport, BenchRow, BenchTable } from './harness.js';
import { formatBytes, formatTokens, trimNumber } from './units.js';

function cell(value: string | number): string {
  return String(value).replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

function markdownTable(columns: readonly string[], rows: readonly (readonly (string | number)[])[]): string {
  const lines = [
    `| ${columns.map(cell).join(' | ')} |`,
    `| ${columns.map((_, i) => (i < 2 ? '---' : '---:')).join(' | ')} |`,
    ...rows.map((row) => `| ${row.map(cell).join(' | ')} |`),
  ];
  return lines.join('\n');
}

function ms(value: number): string {
  return value >= 100 ? value.toFixed(0) : trimNumber(value, 3);
}

/**
 * The columns of the timing table, in order.
 *
 * @example
 * ```ts
 * const header = `| ${ROW_COLUMNS.join(' | ')} |`;
 * ```
 */
export const ROW_COLUMNS = [
  'benchmark',
  'shape',
  'bytes',
  'ms (median)',
  'spread: min–max (IQR)',
  'GB/s',
  '× copy',
  'copy ms',
  'speedup',
  'per item',
  'timing',
] as const;

/**
 * One row of the markdown timing table, as strings in {@link ROW_COLUMNS} order.
 *
 * @example
 * ```ts
 * rowCells(report.rows[0]); // ['copy/4 MiB', '4 MiB → 4 MiB', '8 MiB', '5.2', ...]
 * ```
 */
export function rowCells(row: BenchRow): string[] {
  const s = row.spread;
  return [
    row.name,
    row.shape,
    formatBytes(row.bytes),
    ms(row.ms),
    `${ms(s.min)}–${ms(s.max)} (${ms(s.iqr)})`,
    trimNumber(row.gbps, 3),
    trimNumber(row.ratioToCopy, 3),
    ms(row.copyMs),
    row.speedup !== undefined ? `${trimNumber(row.speedup, 3)}×` : '',
    row.perItem ? `${trimNumber(row.perItem.us, 3)} µs/${row.perItem.unit}` : '',
    `${row.timing}${row.repeat > 1 ? ` ×${row.repeat}` : ''}, n=${row.samples}`,
  ];
}

/**
 * Formats a table that needs no timing (e.g. bytes per token) as markdown, with its note.
 *
 * @example
 * ```ts
 * console.log(formatTable(bytesPerTokenTable({ layers: 4, kvHeads: 8, headDim: 128, blockSize: 16 })));
 * ```
 */
export function formatTable(table: BenchTable): string {
  return [`### ${table.title}`, '', markdownTable(table.columns, table.rows), ...(table.note ? ['', table.note] : [])].join(
    '\n',
  );
}

/**
 * The whole report as markdown: the adapter, the timing table, what each suite's bytes count, then the tables.
 *
 * @example
 * ```ts
 * process.stdout.write(formatMarkdown(await runBenchmarks(gpu, BENCH_SUITES, benchSettings(true))));
 * ```
 */
export function formatMarkdown(report: BenchReport): string {
  const out: string[] = [];
  const a = report.adapter;
  out.push(
    `## kvcompact bench${a ? ` — ${a.vendor || 'unknown vendor'} / ${a.architecture || 'unknown'}` : ''}`,
    '',
    ...(a ? [`adapter: ${a.description}${a.isFallbackAdapter ? ' (software fallback adapter)' : ''}`] : []),
    `date: ${report.date} · ${report.settings.quick ? 'quick' : 'full'} run · ${trimNumber(report.totalSeconds, 3)} s${report.dawnPolling ? ` · GPU waits: ${report.dawnPolling === 'paced' ? 'paced' : "Dawn's spinning"}` : ''}`,
    '',
  );
  if (report.rows.length > 0) {
    out.push(markdownTable(ROW_COLUMNS, report.rows.map(rowCells)), '');
    out.push(
      'ms: median GPU time of one execution (timestamp queries; `wall` = submit to completion when the device has no ' +
        'timestamp-query). ×N: executions back to back per sample. GB/s = bytes ÷ time. × copy = GB/s ÷ the copy ' +
        "kernel's GB/s over the same byte count in this run (= copy ms ÷ ms; the copy kernel counts read + write " +
        'bytes). speedup = baseline row ms ÷ this row ms.',
      '',
    );
    const counted = report.suites.filter((s) => s.counts && report.rows.some((r) => r.suite === s.name));
    if (counted.length > 0) {
      out.push('bytes counted:', '', ...counted.map((s) => `- **${s.name}**: ${s.counts ?? ''}`), '');
    }
  }
  if (report.skipped && report.skipped.length > 0) {
    out.push('skipped on this device:', '', ...report.skipped.map((s) => `- **${s.name}**: ${s.reason}`), '');
  }
  for (const table of report.tables) out.push(formatTable(table), '');
  return `${out.join('\n').trimEnd()}\n`;
}

/**
 * The report as JSON (what `--json` prints), pretty-printed.
 *
 * @example
 * ```ts
 * const again = JSON.parse(formatJson(report)) as BenchReport;
 * ```
 */
export function formatJson(report: BenchReport): string {
  return `${JSON.stringify(report, null, 2)}\n`;
}

function xml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/**
 * A line of the plot: a name and (context, ms) points.
 */
export interface PlotSeries {
  readonly name: string;
  readonly points: readonly { readonly x: number; readonly y: number }[];
  readonly dashed?: boolean;
}

/**
 * The plot's series: one per row `series` (rows with a context length and a positive time), plus, for each
 * baseline series (rows other rows compare against), a dashed line of the copy kernel over the same bytes.
 *
 * @example
 * ```ts
 * plotSeries(report.rows).map((s) => s.name); // ['attention f16', 'attention int4', ..., 'copy, bytes of attention f16']
 * ```
 */
export function plotSeries(rows: readonly BenchRow[]): PlotSeries[] {
  const lines = new Map<string, { x: number; y: number }[]>();
  const copies = new Map<string, { x: number; y: number }[]>();
  const baselines = new Set(rows.map((r) => r.baseline).filter((b): b is string => b !== undefined));
  for (const row of rows) {
    if (row.context === undefined || row.series === undefined || !(row.context > 0)) continue;
    if (row.ms > 0) {
      const list = lines.get(row.series) ?? [];
      list.push({ x: row.context, y: row.ms });
      lines.set(row.series, list);
    }
    if (baselines.has(row.name) && row.copyMs > 0) {
      const name = `copy, bytes of ${row.series}`;
      const list = copies.get(name) ?? [];
      list.push({ x: row.context, y: row.copyMs });
      copies.set(name, list);
    }
  }
  const sorted = (points: { x: number; y: number }[]) => [...points].sort((p, q) => p.x - q.x);
  return [
    ...[...lines].map(([name, points]) => ({ name, points: sorted(points) })),
    ...[...copies].map(([name, points]) => ({ name, points: sorted(points), dashed: true })),
  ];
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf', '#7f7f7f'];

function logTicks(min: number, max: number): number[] {
  const ticks: number[] = [];
  for (let e = Math.floor(Math.log10(min)); e <= Math.ceil(Math.log10(max)); e++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (v >= min * 0.999 && v <= max * 1.001) ticks.push(v);
    }
  }
  return ticks;
}

/**
 * An SVG plot of time against context length, both axes logarithmic, one line per series with a legend.
 * Hand-written SVG, no dependencies; well-formed XML whatever the data (an empty plot says so).
 *
 * @example
 * ```ts
 * writeFileSync('bench.svg', renderSvg(report));
 * ```
 */
export function renderSvg(report: BenchReport, options: { title?: string } = {}): string {
  const width = 760;
  const height = 460;
  const left = 72;
  const right = 250;
  const top = 48;
  const bottom = 58;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const series = plotSeries(report.rows);
  const a = report.adapter;
  const title =
    options.title ?? `kvcompact bench: time per execution vs context${a ? ` (${a.vendor} / ${a.architecture})` : ''}`;
  const parts: string[] = [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${width / 2}" y="24" text-anchor="middle" font-size="15">${xml(title)}</text>`,
  ];
  const points = series.flatMap((s) => s.points);
  if (points.length === 0) {
    parts.push(
      `<text x="${width / 2}" y="${height / 2}" text-anchor="middle">no rows with a context length to plot</text>`,
      '</svg>',
    );
    return `${parts.join('\n')}\n`;
  }
  const xs = points.map((p) => p.x);
  const ys = points.map((p) => p.y);
  // Pad the domains a little so end points are not on the frame; a single value gets a ×2 window around it.
  const xMin = Math.min(...xs) / 1.3;
  const xMax = Math.max(...xs) * 1.3;
  const yLow = Math.min(...ys);
  const yHigh = Math.max(...ys);
  const yMin = yLow / (yHigh / yLow > 1.5 ? 1.3 : 2);
  const yMax = yHigh * (yHigh / yLow > 1.5 ? 1.3 : 2);
  const sx = (x: number) => left + ((Math.log(x) - Math.log(xMin)) / (Math.log(xMax) - Math.log(xMin))) * plotW;
  const sy = (y: number) => top + plotH - ((Math.log(y) - Math.log(yMin)) / (Math.log(yMax) - Math.log(yMin))) * plotH;
  const f = (v: number) => v.toFixed(1);
  parts.push(`<rect x="${left}" y="${top}" width="${plotW}" height="${plotH}" fill="none" stroke="#333333"/>`);
  for (const x of [...new Set(xs)].sort((p, q) => p - q)) {
    parts.push(
      `<line x1="${f(sx(x))}" y1="${top}" x2="${f(sx(x))}" y2="${top + plotH}" stroke="#dddddd"/>`,
      `<text x="${f(sx(x))}" y="${top + plotH + 18}" text-anchor="middle">${xml(formatTokens(x))}</text>`,
    );
  }
  for (const y of logTicks(yMin, yMax)) {
    parts.push(
      `<line x1="${left}" y1="${f(sy(y))}" x2="${left + plotW}" y2="${f(sy(y))}" stroke="#eeeeee"/>`,
      `<text x="${left - 6}" y="${f(sy(y) + 4)}" text-anchor="end">${xml(trimNumber(y, 3))}</text>`,
    );
  }
  parts.push(
    `<text x="${left + plotW / 2}" y="${height - 14}" text-anchor="middle">context length (tokens per KV head, log scale)</text>`,
    `<text x="18" y="${top + plotH / 2}" text-anchor="middle" transform="rotate(-90 18 ${top + plotH / 2})">ms per execution (log scale)</text>`,
  );
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length] ?? '#000000';
    const dash = s.dashed ? ' stroke-dasharray="6 4"' : '';
    const path = s.points.map((p) => `${f(sx(p.x))},${f(sy(p.y))}`).join(' ');
    parts.push(`<g><title>${xml(s.name)}</title>`);
    parts.push(`<polyline points="${path}" fill="none" stroke="${color}" stroke-width="2"${dash}/>`);
    for (const p of s.points) {
      parts.push(
        `<circle cx="${f(sx(p.x))}" cy="${f(sy(p.y))}" r="3.5" fill="${color}"><title>${xml(`${s.name}: ${formatTokens(p.x)} tokens, ${trimNumber(p.y, 3)} ms`)}</title></circle>`,
      );
    }
    parts.push('</g>');
    const ly = top + 10 + i * 20;
    const lx = left + plotW + 16;
    parts.push(
      `<line x1="${lx}" y1="${ly}" x2="${lx + 24}" y2="${ly}" stroke="${color}" stroke-width="2"${dash}/>`,
      `<text x="${lx + 30}" y="${ly + 4}">${xml(s.name)}</text>`,
    );
  });
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}
