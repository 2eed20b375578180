// The registry of benchmark suites. Adding a benchmark is a one-file job: write src/bench/cases/NAME.ts exporting
// a BenchSuite (see copy.ts for the smallest one, paged-attention-decode.ts for a cache-reading kernel built on
// ../fixture.ts), then add it to BENCH_SUITES below. Order here is the order of the report.
import type { BenchSuite } from '../harness.js';
import { bytesPerTokenSuite } from './bytes-per-token.js';
import { copySuite } from './copy.js';
import { kvAppendSuite } from './kv-append.js';
import { pagedAttentionDecodeSuite } from './paged-attention-decode.js';

/**
 * Every benchmark `kvcompact bench` knows, in report order. `--only NAME` selects by `name`.
 *
 * @example
 * ```ts
 * const suites = BENCH_SUITES.filter((s) => s.name === 'copy');
 * ```
 */
export const BENCH_SUITES: readonly BenchSuite[] = [
  copySuite,
  pagedAttentionDecodeSuite,
  kvAppendSuite,
  // TODO(scoring kernels): `scoringSuite` from './scoring.js': per-token scores (H2O/TOVA/SnapKV/K-norm) over
  //   buildBenchCache({ layers: 1, kvHeads: 8, headDim: 128, blockSize: 16, context, full: 'f16' }) at 1K/4K/16K;
  //   bytes = cache blocks + statistics read + scores written; `series`/`context` to plot against context.
  // TODO(top-k selection): `topKSuite` from './top-k.js': kept indices per row from scores f32 [row][maxTokens];
  //   bytes = scores read + kept indices and counts written; one row per context and keep ratio.
  // TODO(compaction): `compactionSuite` from './compaction.js': gather kept tokens into fresh blocks; bytes = kept
  //   blocks read + written. If it updates the cache in place, set `repeatable: false` on its cases.
  // TODO(quantization): `quantizeSuite` from './quantize.js': f16 blocks → int8/int4/int2 (KIVI); bytes = f16
  //   blocks read + quantized blocks written; `baseline` can point at the int8 row to compare bit widths.
  // TODO(end-to-end compression): `compressSuite` from './compress.js': score → select → compact → quantize over
  //   4 layers × 8 KV heads × head_dim 128 (buildBenchCache with layers: 4) at 1K, 4K, 16K, 64K tokens; report
  //   time per token with `items: { count: context, unit: 'token' }` and plot with `series`/`context`. 64K × 4
  //   layers × 8 heads of f16 blocks is 1.08 GB, past the 1 GiB storage-binding limit of SwiftShader (and of many
  //   real adapters): start from quantized older blocks or one pool per layer; keep 64K out of `settings.quick`.
  bytesPerTokenSuite,
];

/**
 * The suites named in `only` (comma-separated names), in registry order; all of them when `only` is empty.
 * Returns the unknown names too so a CLI can say which names exist.
 *
 * @example
 * ```ts
 * selectSuites('copy,kv-append'); // { suites: [copySuite, kvAppendSuite], unknown: [] }
 * ```
 */
export function selectSuites(only: string | undefined): { suites: BenchSuite[]; unknown: string[] } {
  const names = (only ?? '')
    .split(',')
    .map((name) => name.trim())
    .filter((name) => name !== '');
  if (names.length === 0) return { suites: [...BENCH_SUITES], unknown: [] };
  const known = new Set(BENCH_SUITES.map((s) => s.name));
  return {
    suites: BENCH_SUITES.filter((s) => names.includes(s.name)),
    unknown: names.filter((name) => !known.has(name)),
  };
}
