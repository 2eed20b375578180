import type { QuantFormat } from '../../format/layout.js';
import { createStorageBuffer } from '../../gpu/buffers.js';
import type { GpuContext } from '../../gpu/context.js';
import { PagedAttentionKernel } from '../../kernels/cache/paged-attention.js';
import { buildBenchCache, randomFloats } from '../fixture.js';
import type { BenchCase, BenchSuite, PreparedCase } from '../harness.js';
import { formatTokens } from '../units.js';

/**
 * The decode shape the issues use: one sequence, GQA 32 query heads over 8 KV heads, head_dim 128, one layer;
 * compressed caches keep the last `recent` tokens in f16.
 *
 * @example
 * ```ts
 * const group = ATTENTION_SHAPE.nHeads / ATTENTION_SHAPE.kvHeads; // 4 query heads per KV head
 * ```
 */
export const ATTENTION_SHAPE = { nHeads: 32, kvHeads: 8, headDim: 128, blockSize: 16, recent: 128 } as const;

/**
 * Contexts (tokens per KV head) of the attention rows. `--quick` drops 16K: one 16K decode takes about 10 s on
 * SwiftShader (2 cores), which alone would break the two-minute budget.
 *
 * @example
 * ```ts
 * ATTENTION_CONTEXTS.map(formatTokens); // ['1K', '4K', '16K']
 * ```
 */
export const ATTENTION_CONTEXTS = [1024, 4096, 16384] as const;
const QUICK_CONTEXTS = [1024] as const;

const FORMATS: readonly (QuantFormat | null)[] = [null, 'int4', 'int2'];

/**
 * One layer of ATTENTION_SHAPE holding `context` f16 tokens (quantized blocks and a `recent` f16 window when
 * `quant` is given): the cache every decode-attention suite reads, so their rows compare the same data.
 */
export function decodeBenchCache(gpu: GpuContext, context: number, quant: QuantFormat | null): ReturnType<typeof buildBenchCache> {
  const { kvHeads, headDim, blockSize, recent } = ATTENTION_SHAPE;
  return buildBenchCache(gpu, { layers: 1, kvHeads, headDim, blockSize, context, full: 'f16', quant, recent, seed: context + (quant ? quant.length : 0) });
}

function label(quant: QuantFormat | null): string {
  return quant ?? 'f16';
}

function caseName(quant: QuantFormat | null, context: number): string {
  return `paged-attention-decode/${label(quant)}/${formatTokens(context)}`;
}

/**
 * Decode-step paged attention (one query token) over an f16 cache, and over caches whose older blocks are int4 or
 * int2 (KIVI, default group 16) with the last 128 tokens in f16. Compressed rows report their speedup over f16
 * at the same context.
 *
 * @example
 * ```ts
 * const report = await runBenchmarks(gpu, [pagedAttentionDecodeSuite], benchSettings(true));
 * ```
 */
export const pagedAttentionDecodeSuite: BenchSuite = {
  name: 'paged-attention-decode',
  description:
    'paged attention, decode (1 query), batch 1, 32 query heads / 8 KV heads, head_dim 128, block 16, one layer',
  counts:
    "one layer's cache blocks read once (K, V, quantization parameters, positions) + block table + queries, " +
    'plus output and probabilities written once; the kernel actually reads each KV head once per query head of ' +
    'its group (4×), which this count leaves out on purpose: it is the traffic a fused kernel needs',
  cases: (settings) =>
    (settings.quick ? QUICK_CONTEXTS : ATTENTION_CONTEXTS).flatMap((context) =>
      FORMATS.map(
        (quant): BenchCase => ({
          name: caseName(quant, context),
          shape:
            `ctx ${formatTokens(context)} · 32q/8kv · d128 · ` +
            (quant ? `${quant} + ${ATTENTION_SHAPE.recent} f16` : 'f16'),
          series: `attention ${label(quant)}`,
          context,
          ...(quant ? { baseline: caseName(null, context) } : {}),
          setup: (gpu) => prepareAttention(gpu, context, quant),
        }),
      ),
    ),
};

function prepareAttention(
  gpu: GpuContext,
  context: number,
  quant: QuantFormat | null,
): PreparedCase {
  const { nHeads, kvHeads, headDim } = ATTENTION_SHAPE;
  const cache = decodeBenchCache(gpu, context, quant);
  const kernel = new PagedAttentionKernel(gpu, { nHeads, kvHeads, full: cache.full, quant: cache.quant });
  const qBytes = nHeads * headDim * 4;
  const queries = createStorageBuffer(gpu, 'bench:q', randomFloats(nHeads * headDim, context));
  const querySlots = createStorageBuffer(gpu, 'bench:q-slots', new Uint32Array([0]));
  // Every cached token sits at a position below the query's, so no token is masked.
  const queryPositions = createStorageBuffer(gpu, 'bench:q-pos', new Uint32Array([context]));
  const out = createStorageBuffer(gpu, 'bench:out', qBytes);
  const probs = createStorageBuffer(gpu, 'bench:probs', nHeads * context * 4);
  const buffers = [queries, querySlots, queryPositions, out, probs];
  return {
    bytes: cache.blockBytesPerLayer + cache.tableBytesPerLayer + qBytes + 8 + qBytes + nHeads * context * 4,
    encode: (encoder, timer) =>
      kernel.encode(
        encoder,
        { cache: cache.bindings, layer: 0, numQueries: 1, queries, querySlots, queryPositions, out, probs, probsStride: context },
        timer.pass(),
      ),
    destroy: () => {
      cache.destroy();
      for (const b of buffers) b.destroy();
    },
  };
}
