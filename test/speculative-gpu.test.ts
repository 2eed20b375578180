import { describe, expect, it } from 'vitest';
import { Generator, type GenerateOptions } from '../src/app/generator.js';
import { PagedKvCache } from '../src/engine/paged-kv-cache.js';
import { InvalidArgumentError } from '../src/errors.js';
import { readBuffer } from '../src/gpu/buffers.js';
import { cacheOptionsForModel } from '../src/model/cache-options.js';
import { parseCheckpoint } from '../src/model/checkpoint.js';
import { GpuLlama } from '../src/model/gpu-llama.js';
import { mulberry32 } from '../src/random.js';
import { testGpu } from './helpers/gpu.js';
import { sharedBytes } from './model-helpers.js';

const checkpoint = parseCheckpoint(sharedBytes('models/stories260K.bin'));
const { nLayers, nKvHeads, vocabSize } = checkpoint.config;

async function generator(): Promise<Generator> {
  return Generator.fromBytes(await testGpu(), sharedBytes('models/stories260K.bin'), sharedBytes('models/tok512.bin'));
}

/** Everything later steps and compressions can observe of one sequence: K/V, positions, statistics, window count. */
async function observable(cache: PagedKvCache, seq: number): Promise<string> {
  const stats = await Promise.all(Object.values(cache.attention.statistics).map(async (b) => new Float32Array(await readBuffer(cache.gpu, b))));
  const parts: unknown[] = [cache.sequenceLength(seq), cache.attention.windowCount(seq, 0)];
  const stride = cache.maxTokensPerHead;
  for (let l = 0; l < nLayers; l++) {
    for (let h = 0; h < nKvHeads; h++) {
      const head = await cache.readHead(seq, l, h);
      const row = cache.meta.rowOf(seq, l, h);
      const n = cache.tokenCount(seq, l, h);
      parts.push(Array.from(head.keys), Array.from(head.positions), ...stats.map((s) => Array.from(s.subarray(row * stride, row * stride + n + 4))));
    }
  }
  return JSON.stringify(parts);
}

describe('speculative decoding on the GPU engine (stories260K)', () => {
  it('a rolled-back multi-token verification leaves the cache bit-identical to one-token steps of the kept tokens; random truncates keep the invariants', async () => {
    const gpu = await testGpu();
    // Speculative steps run on the one-pass kernel (their statistics settle from its probabilities): both caches use
    // it, so "bit-identical" compares like with like.
    const options = {
      ...cacheOptionsForModel(checkpoint.config, { bits: 16, fullFormat: 'f32', seqSlots: 2, maxTokensPerHead: 256, observationWindow: 8 }),
      attentionKernel: 'one-pass' as const,
    };
    const speculative = PagedKvCache.create(gpu, options);
    const plain = PagedKvCache.create(gpu, options);
    const modelS = new GpuLlama(gpu, checkpoint, speculative);
    const modelP = new GpuLlama(gpu, checkpoint, plain);
    speculative.addSequence(0);
    plain.addSequence(0);
    const rand = mulberry32(9);
    const token = () => 3 + Math.floor(rand() * (vocabSize - 3));
    const prompt = [1, ...Array.from({ length: 5 }, token)];
    await modelS.forward(0, prompt);
    await modelP.forward(0, prompt);
    for (let op = 0; op < 24; op++) {
      const length = speculative.sequenceLength(0);
      if (op % 6 === 5) {
        const to = length - 1 - Math.floor(rand() * 3);
        await speculative.truncate(0, to);
        await plain.truncate(0, to);
      } else {
        const tokens = Array.from({ length: 2 + Math.floor(rand() * 5) }, token);
        const kept = 1 + Math.floor(rand() * tokens.length);
        speculative.beginSpeculation(0);
        const rows = await modelS.forward(0, tokens, { allLogits: true });
        await speculative.truncate(0, length + kept);
        let last: Float32Array = new Float32Array(0);
        for (const t of tokens.slice(0, kept)) last = await modelP.forward(0, [t]);
        // The verification's logits after each kept token are the one-token steps' logits, bit for bit.
        expect(Array.from(rows.subarray((kept - 1) * vocabSize, kept * vocabSize))).toEqual(Array.from(last));
      }
      expect(speculative.checkInvariants()).toEqual([]);
      if (op % 4 === 3) expect(await observable(speculative, 0)).toBe(await observable(plain, 0));
    }
    expect(await observable(speculative, 0)).toBe(await observable(plain, 0));
    // A compression after speculation sees the same statistics and window, so it keeps the same tokens.
    const report = { policy: 'h2o', budget: 12, sinks: 2, recent: 4 } as const;
    await speculative.compress(0, report);
    await plain.compress(0, report);
    expect(await observable(speculative, 0)).toBe(await observable(plain, 0));
    for (const c of [speculative, plain]) c.destroy();
    modelS.destroy();
    modelP.destroy();
  });

  // Several prompts per cache on the CPU engine (test/speculative-cpu.test.ts); one each here, SwiftShader is slow.
  const repeating = 'Tom had a red ball. Tom had a red ball. Tom had a';
  const cases: Array<{ name: string; prompt: string; options: Omit<GenerateOptions, 'prompt' | 'steps'> }> = [
    { name: 'full cache', prompt: repeating, options: { policy: 'full' } },
    { name: 'snapkv budget 32', prompt: '', options: { policy: 'snapkv', budget: 32 } },
    { name: 'h2o budget 32 int4', prompt: repeating, options: { policy: 'h2o', budget: 32, bits: 4 } },
  ];
  for (const { name, prompt, options } of cases) {
    it(`Generator: greedy with --speculate ngram is token-identical to without (${name})`, async () => {
      const gen = await generator();
      {
        const plain = await gen.generate({ prompt, steps: 64, ...options });
        const spec = await gen.generate({ prompt, steps: 64, ...options, speculate: { method: 'ngram', numSpeculative: 4, adaptive: false } });
        expect(spec.tokens).toEqual(plain.tokens);
        expect(spec.report.cachedTokens).toBe(plain.report.cachedTokens);
        expect(spec.report.compressions).toBe(plain.report.compressions);
        expect(spec.report.keptPerHead).toEqual(plain.report.keptPerHead);
        const s = spec.report.speculative;
        expect(s?.forwardPasses).toBeLessThanOrEqual(64);
        expect(s?.tokensPerPass).toBeCloseTo(64 / (s?.forwardPasses ?? 1), 10);
        expect(plain.report.speculative).toBeUndefined();
      }
      gen.destroy();
    });
  }

  it('Generator refuses speculate with compareWithFull', async () => {
    const gen = await generator();
    await expect(gen.generate({ prompt: '', steps: 4, compareWithFull: true, speculate: { method: 'ngram' } })).rejects.toBeInstanceOf(InvalidArgumentError);
    gen.destroy();
  });
});
