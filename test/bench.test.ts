import { utilisationReport } from '../src/cache/memory-report.js';
import { describe, expect, it } from 'vitest';
import { bytesPerTokenTable } from '../src/bench/cases/bytes-per-token.js';
import { compressCacheSize } from '../src/bench/cases/compress.js';
import { BENCH_SUITES, selectSuites } from '../src/bench/cases/index.js';
import { runMixedWorkload, utilisationTable } from '../src/bench/cases/utilisation.js';
import { benchCacheSize, buildBenchCache } from '../src/bench/fixture.js';
import {
  type BenchCase,
  type BenchReport,
  type BenchRow,
  type BenchSettings,
  type BenchSuite,
  benchSettings,
  gigabytesPerSecond,
  prepareCopy,
  runBenchmarks,
} from '../src/bench/harness.js';
import { formatJson, formatMarkdown, plotSeries, renderSvg, ROW_COLUMNS } from '../src/bench/report.js';
import { median, quantile, spread } from '../src/bench/stats.js';
import { PassTimer } from '../src/bench/timer.js';
import { formatBytes, formatTokens, trimNumber } from '../src/bench/units.js';
import { decodeBlockRef } from '../src/format/layout.js';
import { InvalidArgumentError } from '../src/errors.js';
import { readBuffer } from '../src/gpu/buffers.js';
import { CopyKernel } from '../src/kernels/cache/copy.js';
import { testGpu } from './helpers/gpu.js';

describe('bench statistics', () => {
  it('takes the middle sample, or the mean of the two middle ones', () => {
    expect(median([5, 1, 3])).toBe(3);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([7])).toBe(7);
  });

  it('interpolates quantiles linearly between order statistics', () => {
    expect(quantile([1, 2, 3, 4], 0.25)).toBeCloseTo(1.75, 12);
    expect(quantile([1, 2, 3, 4], 0)).toBe(1);
    expect(quantile([1, 2, 3, 4], 1)).toBe(4);
    expect(quantile([10, 0], 0.5)).toBe(5);
  });

  it('reports min, max, quartiles and IQR that ignore one outlier', () => {
    const s = spread([1, 2, 3, 4, 100]);
    expect(s).toMatchObject({ min: 1, max: 100, q1: 2, q3: 4, iqr: 2 });
    expect(s.relativeIqr).toBeCloseTo(2 / 3, 12);
    expect(spread([0, 0]).relativeIqr).toBe(0);
  });

  it('rejects empty or non-finite samples and a bad quantile', () => {
    expect(() => median([])).toThrow(InvalidArgumentError);
    expect(() => spread([1, Number.NaN])).toThrow(InvalidArgumentError);
    expect(() => quantile([1], 1.5)).toThrow(InvalidArgumentError);
  });

  it('computes throughput in GB/s and 0 for an unmeasurably short time', () => {
    expect(gigabytesPerSecond(2e9, 1000)).toBe(2);
    expect(gigabytesPerSecond(100, 0)).toBe(0);
  });
});

describe('bench units', () => {
  it('formats bytes, tokens and numbers compactly', () => {
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(4 << 20)).toBe('4 MiB');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatTokens(16384)).toBe('16K');
    expect(formatTokens(1000)).toBe('1000');
    expect(trimNumber(0.012345, 3)).toBe('0.0123');
    expect(trimNumber(2, 3)).toBe('2');
    expect(trimNumber(1234.5, 3)).toBe('1235');
  });
});

function row(overrides: Partial<BenchRow> & Pick<BenchRow, 'name'>): BenchRow {
  return {
    suite: 'paged-attention-decode',
    shape: 'ctx 1K',
    bytes: 1 << 20,
    ms: 2,
    gbps: gigabytesPerSecond(1 << 20, 2),
    ratioToCopy: 0.5,
    copyMs: 1,
    spread: spread([1.5, 2, 2.5]),
    wallMs: 2.2,
    timing: 'pass-timestamps',
    samples: 3,
    repeat: 1,
    ...overrides,
  };
}

