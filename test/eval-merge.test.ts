// `merge` rows of the evaluation: one row per mode, a merge field in each, equal memory to the row without merging.
import { describe, expect, it } from 'vitest';
import { InvalidArgumentError } from '../src/errors.js';
import { cpuEngineFactory } from '../src/eval/cpu-engine.js';
import { evaluate, rowLabel, sweepRows } from '../src/eval/evaluate.js';
import { formatEvalTable } from '../src/eval/report.js';
import { mergeEvalReports } from '../src/cli/merge-eval.js';
import { parseCheckpoint } from '../src/model/checkpoint.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { sharedBytes, sharedText } from './model-helpers.js';

const checkpoint = parseCheckpoint(sharedBytes('models/stories260K.bin'));
const tokenizer = Tokenizer.parse(sharedBytes('models/tok512.bin'), checkpoint.config.vocabSize);
const text = sharedText('data/tinystories_dev.txt');

describe('evaluate with merge modes', () => {
  it('sweepRows makes one row per merge mode (none without a merge field, as before)', () => {
    const rows = sweepRows({ policies: ['full', 'h2o'], budgets: [32], bits: [16], budgetModes: ['uniform'], merges: ['none', 'nearest', 'cam'] });
    expect(rows).toEqual([
      { policy: 'full', bits: 16 },
      { policy: 'h2o', budget: 32, bits: 16, budgetMode: 'uniform' },
      { policy: 'h2o', budget: 32, bits: 16, budgetMode: 'uniform', merge: 'nearest' },
      { policy: 'h2o', budget: 32, bits: 16, budgetMode: 'uniform', merge: 'cam' },
    ]);
    expect(rowLabel({ policy: 'h2o', budgetMode: 'uniform', budget: 32, bits: 4, merge: 'cam' })).toBe('h2o uniform B=32 int4 merge=cam');
    const slots = sweepRows({ policies: ['h2o'], budgets: [32], bits: [16], budgetModes: ['uniform'], merges: ['none', 'slots'], mergeSlots: 6 });
    expect(slots).toEqual([
      { policy: 'h2o', budget: 32, bits: 16, budgetMode: 'uniform' },
      { policy: 'h2o', budget: 32, bits: 16, budgetMode: 'uniform', merge: 'slots', mergeSlots: 6 },
    ]);
    expect(rowLabel({ policy: 'h2o', budgetMode: 'uniform', budget: 32, bits: 16, merge: 'slots', mergeSlots: 6 })).toBe('h2o uniform B=32 f16 merge=slots(6)');
  });

  it('scores each mode at the memory of no merging, and the merged values change the predictions', async () => {
    const report = await evaluate({
      checkpoint,
      tokenizer,
      text,
      window: 128,
      windows: 1,
      engine: cpuEngineFactory,
      rows: (['none', 'nearest', 'cam'] as const).map((merge) => ({ policy: 'h2o', budget: 32, bits: 4, merge })),
    });
    const [none, nearest, cam] = report.rows;
    expect(report.rows.map((r) => r.merge)).toEqual(['none', 'nearest', 'cam']);
    for (const row of [nearest, cam]) {
      expect(row?.bytesPerToken).toBe(none?.bytesPerToken);
      expect(row?.compressions).toBe(none?.compressions);
      expect(row?.klToFull).not.toBe(none?.klToFull);
    }
    expect(JSON.parse(JSON.stringify(report)).rows[1].merge).toBe('nearest');
    expect(formatEvalTable(report)).toContain('| nearest |');
  });

  it("runs merge 'slots' on the CPU engine: as many tokens and compressions as none (plus the slots' masses), other predictions", async () => {
    const report = await evaluate({
      checkpoint,
      tokenizer,
      text,
      window: 128,
      windows: 1,
      engine: cpuEngineFactory,
      rows: (['none', 'slots'] as const).map((merge) => ({ policy: 'h2o', budget: 32, bits: 4, merge })),
    });
    const [none, slots] = report.rows;
    expect(slots?.merge).toBe('slots');
    expect(slots?.mergeSlots).toBe(4);
    expect(none?.mergeSlots).toBeUndefined();
    // Reports merged side by side keep one row per merge mode.
    expect(mergeEvalReports([report, report]).rows.map((r) => r.merge)).toEqual(['none', 'slots']);
    // The slots are tokens of the budget (the heads hold as many tokens as without them); only their masses add
    // bytes: 8 per slot, 4 slots per head, less than a token's K and V per head.
    const extra = (slots?.bytesPerToken ?? 0) - (none?.bytesPerToken ?? 0);
    expect(extra).toBeGreaterThan(0);
    expect(extra).toBeLessThan(0.1 * (none?.bytesPerToken ?? 0));
    expect(slots?.compressions).toBe(none?.compressions);
    expect(slots?.klToFull).not.toBe(none?.klToFull);
    expect(formatEvalTable(report)).toContain('| slots |');
  });

  it('rejects an unknown merge mode before anything runs', async () => {
    const run = (merge: string) =>
      evaluate({ checkpoint, tokenizer, text, window: 128, windows: 1, engine: cpuEngineFactory, rows: [{ policy: 'h2o', budget: 32, merge: merge as 'none' }] });
    await expect(run('average')).rejects.toThrow(InvalidArgumentError);
    await expect(run('average')).rejects.toThrow(/merge/);
  });
});
