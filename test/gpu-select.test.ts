import { describe, expect, it } from 'vitest';
import { BUDGET_MODES, allocateBudgets, type BudgetMode } from '../src/compress/budgets.js';
import { allocateBudgetsGpu } from '../src/compress/budgets-gpu.js';
import { selectTopK, thresholdForK } from '../src/compress/select.js';
import { createStorageBuffer, readBuffer } from '../src/gpu/buffers.js';
import type { GpuContext } from '../src/gpu/context.js';
import { NO_THRESHOLD_KEY, TopKSelectKernel, scoreKey } from '../src/kernels/compress/select.js';
import { f32Bits } from '../src/format/f16.js';
import { seededRandom, testGpu } from './helpers/gpu.js';

// Integers only: kept indices, counts and thresholds must equal the reference exactly.

type Kind = 'random' | 'ties' | 'protected' | 'signs' | 'constant';

/** Scores with the distributions that break selection: heavy ties, many +Inf, ±0, -Inf, subnormals. */
function makeScores(kind: Kind, len: number, random: () => number): Float32Array {
  const specials = [0, -0, 1e-42, -1e-42, -Infinity, Infinity, 3.5, -3.5, 1e30];
  return Float32Array.from({ length: len }, (_, t) => {
    switch (kind) {
      case 'random':
        return random() * 2 - 1;
      case 'ties':
        return Math.floor(random() * 4) / 4;
      case 'protected':
        return t < 4 || t >= len - 8 || random() < 0.2 ? Infinity : Math.floor(random() * 3);
      case 'signs':
        return specials[Math.floor(random() * specials.length)] ?? 0;
      case 'constant':
        return 0.5;
    }
  });
}

async function runTopK(
  gpu: GpuContext,
  kernel: TopKSelectKernel,
  rows: Float32Array[],
  ks: number[],
  stride: number,
): Promise<{ indices: Uint32Array; counts: Uint32Array; thresholds: Uint32Array }> {
  const numRows = rows.length;
  const flat = new Float32Array(numRows * stride).fill(Number.NaN); // past-the-length garbage must be ignored
  rows.forEach((r, i) => flat.set(r, i * stride));
  const buffers = {
    scores: createStorageBuffer(gpu, 'scores', flat),
    lengths: createStorageBuffer(gpu, 'lengths', Uint32Array.from(rows, (r) => r.length)),
    k: createStorageBuffer(gpu, 'k', Uint32Array.from(ks)),
    thresholds: createStorageBuffer(gpu, 'thresholds', numRows * 8),
    keptIndices: createStorageBuffer(gpu, 'kept', numRows * stride * 4),
    keptCounts: createStorageBuffer(gpu, 'counts', numRows * 4),
  };
  await gpu.withErrorScope(() => {
    const encoder = gpu.device.createCommandEncoder();
    kernel.encode(encoder, { ...buffers, numRows, stride });
    gpu.submit([encoder.finish()]);
  });
  const result = {
    indices: new Uint32Array(await readBuffer(gpu, buffers.keptIndices)),
    counts: new Uint32Array(await readBuffer(gpu, buffers.keptCounts)),
    thresholds: new Uint32Array(await readBuffer(gpu, buffers.thresholds)),
  };
  for (const b of Object.values(buffers)) b.destroy();
  return result;
}

function checkRows(
  rows: Float32Array[],
  ks: number[],
  stride: number,
  got: { indices: Uint32Array; counts: Uint32Array; thresholds: Uint32Array },
): void {
  rows.forEach((scores, r) => {
    const k = ks[r] ?? 0;
    const expected = selectTopK(scores, k);
    const label = `row ${r} len ${scores.length} k ${k}`;
    expect(got.counts[r], label).toBe(expected.length);
    expect(Array.from(got.indices.subarray(r * stride, r * stride + expected.length)), label).toEqual(Array.from(expected));
    const t = thresholdForK(scores, k);
    const kk = Math.min(k, scores.length);
    expect(got.thresholds[2 * r], label).toBe(kk === 0 ? NO_THRESHOLD_KEY : scoreKey(f32Bits(t.threshold)));
    expect(got.thresholds[2 * r + 1], label).toBe(t.keepEqual);
  });
}

