import { describe, expect, it } from 'vitest';
import { blockLayout } from '../src/format/layout.js';
import { FlashDecodeKernel } from '../src/kernels/cache/flash-decode.js';
import { PrefillAttentionKernel } from '../src/kernels/cache/prefill-attention.js';
import { ATTENTION_SHAPE } from '../src/bench/cases/paged-attention-decode.js';
import { prefillBenchSizes, prefillScratchBytes } from '../src/bench/cases/prefill.js';
import { testGpu } from './helpers/gpu.js';

describe('prefill bench suite', () => {
  it('reads sizes from KVCOMPACT_BENCH_PREFILL and rejects malformed ones', () => {
    expect(prefillBenchSizes(false, '512x4096, 64x65')).toEqual([
      { queries: 512, context: 4096 },
      { queries: 64, context: 65 },
    ]);
    expect(prefillBenchSizes(true, undefined)).toEqual([
      { queries: 32, context: 1024 },
      { queries: 512, context: 4096 },
    ]);
    for (const bad of ['512', '0x64', '65x64', 'ax1']) expect(() => prefillBenchSizes(false, bad)).toThrow(/KVCOMPACT_BENCH_PREFILL/);
  });

  it('scratch bytes: n × heads × context for the probability buffer, n × (heads + 1) for the tiled kernel, as the kernels allocate', async () => {
    const gpu = await testGpu();
    const { nHeads, kvHeads, headDim, blockSize } = ATTENTION_SHAPE;
    const full = blockLayout('f16', { headDim, blockSize });
    const flash = new FlashDecodeKernel(gpu, { nHeads, kvHeads, full, quant: null });
    const prefill = new PrefillAttentionKernel(gpu, { nHeads, kvHeads, full, quant: null });
    for (const size of [
      { queries: 1, context: 1 },
      { queries: 32, context: 1024 },
      { queries: 512, context: 4096 },
      { queries: 512, context: 16384 },
      { queries: 3, context: 4097 },
    ]) {
      expect(prefillScratchBytes('paged', size)).toBe(size.queries * nHeads * size.context * 4);
      expect(prefillScratchBytes('prefill', size)).toBe(prefill.scratchBytes(size.queries));
      const partitions = flash.split(size.queries, size.context).partitions;
      expect(prefillScratchBytes('flash', size)).toBe(size.queries * nHeads * (partitions * (headDim + 2) + 2) * 4);
    }
    expect(prefillScratchBytes('paged', { queries: 512, context: 16384 })).toBe(2 ** 30);
    flash.destroy();
    prefill.destroy();
  });
});
