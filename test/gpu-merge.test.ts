// Merging evicted tokens (MergeMode): the rule itself on hand-made heads, then shaders/merge_values.wgsl inside the
// GPU compaction against the TS reference in the CPU stage, at awkward sizes, for f32 and int4 storage.
import { describe, expect, it } from 'vitest';
import { exactNearestKept, keyHash, mergeCandidates, mergeHeadValues, mergeTargets, mergeWindowStart, ranksWindowExactly, MERGE_WEIGHT_FLOOR, type MergeHead } from '../src/compress/merge.js';
import { MERGE_CANDIDATES, MERGE_WINDOW, MergeValuesKernel, mergedMaskWords, mergedWords } from '../src/kernels/compress/merge-values.js';
import { InvalidArgumentError } from '../src/errors.js';
import { blockLayout } from '../src/format/layout.js';
import { createStorageBuffer } from '../src/gpu/buffers.js';
import { resolveCompressOptions } from '../src/compress/options.js';
import { CpuKvCache } from '../src/engine/cpu-kv-cache.js';
import { PagedKvCache } from '../src/engine/paged-kv-cache.js';
import { decode } from './helpers/reliability.js';
import { seededRandom, testGpu } from './helpers/gpu.js';

describe('mergeHeadValues (the reference)', () => {
  // Four tokens, head_dim 2: keys point along x (tokens 0, 2) or y (tokens 1, 3).
  const keys = Float32Array.from([1, 0, 0, 1, 2, 0.1, 0, 3]);
  const values = Float32Array.from([1, 1, 2, 2, 3, 3, 4, 4]);
  const mass = Float32Array.from([1, 1, 3, 1]);

  it('nearest folds each evicted value into the kept token of most similar key, weighted by mass', () => {
    const merged = mergeHeadValues('nearest', { headDim: 2, keys, values, mass, kept: Uint32Array.from([0, 1]) });
    // Token 2 (x) joins token 0: (1·1 + 3·3) / 4 = 2.5; token 3 (y) joins token 1: (1·2 + 1·4) / 2 = 3.
    expect(Array.from(merged)).toEqual([expect.closeTo(2.5, 5), expect.closeTo(2.5, 5), expect.closeTo(3, 5), expect.closeTo(3, 5)]);
  });

  it('cam spreads an evicted value over the kept tokens after it, with probability min(1, w / mean target w)', () => {
    const merged = mergeHeadValues('cam', { headDim: 2, keys, values, mass, kept: Uint32Array.from([1, 2]) });
    // Token 0 (w 1) over tokens 1, 2 (mean w 2): p = 0.5, each gets 0.25 · v0; token 3 is after every kept token.
    expect(Array.from(merged)).toEqual([2.25, 2.25, 3.25, 3.25].map((x) => expect.closeTo(x, 5)));
  });

  it('none keeps the kept values, and all-zero masses weigh every token alike', () => {
    expect(Array.from(mergeHeadValues('none', { headDim: 2, keys, values, mass, kept: Uint32Array.from([3]) }))).toEqual([4, 4]);
    const flat = mergeHeadValues('nearest', { headDim: 2, keys, values, mass: new Float32Array(4), kept: Uint32Array.from([3]) });
    expect(Array.from(flat)).toEqual([2.5, 2.5].map((x) => expect.closeTo(x, 5)));
    expect(MERGE_WEIGHT_FLOOR).toBeLessThan(1e-3);
  });

  it('keyHash: a fixed sign pattern of 32 projections (a negated key flips every bit, a scaled one none)', () => {
    const random = seededRandom(5);
    for (const headDim of [1, 8, 63, 128]) {
      const key = Float32Array.from({ length: headDim }, () => random() * 2 - 1);
      const h = keyHash(key, 0, headDim);
      const negated = keyHash(key.map((x) => -x), 0, headDim);
      // Below 32 channels some projections are exactly 0 (bit clear either way); every other bit flips.
      if (headDim >= 32) expect(negated).toBe(~h >>> 0);
      expect(negated & h).toBe(0);
      expect(negated | h).not.toBe(0);
      expect(keyHash(key.map((x) => 2 * x), 0, headDim)).toBe(h);
      expect(keyHash(new Float32Array(headDim), 0, headDim)).toBe(0);
    }
    // 32 dense directions: a key's hash depends on every channel.
    const key = Float32Array.from({ length: 128 }, () => random() * 2 - 1);
    const moved = key.slice();
    moved[127] = -20;
    expect(keyHash(moved, 0, 128)).not.toBe(keyHash(key, 0, 128));
  });

  it('mergeCandidates: the nearest hashes by Hamming distance, the earlier slot first on equal distance', () => {
    expect(MERGE_CANDIDATES).toBe(4);
    // Distances to 0b0000: 2, 1, 0, 1, 3, 1.
    expect(mergeCandidates([0b11, 0b1, 0, 0b10, 0b111, 0b1000], 0, 3)).toEqual([2, 1, 3, 5]);
    expect(mergeCandidates([5, 7], 1, 2)).toEqual([0, 1]);
  });

  it('mergeCandidates looks only at the MERGE_WINDOW kept slots around the token', () => {
    expect(MERGE_WINDOW).toBe(16);
    expect([mergeWindowStart(40, 0), mergeWindowStart(40, 20), mergeWindowStart(40, 39), mergeWindowStart(40, 40), mergeWindowStart(10, 5)]).toEqual([0, 12, 24, 24, 0]);
    // Exact matches (distance 0) at slots 5, 11, 28 and 30 lie outside the window 12 .. 27 of next = 20; inside,
    // distance 1 at 12 and 27, distance 2 at 20 and 13, everything else 3.
    const hashes = Array.from({ length: 40 }, () => 0b111);
    for (const s of [5, 11, 28, 30]) hashes[s] = 0;
    hashes[12] = 0b1;
    hashes[27] = 0b10;
    hashes[20] = 0b11;
    hashes[13] = 0b101;
    expect(mergeCandidates(hashes, 0, 20)).toEqual([12, 27, 13, 20]);
    expect(mergeCandidates(hashes, 0, 0)).toEqual([5, 11, 12, 13]);
  });

  it('nearest finds the exact-nearest kept key when the evicted keys sit near kept ones nearby (head_dim 128)', () => {
    // 64 kept keys (every 9th token) in random directions; each evicted key is a kept key within 6 slots of it plus
    // 30 % noise, so its exact-nearest kept key is (almost always) that source, inside its window. The hash's
    // candidates must contain it nearly every time.
    const random = seededRandom(11);
    const headDim = 128;
    const gauss = () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
    const keptCount = 64;
    const tokens = 9 * keptCount;
    const kept = Uint32Array.from({ length: keptCount }, (_, i) => 9 * i);
    const keys = new Float32Array(tokens * headDim);
    for (const j of kept) for (let d = 0; d < headDim; d++) keys[j * headDim + d] = gauss();
    let farthest = 0;
    for (let t = 0; t < tokens; t++) {
      if (t % 9 === 0) continue;
      const next = Math.ceil(t / 9);
      const slot = Math.max(0, Math.min(keptCount - 1, next + Math.floor(random() * 13) - 6));
      const source = 9 * slot;
      farthest = Math.max(farthest, Math.abs(slot - next));
      for (let d = 0; d < headDim; d++) keys[t * headDim + d] = (keys[source * headDim + d] ?? 0) + 0.3 * gauss();
    }
    expect(farthest).toBe(6);
    const head = { headDim, keys, values: new Float32Array(keys.length), mass: new Float32Array(tokens), kept };
    const targets = mergeTargets(head);
    let agree = 0;
    for (let t = 0; t < tokens; t++) if (t % 9 !== 0 && targets[t] === exactNearestKept(head, t)) agree++;
    expect(agree / (tokens - keptCount)).toBeGreaterThan(0.95);
    expect(Array.from(kept, (j) => targets[j]).every((x) => x === -1)).toBe(true);
  });

  it('nearest never merges a token into a kept key outside its window (the approximation)', () => {
    // 40 kept keys (tokens 0 .. 39), the evicted tokens after them copies of kept key 0: every one's first kept slot
    // after it is 40, so its window is slots 24 .. 39 and key 0 (the exact nearest) is out of reach.
    const random = seededRandom(13);
    const headDim = 16;
    const keys = Float32Array.from({ length: 48 * headDim }, () => random() * 2 - 1);
    for (let t = 40; t < 48; t++) keys.copyWithin(t * headDim, 0, headDim);
    const head = { headDim, keys, values: new Float32Array(keys.length), mass: new Float32Array(48), kept: Uint32Array.from({ length: 40 }, (_, i) => i) };
    const targets = mergeTargets(head);
    for (let t = 40; t < 48; t++) {
      expect(exactNearestKept(head, t)).toBe(0);
      expect(targets[t]).toBeGreaterThanOrEqual(24);
    }
  });

  it('nearest is exact when a head keeps no more than the candidates', () => {
    const random = seededRandom(12);
    const headDim = 16;
    const tokens = 40;
    const keys = Float32Array.from({ length: tokens * headDim }, () => random() * 2 - 1);
    const head = { headDim, keys, values: new Float32Array(keys.length), mass: new Float32Array(tokens), kept: Uint32Array.from([3, 9, 20, 33]) };
    const targets = mergeTargets(head);
    for (let t = 0; t < tokens; t++) if ((targets[t] ?? -1) >= 0) expect(targets[t]).toBe(exactNearestKept(head, t));
  });

  it('nearest ranks the whole window exactly in a head that keeps at least 4× what it evicts', () => {
    expect([ranksWindowExactly(1024, 1008), ranksWindowExactly(80, 64), ranksWindowExactly(81, 64), ranksWindowExactly(1024, 128)]).toEqual([true, true, false, false]);
    // Random keys (cosines near 0, so the hash's four candidates often miss the window's best): 200 tokens keeping
    // 160 (every token but each fifth) are ranked exactly; keeping 159 of 200 they are ranked by hash.
    const random = seededRandom(14);
    const headDim = 32;
    const tokens = 200;
    const keys = Float32Array.from({ length: tokens * headDim }, () => random() * 2 - 1);
    const windowBest = (head: MergeHead, t: number): number => {
      const next = Array.from(head.kept).findIndex((j) => j > t);
      const start = mergeWindowStart(head.kept.length, next < 0 ? head.kept.length : next);
      const window = { ...head, kept: Array.from(head.kept).slice(start, start + MERGE_WINDOW) };
      return start + exactNearestKept(window, t);
    };
    const exact = { headDim, keys, values: new Float32Array(keys.length), mass: new Float32Array(tokens), kept: Uint32Array.from({ length: tokens }, (_, i) => i).filter((t) => t % 5 !== 2) };
    const targets = mergeTargets(exact);
    let evicted = 0;
    for (let t = 0; t < tokens; t++) {
      if (t % 5 !== 2) continue;
      evicted++;
      expect(targets[t]).toBe(windowBest(exact, t));
    }
    expect(evicted).toBe(40);
    const hashed = { ...exact, kept: exact.kept.filter((t) => t !== 199) };
    const hashedTargets = mergeTargets(hashed);
    let missed = 0;
    for (let t = 0; t < 199; t++) if (t % 5 === 2 && hashedTargets[t] !== windowBest(hashed, t)) missed++;
    expect(missed).toBeGreaterThan(0);
  });

  it('is validated with the other options; slots takes mergeSlots below the budget', () => {
    expect(resolveCompressOptions({ budget: 8, merge: 'cam' }, 64).merge).toBe('cam');
    expect(resolveCompressOptions({ budget: 8 }, 64).merge).toBe('none');
    expect(resolveCompressOptions({ budget: 8, merge: 'slots' }, 64).mergeSlots).toBe(4);
    expect(resolveCompressOptions({ budget: 8, merge: 'cam', mergeSlots: 2 }, 64).mergeSlots).toBe(0);
    expect(() => resolveCompressOptions({ budget: 8, merge: 'slots', mergeSlots: 8 }, 64)).toThrow(/mergeSlots/);
    expect(() => resolveCompressOptions({ budget: 8, merge: 'average' as 'none' }, 64)).toThrow(/merge/);
  });
});