function fakeReport(rows: BenchRow[]): BenchReport {
  return {
    tool: 'kvcompact bench',
    date: '2026-01-01T00:00:00.000Z',
    adapter: { vendor: 'google', architecture: 'swiftshader', description: 'SwiftShader', isFallbackAdapter: true },
    settings: benchSettings(true),
    suites: [{ name: 'paged-attention-decode', description: 'attention', counts: 'cache bytes read once' }],
    rows,
    tables: [bytesPerTokenTable({ layers: 4, kvHeads: 8, headDim: 128, blockSize: 16 })],
    totalSeconds: 1.5,
  };
}

const ROWS: BenchRow[] = [
  row({ name: 'att/f16/1K', series: 'attention f16', context: 1024, ms: 2, copyMs: 1 }),
  row({ name: 'att/f16/4K', series: 'attention f16', context: 4096, ms: 8, copyMs: 4 }),
  row({ name: 'att/int4/1K', series: 'attention <int4> & co', context: 1024, ms: 1, baseline: 'att/f16/1K', speedup: 2 }),
  row({ name: 'att/int4/4K', series: 'attention <int4> & co', context: 4096, ms: 3, baseline: 'att/f16/4K', speedup: 8 / 3 }),
  row({ name: 'append/1', suite: 'kv-append', perItem: { unit: 'token', count: 1, us: 12.5 } }),
];

/** A strict enough XML check for hand-written SVG: one root, balanced tags, quoted attributes, known entities. */
function assertWellFormedXml(text: string): void {
  const body = text.replace(/^<\?xml[^?]*\?>\s*/, '');
  const stack: string[] = [];
  let roots = 0;
  const token = /<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>|<|&(?!(?:amp|lt|gt|quot|apos);)/g;
  let match: RegExpExecArray | null;
  while ((match = token.exec(body)) !== null) {
    const [whole, closing, name, , selfClosing] = match;
    if (whole === '<' || whole.startsWith('&')) throw new Error(`stray "${whole}" at ${match.index}`);
    if (closing) {
      const open = stack.pop();
      if (open !== name) throw new Error(`</${name}> closes <${open ?? 'nothing'}>`);
    } else {
      if (stack.length === 0) roots++;
      if (!selfClosing) stack.push(name ?? '');
    }
  }
  if (stack.length > 0) throw new Error(`unclosed <${stack.join('>, <')}>`);
  expect(roots).toBe(1);
}

