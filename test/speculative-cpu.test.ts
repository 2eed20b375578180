import { describe, expect, it } from 'vitest';
import { cpuSpeculationTarget, speculativeDecode } from '../src/app/speculative-decoder.js';
import { DecodeCompressor } from '../src/compress/decode-compression.js';
import type { DecodeCompressOptions } from '../src/compress/decode-schedule.js';
import { CpuKvCache } from '../src/engine/cpu-kv-cache.js';
import type { Bits } from '../src/format/layout.js';
import { cacheOptionsForModel } from '../src/model/cache-options.js';
import { parseCheckpoint } from '../src/model/checkpoint.js';
import { ReferenceLlama } from '../src/model/reference-forward.js';
import { argmax } from '../src/model/sampling.js';
import { Tokenizer } from '../src/model/tokenizer.js';
import { sharedBytes } from './model-helpers.js';

const checkpoint = parseCheckpoint(sharedBytes('models/stories260K.bin'));
const tokenizer = Tokenizer.parse(sharedBytes('models/tok512.bin'), checkpoint.config.vocabSize);
const SEQ = 0;

interface Setup {
  readonly name: string;
  readonly bits: Bits;
  readonly budget: number | null;
  readonly compress?: DecodeCompressOptions;
}

const setups: Setup[] = [
  { name: 'full cache', bits: 16, budget: null },
  { name: 'snapkv budget 32', bits: 16, budget: 32, compress: { policy: 'snapkv' } },
  { name: 'h2o budget 32 int4', bits: 4, budget: 32, compress: { policy: 'h2o', bits: 4 } },
  { name: 'snapkv adakv budget 48 int4', bits: 4, budget: 48, compress: { policy: 'snapkv', budgetMode: 'adakv', bits: 4 } },
];

const prompts = [
  '',
  'Tom had a red ball. Tom had a red ball. Tom had a red ball. Tom had a',
  'Once upon a time, there was a little girl named Lily. She loved to play outside.',
];

function engine(setup: Setup): { cache: CpuKvCache; model: ReferenceLlama; decode: DecodeCompressor | null } {
  const cache = CpuKvCache.create(cacheOptionsForModel(checkpoint.config, { bits: setup.bits, seqSlots: 1, maxTokensPerHead: 512 }));
  cache.addSequence(SEQ);
  const model = new ReferenceLlama(checkpoint, { attention: cache.attentionHook(SEQ) });
  const decode = setup.budget === null ? null : new DecodeCompressor(cache, { budget: setup.budget, ...(setup.compress ? { compress: setup.compress } : {}) });
  return { cache, model, decode };
}

/** Plain one-token greedy decoding with the same decode schedule. */
async function plainGreedy(setup: Setup, promptTokens: number[], steps: number): Promise<number[]> {
  const { cache, model, decode } = engine(setup);
  let logits: Float32Array = new Float32Array(0);
  for (const token of promptTokens) logits = model.forward(token, cache.sequenceLength(SEQ));
  decode?.prefilled(promptTokens.length);
  const out: number[] = [];
  for (let step = 0; step < steps; step++) {
    const token = argmax(logits);
    out.push(token);
    if (step + 1 === steps) break;
    await decode?.beforeStep(SEQ, 1);
    logits = model.forward(token, cache.sequenceLength(SEQ));
  }
  return out;
}

describe('speculative decoding on the CPU engine (stories260K)', () => {
  for (const setup of setups) {
    it(`greedy output is token-identical to one-token decoding: ${setup.name}`, async () => {
      let passes = 0;
      let generated = 0;
      for (const prompt of prompts) {
        const promptTokens = tokenizer.encode(prompt, { bos: true });
        const steps = 128;
        const expected = await plainGreedy(setup, promptTokens, steps);
        const { cache, model, decode } = engine(setup);
        const result = await speculativeDecode(cpuSpeculationTarget(model, cache, SEQ), {
          promptTokens,
          steps,
          // Fixed k: many rollbacks, and a path that does not depend on timings.
          speculate: { method: 'ngram', numSpeculative: 8, adaptive: false },
          sampling: { temperature: 0 },
          decode: decode ? { compressor: decode, seqId: SEQ } : null,
        });
        expect(result.tokens).toEqual(expected);
        expect(cache.sequenceLength(SEQ)).toBe(promptTokens.length + steps - 1);
        expect(cache.checkInvariants()).toEqual([]);
        if (decode && setup.budget !== null && setup.compress?.budgetMode === undefined) {
          for (let l = 0; l < checkpoint.config.nLayers; l++) expect(cache.tokenCount(SEQ, l, 0)).toBeLessThanOrEqual(setup.budget);
        }
        passes += result.report.forwardPasses;
        generated += result.tokens.length;
        expect(result.report.tokensPerPass).toBeCloseTo(result.tokens.length / result.report.forwardPasses, 10);
      }
      // Speculation saved passes overall (the repeating prompt alone guarantees some).
      expect(passes).toBeLessThan(generated);
    });
  }
});
