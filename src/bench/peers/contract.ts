// The peers comparison of `kvcompact bench --only peers`: kvcompact's WebGPU kernels against the plain-TS reference
// and gpu.js (WebGL2) doing the same SnapKV scoring and KIVI quantization in one Chromium page (./page.ts). It is
// not a BenchSuite: the harness times WebGPU passes in Node, the peers need a browser. This file holds what the
// page and the Node driver (./index.ts) share, and the report's markdown; browser-safe.
import type { AdapterReport } from '../../gpu/adapter-report.js';
import { formatTokens, trimNumber } from '../units.js';
import { type DecodePageResult, type DecodePeersReport, formatDecodeMarkdown } from './decode-contract.js';

/**
 * The `--only` name of the peers comparison.
 *
 * @example
 * ```ts
 * if (values.only === PEERS_NAME) return benchPeersCommand(values);
 * ```
 */
export const PEERS_NAME = 'peers';

/**
 * The shape every size runs at: one layer, GQA 32 query heads over 8 KV heads, head_dim 128, block 16, SnapKV
 * window 32 with avg pooling 5 (4 sinks, the window protected), KIVI int4 with group 16.
 *
 * @example
 * ```ts
 * const group = PEERS_SHAPE.nHeads / PEERS_SHAPE.kvHeads; // 4
 * ```
 */
export const PEERS_SHAPE = {
  nHeads: 32,
  kvHeads: 8,
  headDim: 128,
  blockSize: 16,
  window: 32,
  kernelSize: 5,
  sinks: 4,
  bits: 4,
  group: 16,
} as const;

/**
 * What the page runs: sizes (tokens per KV head, multiples of 32) and samples per implementation.
 */
export interface PeersConfig {
  readonly sizes: readonly number[];
  /** Untimed runs per implementation and size (the first compiles shaders). */
  readonly warmup: number;
  /** Timed runs; the row's ms is their median. */
  readonly runs: number;
  /** Skip timing and run each implementation once (numerical checks only). */
  readonly checkOnly?: boolean;
  /** Contexts of the decode-attention rows (kvcompact vs onnxruntime-web vs the TS reference); none when absent. */
  readonly decodeContexts?: readonly number[];
  /** Timed runs of each decode row (default `runs`); decode steps are short, so more runs are cheap. */
  readonly decodeRuns?: number;
}

/**
 * The two operations compared.
 */
export type PeerOp = 'snapkv-score' | 'kivi-quantize';

/**
 * The implementations: kvcompact's kernels (time to onSubmittedWorkDone; results stay on the GPU), the same
 * with the results read back to the CPU, gpu.js on WebGL2 (its kernels return arrays, so readback is
 * included), and the plain-TS reference (src/compress/policies/snapkv.ts, src/format/block-codec.ts).
 */
export type PeerImpl = 'kvcompact-webgpu' | 'kvcompact-webgpu+readback' | 'gpu.js-webgl2' | 'ts-reference';

/**
 * One measured row.
 *
 * @example
 * ```ts
 * const row: PeerRow = { name: 'snapkv-score/gpu.js-webgl2/1K', op: 'snapkv-score', impl: 'gpu.js-webgl2',
 *   context: 1024, shape: 'ctx 1K · …', ms: 812, samples: [812, 830, 799], ratioToKvcompact: 3.1 };
 * ```
 */
export interface PeerRow {
  readonly name: string;
  readonly op: PeerOp;
  readonly impl: PeerImpl;
  readonly context: number;
  readonly shape: string;
  /** Median wall milliseconds of one run (performance.now() in the page). */
  readonly ms: number;
  /** Every timed run's ms. */
  readonly samples: readonly number[];
  /** ms ÷ the kvcompact-webgpu row's ms for the same op and size (> 1: slower than kvcompact). */
  readonly ratioToKvcompact: number;
}

/**
 * How far an implementation's output is from the TS reference's, and whether that is within the tolerance.
 *
 * @example
 * ```ts
 * const failed = checks.filter((c) => !c.pass);
 * ```
 */
export interface PeerCheck {
  readonly op: PeerOp;
  readonly context: number;
  readonly impl: 'kvcompact-webgpu' | 'gpu.js-webgl2';
  readonly pass: boolean;
  /** Measured differences, e.g. `{ maxRelError: 2e-7, protectedMismatches: 0 }`. */
  readonly metrics: Readonly<Record<string, number>>;
  /** The tolerance, in words. */
  readonly tolerance: string;
}

/**
 * What the page hands back.
 */
export interface PeersPageResult {
  readonly userAgent: string;
  /** kvcompact's WebGPU adapter. */
  readonly adapter: AdapterReport;
  /** The WebGL renderer gpu.js ran on (UNMASKED_RENDERER_WEBGL where available) and its kernel class. */
  readonly webgl: { readonly renderer: string; readonly gpujsKernel: string };
  readonly rows: readonly PeerRow[];
  readonly checks: readonly PeerCheck[];
  /** Seconds the page spent (data generation, compilation and runs). */
  readonly pageSeconds: number;
  /** Decode attention in the page (present when the config has decodeContexts). */
  readonly decode?: DecodePageResult;
}