const SHAPE = { layers: 2, kvHeads: 2, headDim: 8, blockSize: 16 };
const N_HEADS = 4;

/** Decodes `tokens` random tokens through both engines, the same q, k, v for each (test/helpers/reliability.ts). */
async function decodeBoth(gpuCache: PagedKvCache, cpuCache: CpuKvCache, seq: number, tokens: number, seed: number): Promise<void> {
  await decode(gpuCache, seq, tokens, seededRandom(seed));
  await decode(cpuCache, seq, tokens, seededRandom(seed));
}

describe('merging on the GPU (merge_values + compact_blocks) against the CPU reference', () => {
  // Tokens before compressing × budget: one kept token (63 → 1), a budget off the block grid (65 → 17), 65 kept.
  // f32 values within 1e-4; int4 within 0.2 (one code step of a group spanning ±1 is ≈ 0.13; codes may differ by 1).
  const cases = [
    { tokens: 63, budget: 1, policy: 'h2o', bits: 16 },
    { tokens: 65, budget: 17, policy: 'snapkv', bits: 4 },
    { tokens: 97, budget: 65, policy: 'streaming', bits: 16 }, // 65 kept: past one tile of 64 kept keys
    // int2 at head_dim 8: a code word spans two tokens, so merged rows are read inside the compaction (the
    // kernel's MERGED_VALUES variant) instead of by the pass that rewrites one token's V alone.
    { tokens: 65, budget: 17, policy: 'h2o', bits: 2 },
  ] as const;
  for (const merge of ['nearest', 'cam'] as const) {
    for (const { tokens, budget, policy, bits } of cases) {
      it(`${merge}: ${policy}, ${tokens} tokens → ${budget} per head, ${bits === 16 ? 'f32' : `int${bits}`}`, async () => {
        const gpu = await testGpu();
        const options = { shape: SHAPE, nHeads: N_HEADS, fullFormat: 'f32' as const, maxTokensPerHead: 128, observationWindow: 8, initialFullBlocks: 8 };
        const gpuCache = PagedKvCache.create(gpu, options);
        const cpuCache = CpuKvCache.create(options);
        try {
          for (const cache of [gpuCache, cpuCache]) cache.addSequence(1);
          await decodeBoth(gpuCache, cpuCache, 1, tokens, tokens + budget);
          const before = await cpuCache.readHead(1, 0, 0);
          const compress = { policy, budget, bits, merge, recent: Math.min(4, budget), sinks: 0, window: 8 };
          const fromGpu = await gpuCache.compress(1, compress);
          const fromCpu = await cpuCache.compress(1, compress);
          expect(fromGpu.merge).toBe(merge);
          expect(fromGpu.keptPerHead).toEqual(fromCpu.keptPerHead);
          expect(gpuCache.memory()).toEqual(cpuCache.memory());
          // int2: a code step of a group spanning ±1 is ≈ 0.67, so besides that bound few values may differ at all.
          const tolerance = bits === 16 ? 1e-4 : bits === 4 ? 0.2 : 0.7;
          let changed = 0;
          let differing = 0;
          let compared = 0;
          for (let layer = 0; layer < SHAPE.layers; layer++) {
            for (let head = 0; head < SHAPE.kvHeads; head++) {
              const g = await gpuCache.readHead(1, layer, head);
              const c = cpuCache.readHead(1, layer, head);
              expect(Array.from(g.positions)).toEqual(Array.from(c.positions));
              for (let i = 0; i < c.values.length; i++) {
                const error = Math.abs((g.values[i] ?? 0) - (c.values[i] ?? 0));
                expect(error).toBeLessThan(tolerance);
                if (error > 1e-3) differing++;
              }
              compared += c.values.length;
              if (bits === 16) expect(Array.from(g.keys)).toEqual(Array.from(c.keys));
              if (layer === 0 && head === 0) {
                // Some kept value moved: the merge ran (the kept keys are copies of the old ones).
                c.positions.forEach((p, j) => {
                  const old = before.values.subarray(p * SHAPE.headDim, (p + 1) * SHAPE.headDim);
                  if (old.some((x, d) => Math.abs(x - (c.values[j * SHAPE.headDim + d] ?? 0)) > 1e-3)) changed++;
                });
              }
            }
          }
          expect(changed).toBeGreaterThan(0);
          expect(differing).toBeLessThanOrEqual(compared / 50);
          expect(gpuCache.checkInvariants()).toEqual([]);
        } finally {
          gpuCache.destroy();
        }
      });
    }
  }

  // f16 blocks at head_dim 128 take the eight-channels-per-load path of shaders/merge_common.wgsl (the cases above
  // are f32 at head_dim 8); 1100 → 1040 kept passes one tile of 1024 kept hashes. Inputs are multiples of 1/64
  // (exact in f16); merged values are stored in f16, so they agree within one f16 step (2⁻¹⁰ relative) plus 1e-4.
  const wide = [
    { tokens: 65, budget: 17, headDim: 128, fullFormat: 'f16' },
    { tokens: 1, budget: 1, headDim: 128, fullFormat: 'f16' },
    // Several of merge_cam's 32-slot runs (each re-reads the 3 gaps before it) on the eight-channel f16 loads.
    { tokens: 300, budget: 70, headDim: 128, fullFormat: 'f16' },
    { tokens: 130, budget: 40, headDim: 8, fullFormat: 'f16' },
    { tokens: 200, budget: 63, headDim: 60, fullFormat: 'f16' },
    { tokens: 1100, budget: 1040, headDim: 4, fullFormat: 'f32' },
    // head_dim not a multiple of 4: the merged rows are not whole vec4s (the per-channel paths of the merge kernels).
    { tokens: 70, budget: 9, headDim: 10, fullFormat: 'f32' },
  ] as const;
  for (const merge of ['nearest', 'cam'] as const) {
    for (const { tokens, budget, headDim, fullFormat } of wide) {
      it(`${merge}: knorm, ${tokens} tokens → ${budget} per head, head_dim ${headDim}, ${fullFormat}`, async () => {
        const shape = { layers: 1, kvHeads: 2, headDim, blockSize: 16 };
        const options = { shape, nHeads: 2, fullFormat, maxTokensPerHead: 2048, initialFullBlocks: 2 * Math.ceil(tokens / 16) + 4 };
        const gpuCache = PagedKvCache.create(await testGpu(), options);
        const cpuCache = CpuKvCache.create(options);
        try {
          const random = seededRandom(tokens + headDim);
          const n = tokens * 2 * headDim;
          const keys = Float32Array.from({ length: n }, () => Math.round((random() * 2 - 1) * 64) / 64);
          const values = Float32Array.from({ length: n }, () => Math.round((random() * 2 - 1) * 64) / 64);
          for (const cache of [gpuCache, cpuCache]) {
            cache.addSequence(1);
            await cache.append(1, keys, values);
          }
          const compress = { policy: 'knorm', budget, merge, sinks: 0, recent: 0 } as const;
          await gpuCache.compress(1, compress);
          await cpuCache.compress(1, compress);
          for (let head = 0; head < 2; head++) {
            const g = await gpuCache.readHead(1, 0, head);
            const c = cpuCache.readHead(1, 0, head);
            expect(Array.from(g.positions)).toEqual(Array.from(c.positions));
            expect(Array.from(g.keys)).toEqual(Array.from(c.keys));
            let worst = 0;
            for (let i = 0; i < c.values.length; i++) {
              const x = c.values[i] ?? 0;
              worst = Math.max(worst, Math.abs((g.values[i] ?? 0) - x) - Math.abs(x) * 2 ** -10);
            }
            expect(worst).toBeLessThan(1e-4);
          }
          expect(gpuCache.checkInvariants()).toEqual([]);
        } finally {
          gpuCache.destroy();
        }
      });
    }
  }

  // int4 destinations from f16 sources at head_dim 128: compact_blocks' whole-word V items (row_oct's vec4 loads)
  // take a merged row only where its flag is set. 300 → 280: most slots merge nothing, some do.
  for (const merge of ['cam', 'nearest'] as const) {
    it(`${merge}: knorm, 300 f16 tokens → 280 per head in int4, head_dim 128 (the V items read merged rows by flag)`, async () => {
      const shape = { layers: 1, kvHeads: 2, headDim: 128, blockSize: 16 };
      const options = { shape, nHeads: 2, fullFormat: 'f16' as const, quantBits: 4 as const, maxTokensPerHead: 512, initialFullBlocks: 48, initialQuantBlocks: 48 };
      const gpuCache = PagedKvCache.create(await testGpu(), options);
      const cpuCache = CpuKvCache.create(options);
      try {
        const random = seededRandom(300);
        const n = 300 * 2 * 128;
        const keys = Float32Array.from({ length: n }, () => Math.round((random() * 2 - 1) * 64) / 64);
        const values = Float32Array.from({ length: n }, () => Math.round((random() * 2 - 1) * 64) / 64);
        for (const cache of [gpuCache, cpuCache]) {
          cache.addSequence(1);
          await cache.append(1, keys, values);
        }
        const compress = { policy: 'knorm', budget: 280, bits: 4, merge, sinks: 0, recent: 16 } as const;
        await gpuCache.compress(1, compress);
        await cpuCache.compress(1, compress);
        for (let head = 0; head < 2; head++) {
          const g = await gpuCache.readHead(1, 0, head);
          const c = cpuCache.readHead(1, 0, head);
          expect(Array.from(g.positions)).toEqual(Array.from(c.positions));
          // One int4 code step of a group spanning ±1 is ≈ 0.13: codes may differ by one.
          for (let i = 0; i < c.values.length; i++) expect(Math.abs((g.values[i] ?? 0) - (c.values[i] ?? 0))).toBeLessThan(0.15);
        }
        expect(gpuCache.checkInvariants()).toEqual([]);
      } finally {
        gpuCache.destroy();
      }
    });
  }

  // A second compression merges tokens that the first one stored in int4: the merge kernels read quantized blocks
  // eight channels at a time (quant_octet in shaders/merge_common.wgsl), against the CPU engine's dequantization.
  for (const merge of ['nearest', 'cam'] as const) {
    it(`${merge}: knorm, 200 tokens → 120 int4 → 40 per head, head_dim 128, from quantized blocks`, async () => {
      const headDim = 128;
      const shape = { layers: 1, kvHeads: 2, headDim, blockSize: 16 };
      const options = { shape, nHeads: 2, fullFormat: 'f16' as const, maxTokensPerHead: 256, initialFullBlocks: 32, initialQuantBlocks: 32 };
      const gpuCache = PagedKvCache.create(await testGpu(), options);
      const cpuCache = CpuKvCache.create(options);
      try {
        const random = seededRandom(77);
        const n = 200 * 2 * headDim;
        const keys = Float32Array.from({ length: n }, () => Math.round((random() * 2 - 1) * 64) / 64);
        const values = Float32Array.from({ length: n }, () => Math.round((random() * 2 - 1) * 64) / 64);
        for (const cache of [gpuCache, cpuCache]) {
          cache.addSequence(1);
          await cache.append(1, keys, values);
        }
        const first = { policy: 'knorm', budget: 120, bits: 4, merge: 'none', sinks: 0, recent: 0 } as const;
        await gpuCache.compress(1, first);
        await cpuCache.compress(1, first);
        for (let head = 0; head < 2; head++) {
          // The merge reads the same dequantized keys and values on both engines.
          const g = await gpuCache.readHead(1, 0, head);
          const c = cpuCache.readHead(1, 0, head);
          expect(Array.from(g.keys)).toEqual(Array.from(c.keys));
          expect(Array.from(g.values)).toEqual(Array.from(c.values));
        }
        const second = { ...first, budget: 40, merge } as const;
        await gpuCache.compress(1, second);
        await cpuCache.compress(1, second);
        for (let head = 0; head < 2; head++) {
          const g = await gpuCache.readHead(1, 0, head);
          const c = cpuCache.readHead(1, 0, head);
          expect(Array.from(g.positions)).toEqual(Array.from(c.positions));
          // Requantized merged values: one int4 code step apart at most where rounding differs.
          for (let i = 0; i < c.values.length; i++) expect(Math.abs((g.values[i] ?? 0) - (c.values[i] ?? 0))).toBeLessThan(0.2);
        }
        expect(gpuCache.checkInvariants()).toEqual([]);
      } finally {
        gpuCache.destroy();
      }
    });
  }

  it('merge none writes the same cache as before merging existed (no merged buffer bound)', async () => {
    const gpu = await testGpu();
    const options = { shape: SHAPE, nHeads: N_HEADS, fullFormat: 'f32' as const, maxTokensPerHead: 128, observationWindow: 8, initialFullBlocks: 8 };
    const gpuCache = PagedKvCache.create(gpu, options);
    const cpuCache = CpuKvCache.create(options);
    try {
      for (const cache of [gpuCache, cpuCache]) cache.addSequence(1);
      await decodeBoth(gpuCache, cpuCache, 1, 40, 3);
      const before = cpuCache.readHead(1, 1, 1);
      await gpuCache.compress(1, { policy: 'h2o', budget: 20, merge: 'none' });
      await cpuCache.compress(1, { policy: 'h2o', budget: 20, merge: 'none' });
      const g = await gpuCache.readHead(1, 1, 1);
      const c = cpuCache.readHead(1, 1, 1);
      expect(Array.from(g.values)).toEqual(Array.from(c.values));
      c.positions.forEach((p, j) => {
        expect(Array.from(c.values.subarray(j * 8, (j + 1) * 8))).toEqual(Array.from(before.values.subarray(p * 8, (p + 1) * 8)));
      });
    } finally {
      gpuCache.destroy();
    }
  });

  it('merges the same when the pools are full and the heads compact one per round', async () => {
    const options = { shape: SHAPE, nHeads: N_HEADS, fullFormat: 'f32' as const, maxTokensPerHead: 512, maxBytes: 96 * 1024, initialFullBlocks: 4 };
    const gpuCache = PagedKvCache.create(await testGpu(), options);
    const cpuCache = CpuKvCache.create(options);
    try {
      const random = seededRandom(9);
      const perToken = SHAPE.layers * SHAPE.kvHeads * SHAPE.headDim;
      for (const cache of [gpuCache, cpuCache]) cache.addSequence(1);
      // Append 16-token chunks until the byte budget refuses one: the one-shot plan cannot fit any more.
      for (;;) {
        const keys = Float32Array.from({ length: 16 * perToken }, () => random() - 0.5);
        const values = Float32Array.from({ length: 16 * perToken }, () => random() - 0.5);
        try {
          await cpuCache.append(1, keys, values);
        } catch {
          break;
        }
        await gpuCache.append(1, keys, values);
      }
      const half = Math.floor(cpuCache.sequenceLength(1) / 2);
      const compress = { policy: 'knorm', budget: half, sinks: 0, recent: 0, merge: 'nearest' } as const;
      await gpuCache.compress(1, compress);
      await cpuCache.compress(1, compress);
      for (let layer = 0; layer < SHAPE.layers; layer++) {
        for (let head = 0; head < SHAPE.kvHeads; head++) {
          const g = await gpuCache.readHead(1, layer, head);
          const c = cpuCache.readHead(1, layer, head);
          expect(g.values.length).toBe(half * SHAPE.headDim);
          for (let i = 0; i < c.values.length; i++) expect(Math.abs((g.values[i] ?? 0) - (c.values[i] ?? 0))).toBeLessThan(1e-4);
        }
      }
      expect(gpuCache.checkInvariants()).toEqual([]);
    } finally {
      gpuCache.destroy();
    }
  });

  // The decode schedule's compressions: each evicts a few tokens per head, so most kept slots merge nothing and keep
  // their own value (their flag 0). The merged scratch is reused across calls: a flag left from the previous call
  // would make compact_blocks read a stale row.
  for (const merge of ['cam', 'nearest'] as const) {
    it(`${merge}: five compressions of one cache, each evicting a few tokens per head, match the reference`, async () => {
      const gpu = await testGpu();
      const options = { shape: SHAPE, nHeads: N_HEADS, fullFormat: 'f32' as const, maxTokensPerHead: 160, observationWindow: 8, initialFullBlocks: 8 };
      const gpuCache = PagedKvCache.create(gpu, options);
      const cpuCache = CpuKvCache.create(options);
      try {
        for (const cache of [gpuCache, cpuCache]) cache.addSequence(1);
        await decodeBoth(gpuCache, cpuCache, 1, 50, 71);
        for (let round = 0; round < 5; round++) {
          const compress = { policy: 'h2o', budget: 44 - round, merge, recent: 4, sinks: 0 } as const;
          const fromGpu = await gpuCache.compress(1, compress);
          const fromCpu = await cpuCache.compress(1, compress);
          expect(fromGpu.keptPerHead).toEqual(fromCpu.keptPerHead);
          for (let layer = 0; layer < SHAPE.layers; layer++) {
            for (let head = 0; head < SHAPE.kvHeads; head++) {
              const g = await gpuCache.readHead(1, layer, head);
              const c = cpuCache.readHead(1, layer, head);
              expect(Array.from(g.positions)).toEqual(Array.from(c.positions));
              for (let i = 0; i < c.values.length; i++) expect(Math.abs((g.values[i] ?? 0) - (c.values[i] ?? 0))).toBeLessThan(1e-4);
            }
          }
          await decodeBoth(gpuCache, cpuCache, 1, 3, 80 + round);
        }
        expect(gpuCache.checkInvariants()).toEqual([]);
      } finally {
        gpuCache.destroy();
      }
    });
  }

  it('refuses a links scratch shorter than [2][linkRows][stride], or rows past it, before it begins a pass (the encoder stays usable)', async () => {
    const gpu = await testGpu();
    const kernel = new MergeValuesKernel(gpu, { full: blockLayout('f32', { headDim: 8, blockSize: 4 }), quant: null }, { weightFloor: MERGE_WEIGHT_FLOOR, camSpan: 4 });
    const stride = 16;
    const linkRows = 3;
    const small = (label: string, bytes: number) => createStorageBuffer(gpu, label, bytes);
    const buffers = {
      heads: small('heads', 16),
      keptIndex: small('kept', 4 * linkRows * stride),
      mass: small('mass', 4 * linkRows * stride),
      targets: small('targets', 4 * linkRows * stride),
      merged: small('merged', 4 * mergedWords(4, 8)),
      mask: small('mask', 4 * mergedMaskWords(4)),
      blockTable: small('table', 16),
      contextLens: small('lens', 4),
      fullPool: small('full', 1024),
      quantPool: small('quant', 4),
    };
    const run = (links: GPUBuffer, rows: number) => ({
      cache: { blockTable: buffers.blockTable, contextLens: buffers.contextLens, fullPool: buffers.fullPool, quantPool: buffers.quantPool, seqSlots: 1, maxBlocksPerHead: 4 },
      mode: 'nearest' as const,
      heads: buffers.heads,
      numHeads: 1,
      maxKept: 4,
      headJobs: [{ row: 0, tokens: 8, kept: 4, outBase: 0 }],
      keptTotal: 4,
      stride,
      keptIndex: buffers.keptIndex,
      mass: buffers.mass,
      targets: buffers.targets,
      links,
      linkRows: rows,
      merged: buffers.merged,
      mergedMask: buffers.mask,
    });
    const exact = small('links', 2 * linkRows * stride * 4);
    const short = small('links-short', 2 * linkRows * stride * 4 - 4);
    try {
      gpu.device.pushErrorScope('validation');
      const encoder = gpu.device.createCommandEncoder();
      expect(() => kernel.encode(encoder, run(short, linkRows))).toThrow(InvalidArgumentError);
      expect(() => kernel.encode(encoder, run(exact, linkRows + 1))).toThrow(/linkRows 4/);
      expect(() => kernel.encode(encoder, run(exact, 0))).toThrow(InvalidArgumentError);
      expect(() => kernel.encode(encoder, { ...run(exact, linkRows), headJobs: [{ row: linkRows, tokens: 8, kept: 4, outBase: 0 }] })).toThrow(/rows must be below linkRows 3/);
      // After the refusals the same encoder records a pass and finishes: none of them left a pass open.
      kernel.encode(encoder, run(exact, linkRows));
      gpu.device.queue.submit([encoder.finish()]);
      expect(await gpu.device.popErrorScope()).toBeNull();
    } finally {
      for (const buffer of [...Object.values(buffers), exact, short]) buffer.destroy();
    }
  });
});
