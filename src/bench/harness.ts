// The benchmark harness: browser-safe (no node: imports), so the same cases can later run in a page.
import { type AdapterReport } from '../gpu/adapter-report.js';
import { createStorageBuffer } from '../gpu/buffers.js';
import type { GpuContext } from '../gpu/context.js';
import { InvalidArgumentError } from '../errors.js';
import { CopyKernel } from '../kernels/cache/copy.js';
import { median, spread, type Spread } from './stats.js';
import { type PassTimer, type Sample, type TimingMethod, TimestampSession } from './timer.js';

export type { Spread } from './stats.js';
export type { TimingMethod } from './timer.js';

/**
 * How long and how often each case runs.
 */
export interface BenchSettings {
  /** True for `--quick`: fewer sizes and samples (each suite decides which sizes it drops). */
  readonly quick: boolean;
  /**
   * Untimed samples, counting the cold first one (pipeline compilation on first dispatch, first touch of
   * buffers); calibration samples come on top.
   */
  readonly warmup: number;
  /** Timed samples per case (fewer when `caseBudgetMs` runs out, never fewer than `minRuns`). */
  readonly runs: number;
  readonly minRuns: number;
  /** Wall-clock budget of one case's timed samples, in ms. */
  readonly caseBudgetMs: number;
  /**
   * Each sample repeats the case inside one command buffer until it takes about this long, so a short kernel is
   * not lost in timestamp quantization (Dawn rounds timestamps to 65.5 µs) or submit overhead.
   */
  readonly targetSampleMs: number;
  /** Upper bound of those repetitions. */
  readonly maxRepeat: number;
}

/**
 * Default settings: full run, or `--quick` (under two minutes on SwiftShader with 2 cores).
 *
 * @example
 * ```ts
 * const settings = benchSettings(true); // { quick: true, warmup: 1, runs: 5, minRuns: 3, ... }
 * ```
 */
export function benchSettings(quick: boolean): BenchSettings {
  return quick
    ? { quick, warmup: 1, runs: 5, minRuns: 3, caseBudgetMs: 1_500, targetSampleMs: 4, maxRepeat: 64 }
    : { quick, warmup: 2, runs: 15, minRuns: 3, caseBudgetMs: 10_000, targetSampleMs: 10, maxRepeat: 256 };
}

/**
 * Starts the wall clock of an end-to-end case around `body` and stops it when `body` settles (see
 * {@link PreparedCase.run}). Call it exactly once per run.
 *
 * @example
 * ```ts
 * const run = async (clock: WallClock) => {
 *   cache.fork(source, seq); // untimed
 *   await clock(() => cache.compress(seq, { policy: 'snapkv', ratio: 8 }));
 * };
 * ```
 */
export type WallClock = <T>(body: () => Promise<T>) => Promise<T>;

/**
 * What a case hands the harness once its buffers exist.
 *
 * @example
 * ```ts
 * const prepared: PreparedCase = {
 *   bytes: words * 8, // read once + written once
 *   encode: (encoder, timer) => copy.encode(encoder, src, dst, words, timer.pass()),
 *   destroy: () => { src.destroy(); dst.destroy(); } };
 * ```
 */
export interface PreparedCase {
  /**
   * Bytes one execution must move at the least (reads + writes, each byte once), as the suite's `counts` says.
   * Throughput and the copy comparison use it.
   */
  readonly bytes: number;
  /** Work items one execution handles (e.g. tokens), to report time per item. */
  readonly items?: { readonly count: number; readonly unit: string };
  /**
   * Records one execution. Pass `timer.pass()` as the `timestampWrites` of each compute pass you create (kernels
   * take it as an optional last argument); passes you cannot reach are still timed by the harness's bracket.
   * Must be repeatable: the harness encodes it several times back to back in one command buffer.
   * Absent when the case gives `run` instead.
   */
  encode?(encoder: GPUCommandEncoder, timer: PassTimer): void;
  /**
   * An end-to-end execution with its own submits, waits and readbacks (e.g. `cache.compress()`), which no single
   * command buffer can hold: timed by wall clock (timing `wall`), one execution per sample, never repeated. Work
   * that must not count (making a fresh copy of the state before, freeing it after) stays outside
   * `clock(...)`; the harness waits for the GPU to go idle before it starts the clock, so queued setup work is
   * not timed either. Used instead of `encode` when present.
   */
  run?(clock: WallClock): Promise<void>;
  /** Destroys the case's buffers. */
  destroy(): void;
}

