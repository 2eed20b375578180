// MergeMode 'slots' on the GPU engine (src/compress/gpu-slots.ts: merge_slots with `load`, slot_index, the
// compaction's slot sources) against the CPU engine, which matches the reference absorbIntoSlots bit for bit
// (test/cpu-merge-slots.test.ts). Both engines start from one snapshot (same tokens and statistics), compress
// with h2o (a statistics policy: the GPU scores exactly as the CPU engine), and must agree on every kept position
// exactly, on slot keys/values and masses within f32 rounding (f16/int4: within the format's rounding), and on the
// statistics (moved bit for bit; new slots 0). Evicted counts 1, 63, 65; head_dim 8 and 64; f32, f16, int4; two
// compactions in a row; fork then compress both; a GPU snapshot round trip; the kept-index rewrite kernel alone.
import { describe, expect, it } from 'vitest';
import { CpuKvCache } from '../src/engine/cpu-kv-cache.js';
import { PagedKvCache } from '../src/engine/paged-kv-cache.js';
import { InvalidArgumentError, UsageError } from '../src/errors.js';
import { createStorageBuffer, readBuffer } from '../src/gpu/buffers.js';
import { packSlotIndexHeads, SlotIndexKernel, slotIndexReference } from '../src/kernels/compress/slot-index.js';
import type { CacheShape } from '../src/format/layout.js';
import { seededRandom, testGpu } from './helpers/gpu.js';
import { randomDecodeSteps } from './helpers/decode-steps.js';
import { countGpuWork } from './helpers/gpu-counters.js';
import { GENERATE_COMMAND, parseGenerationFlags } from '../src/cli/generate.js';

const nHeads = 4;
const M = 4;
type Format = 'f32' | 'f16' | 'int4';

function shapeOf(headDim: number): CacheShape {
  return { layers: 2, kvHeads: 2, headDim, blockSize: 16 };
}

function cacheOptions(shape: CacheShape, format: Format) {
  return { shape, nHeads, fullFormat: format === 'f16' ? ('f16' as const) : ('f32' as const), seqSlots: 4, maxTokensPerHead: 256, ...(format === 'int4' ? { quantBits: 4 as const } : {}) };
}

/** Decode steps with random q, k, v, so the statistics (h2o's scores and the merge weights) build up. */
function run(cache: CpuKvCache, shape: CacheShape, seq: number, from: number, to: number, seed: number): void {
  randomDecodeSteps(cache, shape, nHeads, seq, from, to, seed);
}

/** The same tokens appended to both engines (no statistics: they score 0, ties by lower index). */
async function appendBoth(cpu: CpuKvCache, gpu: PagedKvCache, seq: number, shape: CacheShape, tokens: number, seed: number): Promise<void> {
  const random = seededRandom(seed);
  const n = tokens * shape.layers * shape.kvHeads * shape.headDim;
  const k = Float32Array.from({ length: n }, () => random() - 0.5);
  const v = Float32Array.from({ length: n }, () => random() - 0.5);
  await cpu.append(seq, k, v);
  await gpu.append(seq, k, v);
}

function close(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string): void {
  expect(actual.length, what).toBe(expected.length);
  let worst = 0;
  for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs((actual[i] ?? 0) - (expected[i] ?? 0)) / Math.max(1, Math.abs(expected[i] ?? 0)));
  expect(worst, what).toBeLessThanOrEqual(tol);
}

/** Tolerances of slot keys/values per format (f16/int4: one rounding step of the stored value). */
const TOL: Record<Format, number> = { f32: 2e-6, f16: 2e-3, int4: 0.15 };

