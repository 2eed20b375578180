import { InvalidArgumentError } from '../../errors.js';
import type { QuantFormat } from '../../format/layout.js';
import { createStorageBuffer } from '../../gpu/buffers.js';
import type { GpuContext } from '../../gpu/context.js';
import { FlashDecodeKernel, type FlashDecodeShape } from '../../kernels/cache/flash-decode.js';
import { randomFloats } from '../fixture.js';
import type { BenchCase, BenchSuite, PreparedCase } from '../harness.js';
import { formatTokens } from '../units.js';
import { ATTENTION_CONTEXTS, ATTENTION_SHAPE, decodeBenchCache } from './paged-attention-decode.js';

const QUICK_CONTEXTS = [1024, 4096] as const;

/**
 * The contexts of the rows: `KVCOMPACT_BENCH_CONTEXTS` (comma-separated tokens, e.g. `16384,65536` on a real
 * GPU, see bench/gpu-device.sh) when set, else 1K/4K/16K (1K/4K with `--quick`).
 *
 * @example
 * ```ts
 * flashDecodeContexts(true, '16384,65536'); // [16384, 65536]
 * ```
 */
export function flashDecodeContexts(quick: boolean, fromEnvironment: string | undefined): readonly number[] {
  if (fromEnvironment === undefined || fromEnvironment.trim() === '') return quick ? QUICK_CONTEXTS : ATTENTION_CONTEXTS;
  return fromEnvironment.split(',').map((text) => {
    const tokens = Number(text.trim());
    if (!Number.isInteger(tokens) || tokens <= 0) {
      throw new InvalidArgumentError('KVCOMPACT_BENCH_CONTEXTS', `expects positive token counts like 16384,65536; got "${text}"`);
    }
    return tokens;
  });
}
const FORMATS: readonly (QuantFormat | null)[] = [null, 'int4', 'int2'];

/**
 * Kernel shapes the rows use. The defaults suit real GPUs, which need many workgroups at batch 1. SwiftShader
 * (2 cores) needs few workgroups and pays per thread at every barrier; with 16 threads, one K group (16 tokens)
 * per thread row makes the staged K scale reads uniform, which it turns into plain loads.
 *
 * @example
 * ```ts
 * const shape = FLASH_BENCH_SHAPES.software; // { workgroupSize: 16, chunkTokens: 64, partitionTokens: 1024 }
 * ```
 */
export const FLASH_BENCH_SHAPES = {
  hardware: {},
  software: { workgroupSize: 16, chunkTokens: 64, partitionTokens: 1024 },
} as const satisfies Record<string, Partial<FlashDecodeShape>>;

function label(quant: QuantFormat | null): string {
  return quant ?? 'f16';
}

function caseName(quant: QuantFormat | null, context: number): string {
  return `flash-decode/${label(quant)}/${formatTokens(context)}`;
}

/**
 * Decode-step split-context attention (src/kernels/cache/flash-decode.ts) at the shape of the
 * paged-attention-decode rows, so the two suites compare row for row in one run. Compressed rows report their
 * speedup over f16 at the same context.
 *
 * @example
 * ```ts
 * const report = await runBenchmarks(gpu, [copySuite, pagedAttentionDecodeSuite, flashDecodeSuite], benchSettings(true));
 * ```
 */
export const flashDecodeSuite: BenchSuite = {
  name: 'flash-decode',
  description:
    'split-context paged attention (partial + log-sum-exp merge), decode (1 query), batch 1, 32 query heads / ' +
    '8 KV heads, head_dim 128, block 16, one layer',
  counts:
    "one layer's cache blocks read once (K, V, quantization parameters, positions) + block table + queries, " +
    'plus the output written once; partials (per partition: head_dim + 2 floats per head) are left out',
  cases: (settings) =>
    flashDecodeContexts(settings.quick, process.env.KVCOMPACT_BENCH_CONTEXTS).flatMap((context) =>
      FORMATS.map(
        (quant): BenchCase => ({
          name: caseName(quant, context),
          shape:
            `ctx ${formatTokens(context)} · 32q/8kv · d128 · ` +
            (quant ? `${quant} + ${ATTENTION_SHAPE.recent} f16` : 'f16'),
          series: `flash ${label(quant)}`,
          context,
          ...(quant ? { baseline: caseName(null, context) } : {}),
          setup: (gpu) => prepareFlashDecode(gpu, context, quant),
        }),
      ),
    ),
};

function prepareFlashDecode(gpu: GpuContext, context: number, quant: QuantFormat | null): PreparedCase {
  const { nHeads, kvHeads, headDim } = ATTENTION_SHAPE;
  const cache = decodeBenchCache(gpu, context, quant);
  const software = gpu.adapter.isFallbackAdapter || gpu.adapter.architecture === 'swiftshader';
  const shape = software ? FLASH_BENCH_SHAPES.software : FLASH_BENCH_SHAPES.hardware;
  const kernel = new FlashDecodeKernel(gpu, { nHeads, kvHeads, full: cache.full, quant: cache.quant, ...shape });
  const qBytes = nHeads * headDim * 4;
  const queries = createStorageBuffer(gpu, 'bench:q', randomFloats(nHeads * headDim, context));
  const querySlots = createStorageBuffer(gpu, 'bench:q-slots', new Uint32Array([0]));
  // Every cached token sits at a position below the query's, so no token is masked.
  const queryPositions = createStorageBuffer(gpu, 'bench:q-pos', new Uint32Array([context]));
  const out = createStorageBuffer(gpu, 'bench:out', qBytes);
  const buffers = [queries, querySlots, queryPositions, out];
  return {
    bytes: cache.blockBytesPerLayer + cache.tableBytesPerLayer + qBytes + 8 + qBytes,
    encode: (encoder, timer) =>
      kernel.encode(
        encoder,
        { cache: cache.bindings, layer: 0, numQueries: 1, queries, querySlots, queryPositions, out, maxContext: context },
        timer.pass(),
      ),
    destroy: () => {
      cache.destroy();
      kernel.destroy();
      for (const b of buffers) b.destroy();
    },
  };
}