describe('GPU top-k selection vs selectTopK', () => {
  it('awkward lengths (0, 1, 63, 65, 256, 1000, 2048, 4097) × distributions × k', async () => {
    const gpu = await testGpu();
    const kernel = new TopKSelectKernel(gpu);
    const random = seededRandom(11);
    const lengths = [1, 63, 65, 4097, 0, 256, 1000, 2048];
    const stride = 4097;
    const kinds: Kind[] = ['random', 'ties', 'protected', 'signs', 'constant'];
    const rows: Float32Array[] = [];
    const ks: number[] = [];
    for (const kind of kinds) {
      for (const len of lengths) {
        rows.push(makeScores(kind, len, random));
        // k: none, one, about half, all but one, all, more than all (cycled so every length sees several)
        const choices = [0, 1, Math.floor(len / 2), Math.max(0, len - 1), len, len + 5, Math.floor(len / 3) + 1];
        ks.push(choices[(rows.length * 3) % choices.length] ?? 0);
      }
    }
    checkRows(rows, ks, stride, await runTopK(gpu, kernel, rows, ks, stride));
    // Odd thread counts: bins shared unevenly by the threshold kernel's threads, chunks that end mid-row.
    const odd = new TopKSelectKernel(gpu, { workgroupSize: 5, itemsPerThread: 3, thresholdWorkgroupSize: 7 });
    checkRows(rows, ks, stride, await runTopK(gpu, odd, rows, ks, stride));
    // Every digit schedule and candidate path on the same rows: 11-bit digits on every row (length 1 too), 8-bit
    // digits on every row, a candidate list too small for some rows (those read their rows again), none at all.
    for (const options of [
      { wideDigitsFrom: 0 },
      { wideDigitsFrom: 1e9 },
      { wideDigitsFrom: 0, candidateCapacity: 40 },
      { wideDigitsFrom: 1e9, candidateCapacity: 40, thresholdWorkgroupSize: 7 },
      { candidateCapacity: 0 },
      { thresholdWorkgroupSize: 16 }, // the hardware default (a software adapter defaults to 4)
      // select_compact after the threshold kernel instead of the fused compaction
      { fuseCompaction: false },
      { fuseCompaction: false, workgroupSize: 5, itemsPerThread: 3, wideDigitsFrom: 0 },
      // every thread-count-th token per thread (the hardware default; the fused compaction then counts by reading)
      { contiguousRuns: false },
      { contiguousRuns: false, thresholdWorkgroupSize: 7, candidateCapacity: 40 },
      { contiguousRuns: true, thresholdWorkgroupSize: 16 },
    ]) {
      const variant = new TopKSelectKernel(gpu, options);
      checkRows(rows, ks, stride, await runTopK(gpu, variant, rows, ks, stride));
      variant.destroy();
    }
    kernel.destroy();
    odd.destroy();
  });

  it('grows its scratch between two selections in one command buffer', async () => {
    const gpu = await testGpu();
    const kernel = new TopKSelectKernel(gpu);
    const random = seededRandom(17);
    const small = [makeScores('random', 65, random)];
    const large = Array.from({ length: 9 }, (_, i) => makeScores(i % 2 ? 'ties' : 'random', 3000 + i, random));
    const make = (rows: Float32Array[], ks: number[], stride: number) => {
      const flat = new Float32Array(rows.length * stride);
      rows.forEach((r, i) => flat.set(r, i * stride));
      return {
        scores: createStorageBuffer(gpu, 'scores', flat),
        lengths: createStorageBuffer(gpu, 'lengths', Uint32Array.from(rows, (r) => r.length)),
        k: createStorageBuffer(gpu, 'k', Uint32Array.from(ks)),
        thresholds: createStorageBuffer(gpu, 'thresholds', rows.length * 8),
        keptIndices: createStorageBuffer(gpu, 'kept', rows.length * stride * 4),
        keptCounts: createStorageBuffer(gpu, 'counts', rows.length * 4),
        numRows: rows.length,
        stride,
      };
    };
    const smallKs = [7];
    const largeKs = large.map((r, i) => (i * 331) % r.length);
    const a = make(small, smallKs, 65);
    const b = make(large, largeKs, 3008);
    await gpu.withErrorScope(() => {
      const encoder = gpu.device.createCommandEncoder();
      kernel.encode(encoder, a);
      kernel.encode(encoder, b);
      gpu.submit([encoder.finish()]);
    });
    for (const [run, rows, ks] of [[a, small, smallKs], [b, large, largeKs]] as const) {
      checkRows(rows, ks, run.stride, {
        indices: new Uint32Array(await readBuffer(gpu, run.keptIndices)),
        counts: new Uint32Array(await readBuffer(gpu, run.keptCounts)),
        thresholds: new Uint32Array(await readBuffer(gpu, run.thresholds)),
      });
    }
    for (const run of [a, b]) for (const value of Object.values(run)) if (typeof value !== 'number') value.destroy();
    kernel.destroy();
  });

  it('every k of a short row with heavy ties and +Inf', async () => {
    const gpu = await testGpu();
    const kernel = new TopKSelectKernel(gpu);
    const random = seededRandom(3);
    const base = makeScores('protected', 70, random);
    const rows = Array.from({ length: 72 }, () => base);
    const ks = Array.from({ length: 72 }, (_, k) => k);
    checkRows(rows, ks, 70, await runTopK(gpu, kernel, rows, ks, 70));
  });

  it('folds past the workgroup limit (many rows, small max per dimension)', async () => {
    const gpu = await testGpu();
    const kernel = new TopKSelectKernel(gpu, { workgroupSize: 64, itemsPerThread: 2 });
    const saved = gpu.maxWorkgroupsPerDimension;
    gpu.maxWorkgroupsPerDimension = 7;
    try {
      const random = seededRandom(5);
      const rows = Array.from({ length: 23 }, (_, i) => makeScores(i % 2 ? 'ties' : 'random', 130 + i, random));
      const ks = rows.map((r, i) => (i * 17) % (r.length + 2));
      checkRows(rows, ks, 160, await runTopK(gpu, kernel, rows, ks, 160));
    } finally {
      gpu.maxWorkgroupsPerDimension = saved;
    }
  });
});