async function expectSameState(cpu: CpuKvCache, gpu: PagedKvCache, seq: number, shape: CacheShape, format: Format, gpuSeq = seq): Promise<void> {
  for (let l = 0; l < shape.layers; l++) {
    for (let h = 0; h < shape.kvHeads; h++) {
      const where = `seq ${seq} L${l}H${h}`;
      expect(gpu.tokenCount(gpuSeq, l, h), where).toBe(cpu.tokenCount(seq, l, h));
      const a = await gpu.readHead(gpuSeq, l, h);
      const b = cpu.readHead(seq, l, h);
      expect(Array.from(a.positions), `${where} positions`).toEqual(Array.from(b.positions));
      close(a.keys, b.keys, TOL[format], `${where} keys`);
      close(a.values, b.values, TOL[format], `${where} values`);
      // Masses: f64 sums on the CPU, f32 on the GPU.
      close(await gpu.mergeSlots(gpuSeq, l, h), cpu.mergeSlots(seq, l, h), 1e-5, `${where} masses`);
    }
  }
  const [gs, cs] = [(await gpu.exportSequence(gpuSeq)).stats, (await cpu.exportSequence(seq)).stats];
  for (const key of ['attnSum', 'attnSqSum', 'attnCount'] as const) expect(Array.from(gs[key]), key).toEqual(Array.from(cs[key]));
}

