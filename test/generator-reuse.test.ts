import { describe, expect, it } from 'vitest';
import { Generator, type GenerateOptions } from '../src/app/generator.js';
import { streamRest } from '../src/app/context-replay.js';
import { streamTokens } from '../src/store/context-stream.js';
import { InvalidArgumentError } from '../src/errors.js';
import { StoreStates } from '../src/app/store-reuse.js';
import type { ContextReuse } from '../src/app/context-reuse.js';
import { MemoryTier } from '../src/store/memory-tier.js';
import { testGpu } from './helpers/gpu.js';
import { sharedBytes, sharedText } from './model-helpers.js';

async function generator(residentStates = 0): Promise<Generator> {
  const gpu = await testGpu();
  return Generator.fromBytes(gpu, sharedBytes('models/stories260K.bin'), sharedBytes('models/tok512.bin'), { residentStates });
}

/** The first stories of the dev set, at least `minTokens` tokens. */
function knowledgeText(gen: Generator, minTokens: number): string {
  const paragraphs = sharedText('data/tinystories_dev.txt').split('\n').filter((line) => line.trim() !== '');
  let text = '';
  for (const paragraph of paragraphs) {
    text = text === '' ? paragraph : `${text}\n${paragraph}`;
    if (gen.tokenizer.encode(text, { bos: true }).length >= minTokens) return text;
  }
  throw new Error('the dev set is too short');
}

// Compresses (budget 32 < the texts) and quantizes, so a restored state that lost a statistic or a counter shows.
const SETTING = { policy: 'snapkv', budget: 32, bits: 4 } as const satisfies Partial<GenerateOptions>;

describe('streamRest', () => {
  it('cuts a stream after a prefix: whole segments and the first tokens of one', () => {
    const stream = [{ kind: 'prefill', tokens: [1, 2, 3] }, { kind: 'compress' }, { kind: 'prefill', tokens: [4, 5] }] as const;
    expect(streamRest(stream, [{ kind: 'prefill', tokens: [1, 2] }])).toEqual([{ kind: 'prefill', tokens: [3] }, { kind: 'compress' }, { kind: 'prefill', tokens: [4, 5] }]);
    expect(streamRest(stream, [{ kind: 'prefill', tokens: [1, 2, 3] }, { kind: 'compress' }])).toEqual([{ kind: 'prefill', tokens: [4, 5] }]);
    expect(() => streamRest(stream, [{ kind: 'prefill', tokens: [1, 3] }])).toThrow(InvalidArgumentError);
    expect(() => streamRest(stream, [{ kind: 'decode', tokens: [1] }])).toThrow(InvalidArgumentError);
  });
});

