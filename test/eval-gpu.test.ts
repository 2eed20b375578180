import { describe, expect, it } from 'vitest';
import { cpuEngineFactory } from '../src/eval/cpu-engine.js';
import { evaluate, type EvalRowSpec } from '../src/eval/evaluate.js';
import { gpuEngineFactory } from '../src/eval/gpu-engine.js';
import { parseCheckpoint } from '../src/model/checkpoint.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { testGpu } from './helpers/gpu.js';
import { sharedBytes, sharedText } from './model-helpers.js';

const checkpoint = parseCheckpoint(sharedBytes('models/stories260K.bin'));
const tokenizer = Tokenizer.parse(sharedBytes('models/tok512.bin'), checkpoint.config.vocabSize);
const text = sharedText('data/tinystories_dev.txt');

describe('evaluation on the GPU engine (the model reads the paged, compressed cache)', () => {
  it('agrees with the CPU engine on the same rows', async () => {
    const gpu = await testGpu();
    const rows: EvalRowSpec[] = [
      { policy: 'full', bits: 16 },
      { policy: 'h2o', budget: 40, budgetMode: 'uniform', bits: 16 },
      { policy: 'snapkv', budget: 40, budgetMode: 'adakv', bits: 4 },
    ];
    const settings = { checkpoint, tokenizer, text, window: 96, windows: 1, rows };
    const onGpu = await evaluate({ ...settings, engine: await gpuEngineFactory(gpu) });
    const onCpu = await evaluate({ ...settings, engine: cpuEngineFactory });
    onGpu.rows.forEach((row, i) => {
      const cpu = onCpu.rows[i];
      // Same layout and the same decisions; f32 sums in a different order move perplexity by far less than 0.5%.
      expect(Math.abs(row.ppl / (cpu?.ppl ?? 0) - 1)).toBeLessThan(0.005);
      expect(row.bytesPerToken).toBe(cpu?.bytesPerToken);
      expect(row.agreeWithFull).toBeGreaterThan(0.95 * (cpu?.agreeWithFull ?? 1));
    });
    // compression really happened on the GPU rows
    expect(onGpu.rows[1]?.ratio).toBeGreaterThan(onGpu.rows[0]?.ratio ?? Infinity);
  });
});
