import { writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import { selectSuites } from '../bench/cases/index.js';
import { modelSuiteFor } from '../bench/cases/model.js';
import { storeSuite } from '../bench/cases/store.js';
import { benchSettings, runBenchmarks } from '../bench/harness.js';
import { formatJson, formatMarkdown, renderSvg } from '../bench/report.js';
import { UsageError } from '../errors.js';
import type { GpuContext } from '../gpu/context.js';
import { dawnPolling } from '../node/dawn-polling.js';
import { ADAPTER_FLAG, adapterFlag, type CommandSpec, type FlagTable, parseFlags, printUsage, writableFileFlag } from './flags.js';
import { benchDirectory } from './bench-store.js';
import { openCliGpu } from './gpu.js';
import { loadCliModel, MODEL_FLAGS } from './model-flag.js';
import { ProgressReporter } from './progress.js';

const BENCH_FLAGS = {
  only: { type: 'string', value: 'NAME,NAME', help: 'run only these suites (peers: onnxruntime-web, gpu.js and the TS reference in Chromium)' },
  model: { ...MODEL_FLAGS.model, help: 'with --only model: the model to time (a HF folder, a llama2.c checkpoint or hf:ORG/NAME; default stories260K)' },
  quick: { type: 'boolean', help: 'smaller sizes and fewer runs (< 2 min on SwiftShader)' },
  json: { type: 'boolean', help: 'print the report as JSON instead of a markdown table' },
  plot: { type: 'string', value: 'FILE.svg', help: 'also draw time against context length there' },
  adapter: ADAPTER_FLAG,
} as const satisfies FlagTable;

/**
 * `kvcompact bench`: its flags and help.
 *
 * @example
 * ```ts
 * process.stdout.write(usageText(BENCH_COMMAND));
 * ```
 */
export const BENCH_COMMAND: CommandSpec<typeof BENCH_FLAGS> = {
  name: 'bench',
  summary: 'kernel benchmarks against the copy kernel, end-to-end compression time, memory tables',
  get details() {
    return `suites: ${selectSuites(undefined).suites.map((s) => s.name).join(', ')}, peers`;
  },
  flags: BENCH_FLAGS,
};

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
  const values = parseFlags(BENCH_COMMAND, argv);
  if (values === 'help') return printUsage(BENCH_COMMAND);
  if (values.only === 'peers') return (await import('./bench-peers.js')).benchPeersCommand(values); // in Chromium
  const selected = selectSuites(values.only);
  const { unknown } = selected;
  if (values.model !== undefined && !selected.suites.some((s) => s.name === 'model')) {
    throw new UsageError('--model', 'picks the model the model suite times: add --only model');
  }
  const model = values.model;
  // The registered store suite measures memory only (src/bench is below src/node): add the directory tier here; a
  // --model is loaded here too, where the files are resolved.
  const suites = await Promise.all(
    selected.suites.map(async (s) => {
      if (s.name === 'store') return storeSuite({ directory: await benchDirectory() });
      if (s.name === 'model' && model !== undefined) {
        const loaded = await loadCliModel({ model });
        return modelSuiteFor({ name: basename(loaded.modelPath).replace(/\.bin$/, ''), load: async () => loaded.checkpoint });
      }
      return s;
    }),
  );
  if (unknown.length > 0 || suites.length === 0) {
    const known = selectSuites(undefined).suites.map((s) => s.name);
    throw new UsageError('--only', `unknown benchmark "${unknown.join(', ')}"; known: ${[...known, 'peers'].join(', ')}`);
  }
  if (values.plot !== undefined && !values.plot.endsWith('.svg')) {
    throw new UsageError('--plot', `expects a FILE.svg path; got "${values.plot}"`);
  }
  const plotPath = values.plot === undefined ? undefined : writableFileFlag('--plot', values.plot);
  const adapter = adapterFlag(values.adapter);
  const settings = benchSettings(values.quick ?? false);
  // Table-only suites (bytes-per-token) need no GPU: do not demand an adapter for them.
  const needsGpu = suites.some((s) => (s.cases?.(settings).length ?? 0) > 0);
  let gpu: GpuContext | null = null;
  if (needsGpu) gpu = await openCliGpu(adapter);
  try {
    const progress = new ProgressReporter(process.stderr, 'kvcompact bench');
    const measured = await runBenchmarks(gpu, suites, settings, { onProgress: ({ done, total, label }) => progress.update(done, total, label) });
    const report = gpu ? { ...measured, dawnPolling: dawnPolling() } : measured;
    progress.finish(`${suites.length} suite${suites.length === 1 ? '' : 's'}`);
    process.stdout.write(values.json ? formatJson(report) : formatMarkdown(report));
    if (plotPath !== undefined) {
      writeFileSync(plotPath, renderSvg(report));
      process.stderr.write(`kvcompact bench: plot written to ${plotPath}\n`);
    }
    return 0;
  } finally {
    await gpu?.destroy();
  }
}