describe('Generator: continueFrom and a store of compressed states (stories260K)', () => {
  const stores: [string, (gen: Generator) => ContextReuse][] = [
    ['GPU-resident forks', (gen) => gen.residentStates({ modelFingerprint: 'stories260K', tenantSalt: '' })],
    ['serialized entries in a MemoryTier', () => new StoreStates({ tiers: [new MemoryTier({ maxBytes: 64 << 20 })], modelFingerprint: 'stories260K', tenantSalt: '' })],
  ];
  it.each(stores)("a chat's second turn continues the first: restored from the first turn's final state (%s), token-identical to recomputing it", async (_name, makeStore) => {
    const gen = await generator(4);
    const store = makeStore(gen);
    const first = { ...SETTING, prompt: 'Once upon a time, there was a little girl named Lily who loved to play outside', steps: 24 };
    const turn1 = await gen.generate(first);
    expect(turn1.context).toEqual([
      { kind: 'prefill', tokens: turn1.promptTokens },
      { kind: 'decode', tokens: turn1.tokens.slice(0, -1) },
    ]);
    const second = { ...SETTING, prompt: 'One day, her mom said', steps: 16, continueFrom: turn1.context };
    const plain = await gen.generate(second);
    expect(plain.report.store).toBeUndefined();
    expect(plain.context.slice(0, 2)).toEqual(turn1.context);

    const turn1Stored = await gen.generate({ ...first, store });
    expect(turn1Stored.tokens).toEqual(turn1.tokens);
    // The last block boundary inside the prompt, the prompt's end, the end.
    expect(turn1.promptTokens.length).toBeGreaterThan(16);
    expect(turn1Stored.report.store).toMatchObject({ hit: false, hitTokens: 0, saved: 3 });
    const stored = await gen.generate({ ...second, store });
    const historyTokens = streamTokens(turn1.context);
    expect(stored.report.store).toMatchObject({ hit: true, hitTokens: historyTokens, prefillTokens: stored.promptTokens.length });
    expect(stored.tokens).toEqual(plain.tokens);
    expect(stored.report.keptPerHead).toEqual(plain.report.keptPerHead);
    expect(stored.report.bytesCompressed).toBe(plain.report.bytesCompressed);
    gen.destroy();
  }, 300_000);

  it('cache-augmented generation: every question after the first restores the compressed knowledge; answers equal recomputing it', async () => {
    const gen = await generator();
    const store = new StoreStates({ tiers: [new MemoryTier({ maxBytes: 64 << 20 })], modelFingerprint: 'stories260K', tenantSalt: '' });
    // Past the budget, so the knowledge is compressed (the 400-token run is the CLI test's: test/cli-store.test.ts).
    const knowledge = gen.contextOf(knowledgeText(gen, 100), { compress: true });
    const knowledgeTokens = streamTokens(knowledge);
    expect(knowledgeTokens).toBeGreaterThanOrEqual(100);
    const questions = ['What did Kitty polish?', 'Who helped Roxy climb the hill?', 'Why was the cow sad?'];
    for (const [i, prompt] of questions.entries()) {
      const options = { ...SETTING, prompt, steps: 8, continueFrom: knowledge };
      const baseline = await gen.generate(options);
      const reused = await gen.generate({ ...options, store });
      expect(reused.tokens, prompt).toEqual(baseline.tokens);
      const questionTokens = reused.promptTokens.length;
      expect(reused.report.store).toMatchObject(
        i === 0 ? { hit: false, prefillTokens: knowledgeTokens + questionTokens } : { hit: true, hitTokens: knowledgeTokens, prefillTokens: questionTokens },
      );
      // The knowledge was compressed before the question: the cache never held all of it.
      expect(Math.max(...reused.report.keptPerHead.flat())).toBeLessThanOrEqual(SETTING.budget);
    }
    expect(await store.bytesStored()).toBeGreaterThan(0);
    gen.destroy();
  }, 300_000);

  it('GPU-resident states evicted for room are demoted to the next store as entries, and hit there', async () => {
    const gen = await generator(1);
    const next = new StoreStates({ tiers: [new MemoryTier({ maxBytes: 64 << 20 })], modelFingerprint: 'stories260K', tenantSalt: '' });
    const store = gen.residentStates({ modelFingerprint: 'stories260K', tenantSalt: '', next });
    const options = { ...SETTING, prompt: 'Once upon a time, there was a little girl named Lily who loved to play outside', steps: 12 };
    const first = await gen.generate({ ...options, store });
    // Three states saved into one slot: the block boundary and the prompt's end went down to `next`.
    expect(first.report.store?.saved).toBe(3);
    expect(store.evictions.demoted).toBe(2);
    expect(store.entries()).toHaveLength(1);
    expect((await next.list()).length).toBe(2);
    const again = await gen.generate({ ...options, store });
    expect(again.report.store).toMatchObject({ hit: true, hitTokens: 16 });
    expect(again.tokens).toEqual(first.tokens);
    gen.destroy();
  }, 300_000);

  it('the GPU-resident tier demotes what it evicts into the next tier, drops what outlives its TTL, and a hit there restores it', async () => {
    const gen = await generator(1);
    let clock = 0;
    const next = new StoreStates({ tiers: [new MemoryTier({ maxBytes: 64 << 20 })], modelFingerprint: 'stories260K', tenantSalt: '' });
    const resident = gen.residentStates({ modelFingerprint: 'stories260K', tenantSalt: '', next, ttlMs: 60_000, now: () => clock });
    const first = { ...SETTING, prompt: 'Once upon a time, there was a little girl named Lily who loved to play outside', steps: 12 };
    const turn1 = await gen.generate({ ...first, store: resident });
    // Three states saved in one slot: the first two went down to host memory as entries, not away.
    expect(resident.evictions).toEqual({ ttl: 0, capacity: 2, demoted: 2 });
    expect((await next.list()).length).toBe(2);
    const second = { ...SETTING, prompt: 'One day, her mom said', steps: 8, continueFrom: turn1.context };
    const plain = await gen.generate(second);
    const fromGpu = await gen.generate({ ...second, store: resident });
    expect(fromGpu.report.store?.hit).toBe(true);
    expect(fromGpu.tokens).toEqual(plain.tokens);
    // Past the TTL the resident state is dropped; the same prompt as turn 1 restores its demoted block-boundary state.
    clock += 120_000;
    const again = await gen.generate({ ...first, store: resident });
    expect(resident.evictions.ttl).toBe(1);
    expect(again.report.store?.hit).toBe(true);
    expect(again.tokens).toEqual(turn1.tokens);

    // A pinned state outlives its TTL and every save; with the one slot pinned, saves go nowhere on the GPU.
    const [held] = resident.entries();
    expect(held && resident.pin(held.key)).toBe(true);
    clock += 120_000;
    const ttlBefore = resident.evictions.ttl;
    await gen.generate({ ...SETTING, prompt: 'A cat sat on the mat', steps: 4, store: resident });
    expect(resident.evictions.ttl).toBe(ttlBefore);
    expect(resident.entries().map((e) => e.key)).toEqual([held?.key]);
    expect(resident.pin('no-such-key')).toBe(false);
    gen.destroy();
  });

  it('single flight: two generators asking a shared store for the same missing prompt at once compute it once', async () => {
    const [a, b] = [await generator(), await generator()];
    const store = new StoreStates({ tiers: [new MemoryTier({ maxBytes: 64 << 20 })], modelFingerprint: 'stories260K', tenantSalt: '' });
    const options = { ...SETTING, prompt: 'Once upon a time, there was a little girl named Lily who loved to play outside in the sun', steps: 6, store };
    const [first, second] = await Promise.all([a.generate(options), b.generate(options)]);
    const reports = [first.report.store, second.report.store];
    // One computed the prompt; the other waited for its save and restored it.
    expect(reports.map((r) => r?.hit).sort()).toEqual([false, true]);
    const waited = reports.find((r) => r?.hit);
    expect(waited?.prefillTokens).toBeLessThanOrEqual(16);
    expect(second.tokens).toEqual(first.tokens);
    a.destroy();
    b.destroy();
  });

  it('refuses a continuation with an empty prompt, or with compareWithFull', async () => {
    const gen = await generator();
    const history = gen.contextOf('Once upon a time');
    await expect(gen.generate({ prompt: '', steps: 2, continueFrom: history })).rejects.toThrow(InvalidArgumentError);
    await expect(gen.generate({ prompt: 'Lily', steps: 2, continueFrom: history, compareWithFull: true })).rejects.toThrow(InvalidArgumentError);
    gen.destroy();
  });
});
