import { describe, expect, it } from 'vitest';
import { selectSuites } from '../src/bench/cases/index.js';
import { modelSuite, modelSuiteFor } from '../src/bench/cases/model.js';
import { runCli, STACK_LINE } from './cli-helpers.js';
import { benchSettings } from '../src/bench/harness.js';
import { testGpu } from './helpers/gpu.js';

describe('bench: the model suite', () => {
  it('is selected by --only model and has batch 1 / batch 8 rows for f32 and f16 weights', () => {
    expect(selectSuites('model').suites).toEqual([modelSuite]);
    expect((modelSuite.cases?.(benchSettings(true)) ?? []).map((c) => c.name)).toEqual([
      'model/stories260K/f32/batch1',
      'model/stories260K/f32/batch8',
      'model/stories260K/f16/batch1',
      'model/stories260K/f16/batch8',
      'model/stories260K/f16/batch8-per-sequence',
    ]);
  });

  it('times another model when given one: its name in the rows, a missing model a skip with the reason', async () => {
    const suite = modelSuiteFor({ name: 'tiny', load: async () => 'tiny is not here' });
    const cases = suite.cases?.(benchSettings(true)) ?? [];
    expect(cases.map((c) => c.name)).toEqual([
      'model/tiny/f32/batch1',
      'model/tiny/f32/batch8',
      'model/tiny/f16/batch1',
      'model/tiny/f16/batch8',
      'model/tiny/f16/batch8-per-sequence',
    ]);
    expect(cases[2]?.baseline).toBe('model/tiny/f32/batch1');
    const gpu = await testGpu();
    expect(await cases[0]?.setup(gpu, benchSettings(true))).toEqual({ skip: 'tiny is not here' });
  });

  it('bench --model needs the model suite selected', () => {
    const { status, stderr } = runCli(['bench', '--only', 'copy', '--model', 'x.bin']);
    expect(status).toBe(2);
    expect(stderr).toMatch(/--model: picks the model the model suite times: add --only model/);
    expect(stderr).not.toMatch(STACK_LINE);
  });

  it('runs one decode step at batch 1 and batch 8 (f16 weights), timing exactly the step', async () => {
    const gpu = await testGpu();
    const cases = (modelSuite.cases?.(benchSettings(true)) ?? []).filter((c) => c.name.includes('/f16/'));
    for (const c of cases) {
      const prepared = await gpu.withErrorScope(() => c.setup(gpu, benchSettings(true)));
      if ('skip' in prepared) throw new Error(`${c.name} skipped: ${prepared.skip}`);
      try {
        expect(prepared.bytes).toBeGreaterThan(0);
        expect(prepared.items?.count).toBe(c.name.includes('batch8') ? 8 : 1);
        let calls = 0;
        let logits: unknown;
        await gpu.withErrorScope(() =>
          prepared.run?.(async <T,>(body: () => Promise<T>): Promise<T> => {
            calls++;
            const result = await body();
            logits = result;
            return result;
          }),
        );
        expect(calls).toBe(1);
        // The timed body is the forward itself: it returns logits (one array per sequence at batch 8).
        expect(Array.isArray(logits) ? logits : [logits]).toHaveLength(c.name.includes('batch8') ? 8 : 1);
      } finally {
        prepared.destroy();
      }
    }
  });
});