/**
 * What `setup` returns for a case that cannot run on this device (e.g. a buffer past the adapter's limits): the
 * report lists it with the reason instead of a row, and the run goes on.
 *
 * @example
 * ```ts
 * if (bytes > gpu.limits.maxStorageBufferBindingSize) return { skip: `needs a ${bytes} B binding` } satisfies SkippedCase;
 * ```
 */
export interface SkippedCase {
  readonly skip: string;
}

/**
 * One row-to-be: a kernel at one shape.
 */
export interface BenchCase {
  /** Unique row name, e.g. `paged-attention-decode/int4/4K`. */
  readonly name: string;
  /** Human-readable shape, e.g. `ctx 4096 · 32q/8kv · d128 · int4 g16 + 128 f16`. */
  readonly shape: string;
  /** Plot line this row belongs to (rows with a `context` are plotted against it). */
  readonly series?: string;
  /** Context length in tokens, the plot's x axis. */
  readonly context?: number;
  /** Name of the row this one is compared with: `speedup` = that row's ms / this row's ms. */
  readonly baseline?: string;
  /**
   * Set when the case IS the copy kernel over these many bytes: its samples then serve as the copy reference
   * of every row with the same byte count (and its own ratio is 1 by definition).
   */
  readonly copyReference?: boolean;
  /** False for cases whose encode() cannot run twice in a row (in-place updates): no repetition then. */
  readonly repeatable?: boolean;
  /** Creates buffers and kernels (not timed); or says why the case cannot run here. */
  setup(gpu: GpuContext, settings: BenchSettings): PreparedCase | SkippedCase | Promise<PreparedCase | SkippedCase>;
}

/**
 * A table that needs no timing (e.g. bytes per token).
 */
export interface BenchTable {
  readonly title: string;
  readonly columns: readonly string[];
  readonly rows: readonly (readonly (string | number)[])[];
  /** What the columns mean, printed under the table. */
  readonly note?: string;
}

/**
 * A family of benchmark cases; one file under src/bench/cases/ each, listed in src/bench/cases/index.ts.
 *
 * @example
 * ```ts
 * export const mySuite: BenchSuite = {
 *   name: 'my-kernel',
 *   description: 'what it measures',
 *   counts: 'bytes read + bytes written, each once',
 *   cases: (settings) => [1024, 4096].map((n) => ({ name: `my-kernel/${n}`, shape: `n ${n}`, setup: (gpu) => prepare(gpu, n) })),
 * };
 * ```
 */
export interface BenchSuite {
  /** The name `--only` selects. */
  readonly name: string;
  readonly description: string;
  /** What `bytes` counts in this suite's rows. */
  readonly counts?: string;
  readonly cases?: (settings: BenchSettings) => readonly BenchCase[];
  /** Tables to print; a promise for tables that measure on the CPU (the store suite). */
  readonly tables?: (settings: BenchSettings) => readonly BenchTable[] | Promise<readonly BenchTable[]>;
}

/**
 * One measured row. Times are medians over samples; each sample is one execution (see `repeat`).
 *
 * @example
 * ```ts
 * for (const row of report.rows) console.log(row.name, row.ms.toFixed(3), `${row.gbps.toFixed(1)} GB/s`, row.ratioToCopy);
 * ```
 */
export interface BenchRow {
  readonly suite: string;
  readonly name: string;
  readonly shape: string;
  /** Bytes one execution moves, as the suite's `counts` defines them. */
  readonly bytes: number;
  /** Median GPU milliseconds of one execution (wall milliseconds when `timing` is 'wall'). */
  readonly ms: number;
  /** bytes / ms, in GB/s (10⁹ bytes per second). */
  readonly gbps: number;
  /**
   * gbps divided by the copy kernel's GB/s over the same byte count, measured in the same run (the copy kernel
   * counts read + write bytes, so it moves bytes/2 from one buffer to another). Equals copyMs / ms: 1 means as
   * fast as copying those bytes, 0.5 takes twice as long.
   */
  readonly ratioToCopy: number;
  /** Median ms of the copy kernel moving the same byte count. */
  readonly copyMs: number;
  /** Spread of the samples' ms. */
  readonly spread: Spread;
  /** Median wall ms of one execution (submit to completion, divided by the repetitions). */
  readonly wallMs: number;
  readonly timing: TimingMethod;
  /** Timed samples. */
  readonly samples: number;
  /** Executions per sample (back to back in one command buffer). */
  readonly repeat: number;
  readonly series?: string;
  readonly context?: number;
  readonly baseline?: string;
  /** baseline row's ms / this row's ms (> 1: faster than the baseline). */
  readonly speedup?: number;
  /** Time per item (e.g. µs per token). */
  readonly perItem?: { readonly unit: string; readonly count: number; readonly us: number };
}

