import { describe, expect, it } from 'vitest';
import { decodeAttention } from '../src/attention/reference-attention.js';
import { assertInvariants } from '../src/cache/invariants.js';
import { PagedKvCache } from '../src/engine/paged-kv-cache.js';
import { LimitExceededError, OutOfBlocksError } from '../src/errors.js';
import { blockLayout, bytesPerBlock } from '../src/format/layout.js';
import { seededRandom, testGpu } from './helpers/gpu.js';

// Issue 16: each layer's blocks live in that layer's own buffers, so a cache whose pools together pass the
// per-binding limit works as long as each layer's pool fits. `maxPoolBytes` stands in for a small binding limit
// (the real one is 1 GiB on SwiftShader: too big to allocate in a test).

const SHAPE = { layers: 3, kvHeads: 2, headDim: 8, blockSize: 16 };
const N_HEADS = 4;
const BLOCK = bytesPerBlock(blockLayout('f32', SHAPE));
/** One layer's pool may hold 40 blocks; 256 tokens need 33 per layer (2 heads × 16 blocks + null), 99 in all. */
const LIMIT = 40 * BLOCK;
const TOKENS = 256;

describe('PagedKvCache with pools per layer on the GPU', () => {
  it('holds more than the per-binding limit in all, each layer within it: appends, reads, attends, compresses', async () => {
    const gpu = await testGpu();
    const cache = PagedKvCache.create(gpu, {
      shape: SHAPE,
      nHeads: N_HEADS,
      fullFormat: 'f32',
      quantBits: 4,
      maxTokensPerHead: 512,
      maxBytes: 1 << 20,
      maxPoolBytes: LIMIT,
      initialFullBlocks: 3,
      initialQuantBlocks: 3,
    });
    try {
      const random = seededRandom(16);
      const n = SHAPE.layers * TOKENS * SHAPE.kvHeads * SHAPE.headDim;
      const keys = Float32Array.from({ length: n }, () => random() * 2 - 1);
      const values = Float32Array.from({ length: n }, () => random() * 2 - 1);
      cache.addSequence(1);
      for (let t = 0; t < TOKENS; t += 64) {
        // [layers][tokens][kvHeads][headDim]: a chunk of 64 tokens of every layer
        const chunk = (src: Float32Array): Float32Array => {
          const per = SHAPE.kvHeads * SHAPE.headDim;
          const out = new Float32Array(SHAPE.layers * 64 * per);
          for (let l = 0; l < SHAPE.layers; l++) out.set(src.subarray((l * TOKENS + t) * per, (l * TOKENS + t + 64) * per), l * 64 * per);
          return out;
        };
        await cache.append(1, chunk(keys), chunk(values));
      }
      const total = cache.meta.poolUsage('full').bytes;
      expect(total).toBeGreaterThan(LIMIT); // one pool for all layers could not be bound
      for (let layer = 0; layer < SHAPE.layers; layer++) {
        expect(cache.meta.poolUsage('full', layer).bytes).toBeLessThanOrEqual(LIMIT);
        expect(cache.storage.poolBuffer('full', layer).size).toBe(cache.meta.poolUsage('full', layer).bytes);
      }
      expect(cache.memory().poolBytes).toBe(cache.meta.bytesAllocated);
      assertInvariants(cache.meta);

      // Every layer reads back its own tokens (f32: exact), from its own buffer.
      const expected = (layer: number, head: number, of: Float32Array): number[] => {
        const out: number[] = [];
        for (let t = 0; t < TOKENS; t++) {
          const at = ((layer * TOKENS + t) * SHAPE.kvHeads + head) * SHAPE.headDim;
          out.push(...of.subarray(at, at + SHAPE.headDim));
        }
        return out;
      };
      for (let layer = 0; layer < SHAPE.layers; layer++) {
        for (let head = 0; head < SHAPE.kvHeads; head++) {
          const got = await cache.readHead(1, layer, head);
          expect(Array.from(got.keys)).toEqual(expected(layer, head, keys));
          expect(Array.from(got.values)).toEqual(expected(layer, head, values));
        }
      }
      // Attention of the last layer binds that layer's pool alone.
      const q = Float32Array.from({ length: N_HEADS * SHAPE.headDim }, () => random() * 2 - 1);
      const got = await cache.attend(1, 2, q);
      const ref = decodeAttention({
        q,
        keys: [0, 1].map((h) => Float32Array.from(expected(2, h, keys))),
        values: [0, 1].map((h) => Float32Array.from(expected(2, h, values))),
        nHeads: N_HEADS,
        kvHeads: SHAPE.kvHeads,
        headDim: SHAPE.headDim,
      });
      got.out.forEach((x, i) => expect(x).toBeCloseTo(ref.out[i] ?? Number.NaN, 5));

      // A fork, then a compression of it (scores, selection and compaction per layer) into the quantized pools.
      cache.fork(1, 2);
      const report = await cache.compress(2, { policy: 'h2o', budget: 64, bits: 4 });
      expect(report.keptPerHead).toEqual(Array.from({ length: SHAPE.layers }, () => [64, 64]));
      for (let layer = 0; layer < SHAPE.layers; layer++) {
        for (let head = 0; head < SHAPE.kvHeads; head++) {
          const head2 = await cache.readHead(2, layer, head);
          expect(head2.positions.length).toBe(64);
          // Kept tokens are source tokens of the same layer and head, in position order.
          const source = expected(layer, head, keys);
          for (let i = 0; i < 64; i++) {
            const p = head2.positions[i] ?? 0;
            if (i > 0) expect(p).toBeGreaterThan(head2.positions[i - 1] ?? 0);
            for (let d = 0; d < SHAPE.headDim; d++) expect(head2.keys[i * SHAPE.headDim + d]).toBeCloseTo(source[p * SHAPE.headDim + d] ?? Number.NaN, 0);
          }
        }
      }
      expect(cache.meta.poolUsage('quant').used).toBeGreaterThan(0);
      assertInvariants(cache.meta);
      // The source is untouched by its fork's compression.
      expect(Array.from((await cache.readHead(1, 1, 1)).keys)).toEqual(expected(1, 1, keys));

      // Past the limit in one layer, growth stops there: an append that needs more is refused, nothing changed.
      const length = cache.sequenceLength(1);
      const more = Float32Array.from({ length: SHAPE.layers * 128 * SHAPE.kvHeads * SHAPE.headDim }, () => random());
      await expect(cache.append(1, more, more)).rejects.toSatisfy((e: unknown) => e instanceof OutOfBlocksError || e instanceof LimitExceededError);
      expect(cache.sequenceLength(1)).toBe(length);
      assertInvariants(cache.meta);
    } finally {
      cache.destroy();
    }
  });
});