describe("merge 'slots' on the GPU engine, against the CPU engine", () => {
  // Budget 40 (M = 4: 36 real tokens kept per head): the first compaction evicts tokens − 36 (≥ M: the budget is
  // at most the context, so it fills every slot), the second the `appended` tokens, into full slots.
  const cases: { tokens: number; appended: number; headDim: number; format: Format }[] = [
    { tokens: 41, appended: 1, headDim: 8, format: 'f32' }, // 5 evicted, then 1
    { tokens: 99, appended: 30, headDim: 8, format: 'f32' }, // 63 evicted
    { tokens: 101, appended: 65, headDim: 64, format: 'f32' }, // 65 evicted twice, head_dim 64
    { tokens: 101, appended: 1, headDim: 8, format: 'f16' },
    { tokens: 99, appended: 63, headDim: 64, format: 'int4' },
  ];
  for (const { tokens, appended, headDim, format } of cases) {
    it(`${tokens - 36} then ${appended} evicted, head_dim ${headDim}, ${format}: two compactions, slots carried`, async () => {
      const shape = shapeOf(headDim);
      const gpuContext = await testGpu();
      const cpu = CpuKvCache.create(cacheOptions(shape, format));
      const gpu = PagedKvCache.create(gpuContext, cacheOptions(shape, format));
      try {
        cpu.addSequence(0);
        run(cpu, shape, 0, 0, tokens, tokens + headDim);
        await gpu.importSequence(0, await cpu.exportSequence(0));
        const options = { policy: 'h2o', budget: 40, merge: 'slots', mergeSlots: M, sinks: 2, recent: 8, bits: format === 'int4' ? 4 : 16, measureMass: true } as const;
        const [rc, rg] = [await cpu.compress(0, options), await gpu.compress(0, options)];
        expect(rg.keptPerHead).toEqual(rc.keptPerHead);
        // The mass report measures the real tokens alone on both engines (f32 sums on the GPU).
        expect(rg.attentionMassKept).toBeCloseTo(rc.attentionMassKept, 5);
        expect(rg.merge).toBe('slots');
        await expectSameState(cpu, gpu, 0, shape, format);
        expect(gpu.slotStateBytes(0)).toBe(shape.layers * shape.kvHeads * M * 4);
        expect(gpu.memory().slotStateBytes).toBe(gpu.slotStateBytes(0));
        // compressedBytes counts the masses on both engines (8 B per slot on the CPU, 4 on the GPU).
        expect(rg.compressedBytes - gpu.sequenceBytes(0).bytes).toBe(gpu.slotStateBytes(0));
        expect(rc.compressedBytes - cpu.sequenceBytes(0).bytes).toBe(cpu.slotStateBytes(0));
        // Second compaction: the appended tokens' worth evicted into the slots carried over.
        const masses = await gpu.mergeSlots(0, 0, 0);
        await appendBoth(cpu, gpu, 0, shape, appended, 7);
        const [rc2, rg2] = [await cpu.compress(0, options), await gpu.compress(0, options)];
        expect(rg2.attentionMassKept).toBeCloseTo(rc2.attentionMassKept, 5);
        expect(rg2.attentionMassKept).toBeLessThan(1);
        await expectSameState(cpu, gpu, 0, shape, format);
        const after = await gpu.mergeSlots(0, 0, 0);
        expect(after.length).toBe(M);
        expect(after.reduce((a, b) => a + b, 0)).toBeGreaterThan(masses.reduce((a, b) => a + b, 0));
        expect(gpu.checkInvariants()).toEqual([]);
      } finally {
        gpu.destroy();
      }
    });
  }

  it('fork then compress both: each goes on with its own copy of the slots; free and addSequence clear them', async () => {
    const shape = shapeOf(8);
    const cpu = CpuKvCache.create(cacheOptions(shape, 'f32'));
    const gpu = PagedKvCache.create(await testGpu(), cacheOptions(shape, 'f32'));
    try {
      cpu.addSequence(0);
      run(cpu, shape, 0, 0, 70, 3);
      await gpu.importSequence(0, await cpu.exportSequence(0));
      const options = { policy: 'h2o', budget: 32, merge: 'slots', sinks: 2, recent: 8 } as const;
      await cpu.compress(0, options);
      await gpu.compress(0, options);
      await cpu.fork(0, 1);
      await gpu.fork(0, 1);
      await appendBoth(cpu, gpu, 1, shape, 20, 4);
      await appendBoth(cpu, gpu, 0, shape, 10, 5);
      for (const seq of [1, 0]) {
        await cpu.compress(seq, options);
        await gpu.compress(seq, options);
        await expectSameState(cpu, gpu, seq, shape, 'f32');
      }
      expect(Array.from(await gpu.mergeSlots(1, 0, 0))).not.toEqual(Array.from(await gpu.mergeSlots(0, 0, 0)));
      await gpu.freeSequence(1);
      gpu.addSequence(2);
      expect(gpu.slotStateBytes(2)).toBe(0);
      expect((await gpu.mergeSlots(2, 0, 0)).length).toBe(0);
      expect(gpu.checkInvariants()).toEqual([]);
    } finally {
      gpu.destroy();
    }
  });

  // Window policies leave each row's slots out of the window softmax and the pooling on both engines (the GPU
  // scoring takes the rows' first tokens): the same kept positions (SnapKV: slots and masses too) as the CPU engine. Each round
  // decodes on the CPU engine (window queries and statistics), then both engines compress the same snapshot.
  for (const policy of ['snapkv', 'tova'] as const) {
    it(`${policy}: the window scoring leaves the slots out, as on the CPU engine (three compactions)`, async () => {
      const shape = shapeOf(8);
      const cpu = CpuKvCache.create(cacheOptions(shape, 'f32'));
      const gpu = PagedKvCache.create(await testGpu(), cacheOptions(shape, 'f32'));
      try {
        cpu.addSequence(0);
        const options = { policy, budget: 32, merge: 'slots', sinks: 2, recent: 4 } as const;
        let pos = 0;
        for (const [round, steps] of [70, 24, 30].entries()) {
          run(cpu, shape, 0, pos, pos + steps, 40 + round);
          pos += steps;
          if (round > 0) await gpu.freeSequence(0);
          await gpu.importSequence(0, await cpu.exportSequence(0));
          const [rc, rg] = [await cpu.compress(0, options), await gpu.compress(0, options)];
          expect(rg.keptPerHead, `round ${round}`).toEqual(rc.keptPerHead);
          if (policy === 'snapkv') await expectSameState(cpu, gpu, 0, shape, 'f32');
          else {
            // TOVA's merge weights come from its one window query on the GPU, from the compress window on the CPU
            // engine (src/compress/options.ts): the same tokens kept, slot contents that differ.
            for (let l = 0; l < shape.layers; l++) {
              for (let h = 0; h < shape.kvHeads; h++) {
                expect(Array.from((await gpu.readHead(0, l, h)).positions), `round ${round} L${l}H${h}`).toEqual(Array.from(cpu.readHead(0, l, h).positions));
              }
            }
          }
        }
        expect((await gpu.mergeSlots(0, 0, 0)).length).toBe(M);
      } finally {
        gpu.destroy();
      }
    });
  }

  it('a GPU snapshot carries the slots (CPU format): export → import round trip, and both continue alike', async () => {
    const shape = shapeOf(8);
    const cpu = CpuKvCache.create(cacheOptions(shape, 'f16'));
    const gpu = PagedKvCache.create(await testGpu(), cacheOptions(shape, 'f16'));
    try {
      cpu.addSequence(0);
      run(cpu, shape, 0, 0, 80, 8);
      await gpu.importSequence(0, await cpu.exportSequence(0));
      const options = { policy: 'h2o', budget: 32, merge: 'slots', sinks: 2, recent: 8 } as const;
      await gpu.compress(0, options);
      await cpu.compress(0, options);
      const snapshot = await gpu.exportSequence(0);
      expect(snapshot.slots?.counts).toEqual(Uint32Array.from([M, M, M, M]));
      close(snapshot.slots?.mass ?? [], (await cpu.exportSequence(0)).slots?.mass ?? [], 1e-5, 'snapshot masses');
      await gpu.importSequence(3, snapshot);
      // The GPU snapshot imports into the CPU engine too.
      await cpu.importSequence(3, snapshot);
      await appendBoth(cpu, gpu, 3, shape, 20, 9);
      await cpu.compress(3, options);
      await gpu.compress(3, options);
      await expectSameState(cpu, gpu, 3, shape, 'f16');
      // A snapshot with more slots per head than the GPU holds is refused, nothing imported.
      const tooMany = { ...snapshot, slots: { counts: Uint32Array.from([17, 0, 0, 0]), mass: new Float64Array(17) } };
      await expect(gpu.importSequence(2, tooMany)).rejects.toThrow(InvalidArgumentError);
      expect(gpu.hasSequence(2)).toBe(false);
    } finally {
      gpu.destroy();
    }
  });

  it('with the pools full (one head per round) the slots are those of a roomy cache', async () => {
    const shape = shapeOf(8);
    const gpuContext = await testGpu();
    const tight = { shape, nHeads, fullFormat: 'f32' as const, maxTokensPerHead: 512, maxBytes: 96 * 1024, initialFullBlocks: 4, seqSlots: 2 };
    const caches = [PagedKvCache.create(gpuContext, tight), PagedKvCache.create(gpuContext, { ...tight, maxBytes: 1 << 24 })];
    try {
      const random = seededRandom(11);
      const perToken = shape.layers * shape.kvHeads * shape.headDim;
      for (const cache of caches) cache.addSequence(0);
      // Fill the tight cache until the byte budget refuses a chunk; the roomy one takes the same tokens.
      let chunks = 0;
      for (; chunks < 64; chunks++) {
        const chunk = Float32Array.from({ length: 16 * perToken }, () => random() - 0.5);
        try {
          await caches[0]?.append(0, chunk, chunk.map((x) => -x));
        } catch {
          break;
        }
        await caches[1]?.append(0, chunk, chunk.map((x) => -x));
      }
      expect(chunks).toBeGreaterThan(6);
      expect(caches[0]?.memory().full.free).toBeLessThan(4 * 6);
      for (let round = 0; round < 2; round++) {
        for (const cache of caches) await cache.compress(0, { policy: 'knorm', budget: 96, merge: 'slots', sinks: 0, recent: 0 });
        for (const [l, h] of [
          [0, 0],
          [1, 1],
        ] as const) {
          const [a, b] = [await caches[0]?.readHead(0, l, h), await caches[1]?.readHead(0, l, h)];
          expect(Array.from(a?.positions ?? [])).toEqual(Array.from(b?.positions ?? []));
          expect(Array.from(a?.values ?? [])).toEqual(Array.from(b?.values ?? []));
          expect(Array.from((await caches[0]?.mergeSlots(0, l, h)) ?? [])).toEqual(Array.from((await caches[1]?.mergeSlots(0, l, h)) ?? []));
        }
        expect((await caches[0]?.mergeSlots(0, 0, 0))?.length).toBe(M);
        expect(caches[0]?.checkInvariants()).toEqual([]);
        // Room for the next round: 30 more tokens, to compact again into the carried slots.
        const more = Float32Array.from({ length: 30 * perToken }, () => random() - 0.5);
        if (round === 0) for (const cache of caches) await cache.append(0, more, more);
      }
    } finally {
      for (const cache of caches) cache.destroy();
    }
  });

  for (const budgetMode of ['adakv', 'global', 'pyramid'] as const) {
    it(`${budgetMode} budgets: the joint selection sees the real tokens alone, as on the CPU engine (two compactions)`, async () => {
      const shape = shapeOf(8);
      const cpu = CpuKvCache.create(cacheOptions(shape, 'f32'));
      const gpu = PagedKvCache.create(await testGpu(), cacheOptions(shape, 'f32'));
      try {
        cpu.addSequence(0);
        run(cpu, shape, 0, 0, 90, 21);
        await gpu.importSequence(0, await cpu.exportSequence(0));
        const options = { policy: 'h2o', budget: 32, merge: 'slots', sinks: 2, recent: 8, budgetMode } as const;
        for (let round = 0; round < 2; round++) {
          const [rc, rg] = [await cpu.compress(0, options), await gpu.compress(0, options)];
          expect(rg.keptPerHead).toEqual(rc.keptPerHead);
          await expectSameState(cpu, gpu, 0, shape, 'f32');
          // Round 2 re-ranks carried tokens with fresh statistics: decode steps on the CPU, synced by a snapshot
          // of its state would drop the GPU's slots, so both get the same appended tokens instead.
          await appendBoth(cpu, gpu, 0, shape, 25, 22 + round);
        }
        if (budgetMode !== 'pyramid') {
          const per = rgPerHead(gpu, shape);
          expect(new Set(per).size, 'joint budgets differ per head').toBeGreaterThan(1);
        }
      } finally {
        gpu.destroy();
      }
    });
  }

  it('adds no CPU wait: uniform none, adakv one (the budget readback), as without slots, on both compactions', async () => {
    const shape = shapeOf(8);
    for (const [budgetMode, waits] of [
      ['uniform', 0],
      ['adakv', 1],
    ] as const) {
      const cpu = CpuKvCache.create(cacheOptions(shape, 'f32'));
      const gpu = PagedKvCache.create(await testGpu(), cacheOptions(shape, 'f32'));
      try {
        cpu.addSequence(0);
        run(cpu, shape, 0, 0, 80, 31);
        await gpu.importSequence(0, await cpu.exportSequence(0));
        for (let round = 0; round < 2; round++) {
          const { counts } = await countGpuWork(gpu.gpu, () => gpu.compress(0, { policy: 'h2o', budget: 32, merge: 'slots', budgetMode }));
          expect(counts.waits, `${budgetMode} round ${round}`).toBe(waits);
          await appendBoth(cpu, gpu, 0, shape, 20, 32 + round);
        }
        expect((await gpu.mergeSlots(0, 1, 1)).length).toBe(M);
      } finally {
        gpu.destroy();
      }
    }
  });

  it('slots that attention reached: their statistics stay with them and the mass report leaves them out', async () => {
    const shape = shapeOf(8);
    const cpu = CpuKvCache.create(cacheOptions(shape, 'f32'));
    const gpu = PagedKvCache.create(await testGpu(), cacheOptions(shape, 'f32'));
    try {
      cpu.addSequence(0);
      run(cpu, shape, 0, 0, 80, 41);
      const options = { policy: 'h2o', budget: 32, merge: 'slots', sinks: 2, recent: 8, measureMass: true } as const;
      await cpu.compress(0, options);
      // Decode steps after the compaction: the slots gather attention statistics like any token.
      run(cpu, shape, 0, 80, 100, 42);
      const snapshot = await cpu.exportSequence(0);
      expect(snapshot.slots?.counts).toEqual(Uint32Array.from([M, M, M, M]));
      await gpu.importSequence(0, snapshot);
      const [rc, rg] = [await cpu.compress(0, options), await gpu.compress(0, options)];
      expect(rc.attentionMassKept).toBeLessThan(1);
      expect(rg.attentionMassKept).toBeCloseTo(rc.attentionMassKept, 5);
      await expectSameState(cpu, gpu, 0, shape, 'f32');
      // The old slots' statistics moved with them (nonzero), as the CPU engine keeps them.
      expect(cpu.stats(0, 0, 0).attnSum.subarray(0, M).some((x) => x > 0)).toBe(true);
    } finally {
      gpu.destroy();
    }
  });

  it('refuses more than 16 slots per head before touching the cache', async () => {
    const shape = shapeOf(8);
    const cpu = CpuKvCache.create(cacheOptions(shape, 'f32'));
    const gpu = PagedKvCache.create(await testGpu(), cacheOptions(shape, 'f32'));
    try {
      cpu.addSequence(0);
      run(cpu, shape, 0, 0, 60, 15);
      await gpu.importSequence(0, await cpu.exportSequence(0));
      await expect(gpu.compress(0, { policy: 'h2o', budget: 40, merge: 'slots', mergeSlots: 17 })).rejects.toThrow(InvalidArgumentError);
      expect(gpu.tokenCount(0, 0, 0)).toBe(60);
      expect(gpu.checkInvariants()).toEqual([]);
    } finally {
      gpu.destroy();
    }
  });
});