/**
 * Everything `kvcompact bench --only peers --json` prints.
 *
 * @example
 * ```ts
 * const report = JSON.parse(stdout) as PeersReport;
 * ```
 */
export interface PeersReport extends Omit<PeersPageResult, 'decode'> {
  /** Decode attention: the page's rows plus the Node host's (kernels Chromium cannot bind), with ratios. */
  readonly decode?: DecodePeersReport;
  readonly tool: 'kvcompact bench';
  readonly suite: typeof PEERS_NAME;
  readonly date: string;
  readonly config: PeersConfig;
  /** Wall seconds of the whole run (bundle, browser start, page). */
  readonly totalSeconds: number;
}

/**
 * Human-readable shape of a row.
 *
 * @example
 * ```ts
 * peerShape('kivi-quantize', 4096); // 'ctx 4K · 8kv · d128 · int4 g16 (K per channel, V per token)'
 * ```
 */
export function peerShape(op: PeerOp, context: number): string {
  const s = PEERS_SHAPE;
  const ctx = `ctx ${formatTokens(context)}`;
  return op === 'snapkv-score'
    ? `${ctx} · ${s.nHeads}q/${s.kvHeads}kv · d${s.headDim} · window ${s.window} · avg pool ${s.kernelSize}`
    : `${ctx} · ${s.kvHeads}kv · d${s.headDim} · int${s.bits} g${s.group} (K per channel, V per token)`;
}

/**
 * Fills in `ratioToKvcompact` (ms ÷ the kvcompact-webgpu row of the same op and context; 0 when missing).
 *
 * @example
 * ```ts
 * const rows = withKvcompactRatios(measured);
 * ```
 */
export function withKvcompactRatios(rows: readonly Omit<PeerRow, 'ratioToKvcompact'>[]): PeerRow[] {
  return rows.map((row) => {
    const base = rows.find((r) => r.op === row.op && r.context === row.context && r.impl === 'kvcompact-webgpu');
    return { ...row, ratioToKvcompact: base && base.ms > 0 ? row.ms / base.ms : 0 };
  });
}

function ms(value: number): string {
  return value >= 100 ? value.toFixed(0) : trimNumber(value, 3);
}

function cell(value: string): string {
  return value.replace(/\|/g, '\\|');
}

/**
 * The report as markdown: environment, the timing table with ratios, then the numerical checks.
 *
 * @example
 * ```ts
 * process.stdout.write(formatPeersMarkdown(report));
 * ```
 */
export function formatPeersMarkdown(report: PeersReport): string {
  const a = report.adapter;
  const lines = [
    `## kvcompact bench --only peers — ${a.vendor || 'unknown vendor'} / ${a.architecture || 'unknown'}`,
    '',
    `WebGPU adapter: ${a.description || '?'}${a.isFallbackAdapter ? ' (software fallback adapter)' : ''}`,
    `WebGL renderer (gpu.js): ${report.webgl.renderer} · gpu.js kernel: ${report.webgl.gpujsKernel}`,
    `browser: ${report.userAgent}`,
    `date: ${report.date} · warm-up ${report.config.warmup} + ${report.config.runs} timed runs per row · ` +
      `${trimNumber(report.totalSeconds, 3)} s`,
    '',
    '| benchmark | shape | ms (median) | min–max | × kvcompact |',
    '| --- | --- | ---: | ---: | ---: |',
    ...report.rows.map((row) => {
      const lo = Math.min(...row.samples);
      const hi = Math.max(...row.samples);
      const ratio = trimNumber(row.ratioToKvcompact, 3);
      return `| ${cell(row.name)} | ${cell(row.shape)} | ${ms(row.ms)} | ${ms(lo)}–${ms(hi)} | ${ratio} |`;
    }),
    '',
    'ms: median wall time of one run in the page (performance.now()). kvcompact-webgpu: encode + submit + ' +
      'onSubmittedWorkDone, results left on the GPU; +readback: the same plus mapAsync of the results. gpu.js: ' +
      'kernel calls returning arrays (readback included); inputs uploaded once before timing. × kvcompact = ms ÷ ' +
      'the kvcompact-webgpu row of the same operation and size (> 1: slower).',
    '',
    '| check | size | implementation vs ts-reference | metrics | tolerance | ok |',
    '| --- | ---: | --- | --- | --- | --- |',
    ...report.checks.map(
      (c) =>
        `| ${c.op} | ${formatTokens(c.context)} | ${c.impl} | ${Object.entries(c.metrics)
          .map(([k, v]) => `${k} ${trimNumber(v, 3)}`)
          .join(', ')} | ${cell(c.tolerance)} | ${c.pass ? 'yes' : '**NO**'} |`,
    ),
  ];
  if (report.decode) {
    const o = report.decode.ort;
    lines.push(
      '',
      `onnxruntime-web ${o.version}: WebGPU provider's adapter ${o.webgpuAdapter}; device features ` +
        `${o.webgpuFeatures.join(', ') || 'none'}`,
      '',
      formatDecodeMarkdown(report.decode).trimEnd(),
    );
  }
  return `${lines.join('\n')}\n`;
}
