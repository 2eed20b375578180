import { describe, expect, it } from 'vitest';
import { InvalidArgumentError, UnknownPolicyError } from '../src/errors.js';
import { cpuEngineFactory, CpuEvalEngine } from '../src/eval/cpu-engine.js';
import { evaluate, rowSchedule, sweepRows, type EvalEngineFactory, type EvalRow, type EvalRowSpec } from '../src/eval/evaluate.js';
import { formatEvalTable, renderEvalSvg } from '../src/eval/report.js';
import { parseCheckpoint } from '../src/model/checkpoint.js';
import { prepareEvalWindows } from '../src/eval/eval-text.js';
import { perplexityOfWindows } from '../src/eval/metrics.js';
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
        tokenCount: (layer, kvHead) => engine.tokenCount(layer, kvHead),
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
    // sinks that fill the compressed target (32 − 8) leave the policy nothing to choose
    const sinks = (n: number) =>
      evaluate({ checkpoint, tokenizer, text, window: 64, windows: 1, sinks: n, rows: [{ policy: 'h2o', budget: 32 }], engine: () => { throw new Error('must not run'); } });
    await expect(sinks(24)).rejects.toThrow(/sinks/);
  });

  it('schedules protected tokens inside the compressed target and builds sweeps', () => {
    const protectedOf = (budget: number) => {
      const { target, sinks, recent, window } = rowSchedule({ policy: 'h2o', budget });
      return { target, sinks, recent, window };
    };
    expect(protectedOf(32)).toEqual({ target: 24, sinks: 4, recent: 8, window: 8 });
    expect(protectedOf(64)).toEqual({ target: 48, sinks: 4, recent: 16, window: 16 });
    expect(protectedOf(128)).toEqual({ target: 112, sinks: 4, recent: 32, window: 32 });
    // full rows never evict; they quantize once per block below 16 bits, keeping KIVI's residual of 32
    expect(rowSchedule({ policy: 'full', bits: 4 })).toMatchObject({ target: null, sinks: 4, recent: 32, quantizeEvery: 16 });
    expect(rowSchedule({ policy: 'full', bits: 16 }).quantizeEvery).toBeNull();
    const rows = sweepRows({ policies: ['full', 'h2o', 'snapkv'], budgets: [32, 64], bits: [16, 4], budgetModes: ['uniform', 'adakv'] });
    expect(rows).toHaveLength(2 + 2 * 2 * 2 * 2);
    expect(rows[0]).toEqual({ policy: 'full', bits: 16 });
  });

  it("gives today's figures: h2o uniform B=64 int4 and snapkv adakv B=32 f16 on 2 windows of the dev text", async () => {
    // Computed on main before the decode schedule moved to src/compress/decode-schedule.ts (commit 638a701): the
    // figures of README.md and docs/eval-results.md come from the same schedule and must not move.
    const report = await evaluate({
      checkpoint,
      tokenizer,
      text,
      window: 256,
      windows: 2,
      engine: cpuEngineFactory,
      rows: [
        { policy: 'h2o', budget: 64, budgetMode: 'uniform', bits: 4 },
        { policy: 'snapkv', budget: 32, budgetMode: 'adakv', bits: 16 },
      ],
    });
    const expected: Omit<EvalRow, 'seconds'>[] = [
      {
        policy: 'h2o', budgetMode: 'uniform', budget: 64, bits: 4,
        ppl: 4.152029717653054, top1: 0.6235294117647059, agreeWithFull: 0.9235294117647059, klToFull: 0.05031682182360943,
        bytesPerToken: 258.6666666666667, ratio: 2.474226804123711, ratioAtEnd: 4.553571428571429, compressions: 15,
      },
      {
        policy: 'snapkv', budgetMode: 'adakv', budget: 32, bits: 16,
        ppl: 4.37877274338519, top1: 0.6, agreeWithFull: 0.884313725490196, klToFull: 0.1065556238656552,
        bytesPerToken: 194.3294117647059, ratio: 3.293376922145538, ratioAtEnd: 6.0938945420906565, compressions: 28,
      },
    ];
    expected.forEach((want, i) => {
      const row = report.rows[i]!;
      expect({ policy: row.policy, budgetMode: row.budgetMode, budget: row.budget, bits: row.bits, compressions: row.compressions }).toEqual({
        policy: want.policy, budgetMode: want.budgetMode, budget: want.budget, bits: want.bits, compressions: want.compressions,
      });
      for (const key of ['ppl', 'top1', 'agreeWithFull', 'klToFull', 'bytesPerToken', 'ratio', 'ratioAtEnd'] as const) {
        expect(Math.abs(row[key] - want[key]), `${row.policy} ${key}`).toBeLessThanOrEqual(1e-6 * Math.max(1, Math.abs(want[key])));
      }
    });
  });
});
