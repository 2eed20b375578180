import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { selectSuites } from '../bench/cases/index.js';
import { type BenchProgress, benchSettings, runBenchmarks } from '../bench/harness.js';
import { formatJson, formatMarkdown, renderSvg } from '../bench/report.js';
import { InvalidArgumentError } from '../errors.js';
import type { GpuContext } from '../gpu/context.js';
import { type AdapterChoice, createNodeGpu } from '../node/gpu.js';

/**
 * The `bench` lines of the CLI usage text.
 *
 * @example
 * ```ts
 * const usage = `commands:\n${BENCH_USAGE}\n`;
 * ```
 */
export const BENCH_USAGE = `  bench [--json] [--only NAME[,NAME]] [--quick] [--plot FILE.svg] [--adapter ...]
                           kernel benchmarks against the copy kernel (--quick: < 2 min on SwiftShader)`;

function progressBar(stream: NodeJS.WriteStream): (progress: BenchProgress) => void {
  const started = Date.now();
  return ({ done, total, label }) => {
    if (total === 0) return;
    const width = 24;
    const filled = Math.round((done / total) * width);
    const seconds = ((Date.now() - started) / 1000).toFixed(0);
    const line = `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${done}/${total} ${seconds}s ${label}`;
    // A terminal gets one line redrawn in place; a log file gets one line per case.
    if (stream.isTTY) {
      const columns = stream.columns || 100;
      stream.write(`\r${line.slice(0, columns - 1).padEnd(columns - 1)}${done === total ? '\n' : ''}`);
    } else {
      stream.write(`${line}\n`);
    }
  };
}

/**
 * `kvcompact bench`: runs the registered benchmark suites (src/bench/cases/index.ts) and prints a markdown table,
 * or JSON with `--json`; `--plot FILE.svg` also writes time against context length. Progress goes to stderr.
 *
 * @example
 * ```ts
 * process.exitCode = await benchCommand(['--quick', '--only', 'copy']);
 * ```
 */
export async function benchCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      json: { type: 'boolean' },
      only: { type: 'string' },
      quick: { type: 'boolean' },
      plot: { type: 'string' },
      adapter: { type: 'string' },
    },
    strict: true,
  });
  if (values.only === 'peers') return (await import('./bench-peers.js')).benchPeersCommand(values); // in Chromium
  const { suites, unknown } = selectSuites(values.only);
  if (unknown.length > 0 || suites.length === 0) {
    const known = selectSuites(undefined).suites.map((s) => s.name);
    throw new InvalidArgumentError('--only', `unknown benchmark "${unknown.join(', ')}"; known: ${known.join(', ')}`);
  }
  if (values.plot !== undefined && !values.plot.endsWith('.svg')) {
    throw new InvalidArgumentError('--plot', `expects a FILE.svg path; got "${values.plot}"`);
  }
  const adapter = values.adapter as AdapterChoice | undefined;
  if (adapter !== undefined && !['auto', 'hardware', 'software'].includes(adapter)) {
    throw new InvalidArgumentError('--adapter', `must be auto, hardware or software; got "${adapter}"`);
  }
  const settings = benchSettings(values.quick ?? false);
  // Table-only suites (bytes-per-token) need no GPU: do not demand an adapter for them.
  const needsGpu = suites.some((s) => (s.cases?.(settings).length ?? 0) > 0);
  let gpu: GpuContext | null = null;
  if (needsGpu) gpu = await createNodeGpu(adapter ? { adapter } : {});
  try {
    const report = await runBenchmarks(gpu, suites, settings, { onProgress: progressBar(process.stderr) });
    process.stdout.write(values.json ? formatJson(report) : formatMarkdown(report));
    if (values.plot !== undefined) {
      writeFileSync(values.plot, renderSvg(report));
      process.stderr.write(`kvcompact bench: plot written to ${values.plot}\n`);
    }
    return 0;
  } finally {
    await gpu?.destroy();
  }
}