/** Per-(layer, head) scores placed at rows of a [layers][seqSlots][kvHeads] cache (slot 1 of 2). */
function budgetCase(
  layers: number,
  heads: number,
  seed: number,
  kind: Kind,
): { scores: Float32Array[][]; rows: number[][]; flat: Float32Array; stride: number } {
  const random = seededRandom(seed);
  const scores = Array.from({ length: layers }, () =>
    Array.from({ length: heads }, () => makeScores(kind, 1 + Math.floor(random() * 90), random)),
  );
  const stride = 96;
  const seqSlots = 2;
  const slot = 1;
  const rows = scores.map((layer, l) => layer.map((_, h) => (l * seqSlots + slot) * heads + h));
  const flat = new Float32Array(layers * seqSlots * heads * stride).map(() => random());
  scores.forEach((layer, l) => layer.forEach((s, h) => flat.set(s, (rows[l]?.[h] ?? 0) * stride)));
  return { scores, rows, flat, stride };
}

describe('GPU joint thresholds (segments over member rows) vs thresholdForK', () => {
  it('one workgroup per segment and spread over workgroups (select_threshold_parts) agree with the reference', async () => {
    const gpu = await testGpu();
    const random = seededRandom(23);
    const awkward = [1, 63, 65, 4097];
    const kinds: Kind[] = ['random', 'ties', 'signs', 'constant', 'protected'];
    // Segments over 1 and 32 members of awkward lengths (and one empty member), several distributions.
    const segments: Float32Array[][] = [];
    for (const [i, kind] of kinds.entries()) {
      for (const len of awkward) segments.push([makeScores(kind, len, random)]);
      segments.push(Array.from({ length: 32 }, (_, m) => makeScores(kind, m === 5 ? 0 : (awkward[(m + i) % 4] ?? 1), random)));
    }
    const stride = 4097;
    const memberRows = segments.flat();
    const flat = new Float32Array(memberRows.length * stride).fill(Number.NaN);
    memberRows.forEach((r, m) => flat.set(r, m * stride));
    const members = new Uint32Array(memberRows.length * 2);
    memberRows.forEach((r, m) => members.set([m, r.length], 2 * m));
    for (const pick of [0, 1, 2, 3, 4]) {
      const ks: number[] = [];
      const table = new Uint32Array(segments.length * 3);
      let first = 0;
      segments.forEach((seg, i) => {
        const total = seg.reduce((n, r) => n + r.length, 0);
        const k = [0, 1, Math.floor(total / 3) + 1, total, total + 5][(pick + i) % 5] ?? 0;
        ks.push(k);
        table.set([first, seg.length, k], 3 * i);
        first += seg.length;
      });
      const buffers = {
        scores: createStorageBuffer(gpu, 'scores', flat),
        segments: createStorageBuffer(gpu, 'segments', table),
        members: createStorageBuffer(gpu, 'members', members),
        thresholds: createStorageBuffer(gpu, 'thresholds', segments.length * 8),
      };
      for (const options of [{}, { partTokens: 64 }, { partTokens: 300, candidateCapacity: 40, thresholdWorkgroupSize: 7 }, { partTokens: 0 }]) {
        const kernel = new TopKSelectKernel(gpu, options);
        await gpu.withErrorScope(() => {
          const encoder = gpu.device.createCommandEncoder();
          kernel.encodeSegmentThresholds(encoder, { ...buffers, stride, numSegments: segments.length, numMembers: memberRows.length });
          gpu.submit([encoder.finish()]);
        });
        const got = new Uint32Array(await readBuffer(gpu, buffers.thresholds));
        segments.forEach((seg, i) => {
          const all = new Float32Array(seg.reduce((n, r) => n + r.length, 0));
          let at = 0;
          for (const r of seg) {
            all.set(r, at);
            at += r.length;
          }
          const k = ks[i] ?? 0;
          const t = thresholdForK(all, k);
          const label = `${JSON.stringify(options)} segment ${i} (${seg.length} members, ${all.length} tokens) k ${k}`;
          expect(got[2 * i], label).toBe(Math.min(k, all.length) === 0 ? NO_THRESHOLD_KEY : scoreKey(f32Bits(t.threshold)));
          expect(got[2 * i + 1], label).toBe(t.keepEqual);
        });
        kernel.destroy();
      }
      for (const b of Object.values(buffers)) b.destroy();
    }
  });
});

