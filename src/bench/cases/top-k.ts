import { createStorageBuffer } from '../../gpu/buffers.js';
import type { GpuContext } from '../../gpu/context.js';
import { TopKSelectKernel } from '../../kernels/compress/select.js';
import { randomFloats } from '../fixture.js';
import type { BenchCase, BenchSuite, PreparedCase } from '../harness.js';
import { formatTokens } from '../units.js';

/** Rows selected per run: one sequence of the end-to-end shape (4 layers × 8 KV heads). */
const ROWS = 32;
const CONTEXTS = [1024, 4096, 16384] as const;
const QUICK_CONTEXTS = [1024] as const;
/** Tokens kept per row: 1/KEEP_DIVISOR of the context (the end-to-end budget). */
const KEEP_DIVISOR = 8;
/** Protected tokens per row (+Inf): the compressor's 4 sinks and 32 recent tokens. */
const SINKS = 4;
const RECENT = 32;

/**
 * Per-row top-k selection (TopKSelectKernel: radix-select threshold, then ascending kept indices) over f32
 * scores `[32 rows][context]`, keeping 1/8 of each row, with sinks and recent tokens protected (+Inf) as the
 * scorers leave them.
 *
 * @example
 * ```ts
 * const report = await runBenchmarks(gpu, [topKSuite], benchSettings(true));
 * ```
 */
export const topKSuite: BenchSuite = {
  name: 'top-k',
  description: 'top-k selection (select_threshold with its fused compaction), 32 rows (4 layers × 8 KV heads), keep 1/8 per row',
  counts:
    'scores read once + lengths and k read + thresholds, kept indices (k per row) and kept counts written; the ' +
    'radix select reads each row two or three times (its first digit, then from 2048 tokens a read that collects the ' +
    'candidates every later digit reads, 11-bit digits; below, 8-bit digits and a second full histogram first when ' +
    'the first leaves over a quarter of the row) and the compaction in the same dispatch once more, which the count ' +
    'leaves out: it is the traffic a one-pass selection needs',
  cases: (settings) =>
    (settings.quick ? QUICK_CONTEXTS : CONTEXTS).map(
      (context): BenchCase => ({
        name: `top-k/${formatTokens(context)}`,
        shape: `${ROWS} rows × ${formatTokens(context)} · keep ${context / KEEP_DIVISOR} (1/${KEEP_DIVISOR})`,
        series: 'top-k 1/8',
        context,
        setup: (gpu) => prepareTopK(gpu, context),
      }),
    ),
};

function prepareTopK(gpu: GpuContext, context: number): PreparedCase {
  const keep = context / KEEP_DIVISOR;
  const scores = randomFloats(ROWS * context, context + 5).map(Math.abs);
  for (let row = 0; row < ROWS; row++) {
    for (let t = 0; t < SINKS; t++) scores[row * context + t] = Number.POSITIVE_INFINITY;
    for (let t = context - RECENT; t < context; t++) scores[row * context + t] = Number.POSITIVE_INFINITY;
  }
  const kernel = new TopKSelectKernel(gpu);
  const buffers = {
    scores: createStorageBuffer(gpu, 'bench:scores', scores),
    lengths: createStorageBuffer(gpu, 'bench:lengths', new Uint32Array(ROWS).fill(context)),
    k: createStorageBuffer(gpu, 'bench:k', new Uint32Array(ROWS).fill(keep)),
    thresholds: createStorageBuffer(gpu, 'bench:thresholds', ROWS * 8),
    keptIndices: createStorageBuffer(gpu, 'bench:kept-indices', ROWS * context * 4),
    keptCounts: createStorageBuffer(gpu, 'bench:kept-counts', ROWS * 4),
  };
  return {
    bytes: ROWS * context * 4 + ROWS * 8 + ROWS * 8 + ROWS * keep * 4 + ROWS * 4,
    items: { count: context, unit: 'token' },
    encode: (encoder) => kernel.encode(encoder, { ...buffers, numRows: ROWS, stride: context }),
    destroy: () => {
      kernel.destroy();
      for (const b of Object.values(buffers)) b.destroy();
    },
  };
}
