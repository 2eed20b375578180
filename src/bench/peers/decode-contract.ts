// The decode-attention half of `bench --only peers`: what the page (./decode.ts, ./ort.ts), the Node rows of the
// CLI and the report share. One decode step (one query token, batch 1) of GQA attention over a context, done by
// kvcompact's kernels, onnxruntime-web's GroupQueryAttention and the TS reference on the same numbers.
import { formatTokens } from '../units.js';

/**
 * The shape of every row: the decode benchmarks' (src/bench/cases/paged-attention-decode.ts ATTENTION_SHAPE):
 * 32 query heads over 8 KV heads, head_dim 128, block 16.
 *
 * @example
 * ```ts
 * DECODE_PEER_SHAPE.nHeads / DECODE_PEER_SHAPE.kvHeads; // 4
 * ```
 */
export const DECODE_PEER_SHAPE = { nHeads: 32, kvHeads: 8, headDim: 128, blockSize: 16 } as const;

/**
 * The engines. kvcompact-paged-attention is the previous one-pass kernel (src/kernels/cache/paged-attention.ts),
 * kvcompact-flash-decode the split-context one (flash-decode.ts); onnxruntime-web-webgpu is ORT's WebGPU execution
 * provider running one com.microsoft GroupQueryAttention node with its past and present KV in one shared buffer
 * (onnxruntime-web-webgpu-concat: separate present outputs, so the node first copies the past into them),
 * onnxruntime-web-wasm the same model on its CPU
 * (WebAssembly) provider, ts-reference src/attention/reference-attention.ts.
 */
export type DecodeEngine =
  | 'kvcompact-paged-attention'
  | 'kvcompact-flash-decode'
  | 'onnxruntime-web-webgpu'
  | 'onnxruntime-web-webgpu-concat'
  | 'onnxruntime-web-wasm'
  | 'ts-reference';

/** KV storage the engine reads: kvcompact's f16/f32 blocks, ORT's float16/float32 past tensors. */
export type DecodeKv = 'f16' | 'f32';

/**
 * One measured row: `case` names the work (same case, same work: same data, same shape), `ratio` is ms ÷ the
 * kvcompact-paged-attention row of the same case in Chromium (> 1: slower than that kernel).
 *
 * @example
 * ```ts
 * const row: DecodePeerRow = { engine: 'onnxruntime-web-webgpu', case: 'decode/f32/1K', ms: 41, ratio: 1.8,
 *   samples: [41, 40, 44], host: 'chromium', adapter: 'google swiftshader', ep: 'webgpu' };
 * ```
 */
export interface DecodePeerRow {
  readonly engine: DecodeEngine;
  readonly case: string;
  /** Median wall milliseconds of one decode step, inputs resident (see formatDecodeMarkdown for what is timed). */
  readonly ms: number;
  readonly ratio: number;
  readonly samples: readonly number[];
  /** Where it ran: the Chromium page, or Node (Dawn through the `webgpu` package) for kernels Chromium cannot bind. */
  readonly host: 'chromium' | 'node';
  /** The adapter (vendor architecture · description), or 'cpu'. */
  readonly adapter: string;
  /** onnxruntime-web: the execution provider the session was created with (and that its node ran on). */
  readonly ep?: string;
}

/**
 * An engine's output against the TS reference for one case.
 */
export interface DecodePeerCheck {
  readonly engine: DecodeEngine;
  readonly case: string;
  readonly host: 'chromium' | 'node';
  readonly maxAbsError: number;
  readonly pass: boolean;
  readonly tolerance: string;
}

/** An engine that did not run in a case, and exactly why. */
export interface DecodePeerSkip {
  readonly engine: DecodeEngine;
  readonly case: string;
  readonly host: 'chromium' | 'node';
  readonly reason: string;
}

/**
 * The decode section of the report.
 */
export interface DecodePeersResult {
  readonly rows: readonly DecodePeerRow[];
  readonly checks: readonly DecodePeerCheck[];
  readonly skipped: readonly DecodePeerSkip[];
}

/** The page's decode settings (PeersConfig.decodeContexts and its timing). */
export interface DecodePageConfig {
  readonly contexts: readonly number[];
  readonly warmup: number;
  readonly runs: number;
}

/** What onnxruntime-web ran on: its version, and the adapter and features of the device its WebGPU provider made. */
export interface OrtReport {
  readonly version: string;
  readonly webgpuAdapter: string;
  readonly webgpuFeatures: readonly string[];
}

