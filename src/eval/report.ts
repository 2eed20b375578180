/**
 * Presentation of an {@link EvalReport}: a markdown table and a hand-written SVG of perplexity against memory
 * ratio. Browser-safe (strings only).
 */
import type { EvalReport, EvalRow } from './evaluate.js';

function storage(bits: number): string {
  return bits >= 16 ? `f${bits}` : `int${bits}`;
}

/** The row every Δ is measured against: full at 16 bits when present. */
function baselineOf(rows: readonly EvalRow[]): EvalRow | undefined {
  return rows.find((r) => r.policy === 'full' && r.bits === 16);
}

/**
 * A markdown table of the rows, with perplexity change against the full 16-bit row.
 *
 * @example
 * ```ts
 * process.stdout.write(formatEvalTable(report));
 * ```
 */
export function formatEvalTable(report: EvalReport): string {
  const base = baselineOf(report.rows);
  // The merge column only when some row merged, so tables of sweeps without merging read as before.
  const merged = report.rows.some((r) => (r.merge ?? 'none') !== 'none');
  const header = ['policy', 'mode', 'budget', 'bits', ...(merged ? ['merge'] : []), 'ppl', 'Δppl', 'top-1', 'agree', 'KL', 'B/token', 'ratio', 'ratio@end', 's'];
  const lines = [`| ${header.join(' | ')} |`, `|${header.map((_, i) => (i < (merged ? 5 : 4) ? ' --- ' : ' ---: ')).join('|')}|`];
  for (const r of report.rows) {
    const delta = base ? `${((r.ppl / base.ppl - 1) * 100).toFixed(2)}%` : '';
    lines.push(
      `| ${[
        r.policy,
        r.budgetMode ?? '—',
        r.budget ?? '—',
        storage(r.bits),
        ...(merged ? [r.merge ?? 'none'] : []),
        r.ppl.toFixed(4),
        delta,
        `${(r.top1 * 100).toFixed(2)}%`,
        `${(r.agreeWithFull * 100).toFixed(2)}%`,
        r.klToFull.toFixed(4),
        r.bytesPerToken.toFixed(1),
        `${r.ratio.toFixed(2)}×`,
        `${r.ratioAtEnd.toFixed(2)}×`,
        r.seconds.toFixed(1),
      ].join(' | ')} |`,
    );
  }
  const s = report.settings;
  return `${lines.join('\n')}\n\n${s.windows} windows × ${s.window} tokens (${s.predictions} predictions), block ${s.blockSize}, ${s.sinks} sinks, ${s.seconds.toFixed(1)} s\n`;
}

const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#17becf', '#bcbd22'];

function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** "Nice" tick values covering [lo, hi]. */
function ticks(lo: number, hi: number, count: number): number[] {
  const span = hi - lo || 1;
  const raw = span / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => span / s <= count) ?? raw;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

/**
 * Perplexity (y) against memory ratio (x, f16 baseline / bytes held): every row as a dot, one line per policy
 * through its best trade-offs (the rows no other row of that policy beats on both perplexity and ratio), `full`
 * as its own line; the full 16-bit perplexity as a dashed reference.
 *
 * @example
 * ```ts
 * writeFileSync('eval.svg', renderEvalSvg(report));
 * ```
 */
export function renderEvalSvg(report: EvalReport): string {
  const width = 760;
  const height = 480;
  const m = { left: 64, right: 170, top: 36, bottom: 52 };
  const rows = report.rows.filter((r) => Number.isFinite(r.ppl) && Number.isFinite(r.ratio));
  const xs = rows.map((r) => r.ratio);
  const ys = rows.map((r) => r.ppl);
  const xLo = 0;
  const xHi = Math.max(1, ...xs) * 1.05;
  const yLo = Math.min(...ys, Infinity) * 0.98;
  const yHi = Math.max(...ys, -Infinity) * 1.02;
  const px = (x: number): number => m.left + ((x - xLo) / (xHi - xLo || 1)) * (width - m.left - m.right);
  const py = (y: number): number => height - m.bottom - ((y - yLo) / (yHi - yLo || 1)) * (height - m.top - m.bottom);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    `<text x="${m.left}" y="20" font-size="14">Perplexity against KV memory ratio (${report.settings.windows}×${report.settings.window} tokens)</text>`,
  ];
  if (rows.length > 0) {
    for (const t of ticks(xLo, xHi, 8)) {
      parts.push(`<line x1="${px(t)}" y1="${m.top}" x2="${px(t)}" y2="${height - m.bottom}" stroke="#eee"/>`);
      parts.push(`<text x="${px(t)}" y="${height - m.bottom + 16}" text-anchor="middle">${t}×</text>`);
    }
    for (const t of ticks(yLo, yHi, 6)) {
      parts.push(`<line x1="${m.left}" y1="${py(t)}" x2="${width - m.right}" y2="${py(t)}" stroke="#eee"/>`);
      parts.push(`<text x="${m.left - 6}" y="${py(t) + 4}" text-anchor="end">${t}</text>`);
    }
    const base = baselineOf(rows);
    if (base) {
      parts.push(
        `<line x1="${m.left}" y1="${py(base.ppl)}" x2="${width - m.right}" y2="${py(base.ppl)}" stroke="#444" stroke-dasharray="4 4"/>`,
      );
    }
    const policies = [...new Set(rows.map((r) => r.policy))];
    policies.forEach((policy, i) => {
      const color = COLORS[i % COLORS.length] ?? '#000';
      const points = rows.filter((r) => r.policy === policy).sort((a, b) => a.ratio - b.ratio);
      // The frontier: no other row of the policy keeps more memory AND loses less perplexity.
      const frontier = points.filter((p) => !points.some((q) => q !== p && q.ratio >= p.ratio && q.ppl < p.ppl));
      parts.push(
        `<polyline fill="none" stroke="${color}" stroke-width="1.5" points="${frontier.map((p) => `${px(p.ratio).toFixed(1)},${py(p.ppl).toFixed(1)}`).join(' ')}"/>`,
      );
      for (const p of points) {
        const label = `${policy} ${p.budgetMode ?? ''} B=${p.budget ?? 'all'} ${storage(p.bits)}: ppl ${p.ppl.toFixed(3)} at ${p.ratio.toFixed(2)}×`;
        parts.push(`<circle cx="${px(p.ratio).toFixed(1)}" cy="${py(p.ppl).toFixed(1)}" r="3" fill="${color}"><title>${escapeXml(label)}</title></circle>`);
      }
      const ly = m.top + 10 + i * 18;
      parts.push(`<line x1="${width - m.right + 14}" y1="${ly}" x2="${width - m.right + 34}" y2="${ly}" stroke="${color}" stroke-width="2"/>`);
      parts.push(`<text x="${width - m.right + 40}" y="${ly + 4}">${escapeXml(policy)}</text>`);
    });
  }
  parts.push(
    `<line x1="${m.left}" y1="${height - m.bottom}" x2="${width - m.right}" y2="${height - m.bottom}" stroke="#000"/>`,
    `<line x1="${m.left}" y1="${m.top}" x2="${m.left}" y2="${height - m.bottom}" stroke="#000"/>`,
    `<text x="${(m.left + width - m.right) / 2}" y="${height - 12}" text-anchor="middle">memory ratio (f16 baseline / bytes held, time-averaged)</text>`,
    `<text x="16" y="${(m.top + height - m.bottom) / 2}" transform="rotate(-90 16 ${(m.top + height - m.bottom) / 2})" text-anchor="middle">perplexity</text>`,
    '</svg>',
  );
  return `${parts.join('\n')}\n`;
}