describe('bench report', () => {
  it('formats a markdown table with every column, speedups, per-item times and the counted bytes', () => {
    const text = formatMarkdown(fakeReport(ROWS));
    const header = text.split('\n').find((line) => line.startsWith('| benchmark'));
    expect(header).toBe(`| ${ROW_COLUMNS.join(' | ')} |`);
    const lines = text.split('\n').filter((line) => line.startsWith('| att/') || line.startsWith('| append/'));
    expect(lines).toHaveLength(5);
    for (const line of lines) expect(line.split(' | ')).toHaveLength(ROW_COLUMNS.length);
    expect(text).toContain('| att/int4/4K |');
    expect(text).toContain('2.67×');
    expect(text).toContain('12.5 µs/token');
    expect(text).toContain('**paged-attention-decode**: cache bytes read once');
    expect(text).toContain('### Bytes per token, 4 layers × 8 KV heads × head_dim 128, block 16');
    expect(text).not.toContain('GPU waits');
    expect(formatMarkdown({ ...fakeReport(ROWS), dawnPolling: 'paced' })).toMatch(/^date: .* · GPU waits: paced$/m);
    expect(formatMarkdown({ ...fakeReport(ROWS), dawnPolling: 'spin' })).toMatch(/^date: .* · GPU waits: Dawn's spinning$/m);
    // a | inside a cell must not split it
    const piped = formatMarkdown(fakeReport([row({ name: 'a|b' })]));
    expect(piped).toContain('| a\\|b |');
  });

  it('round-trips through JSON', () => {
    const report = fakeReport(ROWS);
    expect(JSON.parse(formatJson(report))).toEqual(report);
  });

  it('plots one line per series plus the copy reference of baseline rows', () => {
    const series = plotSeries(ROWS);
    expect(series.map((s) => s.name)).toEqual(['attention f16', 'attention <int4> & co', 'copy, bytes of attention f16']);
    expect(series[0]?.points).toEqual([
      { x: 1024, y: 2 },
      { x: 4096, y: 8 },
    ]);
    expect(series[2]?.dashed).toBe(true);
  });

  it('renders well-formed SVG with a legend, escaped names and log axes', () => {
    const svg = renderSvg(fakeReport(ROWS));
    assertWellFormedXml(svg);
    expect(svg).toContain('<svg xmlns="http://www.w3.org/2000/svg"');
    expect(svg).toContain('attention &lt;int4&gt; &amp; co');
    expect(svg).toContain('>1K</text>');
    expect(svg).toContain('>4K</text>');
    expect(svg.match(/<polyline /g)).toHaveLength(3);
    const ticks = [...svg.matchAll(/<text x="\d+(?:\.\d+)?" y="([\d.]+)" text-anchor="end">([\d.]+)<\/text>/g)].map(
      (m) => ({ y: Number(m[1]), label: Number(m[2]) }),
    );
    const at = (label: number) => ticks.find((t) => t.label === label)?.y ?? Number.NaN;
    // log y: the 1→2 ms gap is log(2)/log(2.5) times the 2→5 ms gap (pixel coordinates are rounded to 0.1)
    expect(Math.abs(at(1) - at(2) - (Math.log(2) / Math.log(2.5)) * (at(2) - at(5)))).toBeLessThan(0.2);
  });

  it('renders a well-formed empty plot when no row has a context length', () => {
    const svg = renderSvg(fakeReport([row({ name: 'copy/1 MiB' })]));
    assertWellFormedXml(svg);
    expect(svg).toContain('no rows with a context length to plot');
  });
});

describe('bench registry and tables', () => {
  it('selects suites by name and reports unknown names', () => {
    expect(selectSuites(undefined).suites).toHaveLength(BENCH_SUITES.length);
    const picked = selectSuites('kv-append, copy');
    expect(picked.suites.map((s) => s.name)).toEqual(['copy', 'kv-append']);
    expect(selectSuites('copy,nope').unknown).toEqual(['nope']);
    expect(new Set(BENCH_SUITES.map((s) => s.name)).size).toBe(BENCH_SUITES.length);
  });

  it('gives unique case names and drops the slowest sizes in --quick', () => {
    for (const quick of [true, false]) {
      const names = BENCH_SUITES.flatMap((s) => s.cases?.(benchSettings(quick)) ?? []).map((c) => c.name);
      expect(new Set(names).size).toBe(names.length);
    }
    const attention = BENCH_SUITES.find((s) => s.name === 'paged-attention-decode');
    const contexts = (quick: boolean) => attention?.cases?.(benchSettings(quick)).map((c) => c.context);
    expect(new Set(contexts(false))).toEqual(new Set([1024, 4096, 16384]));
    expect(new Set(contexts(true))).toEqual(new Set([1024]));
  });

  it('computes bytes per token from the block layout against the f16 baseline', () => {
    const table = bytesPerTokenTable({ layers: 4, kvHeads: 8, headDim: 128, blockSize: 16 });
    const int4 = table.rows.find((r) => r[0] === 'int4');
    // K and V codes 2 × 1024 B + K params 128 words + V params 128 words + 16 positions = 3136 B per block
    expect(int4?.slice(0, 8)).toEqual(['int4', 128, 16, 16, 3136, '196', '6272', '16384']);
    const f16 = table.rows.find((r) => r[0] === 'f16');
    expect(f16?.[5]).toBe('516');
    const small = bytesPerTokenTable({ layers: 4, kvHeads: 8, headDim: 8, blockSize: 16 });
    expect(small.rows.find((r) => r[0] === 'int2')?.slice(3, 6)).toEqual([8, 256, '16']);
  });

  it('sizes a benchmark cache: quantized whole blocks before a full recent window', () => {
    const size = benchCacheSize({ layers: 1, kvHeads: 8, headDim: 128, blockSize: 16, context: 4096, full: 'f16', quant: 'int4' });
    expect(size.quantBlocksPerHead).toBe(248);
    expect(size.fullBlocksPerHead).toBe(8);
    expect(size.blockBytesPerLayer).toBe(8 * (248 * 3136 + 8 * 8256));
  });
});

const TINY: BenchSettings = {
  quick: true,
  warmup: 1,
  runs: 3,
  minRuns: 2,
  caseBudgetMs: 500,
  targetSampleMs: 1,
  maxRepeat: 4,
};

describe('bench harness on the GPU', () => {
  it('runs a tiny copy case and reports sane non-negative figures', async () => {
    const gpu = await testGpu();
    const suite: BenchSuite = {
      name: 'copy',
      description: 'tiny copy',
      counts: 'read + write',
      cases: () => [
        { name: 'copy/64 KiB', shape: '64 KiB', copyReference: true, setup: (g) => prepareCopy(g, 128 * 1024, new CopyKernel(g)) },
        // not a reference: the harness measures its own copy at this byte count
        { name: 'other/32 KiB', shape: '32 KiB', setup: (g) => prepareCopy(g, 64 * 1024, new CopyKernel(g)) },
      ],
    };
    const progress: number[] = [];
    const report = await runBenchmarks(gpu, [suite], TINY, { onProgress: (p) => progress.push(p.done) });
    expect(progress).toEqual([0, 1, 2]);
    expect(report.rows).toHaveLength(2);
    for (const r of report.rows) {
      expect(r.bytes).toBeGreaterThan(0);
      for (const value of [r.ms, r.gbps, r.ratioToCopy, r.copyMs, r.wallMs, r.spread.min, r.spread.iqr]) {
        expect(Number.isFinite(value)).toBe(true);
        expect(value).toBeGreaterThanOrEqual(0);
      }
      expect(r.spread.min).toBeLessThanOrEqual(r.ms);
      expect(r.spread.max).toBeGreaterThanOrEqual(r.ms);
      expect(r.samples).toBeGreaterThanOrEqual(TINY.minRuns);
      expect(r.repeat).toBeGreaterThanOrEqual(1);
      expect(r.repeat).toBeLessThanOrEqual(TINY.maxRepeat);
      expect(r.timing).toBe(gpu.has('timestamp-query') ? 'pass-timestamps' : 'wall');
    }
    const reference = report.rows[0];
    expect(reference?.ratioToCopy === 0 || Math.abs((reference?.ratioToCopy ?? 0) - 1) < 1e-9).toBe(true);
    expect(reference?.copyMs).toBe(reference?.ms);
    assertWellFormedXml(renderSvg(report));
    expect(formatMarkdown(report)).toContain('| copy/64 KiB |');
  });

  it('builds a random benchmark cache in the block layout (table, pools, positions)', async () => {
    const gpu = await testGpu();
    const cache = buildBenchCache(gpu, {
      layers: 2,
      kvHeads: 2,
      headDim: 8,
      blockSize: 16,
      context: 70,
      full: 'f16',
      quant: 'int4',
      recent: 20,
    });
    try {
      // 5 blocks per head: floor((70 − 20) / 16) = 3 quantized, then 2 full (the last one partly filled)
      expect([cache.quantBlocksPerHead, cache.fullBlocksPerHead, cache.maxBlocksPerHead]).toEqual([3, 2, 5]);
      const table = new Uint32Array(await readBuffer(gpu, cache.bindings.blockTable));
      const lens = new Uint32Array(await readBuffer(gpu, cache.bindings.contextLens));
      expect([...lens]).toEqual([70, 70, 70, 70]);
      const seen = { full: new Set<number>(), quant: new Set<number>() };
      for (let rowIndex = 0; rowIndex < 4; rowIndex++) {
        for (let b = 0; b < 5; b++) {
          const ref = decodeBlockRef(table[rowIndex * 5 + b] ?? 0);
          expect(ref.pool).toBe(b < 3 ? 'quant' : 'full');
          expect(ref.block).toBeGreaterThan(0); // block 0 is the null block
          seen[ref.pool].add(ref.block);
        }
      }
      expect(seen.quant.size).toBe(12);
      expect(seen.full.size).toBe(8);
      // positions of logical block 4 of row 0 (a full block) are 64..79
      const fullRef = decodeBlockRef(table[4] ?? 0);
      const pool = new Uint32Array(await readBuffer(gpu, cache.bindings.fullPool));
      const base = fullRef.block * cache.full.wordsPerBlock + cache.full.positionsOffset;
      expect([...pool.subarray(base, base + 16)]).toEqual(Array.from({ length: 16 }, (_, i) => 64 + i));
    } finally {
      cache.destroy();
    }
  });
});

describe('bench: end-to-end (wall-clock) and skipped cases', () => {
  it('times run() cases by wall clock, once per sample, and lists skipped cases in the report', async () => {
    const gpu = await testGpu();
    let runs = 0;
    const suite: BenchSuite = {
      name: 'wall',
      description: 'a wall-clock case and a skipped one',
      cases: () => [
        {
          name: 'wall/sleep',
          shape: '2 ms',
          setup: () => ({
            bytes: 1024,
            items: { count: 4, unit: 'token' },
            run: async (clock) => {
              runs++;
              await clock(() => new Promise<void>((resolve) => setTimeout(resolve, 2)));
            },
            destroy: () => undefined,
          }),
        },
        { name: 'wall/too-big', shape: 'huge', setup: () => ({ skip: 'past the limits' }) },
      ],
    };
    const report = await runBenchmarks(gpu, [suite], TINY);
    expect(report.rows.map((r) => r.name)).toEqual(['wall/sleep']);
    const r = report.rows[0];
    expect(r?.timing).toBe('wall');
    expect(r?.repeat).toBe(1);
    expect(r?.ms).toBeGreaterThanOrEqual(1.5);
    expect(r?.perItem?.unit).toBe('token');
    expect(runs).toBe((r?.samples ?? 0) + TINY.warmup);
    expect(report.skipped).toEqual([{ suite: 'wall', name: 'wall/too-big', reason: 'past the limits' }]);
    expect(formatMarkdown(report)).toContain('- **wall/too-big**: past the limits');
  });
});

describe('bench: new suites run once at their smallest size', () => {
  const smallest = (name: string) =>
    (BENCH_SUITES.find((s) => s.name === name)?.cases?.(benchSettings(true)) ?? []).filter((c) => c.context === 1024);

  async function runOnce(benchCase: BenchCase): Promise<void> {
    const gpu = await testGpu();
    const prepared = await gpu.withErrorScope(() => benchCase.setup(gpu, TINY));
    if ('skip' in prepared) throw new Error(`${benchCase.name} skipped: ${prepared.skip}`);
    try {
      expect(prepared.bytes).toBeGreaterThan(0);
      await gpu.withErrorScope(async () => {
        if (prepared.run) {
          let calls = 0;
          await prepared.run((body) => {
            calls++;
            return body();
          });
          expect(calls).toBe(1);
        } else {
          const encoder = gpu.device.createCommandEncoder();
          prepared.encode?.(encoder, new PassTimer(null));
          gpu.submit([encoder.finish()]);
          await gpu.idle();
        }
      });
    } finally {
      prepared.destroy();
    }
  }

  it('registers every suite with 1K rows in --quick (and 4K for compress), and 16K (and 64K for compress) only in full runs', () => {
    for (const name of ['scoring', 'top-k', 'compaction', 'quantize', 'compress']) {
      const contexts = (quick: boolean) =>
        new Set(BENCH_SUITES.find((s) => s.name === name)?.cases?.(benchSettings(quick)).map((c) => c.context));
      // --quick keeps one size, and two for end-to-end compression so time per token can be compared
      expect(contexts(true)).toEqual(new Set(name === 'compress' ? [1024, 4096] : [1024]));
      expect(contexts(false).has(16384)).toBe(true);
    }
    const compress = BENCH_SUITES.find((s) => s.name === 'compress')?.cases?.(benchSettings(false)) ?? [];
    expect(compress.filter((c) => c.context === 65536)).toHaveLength(10);
    // The 64K rows' pools together pass 1 GiB (one buffer could not hold them); each layer's own fits SwiftShader's 1 GiB.
    const size = compressCacheSize(65536, 16);
    expect(size.totalBytes).toBeGreaterThan(2 ** 30);
    expect(size.fullPoolBytes).toBeLessThan(2 ** 30);
  });

  it('scores (h2o, knorm), selects, compacts and quantizes once at 1K', async () => {
    const cases = [
      ...smallest('scoring').filter((c) => !c.name.includes('snapkv')),
      ...smallest('top-k'),
      ...smallest('compaction'),
      ...smallest('quantize'),
    ];
    expect(cases.length).toBe(2 + 1 + 1 + 3);
    for (const c of cases) await runOnce(c);
  });

  it('compresses a fork end to end at 1K (window-less h2o); window variants skip on a software adapter', async () => {
    const gpu = await testGpu();
    const cases = smallest('compress');
    const nowin = cases.filter((c) => c.name.includes('-nowin'));
    expect(nowin).toHaveLength(2);
    for (const c of nowin) await runOnce(c);
    const windowed = cases.find((c) => c.name === 'compress/snapkv/uniform/f16/1K');
    expect(windowed).toBeDefined();
    if (windowed && gpu.adapter.isFallbackAdapter) {
      const prepared = await windowed.setup(gpu, TINY);
      expect('skip' in prepared && prepared.skip).toMatch(/software adapter/);
    }
  });

  it('restores a saved state once at 1K: a GPU-resident fork and a snapshot import', async () => {
    const cases = smallest('store-gpu');
    expect(cases.map((c) => c.name)).toEqual(['store-gpu/resident/1K', 'store-gpu/import/1K']);
    for (const c of cases) await runOnce(c);
  });

  it('reports sane pool utilisation after the mixed workload', () => {
    const { meta, counts } = runMixedWorkload('int4', 7);
    expect(counts.added + counts.forks).toBeGreaterThan(counts.freed);
    expect(counts.compressed).toBeGreaterThan(0);
    const u = utilisationReport(meta);
    expect(u.total.slotsUsed).toBeLessThanOrEqual(u.total.slotsAllocated);
    expect(u.total.waste).toBeGreaterThan(0);
    expect(u.total.waste).toBeLessThan(0.04);
    expect(u.quant.waste).toBe(0); // quantized blocks are always full
    const table = utilisationTable(7);
    expect(table.rows).toHaveLength(6);
    const after = table.rows.filter((r) => String(r[0]).startsWith('then'));
    const bytes = after.map((r) => Number(r[8]));
    // int8 > int4 > int2 bytes per stored token once most tokens are quantized
    expect(bytes[0]).toBeGreaterThan(bytes[1] ?? Infinity);
    expect(bytes[1]).toBeGreaterThan(bytes[2] ?? Infinity);
    expect(utilisationTable(7)).toEqual(table); // deterministic
  });
});
