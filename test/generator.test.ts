import { describe, expect, it } from 'vitest';
import { Generator, type StepSnapshot } from '../src/app/generator.js';
import { InvalidArgumentError, UnknownPolicyError } from '../src/errors.js';
import { testGpu } from './helpers/gpu.js';
import { sharedBytes, sharedText } from './model-helpers.js';

const reference = JSON.parse(sharedText('data/stories260K_greedy_reference.json')) as { tokens: number[] };

async function generator(): Promise<Generator> {
  const gpu = await testGpu();
  return Generator.fromBytes(gpu, sharedBytes('models/stories260K.bin'), sharedBytes('models/tok512.bin'));
}

describe('Generator on stories260K', () => {
  it("greedy with policy 'full' reproduces the reference's first 64 ids", async () => {
    const gen = await generator();
    const started = performance.now();
    const { tokens, promptTokens, report } = await gen.generate({ prompt: '', steps: 63, policy: 'full' });
    console.log(`full greedy: 63 tokens in ${((performance.now() - started) / 1000).toFixed(2)} s`);
    expect(promptTokens).toEqual([1]);
    expect([...promptTokens, ...tokens]).toEqual(reference.tokens.slice(0, 64));
    expect(report.compressions).toBe(0);
    expect(report.ratio).toBe(report.bytesFull / report.bytesCompressed);
    gen.destroy();
  });

  it('compressed generation stays within the budget, reports a ratio > 1 and compares with the full cache', async () => {
    const gen = await generator();
    const budget = 16;
    const snapshots: StepSnapshot[] = [];
    const started = performance.now();
    const result = await gen.generate({
      prompt: 'Once upon a time, there was a little girl',
      steps: 32,
      policy: 'h2o',
      budgetMode: 'uniform',
      budget,
      bits: 4,
      compareWithFull: true,
      heat: true,
      onStep: (s) => void snapshots.push(s),
    });
    console.log(`h2o b16 4-bit + full comparison: 32 tokens in ${((performance.now() - started) / 1000).toFixed(2)} s`);
    const { report } = result;
    expect(result.tokens).toHaveLength(32);
    expect(report.compressions).toBeGreaterThan(0);
    expect(report.ratio).toBeGreaterThan(1);
    expect(report.bytesFull).toBeGreaterThan(report.bytesCompressed);
    // Every compression is the decode schedule's: evictions down to its target, quantize-only ones without a budget.
    const schedule = gen.decodeScheduleFor({ policy: 'h2o', budgetMode: 'uniform', budget, bits: 4 });
    expect(schedule).toMatchObject({ target: 12, sinks: 4, recent: 4, quantizeEvery: 16 });
    const compressions = snapshots.flatMap((s) => (s.compression ? [s.compression] : []));
    expect(compressions.length).toBe(report.compressions);
    for (const c of compressions) expect([schedule?.target, null]).toContain(c.budget);
    expect(compressions.some((c) => c.budget === 12)).toBe(true);
    for (const s of snapshots) {
      // The schedule compresses before any append that would go past the budget.
      for (const layer of s.keptPerHead) for (const kept of layer) expect(kept).toBeLessThanOrEqual(budget);
      expect(s.memory.bytesCompressed).toBeLessThanOrEqual(s.memory.bytesFull * 2);
      for (const [l, layer] of (s.heat?.heads ?? []).entries()) {
        for (const [h, head] of layer.entries()) {
          expect(head.positions.length).toBe(s.keptPerHead[l]?.[h]);
          expect(head.scores.every((x) => Number.isFinite(x) && x >= 0)).toBe(true);
          // Kept positions ascend and end with the newest cached token.
          for (let i = 1; i < head.positions.length; i++) expect(head.positions[i]).toBeGreaterThan(head.positions[i - 1] ?? -1);
          expect(head.positions[head.positions.length - 1]).toBe(s.memory.tokens - 1);
        }
      }
    }
    expect(report.keptPerHead.flat().every((k) => k <= budget)).toBe(true);
    const q = report.quality;
    expect(q).toBeDefined();
    expect(q?.compared).toBe(32);
    expect(q?.agreement).toBeGreaterThan(0);
    expect(q?.agreement).toBeLessThanOrEqual(1);
    expect(q?.fullTokens).toHaveLength(32);
    if (q?.divergedAt !== null && q?.divergedAt !== undefined) {
      expect(q.fullTokens.slice(0, q.divergedAt)).toEqual(result.tokens.slice(0, q.divergedAt));
      expect(q.fullTokens[q.divergedAt]).not.toBe(result.tokens[q.divergedAt]);
    }
    expect(Number.isFinite(q?.perplexityCompressed)).toBe(true);
    expect(Number.isFinite(q?.perplexityFull)).toBe(true);
    gen.destroy();
  });

  it('a full-cache comparison of a full run agrees everywhere', async () => {
    const gen = await generator();
    const { tokens, report } = await gen.generate({ prompt: 'Lily', steps: 12, policy: 'full', compareWithFull: true });
    expect(report.quality?.agreement).toBe(1);
    expect(report.quality?.divergedAt).toBeNull();
    expect(report.quality?.fullTokens).toEqual(tokens);
    expect(report.quality?.meanKl).toBeLessThan(1e-9);
    gen.destroy();
  });

  it('rejects bad options before any GPU work', async () => {
    const gen = await generator();
    await expect(gen.generate({ prompt: '', steps: 4, policy: 'nope' })).rejects.toThrow(UnknownPolicyError);
    await expect(gen.generate({ prompt: '', steps: 0 })).rejects.toThrow(InvalidArgumentError);
    await expect(gen.generate({ prompt: '', steps: 600 })).rejects.toThrow(/exceeds/);
    // The generator is still usable after rejected calls.
    const { tokens } = await gen.generate({ prompt: '', steps: 2, policy: 'full' });
    expect(tokens).toEqual(reference.tokens.slice(1, 3));
    gen.destroy();
  });
});

describe('serve-demo mounts', () => {
  it('mounts one directory when both files share it, and tells the page where others are', async () => {
    const { demoMounts } = await import('../src/cli/serve-demo.js');
    expect(demoMounts('/m/stories260K.bin', '/m/tok512.bin')).toEqual({ mounts: { '/models/': '/m' }, query: '' });
    expect(demoMounts('/a/big.bin', '/b/tok.bin')).toEqual({
      mounts: { '/models/': '/a', '/tokenizer/': '/b' },
      query: '?model=%2Fmodels%2Fbig.bin&tokenizer=%2Ftokenizer%2Ftok.bin',
    });
  });
});
