import { describe, expect, it } from 'vitest';
import { Generator } from '../src/app/generator.js';
import { DecodeCompressor, type CompressibleCache } from '../src/compress/decode-compression.js';
import { decodeSchedule, nextCompression, type DecodeSchedule, type DecodeState } from '../src/compress/decode-schedule.js';
import type { CompressionReport, CompressOptions } from '../src/compress/options.js';
import { InvalidArgumentError } from '../src/errors.js';
import { rowSchedule } from '../src/eval/evaluate.js';
import { testGpu } from './helpers/gpu.js';
import { sharedBytes } from './model-helpers.js';

const LAYERS = 5;
const KV_HEADS = 4;
const HEADS = LAYERS * KV_HEADS;

/** A cache that only counts: every head holds `perHead[l][h]` tokens; compress keeps min(count, budget) per head. */
class CountingCache implements CompressibleCache {
  readonly shape = { layers: LAYERS, kvHeads: KV_HEADS, blockSize: 16 };
  readonly counts: number[] = new Array<number>(HEADS).fill(0);
  readonly calls: { at: number; options: CompressOptions }[] = [];
  appended = 0;

  tokenCount(_seq: number, layer: number, kvHead: number): number {
    return this.counts[layer * KV_HEADS + kvHead] ?? 0;
  }

  append(n: number): void {
    for (let i = 0; i < HEADS; i++) this.counts[i] = (this.counts[i] ?? 0) + n;
    this.appended += n;
  }

  compress(_seq: number, options: CompressOptions): CompressionReport {
    this.calls.push({ at: this.appended, options });
    const budget = options.budget;
    if (budget !== undefined) for (let i = 0; i < HEADS; i++) this.counts[i] = Math.min(this.counts[i] ?? 0, budget);
    const keptPerHead = Array.from({ length: LAYERS }, (_, l) => this.counts.slice(l * KV_HEADS, (l + 1) * KV_HEADS));
    return {
      policy: options.policy ?? 'snapkv',
      budgetMode: options.budgetMode ?? 'uniform',
      bits: options.bits ?? 16,
      merge: options.merge ?? 'none',
      budget: budget ?? null,
      tokens: this.appended,
      originalBytes: 1,
      compressedBytes: 1,
      ratio: 1,
      bytesFreed: 0,
      keptPerLayer: keptPerHead.map((row) => row.reduce((a, b) => a + b, 0)),
      keptPerHead,
      attentionMassKept: 1,
      milliseconds: 0,
    };
  }
}

/** The numbers of a schedule that decide what is compressed, when (everything but the policy settings). */
function decisions(schedule: DecodeSchedule | null): Omit<DecodeSchedule, 'compress'> | null {
  if (schedule === null) return null;
  const { compress: _compress, ...rest } = schedule;
  return rest;
}

const state = (over: Partial<DecodeState>): DecodeState => ({ heads: HEADS, total: 0, largest: 0, sinceCompress: 0, step: 1, ...over });

