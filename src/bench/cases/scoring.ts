import { encodeGpuScores, type GpuScorePlan, logitScratchBytes, scoreScratchBytes, STORED_LOGITS_MAX_BYTES } from '../../compress/gpu-policies.js';
import { H2OPolicy } from '../../compress/policies/h2o.js';
import { KnormPolicy } from '../../compress/policies/knorm.js';
import { SnapKVPolicy } from '../../compress/policies/snapkv.js';
import type { ScoreInput } from '../../compress/policy.js';
import { createStorageBuffer } from '../../gpu/buffers.js';
import type { GpuContext } from '../../gpu/context.js';
import { buildBenchCache, randomFloats } from '../fixture.js';
import type { BenchCase, BenchSuite, PreparedCase } from '../harness.js';
import { formatTokens } from '../units.js';
import { ATTENTION_SHAPE } from './paged-attention-decode.js';

/**
 * The scoring policies benchmarked and the plan each one runs on the GPU (what their `gpuPlan()` returns with
 * default options: SnapKV votes with a window of 32 queries and pools with an average of 5).
 *
 * @example
 * ```ts
 * SCORING_POLICIES.map((p) => p.name); // ['h2o', 'knorm', 'snapkv']
 * ```
 */
export const SCORING_POLICIES: readonly { readonly name: string; readonly plan: GpuScorePlan }[] = [
  { name: 'h2o', plan: new H2OPolicy().gpuPlan() },
  { name: 'knorm', plan: new KnormPolicy().gpuPlan() },
  { name: 'snapkv', plan: new SnapKVPolicy().gpuPlan() },
];

const CONTEXTS = [1024, 4096, 16384] as const;
const QUICK_CONTEXTS = [1024] as const;
/** Protection of the compressor's defaults: 4 sinks, the 32 newest tokens. */
const PROTECTION = { sinks: 4, recent: 32 } as const;

/**
 * Per-token scores of one layer (8 KV heads, head_dim 128, f16 blocks of 16) for h2o (accumulated attention
 * statistics), knorm (key norms) and snapkv (observation window of 32 roped queries of 32 query heads, then
 * pooling), written as f32 `[row][maxTokens]` with sinks and recent tokens protected.
 *
 * @example
 * ```ts
 * const report = await runBenchmarks(gpu, [scoringSuite], benchSettings(true));
 * ```
 */
export const scoringSuite: BenchSuite = {
  name: 'scoring',
  description: 'per-token eviction scores, one layer, 8 KV heads (32 query heads for snapkv), head_dim 128, f16 blocks of 16',
  counts:
    'h2o: block table + token positions + attnSum and attnCount read, scores written; knorm: block table + K ' +
    'halves and positions read, scores written; snapkv: block table + K halves and positions read once, 32 window ' +
    'queries (f32, 32 heads) and their positions read, per-(query, head) softmax normalisers written and read, ' +
    'scores written. snapkv computes every q·k in both passes (register-blocked: each key read once per 4 ' +
    '(query, head) pairs, each query once per 8 keys), so it is compute-bound: the count is the traffic, not ' +
    'the work. Up to 16 MiB of logits (4K tokens at this shape, as compress() does) pass 1 stores them and pass 2 reads them back ' +
    'instead (their write and read counted); snapkv-recompute: the same rows recomputing every logit in pass 2. ' +
    'snapkv-ts-reference: ' +
    'SnapKVPolicy.score() on the CPU at the same shape (f32 keys), by wall clock: the snapkv rows\' speedup',
  cases: (settings) =>
    (settings.quick ? QUICK_CONTEXTS : CONTEXTS).flatMap((context) => [
      // The TS reference of the window policy on the same CPU, at the same shape: the GPU row's baseline.
      ...(settings.quick
        ? []
        : [
            {
              name: referenceName(context),
              shape: `ctx ${formatTokens(context)} · 8kv · d128 · f32 · 32q × window 32 · TS reference on the CPU`,
              series: 'scoring snapkv (TS reference)',
              context,
              setup: () => prepareReference(context),
            },
          ]),
      // snapkv takes seconds per execution on SwiftShader (2 cores): --quick leaves it to the full run.
      ...SCORING_POLICIES.filter(({ plan }) => !(settings.quick && plan.kind === 'window')).map(
        ({ name, plan }): BenchCase => ({
          name: `scoring/${name}/${formatTokens(context)}`,
          shape: `ctx ${formatTokens(context)} · 8kv · d128 · f16${plan.kind === 'window' ? ` · 32q × window ${plan.window}` : ''}`,
          series: `scoring ${name}`,
          context,
          ...(plan.kind === 'window' && !settings.quick ? { baseline: referenceName(context) } : {}),
          setup: (gpu) => prepareScoring(gpu, context, plan, true),
        }),
      ),
      // The window policy without stored logits (what runs past the cap), for the same-run comparison where the
      // row above stores them.
      ...(settings.quick
        ? []
        : SCORING_POLICIES.filter(({ plan }) => plan.kind === 'window' && logitScratchBytes(1, plan.window, ATTENTION_SHAPE.nHeads, context) <= STORED_LOGITS_MAX_BYTES).map(
            ({ name, plan }): BenchCase => ({
              name: `scoring/${name}-recompute/${formatTokens(context)}`,
              shape: `ctx ${formatTokens(context)} · 8kv · d128 · f16 · 32q × window ${plan.kind === 'window' ? plan.window : 0} · logits recomputed`,
              series: `scoring ${name} (recomputed logits)`,
              context,
              baseline: referenceName(context),
              setup: (gpu) => prepareScoring(gpu, context, plan, false),
            }),
          )),
    ]),
};

