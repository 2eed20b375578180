import { describe, expect, it } from 'vitest';
import { CpuKvCache } from '../src/engine/cpu-kv-cache.js';
import { TruncateCompressedError } from '../src/errors.js';
import { mulberry32 } from '../src/random.js';

const shape = { layers: 2, kvHeads: 2, headDim: 8, blockSize: 4 };
const nHeads = 4;
const SEQ = 0;

function cache(quantBits?: 4): CpuKvCache {
  const c = CpuKvCache.create({ shape, nHeads, fullFormat: 'f32', ...(quantBits ? { quantBits } : {}), maxTokensPerHead: 96, seqSlots: 2, observationWindow: 6 });
  c.addSequence(SEQ);
  return c;
}

/** q, k, v of one token in every layer, from a seeded generator. */
function tokenInputs(seed: number): Array<{ q: Float32Array; k: Float32Array; v: Float32Array }> {
  const rand = mulberry32(seed);
  const vec = (n: number) => Float32Array.from({ length: n }, () => rand() * 2 - 1);
  return Array.from({ length: shape.layers }, () => ({ q: vec(nHeads * shape.headDim), k: vec(shape.kvHeads * shape.headDim), v: vec(shape.kvHeads * shape.headDim) }));
}

function step(c: CpuKvCache, seed: number): void {
  const pos = c.sequenceLength(SEQ);
  tokenInputs(seed).forEach((io, layer) => c.step(SEQ, layer, pos, io.q, io.k, io.v));
}

/** Everything a later step or compression can observe: blocks' contents, positions, statistics, window. */
function observable(c: CpuKvCache): string {
  const heads: unknown[] = [c.sequenceLength(SEQ)];
  for (let l = 0; l < shape.layers; l++) {
    heads.push(Array.from(c.windowQueries(SEQ, l).queries), Array.from(c.windowQueries(SEQ, l).positions), c.attention.windowCount(SEQ, l));
    for (let h = 0; h < shape.kvHeads; h++) {
      const head = c.readHead(SEQ, l, h);
      const stats = c.stats(SEQ, l, h);
      heads.push(Array.from(head.keys), Array.from(head.values), Array.from(head.positions), Array.from(stats.attnSum), Array.from(stats.attnSqSum), Array.from(stats.attnCount));
    }
  }
  return JSON.stringify(heads);
}

describe('CpuKvCache.truncate and speculation', () => {
  it('a rolled-back speculation leaves the cache bit-identical to a run of only the kept tokens', async () => {
    const speculative = cache();
    const plain = cache();
    for (let i = 0; i < 9; i++) {
      step(speculative, i);
      step(plain, i);
    }
    speculative.beginSpeculation(SEQ);
    for (let i = 9; i < 15; i++) step(speculative, i);
    await speculative.truncate(SEQ, 11);
    for (let i = 9; i < 11; i++) step(plain, i);
    expect(observable(speculative)).toBe(observable(plain));
    expect(speculative.checkInvariants()).toEqual([]);
  });

  it('refuses to cut among compressed tokens with TruncateCompressedError, cache unchanged', async () => {
    const c = cache(4);
    for (let i = 0; i < 20; i++) step(c, i);
    await c.compress(SEQ, { policy: 'h2o', budget: 8, bits: 4, sinks: 1, recent: 4 });
    for (let i = 20; i < 23; i++) step(c, i);
    const before = observable(c);
    await expect(async () => c.truncate(SEQ, 19)).rejects.toBeInstanceOf(TruncateCompressedError);
    expect(observable(c)).toBe(before);
    await c.truncate(SEQ, 21);
    expect(c.sequenceLength(SEQ)).toBe(21);
    expect(c.checkInvariants()).toEqual([]);
  });

  it('1,200 random steps, speculations, rollbacks, truncates and compressions: invariants hold and speculation is exact', async () => {
    const speculative = cache(4);
    const plain = cache(4);
    const rand = mulberry32(2026);
    const pick = (n: number) => Math.floor(rand() * n);
    let seed = 1000;
    for (let op = 0; op < 1200; op++) {
      const choice = pick(10);
      const length = speculative.sequenceLength(SEQ);
      const counts = [0, 1].flatMap((l) => [0, 1].map((h) => speculative.tokenCount(SEQ, l, h)));
      const longest = Math.max(...counts);
      const shortest = Math.min(...counts);
      if (longest > 60 || choice === 0) {
        const options = { policy: pick(2) === 0 || speculative.attention.windowCount(SEQ, 0) === 0 ? 'h2o' : 'snapkv', budget: Math.max(6, Math.min(12 + pick(12), shortest)), bits: pick(2) === 0 ? (4 as const) : (16 as const), sinks: 1, recent: 4, window: 4 };
        if (shortest >= 6 && (options.bits === 16 || longest > 8)) {
          await speculative.compress(SEQ, options);
          await plain.compress(SEQ, options);
        }
      } else if (choice <= 3) {
        const s = seed++;
        step(speculative, s);
        step(plain, s);
      } else if (choice <= 7) {
        // A verification: drafts run provisionally, then the rejected ones roll back.
        const drafts = 1 + pick(6);
        const kept = pick(drafts + 1);
        speculative.beginSpeculation(SEQ);
        for (let i = 0; i < drafts; i++) step(speculative, seed + i);
        await speculative.truncate(SEQ, length + kept);
        for (let i = 0; i < kept; i++) step(plain, seed + i);
        seed += drafts;
      } else {
        const min = speculative.meta.minTruncateLength(SEQ);
        const to = min + pick(length - min + 1);
        await speculative.truncate(SEQ, to);
        await plain.truncate(SEQ, to);
      }
      expect(speculative.checkInvariants()).toEqual([]);
      expect(plain.checkInvariants()).toEqual([]);
      if (op % 20 === 0) expect(observable(speculative)).toBe(observable(plain));
    }
    expect(observable(speculative)).toBe(observable(plain));
  });
});
