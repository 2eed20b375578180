// The registry of benchmark suites. Adding a benchmark is a one-file job: write src/bench/cases/NAME.ts exporting
// a BenchSuite (see copy.ts for the smallest one, paged-attention-decode.ts for a cache-reading kernel built on
// ../fixture.ts), then add it to BENCH_SUITES below. Order here is the order of the report.
import type { BenchSuite } from '../harness.js';
import { bytesPerTokenSuite } from './bytes-per-token.js';
import { compactionSuite } from './compaction.js';
import { compressSuite } from './compress.js';
import { copySuite } from './copy.js';
import { flashDecodeSuite } from './flash-decode.js';
import { kvAppendSuite } from './kv-append.js';
import { mergeSuite } from './merge.js';
import { modelSuite } from './model.js';
import { pagedAttentionDecodeSuite } from './paged-attention-decode.js';
import { prefillSuite } from './prefill.js';
import { quantizeSuite } from './quantize.js';
import { scoringSuite } from './scoring.js';
import { storeBenchSuite } from './store.js';
import { storeGpuSuite } from './store-gpu.js';
import { topKSuite } from './top-k.js';
import { utilisationSuite } from './utilisation.js';

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
  flashDecodeSuite,
  prefillSuite,
  kvAppendSuite,
  scoringSuite,
  topKSuite,
  compactionSuite,
  quantizeSuite,
  compressSuite,
  mergeSuite,
  utilisationSuite,
  modelSuite,
  bytesPerTokenSuite,
  storeBenchSuite,
  storeGpuSuite,
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