/**
 * Everything one `kvcompact bench` run produced: what `--json` prints.
 *
 * @example
 * ```ts
 * const report: BenchReport = await runBenchmarks(gpu, BENCH_SUITES, benchSettings(true));
 * console.log(formatJson(report)); // what `kvcompact bench --json` prints
 * ```
 */
export interface BenchReport {
  readonly tool: 'kvcompact bench';
  readonly date: string;
  readonly adapter: AdapterReport | null;
  readonly settings: BenchSettings;
  readonly suites: readonly { readonly name: string; readonly description: string; readonly counts?: string }[];
  readonly rows: readonly BenchRow[];
  /** Cases whose setup said they cannot run on this device, with the reason (absent: none). */
  readonly skipped?: readonly { readonly suite: string; readonly name: string; readonly reason: string }[];
  readonly tables: readonly BenchTable[];
  /**
   * How the host waited for the GPU, where the runner says (the Node CLI: src/node/dawn-polling.ts): on a software
   * adapter Dawn's spinning wait took CPU from the kernels, so figures taken either way do not compare.
   */
  readonly dawnPolling?: 'spin' | 'paced';
  /** Wall seconds of the whole run (setup included). */
  readonly totalSeconds: number;
}

/**
 * Progress of a run: `done` of `total` cases finished; `label` is the case about to run (or that ran).
 *
 * @example
 * ```ts
 * await runBenchmarks(gpu, suites, settings, { onProgress: ({ done, total, label }) => console.error(`${done}/${total} ${label}`) });
 * ```
 */
export interface BenchProgress {
  readonly done: number;
  readonly total: number;
  readonly label: string;
}

interface Measurement {
  readonly samples: readonly Sample[];
  readonly repeat: number;
}

/**
 * Runs benchmark suites on one GPU and collects rows and tables. The copy kernel is measured once per distinct
 * byte count and shared by every row with that count.
 *
 * @example
 * ```ts
 * const gpu = await GpuContext.fromNavigator();
 * const report = await runBenchmarks(gpu, BENCH_SUITES, benchSettings(true), { onProgress: (p) => console.log(p) });
 * console.log(formatMarkdown(report));
 * ```
 */
export async function runBenchmarks(
  gpu: GpuContext | null,
  suites: readonly BenchSuite[],
  settings: BenchSettings,
  options: { onProgress?: (progress: BenchProgress) => void } = {},
): Promise<BenchReport> {
  const started = performance.now();
  const planned = suites.map((suite) => ({ suite, cases: suite.cases?.(settings) ?? [] }));
  const total = planned.reduce((sum, p) => sum + p.cases.length, 0);
  if (total > 0 && !gpu) {
    throw new InvalidArgumentError('gpu', 'timed benchmarks need a GPU context; only table suites run without one');
  }
  const tables: BenchTable[] = [];
  for (const suite of suites) tables.push(...((await suite.tables?.(settings)) ?? []));
  const rows: BenchRow[] = [];
  const skipped: { suite: string; name: string; reason: string }[] = [];
  const harness = gpu ? new Harness(gpu, settings) : null;
  let done = 0;
  try {
    for (const { suite, cases } of planned) {
      for (const benchCase of cases) {
        options.onProgress?.({ done, total, label: benchCase.name });
        const result = harness ? await harness.row(suite.name, benchCase) : null;
        if (result && 'skip' in result) skipped.push({ suite: suite.name, name: benchCase.name, reason: result.skip });
        else if (result) rows.push(result);
        done++;
      }
    }
    options.onProgress?.({ done, total, label: 'done' });
  } finally {
    harness?.destroy();
  }
  return {
    tool: 'kvcompact bench',
    date: new Date().toISOString(),
    adapter: gpu ? { ...gpu.adapter } : null,
    settings,
    suites: suites.map((s) => ({ name: s.name, description: s.description, ...(s.counts ? { counts: s.counts } : {}) })),
    rows: withSpeedups(rows),
    ...(skipped.length > 0 ? { skipped } : {}),
    tables,
    totalSeconds: (performance.now() - started) / 1000,
  };
}