describe('GPU budget allocation vs allocateBudgets', () => {
  it.each(BUDGET_MODES)('mode %s on random and constructed data', async (mode: BudgetMode) => {
    const gpu = await testGpu();
    // Default (8-bit digits on these short segments, every candidate list fits) and 11-bit digits with a candidate
    // list that some segments overflow: exclusions must come out right on both paths.
    // Then every joint selection spread over several workgroups (select_threshold_parts), one list overflowing.
    for (const kernel of [
      new TopKSelectKernel(gpu),
      new TopKSelectKernel(gpu, { wideDigitsFrom: 0, candidateCapacity: 50 }),
      new TopKSelectKernel(gpu, { wideDigitsFrom: 0, candidateCapacity: 50, contiguousRuns: false }),
      new TopKSelectKernel(gpu, { partTokens: 16 }),
      new TopKSelectKernel(gpu, { partTokens: 40, candidateCapacity: 30, thresholdWorkgroupSize: 7 }),
    ]) {
      await checkBudgets(gpu, kernel, mode);
      kernel.destroy();
    }
  });
});

async function checkBudgets(gpu: GpuContext, kernel: TopKSelectKernel, mode: BudgetMode): Promise<void> {
  const cases: { layers: number; heads: number; kind: Kind }[] = [
    { layers: 3, heads: 2, kind: 'random' },
    { layers: 4, heads: 3, kind: 'ties' },
    { layers: 2, heads: 4, kind: 'protected' },
    { layers: 5, heads: 1, kind: 'signs' },
    { layers: 2, heads: 2, kind: 'constant' },
  ];
  for (const [c, { layers, heads, kind }] of cases.entries()) {
    const { scores, rows, flat, stride } = budgetCase(layers, heads, 100 + c, kind);
    const buffer = createStorageBuffer(gpu, 'scores', flat);
    const lengths = scores.map((layer) => layer.map((s) => s.length));
    for (const budget of [1, 2.5, 7, 13.3, 40, 100]) {
      for (const extra of [{}, { safeguard: 0 }, { safeguard: 1 }, { safeguard: 0.5, pyramidTop: 1.9 }]) {
        const options = { mode, budget, ...extra };
        const expected = allocateBudgets(scores, options);
        const got = await gpu.withErrorScope(() =>
          allocateBudgetsGpu(gpu, { ...options, scores: buffer, stride, rows, lengths, kernel }),
        );
        expect(got.map((r) => Array.from(r)), `${kind} ${layers}×${heads} ${JSON.stringify(options)}`).toEqual(
          expected.map((r) => Array.from(r)),
        );
      }
    }
    buffer.destroy();
  }
}