/**
 * What the page's decode half hands back: rows without ratios (the driver adds the Node rows, then ratios).
 */
export interface DecodePageResult {
  readonly rows: readonly Omit<DecodePeerRow, 'ratio'>[];
  readonly checks: readonly DecodePeerCheck[];
  readonly skipped: readonly DecodePeerSkip[];
  readonly ort: OrtReport;
}

/**
 * The decode section of the report: every row with its ratio, and what ORT ran on.
 */
export interface DecodePeersReport extends DecodePeersResult {
  readonly ort: OrtReport;
}

/**
 * Outputs are compared with the reference's (f64 sums over the same f16-exact values) as max |Δ| over all heads
 * and channels; outputs are convex mixes of values in (−2, 2), so an absolute bound is the meaningful one.
 *
 * @example
 * ```ts
 * maxAbsError <= DECODE_TOLERANCE;
 * ```
 */
export const DECODE_TOLERANCE = 1e-4;

/**
 * The case name of a decode step: `decode/<kv storage>/<context>`.
 *
 * @example
 * ```ts
 * decodeCase('f16', 4096); // 'decode/f16/4K'
 * ```
 */
export function decodeCase(kv: DecodeKv, context: number): string {
  return `decode/${kv}/${formatTokens(context)}`;
}

/**
 * Fills in `ratio` (ms ÷ the Chromium kvcompact-paged-attention row of the same case; 0 when that is missing).
 *
 * @example
 * ```ts
 * const rows = withDecodeRatios(measured);
 * ```
 */
export function withDecodeRatios(rows: readonly Omit<DecodePeerRow, 'ratio'>[]): DecodePeerRow[] {
  return rows.map((row) => {
    const base = rows.find((r) => r.case === row.case && r.engine === 'kvcompact-paged-attention' && r.host === 'chromium');
    return { ...row, ratio: base && base.ms > 0 ? row.ms / base.ms : 0 };
  });
}

function ms(value: number): string {
  return value >= 100 ? value.toFixed(0) : value.toPrecision(3);
}

/**
 * The decode section as markdown: rows (engine, case, ms, ratio, where), checks, and what did not run.
 *
 * @example
 * ```ts
 * process.stdout.write(formatDecodeMarkdown(report.decode));
 * ```
 */
export function formatDecodeMarkdown(result: DecodePeersResult): string {
  const s = DECODE_PEER_SHAPE;
  const lines = [
    `### decode attention: 1 query, batch 1, ${s.nHeads}q/${s.kvHeads}kv, d${s.headDim}`,
    '',
    '| engine | case | ms (median) | × kvcompact paged (Chromium) | host | adapter / EP |',
    '| --- | --- | ---: | ---: | --- | --- |',
    ...result.rows.map(
      (r) =>
        `| ${r.engine} | ${r.case} | ${ms(r.ms)} | ${r.ratio.toFixed(2)} | ${r.host} | ${r.adapter}${r.ep ? ` · EP ${r.ep}` : ''} |`,
    ),
    '',
    'ms: one decode step with inputs resident. kvcompact: encode + submit + onSubmittedWorkDone (output left on ' +
      'the GPU). onnxruntime-web: session.run() with GPU-buffer inputs and outputs, then onSubmittedWorkDone on ' +
      "ORT's device; the past KV holds context − 1 tokens and the new token's K/V come as inputs, so the node " +
      'also writes the new token into present_key/present_value: in place (one buffer for past and present) for ' +
      'onnxruntime-web-webgpu, after copying the whole past into fresh outputs for -concat. ts-reference: ' +
      'decodeAttention() in f64. Node rows: kvcompact in Node on Dawn (the `webgpu` package) in the same run.',
    '',
    '| check | engine | host | max abs error | tolerance | ok |',
    '| --- | --- | --- | ---: | --- | --- |',
    ...result.checks.map(
      (c) => `| ${c.case} | ${c.engine} | ${c.host} | ${c.maxAbsError.toExponential(2)} | ${c.tolerance} | ${c.pass ? 'yes' : '**NO**'} |`,
    ),
  ];
  if (result.skipped.length > 0) {
    lines.push('', 'Not run:', ...result.skipped.map((k) => `- ${k.engine} ${k.case} (${k.host}): ${k.reason}`));
  }
  return `${lines.join('\n')}\n`;
}