function withSpeedups(rows: readonly BenchRow[]): BenchRow[] {
  const byName = new Map(rows.map((row) => [row.name, row]));
  return rows.map((row) => {
    const base = row.baseline ? byName.get(row.baseline) : undefined;
    return base && row.ms > 0 ? { ...row, speedup: base.ms / row.ms } : row;
  });
}

/**
 * Throughput in GB/s (10⁹ bytes per second) of `bytes` moved in `ms` milliseconds; 0 when the time is 0
 * (below the timestamp quantum), so a report never shows Infinity.
 *
 * @example
 * ```ts
 * gigabytesPerSecond(8 << 20, 4); // 2.097
 * ```
 */
export function gigabytesPerSecond(bytes: number, ms: number): number {
  return ms > 0 ? bytes / (ms * 1e6) : 0;
}

class Harness {
  private readonly timestamps: TimestampSession;
  private readonly copies = new Map<number, Measurement>();
  private copyKernel: CopyKernel | null = null;

  constructor(
    private readonly gpu: GpuContext,
    private readonly settings: BenchSettings,
  ) {
    this.timestamps = new TimestampSession(gpu);
  }

  async row(suite: string, benchCase: BenchCase): Promise<BenchRow | SkippedCase> {
    const prepared = await this.gpu.withErrorScope(() => benchCase.setup(this.gpu, this.settings));
    if ('skip' in prepared) return prepared;
    let measured: Measurement;
    try {
      measured = await this.gpu.withErrorScope(() =>
        prepared.run ? this.measureWall(prepared.run.bind(prepared)) : this.measure(prepared, benchCase.repeatable !== false),
      );
    } finally {
      prepared.destroy();
    }
    if (benchCase.copyReference) this.copies.set(prepared.bytes, measured);
    const copy = await this.copyAt(prepared.bytes);
    const ms = median(measured.samples.map((s) => s.ms));
    const copyMs = median(copy.samples.map((s) => s.ms));
    const gbps = gigabytesPerSecond(prepared.bytes, ms);
    const copyGbps = gigabytesPerSecond(prepared.bytes, copyMs);
    const items = prepared.items;
    return {
      suite,
      name: benchCase.name,
      shape: benchCase.shape,
      bytes: prepared.bytes,
      ms,
      gbps,
      ratioToCopy: copyGbps > 0 ? gbps / copyGbps : 0,
      copyMs,
      spread: spread(measured.samples.map((s) => s.ms)),
      wallMs: median(measured.samples.map((s) => s.wallMs)),
      timing: dominantMethod(measured.samples),
      samples: measured.samples.length,
      repeat: measured.repeat,
      ...(benchCase.series !== undefined ? { series: benchCase.series } : {}),
      ...(benchCase.context !== undefined ? { context: benchCase.context } : {}),
      ...(benchCase.baseline !== undefined ? { baseline: benchCase.baseline } : {}),
      ...(items && items.count > 0 ? { perItem: { unit: items.unit, count: items.count, us: (ms * 1000) / items.count } } : {}),
    };
  }

  /** The copy kernel over `bytes` (read + write), measured once per byte count. */
  private async copyAt(bytes: number): Promise<Measurement> {
    const cached = this.copies.get(bytes);
    if (cached) return cached;
    const prepared = prepareCopy(this.gpu, bytes, (this.copyKernel ??= new CopyKernel(this.gpu)));
    try {
      const measured = await this.gpu.withErrorScope(() => this.measure(prepared, true));
      this.copies.set(bytes, measured);
      return measured;
    } finally {
      prepared.destroy();
    }
  }

  /**
   * Samples of an end-to-end case: one untimed cold run (pipeline compilation, first allocations) plus the
   * warm-up runs, then timed runs as for kernels. Each run is timed alone: its own submits and readbacks make
   * back-to-back repetition meaningless.
   */
  private async measureWall(run: (clock: WallClock) => Promise<void>): Promise<Measurement> {
    const { settings, gpu } = this;
    const once = async (): Promise<number> => {
      let ms = Number.NaN;
      let calls = 0;
      await run(async (body) => {
        calls++;
        await gpu.idle();
        const start = performance.now();
        try {
          return await body();
        } finally {
          ms = performance.now() - start;
        }
      });
      if (calls !== 1) throw new InvalidArgumentError('run', `must call its clock exactly once; called it ${calls} times`);
      return ms;
    };
    for (let i = 0; i < Math.max(1, settings.warmup); i++) await once();
    const samples: Sample[] = [];
    const start = performance.now();
    while (
      samples.length < settings.minRuns ||
      (samples.length < settings.runs && performance.now() - start < settings.caseBudgetMs)
    ) {
      const ms = await once();
      samples.push({ ms, wallMs: ms, method: 'wall' });
    }
    return { samples, repeat: 1 };
  }