describe('slot_index against slotIndexReference', () => {
  it('rewrites the lists of absorbing heads (1, 63, 65 kept; count 0 → 1, 2 → 4, 4 → 4)', async () => {
    const gpu = await testGpu();
    const stride = 80;
    const heads = [
      { row: 1, count: 0, countAfter: 1, kept: 1 },
      { row: 3, count: 2, countAfter: 4, kept: 63 },
      { row: 0, count: 4, countAfter: 4, kept: 65 },
    ];
    const random = seededRandom(2);
    const kept = new Uint32Array(4 * stride);
    const lists = heads.map((h) => {
      const picked = Array.from({ length: stride }, (_, t) => t).filter((t) => t < h.count || random() < 0.85).slice(0, h.kept);
      expect(picked.length).toBe(h.kept);
      kept.set(picked, h.row * stride);
      return Uint32Array.from(picked);
    });
    const buffers = [
      createStorageBuffer(gpu, 'test:kept', kept),
      createStorageBuffer(gpu, 'test:counts', Uint32Array.from([65, 1, 9, 63])),
      createStorageBuffer(gpu, 'test:compact', 4 * stride * 4),
      createStorageBuffer(gpu, 'test:gather', 4 * stride * 4),
      createStorageBuffer(gpu, 'test:heads', packSlotIndexHeads(heads)),
    ] as const;
    try {
      const [keptBuffer, counts, compact, gather, headsBuffer] = buffers;
      const encoder = gpu.device.createCommandEncoder();
      new SlotIndexKernel(gpu).encode(encoder, { heads: headsBuffer, numHeads: 3, stride, slots: M, keptIndex: keptBuffer, keptCounts: counts, compactIndex: compact, gatherIndex: gather });
      gpu.submit([encoder.finish()]);
      const [c, g, n] = await Promise.all([compact, gather, counts].map(async (b) => new Uint32Array(await readBuffer(gpu, b))));
      heads.forEach((h, i) => {
        const expected = slotIndexReference(h, i, M, lists[i] ?? new Uint32Array(0));
        expect(n?.[h.row]).toBe(expected.total);
        expect(Array.from(c?.subarray(h.row * stride, h.row * stride + expected.total) ?? [])).toEqual(Array.from(expected.compact));
        expect(Array.from(g?.subarray(h.row * stride, h.row * stride + expected.total) ?? [])).toEqual(Array.from(expected.gather));
      });
      // The row no head lists keeps its count.
      expect(n?.[2]).toBe(9);
    } finally {
      for (const b of buffers) b.destroy();
    }
  });
});

describe('generate --merge slots (the GPU engine)', () => {
  it('parses with every budget mode; an unknown merge mode is a usage error', () => {
    for (const mode of ['uniform', 'adakv', 'pyramid', 'global']) {
      const parsed = parseGenerationFlags(GENERATE_COMMAND, ['--policy', 'h2o', '--budget', '24', '--merge', 'slots', '--budget-mode', mode], { prompt: '', steps: 8 });
      expect(parsed === 'help' ? null : [parsed.options.merge, parsed.options.budgetMode]).toEqual(['slots', mode]);
    }
    expect(() => parseGenerationFlags(GENERATE_COMMAND, ['--policy', 'h2o', '--merge', 'slot'], { prompt: '', steps: 8 })).toThrow(UsageError);
  });
});

/** Tokens per head of sequence 0, layer-major. */
function rgPerHead(cache: PagedKvCache, shape: CacheShape): number[] {
  const out: number[] = [];
  for (let l = 0; l < shape.layers; l++) for (let h = 0; h < shape.kvHeads; h++) out.push(cache.tokenCount(0, l, h));
  return out;
}
