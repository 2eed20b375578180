import { describe, expect, it } from 'vitest';
import { InvalidArgumentError, UnknownPolicyError } from '../src/errors.js';
import { CpuEvalEngine } from '../src/eval/cpu-engine.js';
import { decodeSchedule, evaluate, sweepRows, type EvalEngineFactory, type EvalRowSpec } from '../src/eval/evaluate.js';
import { formatEvalTable, renderEvalSvg } from '../src/eval/report.js';
import { parseCheckpoint } from '../src/model/checkpoint.js';
import { perplexityOfWindows, prepareEvalWindows } from '../src/model/eval-text.js';
import { ReferenceLlama } from '../src/model/reference-forward.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { sharedBytes, sharedText } from './model-helpers.js';

const checkpoint = parseCheckpoint(sharedBytes('models/stories260K.bin'));
const tokenizer = Tokenizer.parse(sharedBytes('models/tok512.bin'), checkpoint.config.vocabSize);
const text = sharedText('data/tinystories_dev.txt');
const { nLayers, nKvHeads } = checkpoint.config;
const heads = nLayers * nKvHeads;

describe('evaluate on the CPU engine', () => {
  it('scores every next token with the cache compressed at decode time, never above the budget', async () => {
    const rows: EvalRowSpec[] = [
      { policy: 'full', bits: 16 },
      { policy: 'full', bits: 8 },
      { policy: 'h2o', budget: 32, budgetMode: 'uniform', bits: 16 },
      { policy: 'snapkv', budget: 48, budgetMode: 'adakv', bits: 4 },
      { policy: 'streaming', budget: 40, budgetMode: 'uniform', bits: 2 },
    ];
    // A spy engine: checks the budget after every token and re-derives bytesPerToken.
    const seen: { budget: number | null; maxAverage: number; maxHead: number; bytes: number; context: number }[] = [];
    let current = 0;
    const factory: EvalEngineFactory = (config) => {
      const engine = new CpuEvalEngine(config);
      const spec = rows[current] ?? rows[0]!;
      const record = { budget: spec.policy === 'full' ? null : (spec.budget ?? null), maxAverage: 0, maxHead: 0, bytes: 0, context: 0 };
      seen.push(record);
      return {
        reset: () => engine.reset(),
        forward: (token, pos) => {
          const logits = engine.forward(token, pos);
          let total = 0;
          for (let l = 0; l < nLayers; l++) {
            for (let h = 0; h < nKvHeads; h++) {
              const n = engine.cache.tokenCount(0, l, h);
              total += n;
              record.maxHead = Math.max(record.maxHead, n);
            }
          }
          record.maxAverage = Math.max(record.maxAverage, total / heads);
          record.bytes += engine.bytes();
          record.context += pos + 1;
          return logits;
        },
        compress: (options) => engine.compress(options),
        bytes: () => engine.bytes(),
      };
    };
    const progress: number[] = [];
    const report = await evaluate({
      checkpoint,
      tokenizer,
      text,
      window: 96,
      windows: 2,
      rows,
      engine: (config) => {
        const engine = factory(config);
        current++;
        return engine;
      },
      onProgress: (p) => progress.push(p.done),
    });
    expect(report.settings.predictions).toBe(190);
    expect(progress).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]); // the reference is row 0 itself: 5 rows × 2 windows
    const [full, full8, h2o, snap, stream] = report.rows;
    expect(full).toMatchObject({ policy: 'full', budget: null, budgetMode: null, bits: 16, agreeWithFull: 1, klToFull: 0 });
    // f16 storage barely moves the fp32 perplexity.
    const model = new ReferenceLlama(checkpoint);
    const fp32 = perplexityOfWindows(prepareEvalWindows(text, tokenizer, { window: 96, windows: 2 }), (token, pos) => {
      if (pos === 0) model.reset();
      return model.forward(token, pos);
    });
    expect(Math.abs(full!.ppl / fp32.perplexity - 1)).toBeLessThan(0.005);
    expect(full8!.klToFull).toBeGreaterThan(0);
    expect(full8!.klToFull).toBeLessThan(0.01);
    expect(full8!.ratio).toBeGreaterThan(full!.ratio);
    for (const row of [h2o!, snap!, stream!]) {
      expect(row.compressions).toBeGreaterThan(0);
      expect(row.agreeWithFull).toBeLessThan(1);
      expect(row.ratio).toBeGreaterThan(full!.ratio);
      expect(row.ppl).toBeGreaterThan(1);
    }
    // The cache never held more than B tokens per head on average, nor per head under the uniform mode.
    seen.forEach((record, i) => {
      const row = report.rows[i]!;
      if (record.budget !== null) {
        expect(record.maxAverage, `row ${i}`).toBeLessThanOrEqual(record.budget);
        if (row.budgetMode === 'uniform') expect(record.maxHead).toBeLessThanOrEqual(record.budget);
      } else {
        expect(record.maxHead).toBe(95);
      }
      expect(row.bytesPerToken).toBeCloseTo(record.bytes / record.context, 9);
      expect(row.ratio).toBeCloseTo((heads * 2 * checkpoint.config.headSize * 2) / row.bytesPerToken, 9);
    });
    const table = formatEvalTable(report);
    expect(table.split('\n').filter((l) => l.startsWith('| ')).length).toBe(7); // header, rule, 5 rows
    expect(table).toContain('| snapkv | adakv | 48 | int4 |');
    const svg = renderEvalSvg(report);
    expect(svg.startsWith('<svg')).toBe(true);
    expect(svg.match(/<polyline/g)?.length).toBe(4); // full, h2o, snapkv, streaming
  });

  it('rejects bad rows before running anything', async () => {
    const run = (rows: EvalRowSpec[]) =>
      evaluate({ checkpoint, tokenizer, text, window: 64, windows: 1, rows, engine: () => { throw new Error('must not run'); } });
    await expect(run([{ policy: 'h2o', budget: 16 }])).rejects.toThrow(InvalidArgumentError);
    await expect(run([{ policy: 'h2o' }])).rejects.toThrow(InvalidArgumentError);
    await expect(run([{ policy: 'h2o', budget: 64 }])).rejects.toThrow(InvalidArgumentError);
    await expect(run([{ policy: 'nope', budget: 32 }])).rejects.toThrow(UnknownPolicyError);
    await expect(run([{ policy: 'full', bits: 3 as 4 }])).rejects.toThrow(InvalidArgumentError);
  });

  it('schedules protected tokens inside the compressed target and builds sweeps', () => {
    expect(decodeSchedule(32, 16, 4)).toEqual({ target: 24, recent: 8, window: 8 });
    expect(decodeSchedule(64, 16, 4)).toEqual({ target: 48, recent: 16, window: 16 });
    expect(decodeSchedule(128, 16, 4)).toEqual({ target: 112, recent: 32, window: 32 });
    const rows = sweepRows({ policies: ['full', 'h2o', 'snapkv'], budgets: [32, 64], bits: [16, 4], budgetModes: ['uniform', 'adakv'] });
    expect(rows).toHaveLength(2 + 2 * 2 * 2 * 2);
    expect(rows[0]).toEqual({ policy: 'full', bits: 16 });
  });
});
