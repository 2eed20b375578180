import { blockLayout, bytesPerBlock } from '../../format/layout.js';
import { createStorageBuffer } from '../../gpu/buffers.js';
import type { GpuContext } from '../../gpu/context.js';
import { KvAppendKernel } from '../../kernels/cache/kv-append.js';
import { randomFloats } from '../fixture.js';
import type { BenchCase, BenchSuite, PreparedCase } from '../harness.js';

const KV_HEADS = 8;
const HEAD_DIM = 128;
const BLOCK_SIZE = 16;

/**
 * Appending new tokens' K and V (f32 in) to an f16 full pool: one decode token, and prefill chunks.
 * The kernel has no timestampWrites parameter (its file belongs to the cache work), so the harness's bracket
 * timestamps time it.
 *
 * @example
 * ```ts
 * const report = await runBenchmarks(gpu, [kvAppendSuite], benchSettings(true));
 * ```
 */
export const kvAppendSuite: BenchSuite = {
  name: 'kv-append',
  description: 'KV append: scatter new tokens (f32 K and V, 8 KV heads, head_dim 128) into f16 blocks of 16, one layer',
  counts: 'K and V read (f32) + destination slots and positions read + K, V and positions written (f16 blocks)',
  cases: (settings) =>
    (settings.quick ? [1, 512] : [1, 64, 512, 4096]).map(
      (tokens): BenchCase => ({
        name: `kv-append/${tokens}`,
        shape: `${tokens} token${tokens === 1 ? '' : 's'} · 8kv · d128 · f16`,
        setup: (gpu) => prepareAppend(gpu, tokens),
      }),
    ),
};

function prepareAppend(gpu: GpuContext, tokens: number): PreparedCase {
  const full = blockLayout('f16', { headDim: HEAD_DIM, blockSize: BLOCK_SIZE });
  const blocksPerHead = Math.ceil(tokens / BLOCK_SIZE);
  const kernel = new KvAppendKernel(gpu, { kvHeads: KV_HEADS, full });
  const values = tokens * KV_HEADS * HEAD_DIM;
  // Token t of head h lands in block 1 + h·blocksPerHead + ⌊t/16⌋ (block 0 is the null block).
  const dest = new Uint32Array(tokens * KV_HEADS);
  for (let t = 0; t < tokens; t++) {
    for (let h = 0; h < KV_HEADS; h++) {
      dest[t * KV_HEADS + h] = (1 + h * blocksPerHead + Math.floor(t / BLOCK_SIZE)) * BLOCK_SIZE + (t % BLOCK_SIZE);
    }
  }
  const keys = createStorageBuffer(gpu, 'bench:k', randomFloats(values, tokens));
  const vals = createStorageBuffer(gpu, 'bench:v', randomFloats(values, tokens + 1));
  const destSlots = createStorageBuffer(gpu, 'bench:dest', dest);
  const positions = createStorageBuffer(gpu, 'bench:pos', Uint32Array.from({ length: tokens }, (_, i) => i));
  const fullPool = createStorageBuffer(gpu, 'bench:pool', (1 + KV_HEADS * blocksPerHead) * bytesPerBlock(full));
  const flags = createStorageBuffer(gpu, 'bench:flags', 4);
  const buffers = [keys, vals, destSlots, positions, fullPool, flags];
  return {
    // reads: K, V f32, dest slots, positions; writes: K, V f16 and one position per (token, head)
    bytes: 2 * values * 4 + tokens * KV_HEADS * 4 + tokens * 4 + 2 * values * 2 + tokens * KV_HEADS * 4,
    items: { count: tokens, unit: 'token' },
    encode: (encoder) =>
      kernel.encode(encoder, { layer: 0, numTokens: tokens, keys, values: vals, destSlots, positions, fullPool, flags }),
    destroy: () => {
      for (const b of buffers) b.destroy();
    },
  };
}