  private async measure(prepared: PreparedCase, repeatable: boolean): Promise<Measurement> {
    const { settings } = this;
    const { encode } = prepared;
    if (!encode) throw new InvalidArgumentError('encode', 'a prepared case needs encode() or run()');
    const body = (encoder: GPUCommandEncoder, timer: PassTimer) => encode.call(prepared, encoder, timer);
    // The cold sample is warm-up #1 and never timed: SwiftShader compiles a pipeline on its first dispatch, and
    // buffers are touched for the first time.
    const cold = await this.timestamps.sample(1, 1, body);
    const passes = cold.passes;
    let repeat = 1;
    // Calibration: repeat the case inside one command buffer until a sample lasts about targetSampleMs. A case
    // whose cold run already took that long is slow enough as it is (16K-token attention on SwiftShader takes
    // seconds), so it skips calibration.
    if (repeatable && cold.ms < settings.targetSampleMs) {
      // The faster of two probes: one preempted sample on a busy machine would otherwise set too few repetitions.
      const first = await this.timestamps.sample(1, passes, body);
      const second = await this.timestamps.sample(1, passes, body);
      let probe = second.ms < first.ms ? second : first;
      for (let step = 0; step < 4; step++) {
        // A 0 ms sample is below the timestamp quantum: wall time over-estimates, so use a fraction of it.
        const perRun = probe.ms > 0 ? probe.ms : probe.wallMs / 8;
        if (perRun * repeat >= settings.targetSampleMs || repeat >= settings.maxRepeat) break;
        const wanted = perRun > 0 ? Math.ceil((settings.targetSampleMs / perRun) * 1.2) : repeat * 8;
        repeat = Math.min(settings.maxRepeat, Math.max(repeat * 2, wanted), maxRepeatForQueries(passes));
        probe = await this.timestamps.sample(repeat, passes, body);
      }
    }
    for (let i = 1; i < settings.warmup; i++) await this.timestamps.sample(repeat, passes, body);
    const samples: Sample[] = [];
    const start = performance.now();
    while (
      samples.length < settings.minRuns ||
      (samples.length < settings.runs && performance.now() - start < settings.caseBudgetMs)
    ) {
      const sample = await this.timestamps.sample(repeat, passes, body);
      samples.push({ ms: sample.ms, wallMs: sample.wallMs, method: sample.method });
    }
    return { samples, repeat };
  }

  destroy(): void {
    this.timestamps.destroy();
  }
}

function maxRepeatForQueries(passes: number): number {
  // 4096 queries per set, 2 per pass plus the bracket.
  return Math.max(1, Math.floor((4096 - 2) / (2 * Math.max(1, passes))));
}

function dominantMethod(samples: readonly Sample[]): TimingMethod {
  const counts = new Map<TimingMethod, number>();
  for (const s of samples) counts.set(s.method, (counts.get(s.method) ?? 0) + 1);
  let best: TimingMethod = 'wall';
  let bestCount = -1;
  for (const [method, count] of counts) {
    if (count > bestCount) {
      best = method;
      bestCount = count;
    }
  }
  return best;
}

/**
 * The copy kernel as a prepared case moving `bytes` bytes in total: it reads bytes/2 and writes bytes/2, so a
 * row and its copy reference count the same traffic.
 *
 * @example
 * ```ts
 * const prepared = prepareCopy(gpu, 8 << 20, new CopyKernel(gpu)); // copies 4 MiB
 * ```
 */
export function prepareCopy(gpu: GpuContext, bytes: number, kernel: CopyKernel): PreparedCase {
  if (!Number.isFinite(bytes) || bytes <= 0) throw new InvalidArgumentError('bytes', `must be positive; got ${bytes}`);
  const words = Math.max(1, Math.round(bytes / 8));
  const src = createStorageBuffer(gpu, 'bench:copy-src', words * 4);
  const dst = createStorageBuffer(gpu, 'bench:copy-dst', words * 4);
  return {
    bytes: words * 8,
    encode: (encoder, timer) => kernel.encode(encoder, src, dst, words, timer.pass()),
    destroy: () => {
      src.destroy();
      dst.destroy();
    },
  };
}