describe('the decode schedule', () => {
  // budget → slack, target, sinks, recent, window at block size 16 (the rule of src/compress/decode-schedule.ts)
  const table = [
    { budget: 8, slack: 2, target: 6, sinks: 2, recent: 2, window: 2 },
    { budget: 16, slack: 4, target: 12, sinks: 4, recent: 4, window: 4 },
    { budget: 32, slack: 8, target: 24, sinks: 4, recent: 8, window: 8 },
    { budget: 36, slack: 9, target: 27, sinks: 4, recent: 9, window: 9 },
    { budget: 64, slack: 16, target: 48, sinks: 4, recent: 16, window: 16 },
    { budget: 128, slack: 16, target: 112, sinks: 4, recent: 32, window: 32 },
  ];

  it('is the same for DecodeCompressor, evaluate and Generator at every budget of the table', async () => {
    const gpu = await testGpu();
    const generator = Generator.fromBytes(gpu, sharedBytes('models/stories260K.bin'), sharedBytes('models/tok512.bin'));
    try {
      for (const want of table) {
        for (const bits of [16, 4] as const) {
          const { budget } = want;
          const compress = { policy: 'h2o', budgetMode: 'adakv' as const, bits };
          const decode = new DecodeCompressor(new CountingCache(), { budget, compress }).schedule;
          const evaluate = rowSchedule({ policy: 'h2o', budget, budgetMode: 'adakv', bits });
          const generate = generator.decodeScheduleFor({ policy: 'h2o', budget, budgetMode: 'adakv', bits });
          const expected = { mode: 'on-exceed', blockSize: 16, every: null, quantizeEvery: bits < 16 ? 16 : null, ...want };
          expect(decisions(decode), `DecodeCompressor B=${budget} bits ${bits}`).toEqual(expected);
          expect(decisions(evaluate), `evaluate B=${budget} bits ${bits}`).toEqual(expected);
          expect(decisions(generate), `Generator B=${budget} bits ${bits}`).toEqual(expected);
          for (const schedule of [decode, evaluate, generate]) expect(schedule?.compress).toMatchObject(compress);
          // Never more protected tokens than the target: the policy always chooses some of what is kept.
          expect(want.sinks + want.recent).toBeLessThanOrEqual(want.target);
        }
      }
      expect(generator.decodeScheduleFor({ policy: 'full' })).toBeNull();
    } finally {
      generator.destroy();
    }
  });

  it('protects at most half of small budgets and rejects what cannot fit', () => {
    for (let budget = 2; budget <= 300; budget++) {
      const s = decodeSchedule({ budget, blockSize: 16 });
      expect(s.target, `B=${budget}`).toBe(budget - (s.slack ?? 0));
      expect(s.sinks + s.recent, `B=${budget}`).toBeLessThanOrEqual(2 * Math.floor(budget / 4));
      expect(s.sinks, `B=${budget}`).toBeLessThan(s.target ?? 0);
    }
    expect(() => decodeSchedule({ budget: 1, blockSize: 16 })).toThrow(InvalidArgumentError);
    expect(() => decodeSchedule({ budget: 2.5, blockSize: 16 })).toThrow(/budget/);
    expect(() => decodeSchedule({ budget: 32, blockSize: 16, slack: 32 })).toThrow(/slack/);
    expect(() => decodeSchedule({ budget: 32, blockSize: 16, slack: 0 })).toThrow(/slack/);
    expect(() => decodeSchedule({ budget: 32, blockSize: 16, sinks: 24 })).toThrow(/sinks/);
    expect(() => decodeSchedule({ budget: 16, blockSize: 16, recent: 32 })).toThrow(/do not fit/);
    expect(() => decodeSchedule({ budget: 32, blockSize: 16, mode: 'every', every: 0 })).toThrow(/every/);
    // explicit settings win when they fit; a resolved schedule resolves to itself
    const explicit = decodeSchedule({ budget: 24, blockSize: 16, slack: 8, recent: 8, window: 32 });
    expect(explicit).toMatchObject({ target: 16, sinks: 4, recent: 8, window: 32 });
    expect(decodeSchedule(explicit)).toEqual(explicit);
    // without a budget: quantize only, keeping KIVI's residual of 32 and 4 sinks
    expect(decodeSchedule({ budget: null, blockSize: 16, compress: { bits: 2 } })).toMatchObject({
      target: null, sinks: 4, recent: 32, window: 32, quantizeEvery: 16,
    });
  });

  it('compresses before the token that would go past the budget, per head for uniform and in total otherwise', () => {
    const uniform = decodeSchedule({ budget: 32, blockSize: 16, compress: { policy: 'h2o', budgetMode: 'uniform', bits: 16 } });
    expect(nextCompression(uniform, state({ total: 31 * HEADS, largest: 31 }), 1)).toBeNull();
    expect(nextCompression(uniform, state({ total: 32 * HEADS, largest: 32 }), 1)).toEqual({
      policy: 'h2o', budgetMode: 'uniform', bits: 16, budget: 24, sinks: 4, recent: 8, window: 8,
    });
    // one head past the budget is enough for uniform; adaptive modes look at the total only
    expect(nextCompression(uniform, state({ total: 20 * HEADS, largest: 32 }), 1)).not.toBeNull();
    const adakv = decodeSchedule({ budget: 32, blockSize: 16, compress: { policy: 'h2o', budgetMode: 'adakv' } });
    expect(nextCompression(adakv, state({ total: 20 * HEADS, largest: 32 }), 1)).toBeNull();
    expect(nextCompression(adakv, state({ total: 32 * HEADS, largest: 40 }), 1)).toMatchObject({ budget: 24 });
    // a step longer than the slack: the target leaves room for it, the recent window is kept before the sinks
    expect(nextCompression(uniform, state({ total: 32 * HEADS, largest: 32 }), 22)).toMatchObject({ budget: 10, recent: 8, sinks: 2, window: 8 });
    expect(nextCompression(uniform, state({ total: 32 * HEADS, largest: 32 }), 26)).toMatchObject({ budget: 6, recent: 6, sinks: 0, window: 6 });
    expect(() => nextCompression(uniform, state({ total: 32 * HEADS, largest: 32 }), 32)).toThrow(/do not fit/);
  });

  it('quantizes once per block below 16 bits, with the cheap streaming policy and no budget', () => {
    const schedule = decodeSchedule({ budget: 64, blockSize: 16, compress: { policy: 'snapkv', budgetMode: 'adakv', bits: 4, measureMass: false } });
    expect(nextCompression(schedule, state({ total: 20 * HEADS, largest: 20, sinceCompress: 15 }), 1)).toBeNull();
    expect(nextCompression(schedule, state({ total: 20 * HEADS, largest: 20, sinceCompress: 16 }), 1)).toEqual({
      policy: 'streaming', budgetMode: 'adakv', bits: 4, measureMass: false, sinks: 4, recent: 16,
    });
    // eviction first when both are due
    expect(nextCompression(schedule, state({ total: 64 * HEADS, largest: 64, sinceCompress: 16 }), 1)).toMatchObject({ policy: 'snapkv', budget: 48 });
    expect(nextCompression(decodeSchedule({ budget: 64, blockSize: 16 }), state({ sinceCompress: 1000 }), 1)).toBeNull();
  });

  it("'every' compresses to the budget every N steps when the cache holds more", () => {
    const schedule = decodeSchedule({ budget: 32, blockSize: 16, mode: 'every', every: 4 });
    expect(schedule).toMatchObject({ target: 32, slack: null, every: 4 });
    expect(nextCompression(schedule, state({ total: 40 * HEADS, largest: 40, step: 3 }), 1)).toBeNull();
    expect(nextCompression(schedule, state({ total: 40 * HEADS, largest: 40, step: 4 }), 1)).toMatchObject({ budget: 32 });
    expect(nextCompression(schedule, state({ total: 30 * HEADS, largest: 30, step: 8 }), 1)).toBeNull();
  });
});