function referenceName(context: number): string {
  return `scoring/snapkv-ts-reference/${formatTokens(context)}`;
}

/**
 * SnapKVPolicy.score() (the TS reference the GPU kernels are tested against) on one layer of the same shape:
 * 8 KV heads of `context` f32 keys, 32 window queries of 32 heads, protection as the GPU rows. Wall clock.
 */
function prepareReference(context: number): PreparedCase {
  const { nHeads, kvHeads, headDim } = ATTENTION_SHAPE;
  const window = 32;
  const policy = new SnapKVPolicy({ ...PROTECTION, window });
  const positions = Uint32Array.from({ length: context }, (_, t) => t);
  const input: ScoreInput = {
    nHeads,
    kvHeads,
    headDim,
    keys: Array.from({ length: kvHeads }, (_, kv) => randomFloats(context * headDim, context + 3 + kv)),
    positions: Array.from({ length: kvHeads }, () => positions),
    windowQueries: randomFloats(window * nHeads * headDim, 13),
    windowPositions: Uint32Array.from({ length: window }, (_, j) => context - window + j),
    sequenceLength: context,
  };
  return {
    bytes: kvHeads * context * headDim * 4,
    items: { count: context, unit: 'token' },
    run: async (clock) => {
      await clock(() => Promise.resolve(policy.score(input)));
    },
    destroy: () => undefined,
  };
}

function prepareScoring(gpu: GpuContext, context: number, plan: GpuScorePlan, storeLogits: boolean): PreparedCase {
  const { nHeads, kvHeads, headDim, blockSize } = ATTENTION_SHAPE;
  const cache = buildBenchCache(gpu, { layers: 1, kvHeads, headDim, blockSize, context, full: 'f16', seed: context + 3 });
  const maxTokens = cache.maxBlocksPerHead * blockSize;
  const statWords = kvHeads * maxTokens;
  // Statistics as a few hundred decode steps would leave them: positive sums, counts ≥ 1.
  const attnSum = createStorageBuffer(gpu, 'bench:attn-sum', randomFloats(statWords, 11).map(Math.abs));
  const attnCount = createStorageBuffer(gpu, 'bench:attn-count', randomFloats(statWords, 12).map((x) => 1 + Math.abs(x) * 200));
  const scores = createStorageBuffer(gpu, 'bench:scores', statWords * 4);
  const window = plan.kind === 'window' ? plan.window : 0;
  // The ring holds the `window` newest queries: positions context − window .. context − 1 at index position mod window.
  const windowPositions = new Uint32Array(Math.max(1, window));
  for (let p = context - window; p < context; p++) windowPositions[p % window] = p;
  const queries = createStorageBuffer(gpu, 'bench:window-q', randomFloats(Math.max(1, window * nHeads * headDim), 13));
  const positions = createStorageBuffer(gpu, 'bench:window-pos', windowPositions);
  const scratch = createStorageBuffer(gpu, 'bench:lse', scoreScratchBytes(1, Math.max(1, window), nHeads, maxTokens));
  const logitBytes = logitScratchBytes(1, Math.max(1, window), nHeads, maxTokens);
  const logits = plan.kind === 'window' && storeLogits && logitBytes <= STORED_LOGITS_MAX_BYTES ? createStorageBuffer(gpu, 'bench:logits', logitBytes) : null;
  const buffers = [attnSum, attnCount, scores, queries, positions, scratch, ...(logits ? [logits] : [])];
  const rowTokens = kvHeads * context;
  const kBytesPerToken = headDim * 2;
  const common = cache.tableBytesPerLayer + rowTokens * 4 /* positions */ + rowTokens * 4; /* scores */
  const bytes =
    plan.kind === 'token'
      ? plan.statistics.length > 0
        ? common + rowTokens * 4 * plan.statistics.length
        : common + rowTokens * kBytesPerToken
      : common + rowTokens * kBytesPerToken + window * nHeads * (headDim * 4 + 4) + 2 * (window * nHeads * 8) + (logits ? 2 * window * nHeads * context * 4 : 0);
  return {
    bytes,
    items: { count: context, unit: 'token' },
    encode: (encoder) =>
      encodeGpuScores(
        encoder,
        {
          gpu,
          cache: cache.bindings,
          full: cache.full,
          quant: null,
          nHeads,
          kvHeads,
          layer: 0,
          layerCount: 1,
          slot: 0,
          seqLen: context,
          stats: { attnSum, attnSqSum: attnSum, attnCount },
          window: { queries, positions, capacity: Math.max(1, window), valid: window },
          scratch,
          scores,
          ...(logits ? { logits } : {}),
        },
        plan,
        PROTECTION,
      ),
    destroy: () => {
      cache.destroy();
      for (const b of buffers) b.destroy();
    },
  };
}
