import { formatTokens } from '../units.js';
import type { BenchCase, BenchSuite } from '../harness.js';
import { compressVariantName, prepareCompress, type CompressVariant } from './compress.js';

const CONTEXTS = [1024, 4096] as const;
const QUICK_CONTEXTS = [1024] as const;

/**
 * The merge suite's variants: h2o (statistics scoring, the cheapest scorer, so merging's share shows most) in f16
 * with uniform budgets and in int4 with adakv budgets, and snapkv (window scoring, which reads every key as the
 * nearest merge does) in f16 uniform, keeping 1/8 of the context; h2o again evicting one block per head, as each
 * compression of the decode schedule does; each without merging and with every implemented merge.
 *
 * @example
 * ```ts
 * MERGE_VARIANTS.map(compressVariantName); // ['h2o/uniform/f16', 'h2o/uniform/f16+nearest', …]
 * ```
 */
export const MERGE_VARIANTS: readonly CompressVariant[] = (
  [
    { policy: 'h2o', budgetMode: 'uniform', bits: 16, window: true },
    { policy: 'h2o', budgetMode: 'adakv', bits: 4, window: true },
    { policy: 'snapkv', budgetMode: 'uniform', bits: 16, window: true },
    // One decode-schedule compression (one block evicted per head): how merging costs while generating.
    { policy: 'h2o', budgetMode: 'uniform', bits: 16, window: true, evict: 'block' },
    { policy: 'h2o', budgetMode: 'adakv', bits: 4, window: true, evict: 'block' },
  ] as const
).flatMap((base) => (['none', 'nearest', 'cam'] as const).map((merge): CompressVariant => ({ ...base, merge })));

/**
 * End-to-end `cache.compress()` with and without merging evicted tokens (the compress suite's cache and clock):
 * the rows of one variant differ only in `merge`, so their times compare directly (the bound: merging at
 * most 1.3× the time of not merging).
 *
 * @example
 * ```ts
 * const report = await runBenchmarks(gpu, [mergeSuite], benchSettings(true));
 * ```
 */
export const mergeSuite: BenchSuite = {
  name: 'merge',
  description:
    'end-to-end cache.compress() with merge none / nearest / cam: 4 layers × 8 KV heads × head_dim 128, 32 query ' +
    'heads, f16 blocks of 16, budget = context/8 per head, or context − 16 (one decode-schedule step; /step rows) ' +
    "(the compress suite's cache)",
  counts: "the sequence's f16 blocks read once, as the compress suite counts them",
  cases: (settings) =>
    (settings.quick ? QUICK_CONTEXTS : CONTEXTS).flatMap((context) =>
      MERGE_VARIANTS.map(
        (variant): BenchCase => ({
          name: `merge/${compressVariantName(variant)}/${formatTokens(context)}`,
          shape: `ctx ${formatTokens(context)} · 4L · 32q/8kv · d128 · ${variant.policy} ${variant.budgetMode} · ${variant.evict === 'block' ? 'evict 16 per head' : 'keep 1/8'} · ${variant.bits === 16 ? 'f16' : 'int4 + 32 f16'} · merge ${variant.merge ?? 'none'}`,
          series: `merge ${compressVariantName(variant)}`,
          context,
          setup: (gpu, s) => prepareCompress(gpu, s, context, variant),
        }),
      ),
    ),
};