describe('DecodeCompressor', () => {
  it('keeps a decoding cache within the budget, evicting once per slack and quantizing once per block before that', async () => {
    const cache = new CountingCache();
    const decode = new DecodeCompressor(cache, { budget: 64, compress: { policy: 'h2o', bits: 4 } });
    for (let step = 0; step < 200; step++) {
      await decode.beforeStep(0, 1);
      cache.append(1);
      expect(Math.max(...cache.counts)).toBeLessThanOrEqual(64);
    }
    const evictions = cache.calls.filter((c) => c.options.budget !== undefined);
    const quantizations = cache.calls.filter((c) => c.options.budget === undefined);
    // growing to 64: quantize-only at 16, 32, 48; then evict to 48 at 64, 80, 96, …, 192 (every slack of 16)
    expect(quantizations.map((c) => c.at)).toEqual([16, 32, 48]);
    expect(evictions.map((c) => c.at)).toEqual([64, 80, 96, 112, 128, 144, 160, 176, 192]);
    expect(evictions.every((c) => c.options.budget === 48 && c.options.sinks === 4 && c.options.recent === 16)).toBe(true);
    expect(decode.reports).toHaveLength(cache.calls.length);
    await expect(decode.beforeStep(0, 0)).rejects.toThrow(InvalidArgumentError);
  });

  it('counts a prefilled prompt: past the budget it compresses on the first step, and toward the quantize cadence', async () => {
    const long = new CountingCache();
    const decode = new DecodeCompressor(long, { budget: 32, compress: { policy: 'h2o', bits: 4 } });
    long.append(50);
    decode.prefilled(50);
    await decode.beforeStep(0, 1);
    expect(long.calls.map((c) => c.options.budget)).toEqual([24]);
    const short = new CountingCache();
    const quantize = new DecodeCompressor(short, { budget: 64, compress: { policy: 'h2o', bits: 4 } });
    short.append(10);
    quantize.prefilled(10);
    for (let step = 0; step < 7; step++) {
      await quantize.beforeStep(0, 1);
      short.append(1);
    }
    expect(short.calls).toEqual([{ at: 16, options: expect.objectContaining({ policy: 'streaming' }) }]);
    expect(() => quantize.prefilled(-1)).toThrow(InvalidArgumentError);
  });
  it('resumes from saved counters: a restored sequence compresses exactly where the unstopped one does', async () => {
    for (const options of [{ budget: 64, compress: { policy: 'h2o', bits: 4 as const } }, { budget: 40, mode: 'every' as const, every: 5, compress: { policy: 'h2o' } }]) {
      const original = new CountingCache();
      const decode = new DecodeCompressor(original, options);
      original.append(10);
      decode.prefilled(10);
      for (let step = 0; step < 37; step++) {
        await decode.beforeStep(0, 1);
        original.append(1);
      }
      const saved = decode.counters();
      expect(saved).toEqual({ steps: 37, sinceCompress: expect.any(Number) });
      const restored = new CountingCache();
      restored.counts.splice(0, restored.counts.length, ...original.counts);
      restored.appended = original.appended;
      const resumed = new DecodeCompressor(restored, { ...options, resume: saved });
      const fresh = new DecodeCompressor(new CountingCache(), options);
      fresh.resume(saved);
      expect(fresh.counters()).toEqual(saved);
      const callsBefore = original.calls.length;
      for (let step = 0; step < 150; step++) {
        await decode.beforeStep(0, 1);
        original.append(1);
        await resumed.beforeStep(0, 1);
        restored.append(1);
      }
      expect(restored.calls).toEqual(original.calls.slice(callsBefore));
      expect(restored.calls.length).toBeGreaterThan(3);
      expect(resumed.counters()).toEqual(decode.counters());
    }
    expect(() => new DecodeCompressor(new CountingCache(), { budget: 64, resume: { steps: -1, sinceCompress: 0 } })).toThrow(InvalidArgumentError);
  });
});
