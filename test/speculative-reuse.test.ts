// Speculative decoding from a restored or replayed state (cache-augmented generation with --speculate): the
// answers equal one-token decoding, drafts come from the knowledge, and the state speculation ends in is one a
// later request can go on from.
import { describe, expect, it } from 'vitest';
import { Generator, type GenerateOptions } from '../src/app/generator.js';
import { StoreStates } from '../src/app/store-reuse.js';
import { streamTokens } from '../src/store/context-stream.js';
import { MemoryTier } from '../src/store/memory-tier.js';
import { testGpu } from './helpers/gpu.js';
import { sharedBytes, sharedText } from './model-helpers.js';

const SETTING = { policy: 'snapkv', budget: 32, bits: 4 } as const satisfies Partial<GenerateOptions>;
// Fixed length: the adaptive one drafts only where this machine's timing says drafts pay.
const SPECULATE = { method: 'ngram', numSpeculative: 6, adaptive: false } as const;

async function generator(): Promise<Generator> {
  return Generator.fromBytes(await testGpu(), sharedBytes('models/stories260K.bin'), sharedBytes('models/tok512.bin'));
}

function store(): StoreStates {
  return new StoreStates({ tiers: [new MemoryTier({ maxBytes: 64 << 20 })], modelFingerprint: 'stories260K', tenantSalt: '' });
}

describe('speculative decoding after a history and from a store (stories260K, snapkv b32 int4)', () => {
  it('answers over a compressed knowledge text equal one-token decoding, restored or not, with drafts from the knowledge', async () => {
    const gen = await generator();
    const text = sharedText('data/tinystories_dev.txt').split('\n').filter((line) => line.trim() !== '').slice(0, 2).join('\n');
    const knowledge = gen.contextOf(text, { compress: true });
    expect(streamTokens(knowledge)).toBeGreaterThan(SETTING.budget * 2);
    const states = store();
    let accepted = 0;
    for (const [i, prompt] of ['Spot', 'The little girl'].entries()) {
      const options = { ...SETTING, prompt, steps: 32, continueFrom: knowledge };
      const plain = await gen.generate(options);
      const speculative = await gen.generate({ ...options, speculate: SPECULATE });
      const restored = await gen.generate({ ...options, speculate: SPECULATE, store: states });
      expect(speculative.tokens, prompt).toEqual(plain.tokens);
      expect(restored.tokens, prompt).toEqual(plain.tokens);
      expect(restored.report.store?.hit, prompt).toBe(i > 0);
      expect(speculative.report.keptPerHead).toEqual(plain.report.keptPerHead);
      const report = restored.report.speculative;
      expect(report?.drafted).toBeGreaterThan(0);
      expect(report?.forwardPasses).toBeLessThanOrEqual(restored.tokens.length);
      accepted += report?.accepted ?? 0;
      expect(restored.report.ttftMs).toBeGreaterThan(0);
    }
    // Story text repeats names and phrases of the knowledge: some drafts hold.
    expect(accepted).toBeGreaterThan(0);
    gen.destroy();
  }, 300_000);

  it("a speculative turn's final state is saved, and the next turn restored from it equals recomputing the history", async () => {
    const gen = await generator();
    const states = store();
    const first = { ...SETTING, prompt: 'Once upon a time, there was a little girl named Lily. Lily liked to play with her ball', steps: 40 };
    const turn1 = await gen.generate({ ...first, speculate: SPECULATE, store: states });
    const plainTurn1 = await gen.generate(first);
    expect(turn1.tokens).toEqual(plainTurn1.tokens);
    expect(turn1.context).toEqual(plainTurn1.context);
    // The block boundary inside the prompt, the prompt's end, the end.
    expect(turn1.report.store).toMatchObject({ hit: false, saved: 3 });
    const second = { ...SETTING, prompt: 'Then her friend', steps: 16, continueFrom: turn1.context };
    const plain = await gen.generate(second);
    const restored = await gen.generate({ ...second, store: states });
    expect(restored.report.store).toMatchObject({ hit: true, hitTokens: streamTokens(turn1.context) });
    expect(restored.tokens).toEqual(plain.tokens);
    expect(restored.report.keptPerHead).toEqual(plain.report.keptPerHead);
    gen.destroy();
  }, 300_000);
});
